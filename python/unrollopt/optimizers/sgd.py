"""Stochastic gradient descent with ``torch.optim.SGD``'s momentum. The step (fused
and plain) is ``cpp/include/unrollopt/rules/sgd.h`` (two operators: with momentum or
without; ``SgdOptions`` there says which the settings select, and that
``nesterov`` requires a momentum and no dampening)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


class SgdState(NamedTuple):
    """SGD's state: the momentum buffers (a pytree like the parameters, or an
    empty tuple without momentum) and the number of steps taken (a 0-d int64 tensor)."""

    momentum_buffer: Params
    count: torch.Tensor


@optimizer(
    SgdState,
    class_name="SGD",
    torch_class="torch.optim.SGD",
    state_keys={"momentum_buffer": "momentum_buffer"},
    counts_steps=False,
)
def sgd(lr=..., momentum=..., dampening=..., weight_decay=..., nesterov=...) -> GradientTransformation:
    r"""Stochastic gradient descent, with ``torch.optim.SGD``'s momentum, as a
    differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing and
    :math:`\lambda` the weight decay:

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        b_t &= g' \text{ if } t = 1 \text{ else } \mu\, b_{t-1} + (1 - \tau)\, g' \\
        u_t &= -\mathrm{lr}\,(g' + \mu\, b_t) \text{ (Nesterov) or } -\mathrm{lr}\, b_t

    Without momentum (:math:`\mu = 0`) :math:`u_t = -\mathrm{lr}\, g'` and the
    state holds no buffer.

    Args:
        momentum: momentum factor :math:`\mu` (a tensor selects the momentum form
            even at 0, so that it can be learned).
        dampening: dampening :math:`\tau` of the momentum.
        nesterov: Nesterov momentum (needs momentum and zero dampening).
    """
    ...
