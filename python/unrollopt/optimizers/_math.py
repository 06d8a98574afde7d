"""Math the plain steps share: the square root of a mean of squares with the
exact derivative (the plain path's copy of ``cpp/include/unrollopt/rules/rule.h``'s
``root_of_mean_square``)."""

from __future__ import annotations

import torch


class Upscaled:
    """Inputs scaled by a power of two S where ``tiny`` is below the smallest
    normal number (0 elsewhere), for computing a mean of squares again, times
    S^2, where its terms underflowed (cpp/include/unrollopt/rules/rule.h's Upscaled: 2^96 for
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
    (the plain path's copy of cpp/include/unrollopt/rules/rule.h's root_of_mean_square):

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
