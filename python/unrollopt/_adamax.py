"""Adamax's plain-PyTorch step (the fused one is ``cpp/src/rules/adamax.h``)."""

from __future__ import annotations

import torch

from unrollopt import _adam, _hyperparameters, _step


def config(lr, betas, eps, weight_decay, maximize) -> _step.Config:
    return _step.Config.of(
        "adamax",
        hyper=_adam.hyper(lr, betas, weight_decay),
        options={"eps": _hyperparameters.check("eps", eps), "maximize": bool(maximize)},
    )


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, weight_decay, eps, maximize = c.values("lr", "beta1", "beta2", "weight_decay", "eps", "maximize")
    step_size = -lr / (1 - beta1 ** count.to(torch.float64))
    updates, mus, nus = [], [], []
    for i, g in enumerate(grads):
        m, v = states[0][i], states[1][i]
        g = -g if maximize else g
        if params and c.uses_params:
            g = g + weight_decay * params[i]
        new_v = torch.maximum(beta2 * v, g.abs() + eps)
        if inplace:
            m = m.mul_(beta1).add_((1 - beta1) * g)
            v = v.copy_(new_v)
        else:
            m = beta1 * m + (1 - beta1) * g
            v = new_v
        u = step_size * (m / v)
        updates.append(_step.finish(u, i, grads, params, inplace, update_params))
        mus.append(m)
        nus.append(v)
    return updates, [mus, nus]
