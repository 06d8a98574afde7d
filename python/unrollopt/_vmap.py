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
this rule runs at every inner step, and its cost adds to each.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch._C import _functorch

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
    """Which of the n parameter indices have a batched tensor in one of the lists
    (a list of states holds n tensors per state)."""
    out = [False] * n
    for items, dims in lists:
        for j, d in enumerate(dims):
            if d is not None and items[j] is not None:
                out[j % n] = True
    return out


def _lift(items: Sequence[Any], dims: Dims, batched: list[bool], size: int) -> list:
    n = len(batched)
    return [_at_front(t, d, size) if batched[j % n] else t for j, (t, d) in enumerate(zip(items, dims))]


def _lift_all(lists: Sequence[tuple[Sequence[Any], Dims]], batched: list[bool], size: int) -> list[list]:
    return [_lift(items, dims, batched, size) for items, dims in lists]


def _out_dims(items: Sequence[Any], batched: list[bool]) -> list[Optional[int]]:
    n = len(batched)
    return [0 if batched[j % n] else None for j in range(len(items))]


def _per_sample(op, size: int, args: Sequence[Any], dims: Sequence[Any], num_outputs: int):
    """Runs ``op`` once per sample and stacks every output along dimension 0."""
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
        outs.append(op(*call))
    stacked = tuple([torch.stack(ts) for ts in zip(*(o[k] for o in outs))] for k in range(num_outputs))
    return stacked, tuple([0] * len(s) for s in stacked)


def _forward_rule(op):
    def rule(size, in_dims, grads, states, params, step, hyper, options):
        g_d, s_d, p_d, step_d, h_d, _ = in_dims
        scalars = _unbatch_scalars(step, step_d, hyper, h_d)
        if scalars is None:
            return _per_sample(op, size, (grads, states, params, step, hyper, options), in_dims, 2)
        step, hyper = scalars
        lists = [(grads, g_d), (states, s_d), (params, p_d)]
        batched = _batched_indices(len(grads), lists)
        updates, new_states = op(*_lift_all(lists, batched, size), step, hyper, options)
        return (updates, new_states), (_out_dims(updates, batched), _out_dims(new_states, batched))

    return rule


def _backward_rule(op):
    def rule(size, in_dims, grad_updates, grad_states, grads, states, params, step, hyper, options, mask):
        gu_d, gs_d, g_d, s_d, p_d, step_d, h_d, _, _ = in_dims
        scalars = _unbatch_scalars(step, step_d, hyper, h_d)
        if scalars is None or any(mask[3:]):
            # Per-sample hyperparameter gradients are not sums over the batch.
            args = (grad_updates, grad_states, grads, states, params, step, hyper, options, mask)
            return _per_sample(op, size, args, in_dims, 4)
        step, hyper = scalars
        lists = [(grad_updates, gu_d), (grad_states, gs_d), (grads, g_d), (states, s_d), (params, p_d)]
        batched = _batched_indices(len(grads), lists)
        out = op(*_lift_all(lists, batched, size), step, hyper, options, mask)
        grad_g, grad_s, grad_p, grad_h = out
        dims = (
            _out_dims(grad_g, batched),
            _out_dims(grad_s, batched),
            _out_dims(grad_p, batched),
            [None] * len(grad_h),
        )
        return out, dims

    return rule


def _inplace_rule(op):
    def rule(size, in_dims, params, grads, states, step, hyper, options, update_params):
        p_d, g_d, s_d, step_d, h_d, _, _ = in_dims
        written = [(params if update_params else grads, p_d if update_params else g_d), (states, s_d)]
        lists = [(params, p_d), (grads, g_d), (states, s_d)]
        batched = _batched_indices(len(grads), lists)
        for _, dims in written:
            for j, d in enumerate(dims):
                if batched[j % len(grads)] and d is None:
                    raise ValueError(
                        f"unrollopt.{op._schema.name.split('::')[1]} under vmap: a tensor it would write in "
                        "place is not batched while the others at its index are (vmap cannot write a batch "
                        "into one tensor); batch it too, or use the out-of-place update(..., inplace=False)"
                    )
        scalars = _unbatch_scalars(step, step_d, hyper, h_d)
        if scalars is None:  # each sample written in place through its slices
            args = (params, grads, states, step, hyper, options, update_params)
            _per_sample(op, size, args, in_dims, 0)
        else:
            step, hyper = scalars
            op(*_lift_all(lists, batched, size), step, hyper, options, update_params)
        return None, None

    return rule


def _kernel(rule: Callable, op) -> Callable:
    """The FuncTorchBatched kernel of ``op`` running ``rule(size, in_dims, *args)
    -> (outputs, out_dims)`` on the unwrapped arguments."""

    def kernel(keyset, *args):
        with torch._C._ExcludeDispatchKeyGuard(_BATCHED):
            interpreter = _functorch.peek_interpreter_stack()
            level = interpreter.level()
            size = _functorch.CVmapInterpreterPtr(interpreter).batchSize()
            values, dims, any_batched = [], [], False
            for a in args:
                if isinstance(a, (list, tuple)) and a and (isinstance(a[0], torch.Tensor) or a[0] is None):
                    pairs = [(None, None) if t is None else _functorch._unwrap_batched(t, level) for t in a]
                    values.append([v for v, _ in pairs])
                    dims.append([d for _, d in pairs])
                    any_batched = any_batched or any(d is not None for d in dims[-1])
                elif isinstance(a, torch.Tensor):
                    v, d = _functorch._unwrap_batched(a, level)
                    values.append(v)
                    dims.append(d)
                    any_batched = any_batched or d is not None
                else:
                    values.append(a)
                    dims.append([None] * len(a) if isinstance(a, (list, tuple)) else None)
            if not any_batched:  # batched at another level only
                return op(*args)
            outputs, out_dims = rule(size, dims, *values)
            if outputs is None:
                return None
            return tuple(
                [t if d is None else _functorch._add_batch_dim(t, d, level) for t, d in zip(ts, ds)]
                for ts, ds in zip(outputs, out_dims)
            )

    return kernel


def register() -> None:
    """Registers the kernels of every operator in the ``unrollopt`` namespace."""
    global _LIBRARY
    _LIBRARY = torch.library.Library("unrollopt", "IMPL")
    names = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("unrollopt::")}
    for name in sorted(names):
        if name.endswith("_backward"):
            make = _backward_rule
        elif name.endswith("_"):
            make = _inplace_rule
        else:
            make = _forward_rule
        op = getattr(torch.ops.unrollopt, name).default
        _LIBRARY.impl(name, _kernel(make(op), op), "FuncTorchBatched", with_keyset=True)
