"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"),
the sign of an interpolated momentum. The step (fused and plain) is ``cpp/include/unrollopt/rules/lion.h``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


class ScaleByLionState(NamedTuple):
    """Lion's state: the momentum (a pytree like the parameters) and the number
    of steps taken (a 0-d int64 tensor)."""

    mu: Params
    count: torch.Tensor


@optimizer(
    ScaleByLionState,
    class_name="Lion",
    state_keys={"mu": "exp_avg"},
    notes="``mask`` limits the weight decay as :class:`AdamW`'s does.",
)
def lion(lr=..., betas=..., weight_decay=..., *, mask=None) -> GradientTransformation:
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization
    Algorithms"), the sign of an interpolated momentum, as a differentiable
    transformation.

    With :math:`s = -1` when maximizing (else 1) and :math:`\lambda` the
    (decoupled) weight decay:

    .. math::

        u_t &= -\mathrm{lr} \left( \operatorname{sign}\big(\beta_1 \mu_{t-1}
               + (1 - \beta_1)\, s\,g\big) + \lambda\,\theta \right) \\
        \mu_t &= \beta_2 \mu_{t-1} + (1 - \beta_2)\, s\,g

    :math:`\operatorname{sign}(0) = 0` (``torch.sign``'s): where the
    interpolation is exactly 0 only the decay moves the parameter; a NaN
    stays NaN (``torch.sign`` would make it 0). The sign's derivative is 0
    (also at 0, as autograd's), so the step's gradient reaches the gradient
    :math:`g`, :math:`\mu` and :math:`\beta_2` only through :math:`\mu_t`,
    and :math:`\beta_1` gets none. The fused backward and the plain path
    (the same rule in ATen operations) agree, also where a gradient is NaN.
    Lion's steps have size lr in every coordinate: its lr is typically 3-10
    times smaller than AdamW's and its weight decay as much larger.

    Args:
        betas: :math:`\beta_1` (the interpolation that is signed) and
            :math:`\beta_2` (the momentum's decay), each in [0, 1).
        weight_decay: decoupled weight decay coefficient :math:`\lambda`
            (unless it is 0, ``update`` needs ``params=``).
    """
    ...
