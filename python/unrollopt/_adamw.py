"""AdamW's plain-PyTorch step (the fused one is ``cpp/src/rules/adamw.h``)."""

from __future__ import annotations

import torch

from unrollopt import _fused, _hyperparameters


def config(lr, betas, eps, weight_decay, eps_root, maximize) -> _fused.Config:
    beta1, beta2 = _hyperparameters.check_betas(betas)
    return _fused.Config(
        op="adamw",
        state_names=("mu", "nu"),
        hyper_names=("lr", "beta1", "beta2", "weight_decay"),
        hyper=(
            _hyperparameters.check("lr", lr),
            beta1,
            beta2,
            _hyperparameters.check("weight_decay", weight_decay),
        ),
        options=(
            float(_hyperparameters.check("eps", eps)),
            float(_hyperparameters.check("eps_root", eps_root)),
            float(bool(maximize)),
        ),
    )


def plain(grads, states, params, count, c: _fused.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, weight_decay = c.hyper
    eps, eps_root, maximize = c.options
    t = count.to(torch.float64)
    bc1 = 1 - beta1**t
    bc2 = 1 - beta2**t
    step_size = -lr / bc1
    decay = params and c.uses_params
    updates, mus, nus = [], [], []
    for i, g in enumerate(grads):
        m, v = states[0][i], states[1][i]
        g = -g if maximize else g
        if inplace:
            m = m.mul_(beta1).add_((1 - beta1) * g)
            v = v.mul_(beta2).add_((1 - beta2) * g * g)
        else:
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
        u = step_size * (m / ((v + eps_root * bc2).sqrt() / bc2.sqrt() + eps))
        if decay:
            u = u - lr * weight_decay * params[i]
        updates.append(_fused.finish(u, i, grads, params, inplace, update_params))
        mus.append(m)
        nus.append(v)
    return updates, [mus, nus]
