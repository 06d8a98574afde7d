"""RAdam (Liu et al., 2020), Adam with a rectified adaptive step. The fused
step is ``cpp/include/unrollopt/rules/radam.h``."""

from __future__ import annotations

import torch

from unrollopt import _hyperparameters, _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._optimizer import optimizer
from unrollopt._transformation import LearningRate
from unrollopt.base import GradientTransformation
from unrollopt.optimizers import adam
from unrollopt.optimizers._math import root_of_mean_square


def _select(cond, a, b):
    """a where cond else b: a float64 tensor choice (no host sync), or a Python one."""
    if isinstance(cond, torch.Tensor):
        return torch.where(cond, torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))
    return a if cond else b


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, eps, decoupled, maximize = c.values(
        "lr", "beta1", "beta2", "eps", "decoupled_weight_decay", "maximize"
    )
    # rho_t cancels (rho_inf - 2 t beta2^t / bc2): with a number beta2 it is
    # computed in Python floats as torch.optim.RAdam does (count is on the CPU),
    # so that both round alike; with a tensor beta2 (or a step count batched by
    # vmap, or traced by torch.compile), in tensors.
    tensors = isinstance(beta2, torch.Tensor) or _hyperparameters.is_batched(count) or torch.compiler.is_compiling()
    t = count.to(torch.float64) if tensors else float(count)
    bc2 = 1 - beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / bc2
    # The rectified or the plain-momentum step; the unused branch gets harmless
    # values (as in cpp/include/unrollopt/rules/radam.h).
    rectified = rho_t > 5
    if isinstance(rectified, torch.Tensor) or rectified:  # (rho_inf may be 4 where not rectified)
        arg = _select(rectified, (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 1.0)
    else:
        arg = 1.0
    step_size = -lr / (1 - beta1**t)
    adaptive = _select(rectified, step_size * (arg * bc2) ** 0.5, 0.0)
    sgd = _select(rectified, 0.0, step_size)
    eps = _select(rectified, eps, 1.0)

    def direction(g, m, v, mean):
        return sgd * m + adaptive * (m / (root_of_mean_square(v, m, v, mean) + eps))

    return adam.steps(grads, states, params, c, inplace, update_params, direction,
                      maximize=maximize, decoupled=decoupled)  # fmt: skip


@optimizer(
    adam.ScaleByAdamState,
    plain,
    class_name="RAdam",
    torch_class="torch.optim.RAdam",
    state_keys=adam.STATE_KEYS,
    positional=("decoupled_weight_decay",),
)
def radam(
    lr: LearningRate = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    *,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    r"""RAdam (Liu et al., 2020), Adam with a rectified adaptive step, as
    ``torch.optim.RAdam`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1),
    :math:`\lambda` the weight decay (L2, added to the gradient, unless
    decoupled), :math:`\rho_\infty = 2 / (1 - \beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)`:

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g'^2 \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        u_t &= -\frac{\mathrm{lr}}{1 - \beta_1^t}\, r_t \sqrt{1 - \beta_2^t}\,
               \frac{\mu_t}{\sqrt{\nu_t} + \epsilon} \text{ if } \rho_t > 5,
               \text{ else } -\frac{\mathrm{lr}}{1 - \beta_1^t}\, \mu_t

    With ``decoupled_weight_decay`` the decay is :math:`-\mathrm{lr}\,\lambda\,\theta`,
    added to :math:`u_t` instead (AdamW's). The branch is chosen per step on the
    device, without a host synchronisation.

    Args:
        weight_decay: weight decay coefficient (needs ``params=`` in ``update``).
        decoupled_weight_decay: decay the parameters as AdamW does.
    """
    ...
