"""Adam's and AdamW's plain-PyTorch step (the fused one is ``cpp/src/rules/adam.h``):
they differ only in where the weight decay enters. Its pieces serve RAdam and NAdam too."""

from __future__ import annotations

import torch

from unrollopt import _hyperparameters, _step


def config(
    lr, betas, eps, weight_decay, eps_root, maximize, *, decoupled: bool = False, amsgrad: bool = False
) -> _step.Config:
    return _step.Config.of(
        ("adamw" if decoupled else "adam") + ("_amsgrad" if amsgrad else ""),
        hyper=hyper(lr, betas, weight_decay),
        options={
            "eps": _hyperparameters.check("eps", eps),
            "eps_root": _hyperparameters.check("eps_root", eps_root),
            "maximize": bool(maximize),
        },
    )


def hyper(lr, betas, weight_decay) -> dict:
    """The Adam family's hyperparameters by name, checked."""
    beta1, beta2 = _hyperparameters.check_betas(betas)
    return {
        "lr": _hyperparameters.check("lr", lr),
        "beta1": beta1,
        "beta2": beta2,
        "weight_decay": _hyperparameters.check("weight_decay", weight_decay),
    }


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, beta1, beta2, eps, eps_root, maximize = c.values("lr", "beta1", "beta2", "eps", "eps_root", "maximize")
    t = count.to(torch.float64)
    bc1 = 1 - beta1**t
    bc2 = 1 - beta2**t
    step_size = -lr / bc1

    def direction(g, m, v):
        return step_size * (m / (sqrt_where_live(v + eps_root * bc2, m) / bc2.sqrt() + eps))

    return steps(grads, states, params, c, inplace, update_params, direction,
                 maximize=maximize, decoupled=c.op.startswith("adamw"))  # fmt: skip


def steps(
    grads, states, params, c: _step.Config, inplace: bool, update_params: bool, direction, *, maximize, decoupled
):
    """The Adam family's plain step: the decayed gradient g' (L2 into it unless
    ``decoupled``), the moments, the update ``direction(g', mu', nu')`` (minus
    lr * weight_decay * p when ``decoupled``), in place or not. With a third
    state (AMSGrad's nu_max) the direction takes max(nu_max, nu') instead of
    nu' (ties select nu_max, as the fused backward does)."""
    lr, beta1, beta2, weight_decay = c["lr"], c["beta1"], c["beta2"], c["weight_decay"]
    decay = bool(params) and c.uses_params
    amsgrad = len(states) == 3
    updates, new_states = [], [[] for _ in states]
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if decay and not decoupled:  # L2, into the gradient
            g = g + weight_decay * params[i]
        m, v = moments(g, states[0][i], states[1][i], beta1, beta2, inplace)
        w = v
        if amsgrad:
            old = states[2][i]
            w = torch.where(old >= v, old, v)
            w = old.copy_(w) if inplace else w
            new_states[2].append(w)
        u = direction(g, m, w)
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


def sqrt_where_live(q, m):
    """sqrt(q), differentiated only where m != 0: where m = 0 the update is 0
    whatever q is, so its derivative there is 0. (Plain sqrt would give 0 * inf
    = NaN where q = 0, e.g. for a weight whose gradient is always 0.)"""
    dead = m == 0
    return torch.where(dead, q.detach().sqrt(), torch.where(dead, 1.0, q).sqrt())
