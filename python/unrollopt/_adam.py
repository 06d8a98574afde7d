"""Adam's step over lists of tensors, shared by :func:`unrollopt.adam` and
:class:`unrollopt.Adam`: the plain-PyTorch path and the fused operator compute the
same function (``cpp/src/adam_math.h`` has the equations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from unrollopt import _C, _hyperparameters
from unrollopt._hyperparameters import Hyperparameter

Tensors = Sequence[torch.Tensor]


@dataclass(frozen=True)
class AdamHyperparameters:
    lr: Hyperparameter
    beta1: Hyperparameter
    beta2: Hyperparameter
    eps: float
    eps_root: float
    weight_decay: Hyperparameter
    maximize: bool
    # The 0-d tensors the fused operator takes, made once.
    tensors: tuple[torch.Tensor, ...] = field(init=False, repr=False, compare=False)

    @staticmethod
    def checked(lr, betas, eps, weight_decay, eps_root, maximize) -> "AdamHyperparameters":
        beta1, beta2 = _hyperparameters.check_betas(betas)
        return AdamHyperparameters(
            lr=_hyperparameters.check("lr", lr),
            beta1=beta1,
            beta2=beta2,
            eps=float(_hyperparameters.check("eps", eps)),
            eps_root=float(_hyperparameters.check("eps_root", eps_root)),
            weight_decay=_hyperparameters.check("weight_decay", weight_decay),
            maximize=bool(maximize),
        )

    def __post_init__(self) -> None:
        as_tensor = _hyperparameters.as_tensor
        tensors = tuple(as_tensor(x) for x in (self.lr, self.beta1, self.beta2, self.weight_decay))
        object.__setattr__(self, "tensors", tensors)

    @property
    def uses_params(self) -> bool:
        return not _hyperparameters.is_zero(self.weight_decay)


def check_inplace_allowed(what: str, *lists: Tensors, hp: Optional[AdamHyperparameters] = None) -> None:
    """An in-place step cannot carry gradients: refuse it (before touching
    anything) when autograd would need them."""
    if not torch.is_grad_enabled():
        return
    tensors = [t for ts in lists for t in ts]
    if hp is not None:
        tensors += [t for t in hp.tensors]
    if any(t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{what}(..., inplace=True) would overwrite tensors that autograd needs (an input "
            "requires grad). Inside a differentiable inner loop pass inplace=False; for a plain "
            "optimizer step run under torch.no_grad()."
        )


def check_tensors(op: str, grads: Tensors, mus: Tensors, nus: Tensors, params: Tensors) -> None:
    """TypeError for anything in the lists that is not a tensor."""
    for name, ts in (("grads", grads), ("mus", mus), ("nus", nus), ("params", params)):
        for i, t in enumerate(ts):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"unrollopt.{op}: {name}[{i}] must be a tensor, got {type(t).__name__}")


def check_lists(
    op: str, grads: Tensors, mus: Tensors, nus: Tensors, params: Tensors, *, written: dict[str, Tensors]
) -> None:
    """The fused operator's own checks (dtype, shape, device, counts, and that the
    tensors it overwrites can be written), for the plain path."""
    check_tensors(op, grads, mus, nus, params)
    _C.check_parameter_lists(op, list(grads), list(mus), list(nus), list(params))
    for name, ts in written.items():
        _C.check_writable(op, name, list(ts))


def step(
    grads: Tensors,
    mus: Tensors,
    nus: Tensors,
    params: Tensors,
    count: torch.Tensor,
    hp: AdamHyperparameters,
    *,
    fused: bool,
    inplace: bool,
    update_params: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One Adam step; ``count`` is the step number after incrementing.

    Out of place (``inplace=False``) it returns new ``(updates, mus, nus)``. In
    place it overwrites ``mus`` and ``nus``, and writes the updates into
    ``grads`` or, with ``update_params``, adds them to ``params``; it returns the
    overwritten lists. ``params`` may be empty when weight decay is 0.
    """
    if fused:
        check_tensors("adam", grads, mus, nus, params)  # the operator's own checks do the rest
        lr, beta1, beta2, weight_decay = hp.tensors
        if inplace:
            torch.ops.unrollopt.adam_(
                params, grads, mus, nus, count, lr, beta1, beta2, weight_decay,
                hp.eps, hp.eps_root, hp.maximize, update_params,
            )  # fmt: skip
            return list(params if update_params else grads), list(mus), list(nus)
        return torch.ops.unrollopt.adam(
            grads, mus, nus, params, count, lr, beta1, beta2, weight_decay,
            hp.eps, hp.eps_root, hp.maximize,
        )  # fmt: skip

    written = {}
    if inplace:
        written = {"params": params} if update_params else {"grads": grads}
        written.update(mus=mus, nus=nus)
    check_lists("adam", grads, mus, nus, params, written=written)
    t = count.to(torch.float64)
    bc1 = 1 - hp.beta1**t
    bc2 = 1 - hp.beta2**t
    step_size = -hp.lr / bc1
    updates, new_mus, new_nus = [], [], []
    for i, g in enumerate(grads):
        m, v = mus[i], nus[i]
        g = -g if hp.maximize else g
        if params and hp.uses_params:
            g = g + hp.weight_decay * params[i]
        if inplace:
            m = m.mul_(hp.beta1).add_((1 - hp.beta1) * g)
            v = v.mul_(hp.beta2).add_((1 - hp.beta2) * g * g)
        else:
            m = hp.beta1 * m + (1 - hp.beta1) * g
            v = hp.beta2 * v + (1 - hp.beta2) * g * g
        u = step_size * (m / ((v + hp.eps_root * bc2).sqrt() / bc2.sqrt() + hp.eps))
        if inplace:
            u = params[i].add_(u) if update_params else grads[i].copy_(u)
        updates.append(u)
        new_mus.append(m)
        new_nus.append(v)
    return updates, new_mus, new_nus
