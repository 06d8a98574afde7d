"""Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for
Faster Optimizing Deep Models"), as the authors' implementation computes it:
Nesterov momentum from an average of gradient differences, and a proximal
weight decay. The fused step is ``cpp/include/unrollopt/rules/adan.h``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt import _hyperparameters, _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._optimizer import optimizer
from unrollopt._transformation import LearningRate
from unrollopt.base import GradientTransformation, Params
from unrollopt.optimizers._math import root_of_mean_square


class AdanState(NamedTuple):
    """Adan's state, pytrees like the parameters: the averages of the gradient
    (``mu``), of its difference from the previous one (``delta``) and of the
    squared Nesterov gradient (``nu``), and the previous gradient
    (``prev_grad``); and the number of steps taken (a 0-d int64 tensor)."""

    mu: Params
    delta: Params
    nu: Params
    prev_grad: Params
    count: torch.Tensor


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, b1, b2, b3, wd, eps, maximize = c.values("lr", "beta1", "beta2", "beta3", "weight_decay", "eps", "maximize")
    t = count.to(torch.float64)
    # The first step has no previous gradient: its difference is 0. (A step
    # count batched by vmap, or traced by torch.compile, is a tensor choice.)
    traced = _hyperparameters.is_batched(count) or torch.compiler.is_compiling()
    diff = (count > 1).to(torch.float64) if traced else float(int(count) > 1)
    shrink = 1 / (1 + lr * wd)
    mu_scale = -lr * shrink / (1 - b1**t)
    delta_scale = -lr * shrink * b2 / (1 - b2**t)
    sqrt_bc3 = (1 - b3**t).sqrt()
    decay = len(params) > 0 and c.uses_params
    updates, new_states = [], [[], [], [], []]
    for i, g in enumerate(grads):
        g = -g if maximize else g
        m, delta, nu, prev = (s[i] for s in states)
        d = diff * (g - prev)
        z = g + b2 * d

        def mean(up, z=z, nu=nu):
            return b3 * up.squares(nu) + (1 - b3) * up.square(z)

        if inplace:
            m, delta = m.mul_(b1).add_((1 - b1) * g), delta.mul_(b2).add_((1 - b2) * d)
            nu, prev = nu.mul_(b3).add_((1 - b3) * z * z), prev.copy_(g)
        else:
            m, delta, nu, prev = b1 * m + (1 - b1) * g, b2 * delta + (1 - b2) * d, b3 * nu + (1 - b3) * z * z, g
        n = mu_scale * m + delta_scale * delta
        u = n / (root_of_mean_square(nu, n, nu, mean) / sqrt_bc3 + eps)
        if decay:
            u = u - lr * wd * shrink * params[i]
        for k, s in enumerate((m, delta, nu, prev)):
            new_states[k].append(s)
        updates.append(_step.finish(u, i, grads, params, inplace, update_params))
    return updates, new_states


@optimizer(
    AdanState,
    plain,
    class_name="Adan",
    state_keys={"mu": "exp_avg", "delta": "exp_avg_diff", "nu": "exp_avg_sq", "prev_grad": "pre_grad"},
    notes="The state keys are those of the authors' implementation.",
)
def adan(
    lr: LearningRate = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter, Hyperparameter] = (0.98, 0.92, 0.99),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
) -> GradientTransformation:
    r"""Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for
    Faster Optimizing Deep Models") as the authors' implementation computes it,
    as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1),
    :math:`g' = s\,g` and :math:`\lambda` the weight decay:

    .. math::

        d_t &= g'_t - g'_{t-1} \quad (d_1 = 0) \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g'_t \\
        \delta_t &= \beta_2 \delta_{t-1} + (1 - \beta_2)\, d_t \\
        \nu_t &= \beta_3 \nu_{t-1} + (1 - \beta_3)\, (g'_t + \beta_2 d_t)^2 \\
        \theta_t &= \frac{1}{1 + \mathrm{lr}\,\lambda} \left( \theta_{t-1} - \mathrm{lr}\,
            \frac{\mu_t / (1 - \beta_1^t) + \beta_2\, \delta_t / (1 - \beta_2^t)}
                 {\sqrt{\nu_t / (1 - \beta_3^t)} + \epsilon} \right)

    and the update is :math:`u_t = \theta_t - \theta_{t-1}`. The state keeps
    :math:`g'_t` for the next difference. The fused operator's backward is
    exact, and finite where the numerator is 0 (the update does not depend on
    :math:`\nu_t` there).

    Args:
        betas: :math:`(\beta_1, \beta_2, \beta_3)`, the decay rates of the
            averages of the gradient, of the gradient difference and of the
            squares, each in [0, 1) (the authors' defaults).
        weight_decay: proximal weight decay coefficient :math:`\lambda`: the
            parameters are divided by :math:`1 + \mathrm{lr}\,\lambda` (unless
            it is 0, ``update`` needs ``params=``).
    """
    ...
