"""Stochastic gradient descent with ``torch.optim.SGD``'s momentum. The fused
step is ``cpp/include/unrollopt/rules/sgd.h`` (two operators: with momentum or
without; ``SgdOptions`` there says which the settings select, and that
``nesterov`` requires a momentum and no dampening)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt import _hyperparameters, _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._optimizer import optimizer
from unrollopt._transformation import LearningRate
from unrollopt.base import GradientTransformation, Params


class SgdState(NamedTuple):
    """SGD's state: the momentum buffers (a pytree like the parameters, or an
    empty tuple without momentum) and the number of steps taken (a 0-d int64 tensor)."""

    momentum_buffer: Params
    count: torch.Tensor


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    maximize, nesterov = c.values("maximize", "nesterov")
    # The first step starts the buffer at g; a step count batched by vmap, or
    # traced by torch.compile (reading it would break the graph), is a tensor choice.
    traced = _hyperparameters.is_batched(count) or torch.compiler.is_compiling()
    first = count == 1 if traced else int(count) == 1
    updates, buffers = [], []
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if params and c.uses_params:
            g = g + c["weight_decay"] * params[i]
        d = g
        if states:  # with momentum
            momentum, buf = c["momentum"], states[0][i]
            if isinstance(first, torch.Tensor):
                buf = torch.where(first, g, momentum * buf + (1 - c["dampening"]) * g)
                buf = states[0][i].copy_(buf) if inplace else buf
            elif first:
                buf = buf.copy_(g) if inplace else g.clone()
            elif inplace:
                buf = buf.mul_(momentum).add_((1 - c["dampening"]) * g)
            else:
                buf = momentum * buf + (1 - c["dampening"]) * g
            d = g + momentum * buf if nesterov else buf
            buffers.append(buf)
        updates.append(_step.finish(-c["lr"] * d, i, grads, params, inplace, update_params))
    return updates, [buffers] if states else []


@optimizer(
    SgdState,
    plain,
    class_name="SGD",
    torch_class="torch.optim.SGD",
    state_keys={"momentum_buffer": "momentum_buffer"},
    counts_steps=False,
)
def sgd(
    lr: LearningRate = 1e-3,
    momentum: Hyperparameter = 0.0,
    dampening: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    nesterov: bool = False,
) -> GradientTransformation:
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
