"""RMSprop's plain-PyTorch step (the fused one is ``cpp/src/rules/rmsprop.h``)."""

from __future__ import annotations

from unrollopt import _adam, _hyperparameters, _step


def config(lr, alpha, eps, weight_decay, momentum, centered, maximize, nesterov=False) -> _step.Config:
    lr = _hyperparameters.check("lr", lr)
    alpha = _hyperparameters.check("alpha", alpha)
    eps = float(_hyperparameters.check("eps", eps))
    weight_decay = _hyperparameters.check("weight_decay", weight_decay)
    momentum = _hyperparameters.check("momentum", momentum)
    with_momentum = not _hyperparameters.is_zero(momentum)
    if nesterov and not with_momentum:
        raise ValueError("nesterov=True needs a momentum (got momentum=0)")
    op = "rmsprop" + ("_centered" if centered else "") + ("_momentum" if with_momentum else "")
    hyper = {"lr": lr, "alpha": alpha, "weight_decay": weight_decay}
    if with_momentum:
        hyper["momentum"] = momentum
    return _step.Config.of(op, hyper, {"eps": eps, "nesterov": bool(nesterov), "maximize": bool(maximize)})


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    eps, nesterov, maximize = c.values("eps", "nesterov", "maximize")
    lr, alpha = c["lr"], c["alpha"]
    centered = "grad_avg" in c.state_names
    momentum = c["momentum"] if "momentum_buffer" in c.state_names else None
    updates = []
    new_states = [[] for _ in c.state_names]
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if params and c.uses_params:
            g = g + c["weight_decay"] * params[i]
        k = 0
        old_sq, old_ga = states[0][i], states[1][i] if centered else None

        def mean(up, g=g, old_sq=old_sq, old_ga=old_ga):
            w_up = alpha * up.squares(old_sq) + (1 - alpha) * up.square(g)
            return w_up - up.square(alpha * old_ga + (1 - alpha) * g) if centered else w_up

        sq = old_sq.mul_(alpha).add_((1 - alpha) * g * g) if inplace else alpha * old_sq + (1 - alpha) * g * g
        new_states[0].append(sq)
        w = sq
        if centered:
            k += 1
            ga = old_ga.mul_(alpha).add_((1 - alpha) * g) if inplace else alpha * old_ga + (1 - alpha) * g
            new_states[k].append(ga)
            w = sq - ga * ga
        # Recomputed where the mean of squares s' underflowed (w <= s').
        step = g / (_adam.root_of_mean_square(w, g, sq, mean) + eps)
        if momentum is not None:
            k += 1
            buf = states[k][i]
            ratio = step
            step = buf.mul_(momentum).add_(ratio) if inplace else momentum * buf + ratio
            new_states[k].append(step)
            if nesterov:
                step = ratio + momentum * step
        updates.append(_step.finish(-lr * step, i, grads, params, inplace, update_params))
    return updates, new_states
