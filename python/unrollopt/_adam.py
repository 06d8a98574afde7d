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

    def direction(g, m, v, mean):
        w = v + eps_root * bc2
        q = root_of_mean_square(w, m, w, lambda up: mean(up) + up.squares(eps_root * bc2))
        return step_size * (m / (q / bc2.sqrt() + eps))

    return steps(grads, states, params, c, inplace, update_params, direction,
                 maximize=maximize, decoupled=c.op.startswith("adamw"))  # fmt: skip


def steps(
    grads, states, params, c: _step.Config, inplace: bool, update_params: bool, direction, *, maximize, decoupled
):
    """The Adam family's plain step: the decayed gradient g' (L2 into it unless
    ``decoupled``), the moments, the update ``direction(g', mu', nu', mean)``
    (minus lr * weight_decay * p when ``decoupled``), in place or not. With a
    third state (AMSGrad's nu_max) the direction takes max(nu_max, nu') instead
    of nu' (ties select nu_max, as the fused backward does). ``mean(up)``
    computes that mean of squares again from the scaled inputs (an ``Upscaled``),
    for ``root_of_mean_square``."""
    lr, beta1, beta2, weight_decay = c["lr"], c["beta1"], c["beta2"], c["weight_decay"]
    decay = len(params) > 0 and c.uses_params
    amsgrad = len(states) == 3
    updates, new_states = [], [[] for _ in states]
    for i, g in enumerate(grads):
        g = -g if maximize else g
        if decay and not decoupled:  # L2, into the gradient
            g = g + weight_decay * params[i]
        old_v, old_max = states[1][i], states[2][i] if amsgrad else None

        def mean(up, g=g, old_v=old_v, old_max=old_max):
            v_up = beta2 * up.squares(old_v) + (1 - beta2) * up.square(g)
            if not amsgrad:
                return v_up
            max_up = up.squares(old_max)
            return torch.where(max_up >= v_up, max_up, v_up)

        m, v = moments(g, states[0][i], old_v, beta1, beta2, inplace)
        w = v
        if amsgrad:
            w = torch.where(old_max >= v, old_max, v)
            w = old_max.copy_(w) if inplace else w
            new_states[2].append(w)
        u = direction(g, m, w, mean)
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


class Upscaled:
    """Inputs scaled by a power of two S where ``tiny`` is below the smallest
    normal number (0 elsewhere), for computing a mean of squares again, times
    S^2, where its terms underflowed (cpp/src/rules/rule.h's Upscaled: 2^96 for
    float32, computed in float32 for half types, 2^600 for float64)."""

    def __init__(self, tiny: torch.Tensor, compute: torch.dtype):
        self.under = tiny < torch.finfo(tiny.dtype).tiny
        self.compute = compute
        self.scale = 2.0**600 if compute == torch.float64 else 2.0**96

    def only(self, x):
        """x where recomputed, else 0 (nothing overflows in the other lanes,
        where an infinity times a zero cotangent would make a NaN)."""
        zero = torch.zeros((), dtype=self.compute, device=self.under.device)
        return torch.where(self.under, x, zero).to(self.compute)

    def square(self, x):
        """(S x)^2."""
        y = self.only(x) * self.scale
        return y * y

    def squares(self, s):
        """S^2 s for a mean of squares s, or a constant added to one."""
        return self.only(s) * self.scale * self.scale


def root_of_mean_square(w, live, tiny, mean):
    """sqrt(w) for a mean of squares w, with the derivative plain sqrt lacks
    (the plain path's copy of cpp/src/rules/rule.h's root_of_mean_square):

    - where ``live`` is 0 the update does not depend on w (it multiplies 0), so
      its derivative there is 0 (plain sqrt would give 0 * inf = NaN where
      w = 0, e.g. for a weight whose gradient is always 0);
    - in a differentiable step, where ``tiny`` (w, or the mean of squares it
      is computed from) is below the smallest normal number, squares may have
      underflowed (float32: g^2 for |g| < 1e-19, w = 0 where the true w is
      1e-47) and 1 / (2 sqrt(w)) is wrong or infinite: there the root is
      ``sqrt(mean(up)) / S``, recomputed from the inputs scaled by S.

    Elsewhere it is sqrt(w), the same bits."""
    if not torch.is_grad_enabled():  # nothing differentiates it
        return w.sqrt()
    dead = live == 0
    compute = torch.float64 if w.dtype == torch.float64 else torch.float32
    up = Upscaled(tiny, compute)
    if _may_look(w) and not bool(up.under.any()):  # the common case, in 2 passes instead of 20
        return torch.where(dead, w.detach().sqrt(), torch.where(dead, 1.0, w).sqrt())
    recompute = up.under & ~dead
    scaled = torch.where(recompute, mean(up), 1.0).sqrt() * (1 / up.scale)
    plain = torch.where(dead | recompute, 1.0, w).sqrt()
    return torch.where(dead, w.detach().sqrt(), torch.where(recompute, scaled.to(w.dtype), plain))


def _may_look(t: torch.Tensor) -> bool:
    """Whether a step may look at a value (a host sync): on the CPU, eagerly,
    outside torch.func's transforms. (On a GPU the sync would stall the
    stream; under vmap and torch.compile the control flow cannot depend on data.)"""
    return (
        t.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    )
