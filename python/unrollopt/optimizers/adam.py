"""Adam (Kingma and Ba, 2015) and AdamW (Loshchilov and Hutter, 2019): they
differ only in where the weight decay enters. The step (fused and plain) is
``cpp/include/unrollopt/rules/adam.h``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


class ScaleByAdamState(NamedTuple):
    """The state of Adam, AdamW, Adamax and RAdam: the moment estimates (pytrees like
    the parameters; for Adamax ``nu`` is the infinity norm), the number of
    steps taken (a 0-d int64 tensor) and, with AMSGrad, the running maximum of
    ``nu`` (else an empty tuple)."""

    mu: Params
    nu: Params
    count: torch.Tensor
    nu_max: Params = ()


#: torch.optim.Adam's and AdamW's state keys.
STATE_KEYS = {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"}


@optimizer(
    ScaleByAdamState,
    class_name="Adam",
    torch_class="torch.optim.Adam",
    state_keys=STATE_KEYS,
    positional=("amsgrad",),
    notes="``eps_root`` is the one addition.",
)
def adam(lr=..., betas=..., eps=..., weight_decay=..., *, eps_root=..., amsgrad=...) -> GradientTransformation:
    r"""Adam (Kingma and Ba, 2015) as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1) and
    :math:`\lambda` the weight decay (L2, added to the gradient as in
    ``torch.optim.Adam``):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g'^2 \\
        u_t &= -\frac{\mathrm{lr}}{1 - \beta_1^t}\,
               \frac{\mu_t}{\sqrt{\nu_t / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}

    With ``eps_root = 0`` this is ``torch.optim.Adam``'s step; bias corrections are
    computed in float64 whatever the parameters' dtype.

    Args:
        eps_root: added inside the square root; a positive value keeps the
            gradient of plain autograd finite where the second moment is 0 (the
            fused operator's hand-written backward is exact and finite either way).
        amsgrad: AMSGrad (Reddi, Kale and Kumar, 2018): the denominator uses the
            running maximum of :math:`\nu_t` (kept in the state as ``nu_max``),
            as ``torch.optim.Adam(amsgrad=True)``; derivatives at a tie of the
            maximum go to the previous maximum.
    """
    ...


@optimizer(
    ScaleByAdamState,
    class_name="AdamW",
    torch_class="torch.optim.AdamW",
    state_keys=STATE_KEYS,
    positional=("amsgrad",),
    notes="""``eps_root`` and ``mask`` are the additions: ``mask`` (a group
    setting, as in TorchOpt's ``AdamW``) limits the weight decay to the
    parameters where it is True, a sequence of bools with one per parameter of
    the group or a function of the tuple of the group's parameters giving one.""",
)
def adamw(
    lr=..., betas=..., eps=..., weight_decay=..., *, eps_root=..., amsgrad=..., mask=None
) -> GradientTransformation:
    r"""AdamW (Loshchilov and Hutter, 2019): Adam with decoupled weight decay, as
    ``torch.optim.AdamW`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1) and
    :math:`\lambda` the weight decay:

    .. math::

        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, s\,g \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g^2 \\
        u_t &= -\mathrm{lr}\,\lambda\,\theta -\frac{\mathrm{lr}}{1 - \beta_1^t}\,
               \frac{\mu_t}{\sqrt{\nu_t / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}

    (``torch.optim.AdamW`` multiplies the parameters by :math:`1 - \mathrm{lr}\,\lambda`
    and then takes Adam's step: :math:`\theta + u_t`). With ``eps_root = 0`` this
    is ``torch.optim.AdamW``'s step.

    Args:
        weight_decay: decoupled weight decay coefficient :math:`\lambda`
            (unless it is 0, ``update`` needs ``params=``).
        eps_root: added inside the square root (see :func:`adam`).
        amsgrad: the running maximum of :math:`\nu_t` in the denominator (see :func:`adam`).
    """
    ...
