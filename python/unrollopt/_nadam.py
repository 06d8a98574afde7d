"""NAdam's plain-PyTorch step (the fused one is ``cpp/src/rules/nadam.h``)."""

from __future__ import annotations

import torch

from unrollopt import _adam, _fused, _hyperparameters


def config(lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize) -> _fused.Config:
    beta1, beta2 = _hyperparameters.check_betas(betas)
    return _fused.Config(
        op="nadam",
        state_names=("mu", "nu"),
        hyper_names=("lr", "beta1", "beta2", "mu_product", "weight_decay"),
        hyper=(
            _hyperparameters.check("lr", lr),
            beta1,
            beta2,
            0.0,  # set each step: see momentum_coefficient
            _hyperparameters.check("weight_decay", weight_decay),
        ),
        options=(
            float(_hyperparameters.check("eps", eps)),
            float(_hyperparameters.check("momentum_decay", momentum_decay)),
            float(bool(decoupled_weight_decay)),
            float(bool(maximize)),
        ),
    )


def momentum_coefficient(beta1, t, momentum_decay: float):
    """NAdam's mu_t = beta1 (1 - 0.96^(t psi) / 2) at step ``t``."""
    return beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))


def plain(grads, states, params, count, c: _fused.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, product, weight_decay = c.hyper
    eps, momentum_decay, decoupled, maximize = c.options
    t = count.to(torch.float64)
    mu_t = momentum_coefficient(beta1, t, momentum_decay)
    mu_next = momentum_coefficient(beta1, t + 1, momentum_decay)
    grad_step = -lr * (1 - mu_t) / (1 - product)
    moment_step = -lr * mu_next / (1 - product * mu_next)
    sqrt_bc2 = (1 - beta2**t).sqrt()
    decay = bool(params) and c.uses_params
    updates, mus, nus = [], [], []
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if decay and not decoupled:
            g = g + weight_decay * params[i]
        m, v = _adam.moments(g, states[0][i], states[1][i], beta1, beta2, inplace)
        n = grad_step * g + moment_step * m
        u = n / (_adam.sqrt_where_live(v, n) / sqrt_bc2 + eps)
        if decay and decoupled:
            u = u - lr * weight_decay * params[i]
        updates.append(_fused.finish(u, i, grads, params, inplace, update_params))
        mus.append(m)
        nus.append(v)
    return updates, [mus, nus]
