"""Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for
Faster Optimizing Deep Models"), as the authors' implementation computes it:
Nesterov momentum from an average of gradient differences, and a proximal
weight decay. The step (fused and plain) is ``cpp/include/unrollopt/rules/adan.h``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params


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


@optimizer(
    AdanState,
    class_name="Adan",
    state_keys={"mu": "exp_avg", "delta": "exp_avg_diff", "nu": "exp_avg_sq", "prev_grad": "pre_grad"},
    notes="The state keys are those of the authors' implementation.",
)
def adan(lr=..., betas=..., eps=..., weight_decay=...) -> GradientTransformation:
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
