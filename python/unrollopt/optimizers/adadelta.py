"""Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``. The step (fused and plain) is
``cpp/include/unrollopt/rules/adadelta.h``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


class AdadeltaState(NamedTuple):
    """Adadelta's state: the running averages of the squared gradient and of
    the squared step (pytrees like the parameters) and the number of steps
    taken (a 0-d int64 tensor)."""

    square_avg: Params
    acc_delta: Params
    count: torch.Tensor


@optimizer(
    AdadeltaState,
    class_name="Adadelta",
    spellings=("AdaDelta",),
    torch_class="torch.optim.Adadelta",
    state_keys={"square_avg": "square_avg", "acc_delta": "acc_delta"},
)
def adadelta(lr=..., rho=..., eps=..., weight_decay=...) -> GradientTransformation:
    r"""Adadelta (Zeiler, 2012) as ``torch.optim.Adadelta`` computes it, as a
    differentiable transformation.

    With :math:`s = -1` when maximizing (else 1) and :math:`\lambda` the weight
    decay (L2, added to the gradient):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        v_t &= \rho\, v_{t-1} + (1 - \rho)\, g'^2 \\
        \Delta_t &= \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g' \\
        a_t &= \rho\, a_{t-1} + (1 - \rho)\, \Delta_t^2 \\
        u_t &= -\mathrm{lr}\, \Delta_t

    Args:
        rho: smoothing constant of both averages, in [0, 1].
        eps: added inside both square roots.
    """
    ...
