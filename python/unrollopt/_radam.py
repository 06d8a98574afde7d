"""RAdam's plain-PyTorch step (the fused one is ``cpp/src/rules/radam.h``)."""

from __future__ import annotations

import torch

from unrollopt import _adam, _hyperparameters, _step


def config(lr, betas, eps, weight_decay, decoupled_weight_decay, maximize) -> _step.Config:
    return _step.Config.of(
        "radam",
        hyper=_adam.hyper(lr, betas, weight_decay),
        options={
            "eps": _hyperparameters.check("eps", eps),
            "decoupled_weight_decay": bool(decoupled_weight_decay),
            "maximize": bool(maximize),
        },
    )


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
    # values (as in cpp/src/rules/radam.h).
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
        return sgd * m + adaptive * (m / (_adam.root_of_mean_square(v, m, v, mean) + eps))

    return _adam.steps(grads, states, params, c, inplace, update_params, direction,
                       maximize=maximize, decoupled=decoupled)  # fmt: skip
