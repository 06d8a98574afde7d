"""NAdam's plain-PyTorch step (the fused one is ``cpp/src/rules/nadam.h``)."""

from __future__ import annotations

import torch

from unrollopt import _adam, _hyperparameters, _step


def config(lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize) -> _step.Config:
    return _step.Config.of(
        "nadam",
        # mu_product: set at each step (momentum_coefficient)
        hyper={**_adam.hyper(lr, betas, weight_decay), "mu_product": 0.0},
        options={
            "eps": _hyperparameters.check("eps", eps),
            "momentum_decay": _hyperparameters.check("momentum_decay", momentum_decay),
            "decoupled_weight_decay": bool(decoupled_weight_decay),
            "maximize": bool(maximize),
        },
    )


def momentum_coefficient(beta1, t, momentum_decay: float):
    """NAdam's mu_t = beta1 (1 - 0.96^(t psi) / 2) at step ``t``."""
    return beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, product = c.values("lr", "beta1", "beta2", "mu_product")
    eps, momentum_decay, decoupled, maximize = c.values("eps", "momentum_decay", "decoupled_weight_decay", "maximize")
    t = count.to(torch.float64)
    mu_t = momentum_coefficient(beta1, t, momentum_decay)
    mu_next = momentum_coefficient(beta1, t + 1, momentum_decay)
    grad_step = -lr * (1 - mu_t) / (1 - product)
    moment_step = -lr * mu_next / (1 - product * mu_next)
    sqrt_bc2 = (1 - beta2**t).sqrt()

    def direction(g, m, v, mean):
        n = grad_step * g + moment_step * m
        return n / (_adam.root_of_mean_square(v, n, v, mean) / sqrt_bc2 + eps)

    return _adam.steps(grads, states, params, c, inplace, update_params, direction,
                       maximize=maximize, decoupled=decoupled)  # fmt: skip
