"""Adagrad (Duchi, Hazan and Singer, 2011), as ``torch.optim.Adagrad``. The
fused step is ``cpp/include/unrollopt/rules/adagrad.h``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


class AdagradState(NamedTuple):
    """Adagrad's state: the sum of squared gradients (a pytree like the
    parameters) and the number of steps taken (a 0-d int64 tensor)."""

    sum: Params
    count: torch.Tensor


@optimizer(
    AdagradState,
    class_name="Adagrad",
    spellings=("AdaGrad",),
    torch_class="torch.optim.Adagrad",
    state_keys={"sum": "sum"},
    notes="""Unlike ``torch.optim.Adagrad``, the state of a parameter is
    created at its first step, not in the constructor, and a group's own
    ``initial_accumulator_value`` is used (``torch.optim.Adagrad`` starts every
    sum at the constructor's value).""",
)
def adagrad(lr=..., lr_decay=..., weight_decay=..., initial_accumulator_value=..., eps=...) -> GradientTransformation:
    r"""Adagrad (Duchi, Hazan and Singer, 2011) as ``torch.optim.Adagrad``
    computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1),
    :math:`\lambda` the weight decay (L2) and :math:`\eta` the lr decay:

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        S_t &= S_{t-1} + g'^2 \\
        u_t &= -\frac{\mathrm{lr}}{1 + (t - 1)\,\eta}\, \frac{g'}{\sqrt{S_t} + \epsilon}

    The fused operator's backward is exact, and finite where :math:`S_t = 0`
    (there :math:`g' = 0` and the update does not depend on :math:`S_t`).

    Args:
        lr_decay: learning rate decay :math:`\eta`.
        initial_accumulator_value: the initial value of :math:`S`.
    """
    ...
