"""``torch.vmap`` rules of the fused operators (``torch.ops.unrollopt.*``):
their FuncTorchBatched kernels.

The operators work on lists of tensors in which the tensors at one index (a
gradient, its states, its parameter) have one shape. Under ``vmap`` an index
whose tensors are batched runs with the batch as a leading dimension (its
unbatched tensors expanded to it), and the others run as they are: one call
steps the whole batch. A step or hyperparameter that differs between samples
(a per-task ``lr``) and per-sample hyperparameter gradients cannot share one
call: the operator then runs once per sample.

The kernels unwrap and wrap batched tensors themselves, without
``torch.library.register_vmap``'s generic pytree handling: on MAML-size models
this rule runs at every inner step, and its cost adds to each. One rule
serves every operator: :class:`_Layout` says where the operator's lists, step
and hyperparameters are in its schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch._C import _functorch

from unrollopt import _C

Dims = Sequence[Optional[int]]

_BATCHED = torch._C.DispatchKeySet(torch._C.DispatchKey.FuncTorchBatched)
_LIBRARY: Optional[torch.library.Library] = None  # keeps the registrations alive


def _at_front(t: Optional[torch.Tensor], dim: Optional[int], size: int) -> Optional[torch.Tensor]:
    if t is None:
        return None
    if dim is None:
        return t.expand(size, *t.shape)
    return t if dim == 0 else t.movedim(dim, 0)


def _sample(t: Optional[torch.Tensor], dim: Optional[int], b: int) -> Optional[torch.Tensor]:
    return t if t is None or dim is None else t.select(dim, b)


def _unbatch_scalars(step, step_d, hyper, h_d):
    """The step and hyperparameters as one value for the whole batch where
    every sample has the same (e.g. a step count from ``vmap(opt.init)``), read
    on the CPU only; ``None`` if some differ."""

    def common(t, d):
        if d is None:
            return t
        if t.device.type != "cpu":
            return None  # reading it would synchronise
        first = t.select(d, 0)
        return first if bool((t == first.unsqueeze(d)).all()) else None

    step = common(step, step_d)
    hyper = [common(h, d) for h, d in zip(hyper, h_d)]
    return (step, hyper) if step is not None and all(h is not None for h in hyper) else None


def _batched_indices(n: int, lists: Sequence[tuple[Sequence[Any], Dims]]) -> list[bool]:
    """Which of the n parameter indices have a batched tensor in one of the lists."""
    out = [False] * n
    for items, dims in lists:
        for j, d in enumerate(dims):
            if d is not None and items[j] is not None:
                out[j] = True
    return out


def _lift(items: Sequence[Any], dims: Dims, batched: list[bool], size: int) -> list:
    return [_at_front(t, d, size) if batched[j] else t for j, (t, d) in enumerate(zip(items, dims))]


def _out_dims(items: Sequence[Any], batched: list[bool]) -> list[Optional[int]]:
    return [0 if batched[j] else None for j in range(len(items))]


def _per_sample(op, size: int, args: Sequence[Any], dims: Sequence[Any]):
    """Runs ``op`` once per sample and stacks every output along dimension 0:
    (outputs, out_dims), each output a list of tensors or a tensor."""
    outs = []
    for b in range(size):
        call = []
        for a, d in zip(args, dims):
            if isinstance(a, (list, tuple)) and isinstance(d, (list, tuple)):
                call.append([_sample(t, dt, b) for t, dt in zip(a, d)])
            elif isinstance(a, torch.Tensor):
                call.append(_sample(a, d, b))
            else:
                call.append(a)
        out = op(*call)
        outs.append(out if isinstance(out, tuple) else (out,))
    stacked = [
        torch.stack([o[k] for o in outs]) if isinstance(outs[0][k], torch.Tensor) else
        [torch.stack(ts) for ts in zip(*(o[k] for o in outs))]
        for k in range(len(outs[0]))
    ]  # fmt: skip
    return stacked, [0 if isinstance(x, torch.Tensor) else [0] * len(x) for x in stacked]


@dataclass(frozen=True)
class _Layout:
    """Where an operator's arguments are in its schema: the lists of tensors
    (grads, each state, params; before them the backward's cotangents), the
    grads among them, the step, and how many hyperparameters (after the step)
    and states there are."""

    lists: tuple[int, ...]
    grads: int
    step: int
    nh: int
    ns: int

    @classmethod
    def of(cls, name: str) -> "_Layout":
        kind = "_backward" if name.endswith("_backward") else "_" if name.endswith("_") else ""
        states, hyper, _, _ = _C.describe(name[: len(name) - len(kind)])
        ns = len(states)
        # NAME: grads, states..., params; NAME_: params, grads, states...;
        # NAME_backward: grad_updates, grad_states..., grads, states..., params.
        num_lists = {"": 2 + ns, "_": 2 + ns, "_backward": 3 + 2 * ns}[kind]
        grads = {"": 0, "_": 1, "_backward": 1 + ns}[kind]
        return cls(tuple(range(num_lists)), grads, num_lists, len(hyper), ns)

    def scalars(self, args: Sequence[Any], dims: Sequence[Any]):
        """The step and hyperparameters as one value for the whole batch, or None."""
        h = slice(self.step + 1, self.step + 1 + self.nh)
        return _unbatch_scalars(args[self.step], dims[self.step], args[h], dims[h])

    def batched(self, args: Sequence[Any], dims: Sequence[Any]) -> list[bool]:
        """Which parameter indices have a batched tensor in one of the lists."""
        return _batched_indices(len(args[self.grads]), [(args[i], dims[i]) for i in self.lists])

    def lifted(self, size: int, args: Sequence[Any], dims: Sequence[Any], scalars) -> tuple[list, list[bool]]:
        """The arguments with each batched parameter index's tensors lifted to a
        leading batch dimension and the common step and hyperparameters; and
        which indices are batched."""
        batched = self.batched(args, dims)
        out = list(args)
        for i in self.lists:
            out[i] = _lift(args[i], dims[i], batched, size)
        out[self.step] = scalars[0]
        out[self.step + 1 : self.step + 1 + self.nh] = scalars[1]
        return out, batched


def _forward_rule(op, layout: _Layout):
    def rule(size, in_dims, *args):
        scalars = layout.scalars(args, in_dims)
        if scalars is None:
            return _per_sample(op, size, args, in_dims)
        call, batched = layout.lifted(size, args, in_dims, scalars)
        out = op(*call)
        outs = [out] if layout.ns == 0 else list(out)  # updates, each state list
        return outs, [_out_dims(o, batched) for o in outs]

    return rule


def _backward_rule(op, layout: _Layout):
    def rule(size, in_dims, *args):
        scalars = layout.scalars(args, in_dims)
        mask = args[-1]
        if scalars is None or any(mask[len(mask) - layout.nh :]):
            # Per-sample hyperparameter gradients are not sums over the batch.
            return _per_sample(op, size, args, in_dims)
        call, batched = layout.lifted(size, args, in_dims, scalars)
        out = op(*call)  # grad lists (grads, each state, params), then each hyperparameter's
        return list(out), [None if isinstance(o, torch.Tensor) else _out_dims(o, batched) for o in out]

    return rule


def _inplace_rule(op, layout: _Layout):
    def rule(size, in_dims, *args):
        update_params = args[-1]
        batched = layout.batched(args, in_dims)
        written = [0 if update_params else 1, *range(2, 2 + layout.ns)]  # params or grads, states
        for i in written:
            for j, d in enumerate(in_dims[i]):
                if batched[j] and d is None:
                    raise ValueError(
                        f"unrollopt.{op._schema.name.split('::')[1]} under vmap: a tensor it would write in "
                        "place is not batched while the others at its index are (vmap cannot write a batch "
                        "into one tensor); batch it too, or use the out-of-place update(..., inplace=False)"
                    )
        scalars = layout.scalars(args, in_dims)
        if scalars is None:  # each sample written in place through its slices
            _per_sample(op, size, args, in_dims)
        else:
            call, _ = layout.lifted(size, args, in_dims, scalars)
            op(*call)
        return None, None

    return rule


def _unwrap(a: Any, level: int) -> tuple[Any, Any, bool]:
    """(value, batch dimension(s), whether batched) of an argument."""
    if isinstance(a, (list, tuple)) and a and (isinstance(a[0], torch.Tensor) or a[0] is None):
        pairs = [(None, None) if t is None else _functorch._unwrap_batched(t, level) for t in a]
        dims = [d for _, d in pairs]
        return [v for v, _ in pairs], dims, any(d is not None for d in dims)
    if isinstance(a, torch.Tensor):
        v, d = _functorch._unwrap_batched(a, level)
        return v, d, d is not None
    return a, [None] * len(a) if isinstance(a, (list, tuple)) else None, False


def _kernel(rule: Callable, op) -> Callable:
    """The FuncTorchBatched kernel of ``op`` running ``rule(size, in_dims, *args)
    -> (outputs, out_dims)`` on the unwrapped arguments."""

    def kernel(keyset, *args):
        with torch._C._ExcludeDispatchKeyGuard(_BATCHED):
            interpreter = _functorch.peek_interpreter_stack()
            level = interpreter.level()
            size = _functorch.CVmapInterpreterPtr(interpreter).batchSize()
            unwrapped = [_unwrap(a, level) for a in args]
            if not any(b for _, _, b in unwrapped):  # batched at another level only
                return op(*args)
            outputs, out_dims = rule(size, [d for _, d, _ in unwrapped], *(v for v, _, _ in unwrapped))
            if outputs is None:
                return None
            wrap = lambda t, d: t if d is None else _functorch._add_batch_dim(t, d, level)  # noqa: E731
            result = tuple(
                wrap(ts, ds) if isinstance(ts, torch.Tensor) else [wrap(t, d) for t, d in zip(ts, ds)]
                for ts, ds in zip(outputs, out_dims)
            )
            return result[0] if len(result) == 1 else result  # a single output: not a tuple

    return kernel


def register() -> None:
    """Registers the kernels of every fused operator (``NAME``, ``NAME_``,
    ``NAME_backward``; ``NAME_plain`` batches the ATen operations it is made of)."""
    global _LIBRARY
    _LIBRARY = torch.library.Library("unrollopt", "IMPL")
    for base in _C.operator_names():
        for name, make in ((base, _forward_rule), (base + "_", _inplace_rule), (base + "_backward", _backward_rule)):
            op = getattr(torch.ops.unrollopt, name).default
            _LIBRARY.impl(name, _kernel(make(op, _Layout.of(name)), op), "FuncTorchBatched", with_keyset=True)
