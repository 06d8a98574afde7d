"""RMSprop (Hinton, Srivastava and Swersky, 2012), as ``torch.optim.RMSprop``,
with optax's ``nesterov`` and ``initial_scale``. The step (fused and plain) is
``cpp/include/unrollopt/rules/rmsprop.h`` (four operators: centered or not, with
momentum or not; ``RMSpropOptions`` there says which the settings select, that
``nesterov`` requires a momentum, and that ``square_avg`` starts at
``initial_scale``)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


class RMSPropState(NamedTuple):
    """RMSprop's state: the running average of the squared gradient, of the
    gradient (centered only, else an empty tuple), the momentum buffer (with
    momentum only, else an empty tuple), all pytrees like the parameters, and the number of steps
    taken (a 0-d int64 tensor)."""

    square_avg: Params
    grad_avg: Params
    momentum_buffer: Params
    count: torch.Tensor


@optimizer(
    RMSPropState,
    class_name="RMSprop",
    spellings=("RMSProp",),
    torch_class="torch.optim.RMSprop",
    state_keys={"square_avg": "square_avg", "grad_avg": "grad_avg", "momentum_buffer": "momentum_buffer"},
    notes="""``nesterov`` and ``initial_scale`` are optax's additions. The
    step is counted (``torch.optim.RMSprop`` keeps it) though the update does
    not use it.""",
)
def rmsprop(
    lr=..., alpha=..., eps=..., weight_decay=..., momentum=..., centered=..., *, initial_scale=..., nesterov=...
) -> GradientTransformation:
    r"""RMSprop (Hinton, Srivastava and Swersky, 2012) as ``torch.optim.RMSprop``
    computes it, as a differentiable transformation.

    With :math:`s = -1` when maximizing (else 1) and :math:`\lambda` the weight
    decay (L2, added to the gradient):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        v_t &= \alpha\, v_{t-1} + (1 - \alpha)\, g'^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1 - \alpha)\, g' \quad\text{(centered only)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon \\
        b_t &= \mu\, b_{t-1} + g' / d_t, \quad u_t = -\mathrm{lr}\, b_t
            \quad\text{(with momentum; else } u_t = -\mathrm{lr}\, g' / d_t)

    and with ``nesterov`` (and momentum) :math:`u_t = -\mathrm{lr}\,(g' / d_t + \mu\, b_t)`,
    as optax's ``rmsprop(..., nesterov=True)``.

    The fused operator's backward is exact, and finite where :math:`g' = 0`
    and the square root's argument is 0 (the update does not depend on it there).

    Args:
        alpha: smoothing constant of the averages, in [0, 1].
        momentum: momentum factor :math:`\mu` (a tensor selects the momentum
            form even at 0, so that it can be learned).
        centered: normalize by the variance estimate :math:`v_t - \bar g_t^2`.
        initial_scale: the initial value of :math:`v` (``torch.optim.RMSprop``:
            0; optax and TensorFlow use 1 for some models).
        nesterov: Nesterov momentum (needs momentum; ``torch.optim.RMSprop``
            has no such option).
    """
    ...
