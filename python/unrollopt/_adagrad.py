"""Adagrad's plain-PyTorch step (the fused one is ``cpp/src/rules/adagrad.h``)."""

from __future__ import annotations

import torch

from unrollopt import _adam, _hyperparameters, _step


def config(lr, lr_decay, weight_decay, eps, maximize) -> _step.Config:
    return _step.Config.of(
        "adagrad",
        hyper={
            "lr": _hyperparameters.check("lr", lr),
            "lr_decay": _hyperparameters.check("lr_decay", lr_decay),
            "weight_decay": _hyperparameters.check("weight_decay", weight_decay),
        },
        options={"eps": _hyperparameters.check("eps", eps), "maximize": bool(maximize)},
    )


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, lr_decay, weight_decay, eps, maximize = c.values("lr", "lr_decay", "weight_decay", "eps", "maximize")
    clr = lr / (1 + (count.to(torch.float64) - 1) * lr_decay)
    updates, sums = [], []
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if params and c.uses_params:
            g = g + weight_decay * params[i]
        old = states[0][i]
        s = old.add_(g * g) if inplace else old + g * g
        q = _adam.root_of_mean_square(s, g, s, lambda up, g=g, old=old: up.squares(old) + up.square(g))
        u = -clr * (g / (q + eps))
        updates.append(_step.finish(u, i, grads, params, inplace, update_params))
        sums.append(s)
    return updates, [sums]
