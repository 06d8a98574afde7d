"""What Inductor (torch.compile's default compiler) gets of a differentiable
fused step: the decompositions of the operators. Each ``unrollopt.NAME`` and
``NAME_backward`` has a CompositeImplicitAutograd kernel, the rule's step and
its vector-Jacobian product in ATen operations (the same math as the fused
kernels and their hand-written backward), which Inductor fuses with the
gradient computation around them; the fused kernels would be opaque calls of
their own, each with its own overhead (measured: 1.7x the time on MAML-size
work, docs/benchmarks.md section 13). Autograd keeps the operators' own nodes
under compile as in eager mode; only the kernels below it are decomposed.

Inductor builds its decomposition table once, from every CompositeImplicitAutograd
operator loaded when torch first imports ``torch._inductor.decomposition``
(the first compilation); where that happened before unrollopt was imported,
:func:`register` adds the operators to it.
"""

from __future__ import annotations

import sys

import torch

from unrollopt import _C


def operators() -> list[torch._ops.OpOverload]:
    """The differentiable fused operators and their backward operators."""
    ops = torch.ops.unrollopt
    return [getattr(ops, f"{name}{suffix}").default for name in _C.operator_names() for suffix in ("", "_backward")]


def register() -> None:
    """Adds the operators' decompositions to Inductor's table, if torch
    already built it (otherwise it takes them itself)."""
    inductor = sys.modules.get("torch._inductor.decomposition")
    table = getattr(inductor, "decompositions", None)
    if table is None:
        return
    missing = [op for op in operators() if op not in table]
    for op in missing:
        table[op] = op.decompose
    cached = getattr(inductor, "fast_random_decomps", None)  # a cached copy of the table
    if missing and hasattr(cached, "cache_clear"):
        cached.cache_clear()
