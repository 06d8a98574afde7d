"""Adadelta's plain-PyTorch step (the fused one is ``cpp/src/rules/adadelta.h``)."""

from __future__ import annotations

from unrollopt import _hyperparameters, _step


def config(lr, rho, eps, weight_decay, maximize) -> _step.Config:
    return _step.Config.of(
        "adadelta",
        hyper={
            "lr": _hyperparameters.check("lr", lr),
            "rho": _hyperparameters.check("rho", rho),
            "weight_decay": _hyperparameters.check("weight_decay", weight_decay),
        },
        options={"eps": _hyperparameters.check("eps", eps), "maximize": bool(maximize)},
    )


def plain(grads, states, params, count, c: _step.Config, inplace: bool, update_params: bool):
    lr, rho, weight_decay, eps, maximize = c.values("lr", "rho", "weight_decay", "eps", "maximize")
    updates, sqs, accs = [], [], []
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if params and c.uses_params:
            g = g + weight_decay * params[i]
        sq, acc = states[0][i], states[1][i]
        sq = sq.mul_(rho).add_((1 - rho) * g * g) if inplace else rho * sq + (1 - rho) * g * g
        delta = (acc + eps).sqrt() / (sq + eps).sqrt() * g
        acc = acc.mul_(rho).add_((1 - rho) * delta * delta) if inplace else rho * acc + (1 - rho) * delta * delta
        updates.append(_step.finish(-lr * delta, i, grads, params, inplace, update_params))
        sqs.append(sq)
        accs.append(acc)
    return updates, [sqs, accs]
