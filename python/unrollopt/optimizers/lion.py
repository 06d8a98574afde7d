"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"),
the sign of an interpolated momentum. The fused step is ``cpp/include/unrollopt/rules/lion.h``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from unrollopt import _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._optimizer import optimizer
from unrollopt._transformation import LearningRate
from unrollopt.base import GradientTransformation, Params


class ScaleByLionState(NamedTuple):
    """Lion's state: the momentum (a pytree like the parameters) and the number
    of steps taken (a 0-d int64 tensor)."""

    mu: Params
    count: torch.Tensor


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, weight_decay, maximize = c.values("lr", "beta1", "beta2", "weight_decay", "maximize")
    decay = len(params) > 0 and c.uses_params
    updates, mus = [], []
    for i, g in enumerate(grads):
        m = states[0][i]
        g = -g if maximize else g
        # torch.sign gives 0 at NaN: the NaN is kept, as the fused step keeps it,
        # without a derivative (sign' = 0 everywhere, as in the fused backward;
        # autograd's 0 * NaN still makes the derivatives NaN where g is NaN).
        interpolation = beta1 * m + (1 - beta1) * g
        nan = interpolation.isnan()
        u = -lr * torch.where(nan, interpolation.detach(), torch.sign(interpolation))
        if decay:
            u = u - lr * weight_decay * params[i]
        m = m.mul_(beta2).add_((1 - beta2) * g) if inplace else beta2 * m + (1 - beta2) * g
        updates.append(_step.finish(u, i, grads, params, inplace, update_params))
        mus.append(m)
    return updates, [mus]


@optimizer(
    ScaleByLionState,
    plain,
    class_name="Lion",
    state_keys={"mu": "exp_avg"},
    notes="``mask`` limits the weight decay as :class:`AdamW`'s does.",
)
def lion(
    lr: LearningRate = 1e-4,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.99),
    weight_decay: Hyperparameter = 0.0,
    *,
    mask: Any = None,
) -> GradientTransformation:
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
    agree exactly on finite inputs; where a gradient is NaN, autograd's
    0 * NaN makes the plain path's derivatives there NaN. Lion's steps have
    size lr in every coordinate: its lr is typically 3-10 times smaller than
    AdamW's and its weight decay as much larger.

    Args:
        betas: :math:`\beta_1` (the interpolation that is signed) and
            :math:`\beta_2` (the momentum's decay), each in [0, 1).
        weight_decay: decoupled weight decay coefficient :math:`\lambda`
            (unless it is 0, ``update`` needs ``params=``).
    """
    ...
