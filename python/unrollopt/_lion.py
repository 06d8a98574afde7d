"""Lion's plain-PyTorch step (the fused one is ``cpp/src/rules/lion.h``)."""

from __future__ import annotations

import torch

from unrollopt import _adam, _step


def config(lr, betas, weight_decay, maximize) -> _step.Config:
    return _step.Config.of("lion", hyper=_adam.hyper(lr, betas, weight_decay), options={"maximize": bool(maximize)})


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, weight_decay, maximize = c.values("lr", "beta1", "beta2", "weight_decay", "maximize")
    decay = len(params) > 0 and c.uses_params
    updates, mus = [], []
    for i, g in enumerate(grads):
        m = states[0][i]
        g = -g if maximize else g
        # torch.sign gives 0 at NaN: the NaN is kept, as the fused step keeps it,
        # without a derivative (sign' = 0 everywhere, as in the fused backward;
        # autograd's 0 * NaN still makes the derivatives NaN where g is NaN).
        interpolation = beta1 * m + (1 - beta1) * g
        nan = interpolation.isnan()
        u = -lr * torch.where(nan, interpolation.detach(), torch.sign(interpolation))
        if decay:
            u = u - lr * weight_decay * params[i]
        m = m.mul_(beta2).add_((1 - beta2) * g) if inplace else beta2 * m + (1 - beta2) * g
        updates.append(_step.finish(u, i, grads, params, inplace, update_params))
        mus.append(m)
    return updates, [mus]
