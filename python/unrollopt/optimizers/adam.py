"""Adam (Kingma and Ba, 2015) and AdamW (Loshchilov and Hutter, 2019): they
differ only in where the weight decay enters. The fused step is
``cpp/include/unrollopt/rules/adam.h``; the plain step's pieces serve RAdam and NAdam too."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from unrollopt import _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._optimizer import optimizer
from unrollopt._transformation import LearningRate
from unrollopt.base import GradientTransformation, Params
from unrollopt.optimizers._math import root_of_mean_square


class ScaleByAdamState(NamedTuple):
    """The state of Adam, AdamW, Adamax and RAdam: the moment estimates (pytrees like
    the parameters; for Adamax ``nu`` is the infinity norm), the number of
    steps taken (a 0-d int64 tensor) and, with AMSGrad, the running maximum of
    ``nu`` (else an empty tuple)."""

    mu: Params
    nu: Params
    count: torch.Tensor
    nu_max: Params = ()


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, eps, eps_root, maximize = c.values("lr", "beta1", "beta2", "eps", "eps_root", "maximize")
    t = count.to(torch.float64)
    bc1 = 1 - beta1**t
    bc2 = 1 - beta2**t
    step_size = -lr / bc1

    def direction(g, m, v, mean):
        w = v + eps_root * bc2
        q = root_of_mean_square(w, m, w, lambda up: mean(up) + up.squares(eps_root * bc2))
        return step_size * (m / (q / bc2.sqrt() + eps))

    return steps(grads, states, params, c, inplace, update_params, direction,
                 maximize=maximize, decoupled=c.op.startswith("adamw"))  # fmt: skip


def steps(
    grads, states, params, c: _step.Config, inplace: bool, update_params: bool, direction, *, maximize, decoupled
):
    """The Adam family's plain step: the decayed gradient g' (L2 into it unless
    ``decoupled``), the moments, the update ``direction(g', mu', nu', mean)``
    (minus lr * weight_decay * p when ``decoupled``), in place or not. With a
    third state (AMSGrad's nu_max) the direction takes max(nu_max, nu') instead
    of nu' (ties select nu_max, as the fused backward does). ``mean(up)``
    computes that mean of squares again from the scaled inputs (an ``Upscaled``),
    for ``root_of_mean_square``."""
    lr, beta1, beta2, weight_decay = c["lr"], c["beta1"], c["beta2"], c["weight_decay"]
    decay = len(params) > 0 and c.uses_params
    amsgrad = len(states) == 3
    updates, new_states = [], [[] for _ in states]
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if decay and not decoupled:  # L2, into the gradient
            g = g + weight_decay * params[i]
        old_v, old_max = states[1][i], states[2][i] if amsgrad else None

        def mean(up, g=g, old_v=old_v, old_max=old_max):
            v_up = beta2 * up.squares(old_v) + (1 - beta2) * up.square(g)
            if not amsgrad:
                return v_up
            max_up = up.squares(old_max)
            return torch.where(max_up >= v_up, max_up, v_up)

        m, v = moments(g, states[0][i], old_v, beta1, beta2, inplace)
        w = v
        if amsgrad:
            w = torch.where(old_max >= v, old_max, v)
            w = old_max.copy_(w) if inplace else w
            new_states[2].append(w)
        u = direction(g, m, w, mean)
        if decay and decoupled:  # decoupled, into the update
            u = u - lr * weight_decay * params[i]
        updates.append(_step.finish(u, i, grads, params, inplace, update_params))
        new_states[0].append(m)
        new_states[1].append(v)
    return updates, new_states


def moments(g, m, v, beta1, beta2, inplace: bool):
    """Adam's moment estimates after the (decayed) gradient ``g``: in place or new."""
    if inplace:
        return m.mul_(beta1).add_((1 - beta1) * g), v.mul_(beta2).add_((1 - beta2) * g * g)
    return beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g


#: torch.optim.Adam's and AdamW's state keys.
STATE_KEYS = {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"}


@optimizer(
    ScaleByAdamState,
    plain,
    class_name="Adam",
    torch_class="torch.optim.Adam",
    state_keys=STATE_KEYS,
    positional=("amsgrad",),
    notes="``eps_root`` is the one addition.",
)
def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    *,
    eps_root: float = 0.0,
    amsgrad: bool = False,
) -> GradientTransformation:
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
    plain,
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
    lr: LearningRate = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 1e-2,
    *,
    eps_root: float = 0.0,
    amsgrad: bool = False,
    mask: Any = None,
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
