"""Applying updates to parameters."""

from __future__ import annotations

import torch

from unrollopt import _pytree
from unrollopt.base import Params, Updates

__all__ = ["apply_updates"]


def apply_updates(params: Params, updates: Updates, *, inplace: bool = True) -> Params:
    """Returns ``params + updates``, leaf by leaf (``None`` updates leave a leaf as is).

    ``inplace=False`` makes new tensors: this is the differentiable form, for an
    unrolled inner loop. ``inplace=True`` adds into the parameters, as an
    optimizer step does; it raises (telling you to pass ``inplace=False``)
    rather than silently drop a gradient when an update requires grad or a
    parameter is itself the result of a differentiable step.
    """
    leaves, spec = _pytree.flatten(params)
    ups = _pytree.flatten_like(updates, spec, "updates", "the params")
    pairs = [(p, u) for p, u in zip(leaves, ups) if u is not None and p is not None]
    for p, u in pairs:
        if not isinstance(p, torch.Tensor) or not isinstance(u, torch.Tensor):
            raise TypeError("params and updates must be pytrees of tensors")
    if not inplace:
        return _pytree.unflatten([p if u is None or p is None else p + u for p, u in zip(leaves, ups)], spec)
    if torch.is_grad_enabled() and any(
        u.requires_grad or (p.requires_grad and p.grad_fn is not None) for p, u in pairs
    ):
        raise RuntimeError(
            "apply_updates(..., inplace=True) would lose the gradient through these updates "
            "(an update requires grad, or a parameter is the result of a differentiable step). "
            "Inside a differentiable inner loop use params = apply_updates(params, updates, "
            "inplace=False)."
        )
    with torch.no_grad():
        for p, u in pairs:
            p.add_(u)
    return params
