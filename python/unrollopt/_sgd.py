"""SGD's plain-PyTorch step (the fused one is ``cpp/src/rules/sgd.h``)."""

from __future__ import annotations

import torch

from unrollopt import _hyperparameters, _step


def config(lr, momentum, dampening, weight_decay, nesterov, maximize) -> _step.Config:
    lr = _hyperparameters.check("lr", lr)
    momentum = _hyperparameters.check("momentum", momentum)
    dampening = _hyperparameters.check("dampening", dampening)
    weight_decay = _hyperparameters.check("weight_decay", weight_decay)
    with_momentum = not _hyperparameters.is_zero(momentum)
    if nesterov and (not with_momentum or not _hyperparameters.is_zero(dampening)):
        raise ValueError("nesterov=True requires a momentum and zero dampening")
    options = {"maximize": bool(maximize), "nesterov": bool(nesterov)}
    if not with_momentum:
        return _step.Config.of("sgd", {"lr": lr, "weight_decay": weight_decay}, options)
    hyper = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
    return _step.Config.of("sgd_momentum", hyper, options)


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    maximize, nesterov = c.values("maximize", "nesterov")
    # The first step starts the buffer at g; a step count batched by vmap, or
    # traced by torch.compile (reading it would break the graph), is a tensor choice.
    traced = _hyperparameters.is_batched(count) or torch.compiler.is_compiling()
    first = count == 1 if traced else int(count) == 1
    updates, buffers = [], []
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if params and c.uses_params:
            g = g + c["weight_decay"] * params[i]
        d = g
        if states:  # with momentum
            momentum, buf = c["momentum"], states[0][i]
            if isinstance(first, torch.Tensor):
                buf = torch.where(first, g, momentum * buf + (1 - c["dampening"]) * g)
                buf = states[0][i].copy_(buf) if inplace else buf
            elif first:
                buf = buf.copy_(g) if inplace else g.clone()
            elif inplace:
                buf = buf.mul_(momentum).add_((1 - c["dampening"]) * g)
            else:
                buf = momentum * buf + (1 - c["dampening"]) * g
            d = g + momentum * buf if nesterov else buf
            buffers.append(buf)
        updates.append(_step.finish(-c["lr"] * d, i, grads, params, inplace, update_params))
    return updates, [buffers] if states else []
