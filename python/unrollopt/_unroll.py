"""Long unrolls in bounded memory: :func:`unroll`, an unrolled inner loop whose
meta-gradient is the full graph's, with the graph kept one segment at a time.

The plain inner loop keeps every step's graph (the inner loss's activations,
the tape of ``autograd.grad(..., create_graph=True)`` and the optimizer's saved
tensors) until the meta-gradient's backward: memory linear in the number of
steps. :func:`unroll` with ``checkpoint=s`` keeps the parameters and the
optimizer state every ``s`` steps instead, and recomputes each segment (with
its graph) during the backward, as Chen et al. (2016) do for a network's
layers. Each segment is one :class:`torch.autograd.Function` whose inputs are
the segment's starting parameters and state and every tensor that the step
reads from a closure (found by recording the step's operations with a
:class:`~torch.overrides.TorchFunctionMode`), so meta-gradients reach the
initial parameters, the loss's closure tensors and the optimizer's tensor
hyperparameters, exactly as through the full graph.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from unrollopt import _pytree
from unrollopt.base import GradientTransformation, OptState, Params
from unrollopt.update import apply_updates

__all__ = ["unroll"]

_Tensor = torch.Tensor
LossFn = Callable[[Params, int], torch.Tensor]


def unroll(
    loss_fn: LossFn,
    params: Params,
    optimizer: GradientTransformation,
    steps: int,
    *,
    state: Optional[OptState] = None,
    checkpoint: Union[None, int, str] = "sqrt",
) -> tuple[Params, OptState]:
    """``steps`` differentiable optimizer steps on ``loss_fn``, in bounded memory.

    Returns ``(params, state)`` after ``steps`` updates of the plain loop::

        for t in range(steps):
            leaves = the tensors of params
            grads = torch.autograd.grad(loss_fn(params, t), leaves, create_graph=True)
            updates, state = optimizer.update(grads, state, params=params, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)

    with the same values, bit for bit, and meta-gradients (by ``.backward()`` or
    ``torch.autograd.grad`` of anything computed from the result) equal to the
    loop's to rounding, with respect to the initial parameters and state, every
    tensor ``loss_fn`` reads from its closure (leaves, and non-leaves such as
    ``torch.sigmoid(logits)``, through which the gradient goes on to the
    leaves), and the optimizer's tensor hyperparameters (``lr=log_lr.exp()``).

    Args:
        loss_fn: ``loss_fn(params, t)``, the inner loss at step ``t`` (in
            ``range(steps)``): a tensor with one element that depends on every
            tensor of ``params``.
        params: the initial parameters, a pytree of floating-point tensors (a
            tuple, a list, or a dict such as ``dict(net.named_parameters())``
            for ``torch.func.functional_call``). Leaves that do not require
            grad are differentiated all the same (as detached copies: the
            meta-gradient does not reach them).
        optimizer: any unrollopt transformation (an alias such as
            ``unrollopt.adam(...)``, fused or plain, or a ``chain``).
        steps: the number of steps, ``>= 0``.
        state: the initial optimizer state; ``optimizer.init(params)`` by default.
        checkpoint: ``None`` keeps the whole graph (the plain loop: memory
            linear in ``steps``). An integer ``s >= 1`` keeps the parameters and
            state at the start of each segment of ``s`` steps (the first
            segment is shorter when ``s`` does not divide ``steps``) and
            recomputes each segment once, with its graph, during the backward;
            the last segment keeps its graph from the forward pass. ``"sqrt"``
            (the default) is ``s = ceil(sqrt(steps))``.

    With ``s`` steps a segment, ``c`` the size of the parameters and state and
    ``g`` that of one step's graph, the memory held for the backward is about
    ``ceil(steps / s) * c + s * g`` (against ``steps * g``), and the time about
    one forward pass more than the plain loop's, less the last segment's.

    Recomputation sees what the forward pass saw: the global random number
    generator's state (and CUDA's) and that of every ``torch.Generator`` passed
    to an operation are restored for it, then put back, so random operations
    (dropout) draw the same numbers and the global RNG state after the
    backward is the plain loop's. Tensors ``loss_fn`` modifies in place that
    do not require grad (BatchNorm's running statistics in training mode under
    ``functional_call``) are set back to their value at the segment's start for
    the recomputation, then to their current value: after the backward they
    hold what the forward pass left. Errors instead of wrong gradients: a
    closure tensor (or the initial parameters or state) modified in place
    between the unroll and the backward, a tensor that requires grad modified
    in place by ``loss_fn``, and a tensor that requires grad read by an
    operation that the recording cannot see (an extension called outside the
    dispatcher; checked on each segment's first step).

    Limits: the meta-gradient through a checkpointed segment is first order
    (its backward is not itself differentiable: a backward through a
    checkpointed segment with ``create_graph=True`` raises); ``loss_fn`` must be a function of its arguments,
    its closure tensors, and the random generators (no Python-side state that
    changes from call to call; a module must be in the same ``train()`` or
    ``eval()`` mode at the backward as during the unroll): a recomputation
    that does not give the forward pass's values is an error. Under
    ``torch.no_grad()`` the result is detached and the memory is one step's.

    Example (``functional_call`` on a module, per-example weights and a
    learned learning rate as meta-parameters)::

        weights, lr = torch.sigmoid(phi), log_lr.exp()

        def loss_fn(params, t):
            rows = batches[t % len(batches)]
            out = torch.func.functional_call(net, params, (x[rows],))
            return (weights[rows] * F.cross_entropy(out, y[rows], reduction="none")).mean()

        params, _ = unrollopt.unroll(loss_fn, dict(net.named_parameters()), unrollopt.adam(lr), 1000)
        F.cross_entropy(torch.func.functional_call(net, params, (x_val,)), y_val).backward()
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params, t), got {type(loss_fn).__name__}")
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"optimizer must be a GradientTransformation (e.g. unrollopt.adam(1e-3)), got {type(optimizer).__name__}"
        )
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    seg = _segment_length(checkpoint, steps)
    leaves, _ = _pytree.flatten(params)
    tensors = [leaf for leaf in leaves if leaf is not None]
    if not tensors:
        raise ValueError("params has no tensors")
    for i, leaf in enumerate(leaves):
        if leaf is not None and not (isinstance(leaf, _Tensor) and leaf.is_floating_point()):
            what = f"a {leaf.dtype} tensor" if isinstance(leaf, _Tensor) else f"a {type(leaf).__name__}"
            raise TypeError(f"params must be a pytree of floating-point tensors, got {what} at leaf {i}")
    if state is None:
        state = optimizer.init(params)
    if steps == 0:
        return params, state

    if not torch.is_grad_enabled():  # no meta-graph wanted: one step's graph at a time
        for t in range(steps):
            with torch.enable_grad():
                p, s = _trees(_copies(*_carry(params, state)))
                params, state = _step(loss_fn, optimizer, p, s, t)
            params, state = _trees(_detached(*_carry(params, state)))
        return params, state

    if seg >= steps:
        return _plain(loss_fn, optimizer, params, state, 0, steps)
    first = steps % seg or seg
    bounds = [(0, first)] + [(start, start + seg) for start in range(first, steps, seg)]
    for start, stop in bounds[:-1]:
        params, state = _Segment(loss_fn, optimizer, start, stop).apply(params, state)
    return _plain(loss_fn, optimizer, params, state, *bounds[-1])


def _segment_length(checkpoint: Union[None, int, str], steps: int) -> int:
    if checkpoint is None:
        return max(steps, 1)
    if isinstance(checkpoint, str):
        if checkpoint != "sqrt":
            raise ValueError(f"checkpoint must be None, 'sqrt' or a number of steps >= 1, got {checkpoint!r}")
        return max(math.isqrt(steps - 1) + 1, 1) if steps > 0 else 1  # ceil(sqrt(steps))
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, numbers.Integral):
        raise TypeError(f"checkpoint must be None, 'sqrt' or an int, got {type(checkpoint).__name__}")
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be None, 'sqrt' or a number of steps >= 1, got {checkpoint}")
    return int(checkpoint)


# --- one step, and the carry between steps as a flat list of tensors


def _step(
    loss_fn: LossFn, optimizer: GradientTransformation, params: Params, state: OptState, t: int, graph: bool = True
):
    """One step of the plain loop, with the checks that name what is wrong.
    ``graph=False`` runs the optimizer without recording its graph (the same
    values: the forward pass of a checkpointed segment); the loss's gradient
    is always taken with ``create_graph=True``, as some backward formulas
    (``silu``'s) differ without it."""
    leaves, spec = _pytree.flatten(params)
    loss = loss_fn(params, t)
    if not isinstance(loss, _Tensor):
        raise TypeError(f"loss_fn(params, t) must return a tensor, got {type(loss).__name__} at t={t}")
    if loss.numel() != 1:
        raise ValueError(
            f"loss_fn(params, t) must return a scalar tensor (one element), got shape {tuple(loss.shape)} at t={t}"
        )
    if not loss.requires_grad:
        raise ValueError(
            f"loss_fn(params, t) returned a tensor without a graph to params at t={t}: the loss must be "
            "computed from the params it is given (not from detached copies or other tensors)"
        )
    wrt = [leaf for leaf in leaves if leaf is not None]
    grads = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
    if any(g is None for g in grads):
        unused = [i for i, g in zip(_pytree.present(leaves), grads) if g is None]
        names = [repr(spec.keys[i]) for i in unused] if getattr(spec, "keys", None) else [str(i) for i in unused]
        raise ValueError(
            f"loss_fn(params, t) does not depend on params at leaves {', '.join(names)} (t={t}): every tensor "
            "of params must take part in the loss"
        )
    it = iter(grads)
    grads = _pytree.unflatten([None if leaf is None else next(it) for leaf in leaves], spec)
    if graph:
        updates, state = optimizer.update(grads, state, params=params, inplace=False)
        return apply_updates(params, updates, inplace=False), state
    with torch.no_grad():
        updates, state = optimizer.update(grads, state, params=params, inplace=False)
        return apply_updates(params, updates, inplace=False), state


def _plain(loss_fn, optimizer, params, state, start: int, stop: int):
    """The plain loop from ``start`` to ``stop``: its graph is kept."""
    leaves, spec = _pytree.flatten(params)
    if any(leaf is not None and not leaf.requires_grad for leaf in leaves):
        params = _pytree.unflatten(
            [leaf if leaf is None or leaf.requires_grad else leaf.detach().requires_grad_() for leaf in leaves], spec
        )
    for t in range(start, stop):
        params, state = _step(loss_fn, optimizer, params, state, t)
    return params, state


class _Layout:
    """Where the tensors of a (params, state) pair go: the flat carry is the
    parameters' tensors, then the state's tensor leaves; the other leaves are
    kept here (and no tensor, so that a layout holds no graph)."""

    __slots__ = ("params", "p_spec", "n_params", "state", "s_spec")

    def __init__(self, p_leaves: list, p_spec: Any, s_leaves: list, s_spec: Any) -> None:
        self.params = [leaf is not None for leaf in p_leaves]
        self.state = [_TENSOR if isinstance(leaf, _Tensor) else leaf for leaf in s_leaves]
        self.p_spec, self.s_spec = p_spec, s_spec
        self.n_params = sum(self.params)

    def trees(self, carry: list) -> tuple[Params, OptState]:
        it = iter(carry)
        p = [next(it) if present else None for present in self.params]
        s = [next(it) if leaf is _TENSOR else leaf for leaf in self.state]
        return _pytree.unflatten(p, self.p_spec), tree_unflatten(s, self.s_spec)


_TENSOR = object()  # a state leaf that is a tensor
_ONE_GRAD = torch.ones((), requires_grad=True)


def _carry(params: Params, state: OptState) -> tuple[list, _Layout]:
    p_leaves, p_spec = _pytree.flatten(params)
    s_leaves, s_spec = tree_flatten(state)
    carry = [leaf for leaf in p_leaves if leaf is not None] + [leaf for leaf in s_leaves if isinstance(leaf, _Tensor)]
    return carry, _Layout(p_leaves, p_spec, s_leaves, s_spec)


def _trees(carry_layout: tuple[list, _Layout]) -> tuple[Params, OptState]:
    carry, layout = carry_layout
    return layout.trees(carry)


def _copies(carry: list, layout: _Layout, requires: Optional[list] = None) -> tuple[list, _Layout]:
    """Detached copies (sharing storage) to run steps on: the parameters
    require grad (the step differentiates the loss with respect to them), the
    state's floating-point tensors where ``requires`` (default: the
    original's ``requires_grad``) says."""
    out = []
    for i, x in enumerate(carry):
        r = x.requires_grad if requires is None else requires[i]
        out.append(x.detach().requires_grad_(i < layout.n_params or (r and _differentiable(x))))
    return out, layout


def _detached(carry: list, layout: _Layout) -> tuple[list, _Layout]:
    return [x.detach() for x in carry], layout


def _differentiable(x: _Tensor) -> bool:
    return x.is_floating_point() or x.is_complex()


# --- recording what a segment reads


#: Normalizations that update running statistics in place (without bumping
#: their version counters): (positions of running_mean, running_var and of
#: the flag that turns the update on, the flag's name and default).
_RUNNING_STATS = {
    F.batch_norm: (1, 2, 5, "training", False),
    torch.batch_norm: (3, 4, 5, "training", None),
    torch.native_batch_norm: (3, 4, 5, "training", None),
    F.instance_norm: (1, 2, 5, "use_input_stats", True),
    torch.instance_norm: (3, 4, 5, "use_input_stats", None),
}


def _is_normalization(func: Any) -> bool:
    try:
        return func in _RUNNING_STATS
    except TypeError:  # (an unhashable callable)
        return False


def _running_stats(func: Any, args: tuple, kwargs: dict) -> list:
    mean, var, flag, name, default = _RUNNING_STATS[func]
    on = args[flag] if len(args) > flag else kwargs.get(name, default)
    if not on:
        return []
    stats = [args[i] if len(args) > i else kwargs.get(key) for i, key in ((mean, "running_mean"), (var, "running_var"))]
    return [t for t in stats if isinstance(t, _Tensor)]


def _may_write(func: Any, kwargs: dict) -> bool:
    """Whether an operation may write into its tensor arguments (then the
    closure tensors among them are copied first, in case it does)."""
    if kwargs and (kwargs.get("out") is not None or kwargs.get("inplace") is True):
        return True
    name = getattr(func, "__name__", "")
    if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i") or name == "__setitem__":
        return True
    schema = getattr(func, "_schema", None)
    return schema is not None and schema.is_mutable


def _describe(t: _Tensor) -> str:
    kind = "leaf" if t.grad_fn is None else f"non-leaf ({type(t.grad_fn).__name__})"
    return f"a {kind} tensor of shape {tuple(t.shape)} and dtype {t.dtype}"


class _Recorder(TorchFunctionMode):
    """Sees every operation of a segment's steps: the tensors an operation
    reads that no operation of the segment made are the segment's closure
    tensors; the generators passed to operations, with their state at first
    use; and the closure tensors that operations write into, with their value
    before the first write."""

    def __init__(self) -> None:
        super().__init__()
        # The tensors the current step made (and its inputs), held until the
        # next step: a key here is never the id of another, live tensor.
        self.internal: dict[int, _Tensor] = {}
        self.external: dict[int, _Tensor] = {}
        self.versions: dict[int, int] = {}  # the external tensors' versions at first use
        self.generators: dict[int, tuple[torch.Generator, _Tensor]] = {}
        self.snapshots: dict[int, tuple[_Tensor, _Tensor]] = {}  # written tensors and their values before

    def new_step(self, inputs: list) -> None:
        self.internal = {id(t): t for t in inputs}
        # The autograd nodes made from here on (in this thread) have larger sequence numbers.
        with torch.enable_grad():
            self.first_node = (_ONE_GRAD * 1).grad_fn._sequence_nr()

    def _mark(self, out: Any) -> None:
        if isinstance(out, _Tensor):
            if id(out) not in self.external:  # (an in-place operation on a closure tensor returns it)
                self.internal[id(out)] = out
        elif isinstance(out, (tuple, list)):
            for o in out:
                self._mark(o)

    def _see(self, a: Any, ext: Optional[list]) -> Optional[list]:
        """``ext`` with ``a``'s closure tensors added (a list only where there are some)."""
        if isinstance(a, _Tensor):
            key = id(a)
            if key in self.internal:
                return ext
            if key not in self.external:
                if a.grad_fn is not None and a.grad_fn._sequence_nr() > self.first_node:
                    raise RuntimeError(
                        f"unroll: a step reads {_describe(a)} that an operation it could not record made during "
                        "the step (an extension called outside PyTorch's dispatcher?), so the meta-gradient "
                        "through it would be missing; use torch operations, or checkpoint=None"
                    )
                self.external[key] = a
                self.versions[key] = a._version
            if ext is None:
                return [a]
            ext.append(a)
        elif isinstance(a, (tuple, list)):
            for b in a:
                ext = self._see(b, ext)
        elif isinstance(a, torch.Generator) and id(a) not in self.generators:
            self.generators[id(a)] = (a, a.get_state())
        return ext

    def __torch_function__(self, func, types, args=(), kwargs=None):
        internal, ext = self.internal, None
        for a in args:
            if type(a) is _Tensor and id(a) in internal:
                continue
            if isinstance(a, (_Tensor, tuple, list, torch.Generator)):
                ext = self._see(a, ext)
        if kwargs:
            for a in kwargs.values():
                if isinstance(a, (_Tensor, tuple, list, torch.Generator)):
                    ext = self._see(a, ext)
        else:
            kwargs = {}
        if ext is None:
            out = func(*args, **kwargs)
            if type(out) is _Tensor:
                if id(out) not in self.external:
                    internal[id(out)] = out
            else:
                self._mark(out)
            return out
        if _is_normalization(func):
            for e in _running_stats(func, args, kwargs):
                if id(e) in self.external and id(e) not in self.snapshots:
                    if e.requires_grad:
                        self._written(e, func, {})
                    self.snapshots[id(e)] = (e, e.detach().clone())
        pending = {}
        if _may_write(func, kwargs):
            for e in ext:
                if id(e) not in self.snapshots and not e.requires_grad:
                    pending[id(e)] = e.detach().clone()
        before = [e._version for e in ext]
        out = func(*args, **kwargs)
        for e, v in zip(ext, before):
            if e._version != v:
                self._written(e, func, pending)
        self._mark(out)
        return out

    def _written(self, e: _Tensor, func: Any, pending: dict) -> None:
        name = getattr(func, "__name__", repr(func))
        if e.requires_grad:
            raise ValueError(
                f"loss_fn modified {_describe(e)} that requires grad in place ({name}); unroll cannot "
                "differentiate through that: compute a new tensor instead"
            )
        if id(e) not in self.snapshots:
            if id(e) not in pending:
                raise RuntimeError(
                    f"loss_fn modified {_describe(e)} from its closure in place ({name}) in a way unroll cannot "
                    "undo for the recomputation in the backward; use checkpoint=None"
                )
            self.snapshots[id(e)] = (e, pending[id(e)])


# --- a checkpointed segment


class _Segment:
    """Steps ``start`` to ``stop`` as one autograd node: the forward pass runs
    them and keeps only its inputs; the backward pass runs them again with
    their graph and backpropagates through it."""

    def __init__(self, loss_fn: LossFn, optimizer: GradientTransformation, start: int, stop: int) -> None:
        self.loss_fn, self.optimizer, self.start, self.stop = loss_fn, optimizer, start, stop

    def _run(self, copies: list, layout: _Layout) -> tuple[list, _Layout]:
        """The steps with their graph (the backward's recomputation)."""
        params, state = layout.trees(copies)
        for t in range(self.start, self.stop):
            params, state = _step(self.loss_fn, self.optimizer, params, state, t)
        return _carry(params, state)

    def _forward(self, copies: list, layout: _Layout, recorder: _Recorder) -> tuple[list, _Layout]:
        """The steps under the recorder, one step's graph at a time (the first
        step's in full, to check it; the others' without the optimizer's)."""
        params, state = layout.trees(copies)
        for t in range(self.start, self.stop):
            first = t == self.start
            with recorder:
                params, state = _step(self.loss_fn, self.optimizer, params, state, t, graph=first)
            carry, out_layout = _carry(params, state)
            if first:
                _check_graph(carry, copies, recorder)
            carry = [x.detach() for x in carry]
            for x in carry[: out_layout.n_params]:
                x.requires_grad_()
            recorder.new_step(carry)
            params, state = out_layout.trees(carry)
        return [x.detach() for x in carry], out_layout

    def apply(self, params: Params, state: OptState) -> tuple[Params, OptState]:
        carry, layout = _carry(params, state)
        self.layout, self.n_carry = layout, len(carry)
        self.requires = [x.requires_grad for x in carry]
        self.rng = torch.get_rng_state()
        self.cuda = _cuda_states(carry)
        copies, _ = _copies(carry, layout)
        recorder = _Recorder()
        recorder.new_step(copies)
        with torch.enable_grad():
            out, self.out_layout = self._forward(copies, layout, recorder)
        del copies
        recorder.internal.clear()
        self.generators = list(recorder.generators.values())
        self.written = list(recorder.snapshots.values())
        written = {id(e) for e, _ in self.written}
        externals = [e for key, e in recorder.external.items() if key not in written]
        for e in externals:
            if e._version != recorder.versions[id(e)]:
                raise RuntimeError(
                    f"loss_fn modified {_describe(e)} from its closure in place in a way unroll cannot undo for the "
                    "recomputation in the backward (through a view?); use checkpoint=None"
                )
        self.grad_inputs = [e for e in externals if e.requires_grad]
        self.others = [e for e in externals if not e.requires_grad]
        self.carry_in = [x.detach() for x in carry]
        self.versions = [x._version for x in (*carry, *self.grad_inputs, *self.others)]
        self.out = out
        self.saved_out = [x.detach() for x in out]  # (aliases: the outputs themselves would make a cycle)
        new = _SegmentFunction.apply(self, *carry, *self.grad_inputs)
        return self.out_layout.trees(list(new))

    def _check_versions(self) -> None:
        for k, (x, v) in enumerate(zip((*self.carry_in, *self.grad_inputs, *self.others), self.versions)):
            if x._version != v:
                what = "the initial params or state" if k < self.n_carry else _describe(x)
                raise RuntimeError(
                    f"unroll: {what}, read by steps {self.start} to {self.stop - 1}, was modified in place after the "
                    "unroll and before the backward: the meta-gradient would be wrong. Modify a copy, or call the "
                    "backward first."
                )

    def backward(self, cotangents: tuple, needs: tuple) -> tuple:
        self._check_versions()
        rng, cuda = torch.get_rng_state(), _cuda_states_now(self.cuda)
        generators = [(g, g.get_state()) for g, _ in self.generators]
        current = [(e, e.detach().clone()) for e, _ in self.written]
        try:
            torch.set_rng_state(self.rng)
            _set_cuda_states(self.cuda)
            for g, s in self.generators:
                g.set_state(s)
            with torch.no_grad():  # (through .data: not a change that saved tensors' checks should see)
                for e, before in self.written:
                    e.data.copy_(before)
            copies, _ = _copies(self.carry_in, self.layout, self.requires)
            with torch.enable_grad():
                out, _ = self._run(copies, self.layout)
        finally:
            torch.set_rng_state(rng)
            _set_cuda_states(cuda)
            for g, s in generators:
                g.set_state(s)
            with torch.no_grad():
                for e, now in current:
                    e.data.copy_(now)
        if len(out) != len(self.saved_out) or not all(map(_same, out, self.saved_out)):
            raise RuntimeError(
                f"unroll: recomputing steps {self.start} to {self.stop - 1} in the backward gave other values than "
                "the forward pass: loss_fn depends on something that changed since the unroll and that unroll "
                "cannot restore (a module switched between train() and eval(), Python-side state, a "
                "nondeterministic operation). Put it back as it was before the backward, or use checkpoint=None."
            )
        pairs = [(o, c) for o, c in zip(out, cotangents) if c is not None and o.requires_grad]
        n = self.n_carry
        wrt = [i for i in range(n) if needs[i] and copies[i].requires_grad]
        wrt_ext = [j for j in range(len(self.grad_inputs)) if needs[n + j]]
        grads = [None] * (n + len(self.grad_inputs))
        if pairs and (wrt or wrt_ext):
            with torch.enable_grad():
                got = torch.autograd.grad(
                    [o for o, _ in pairs],
                    [copies[i] for i in wrt] + [self.grad_inputs[j] for j in wrt_ext],
                    [c for _, c in pairs],
                    allow_unused=True,
                )
            for k, g in zip(wrt + [n + j for j in wrt_ext], got):
                grads[k] = g
        return tuple(grads)


class _SegmentFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, segment: _Segment, *inputs: _Tensor):
        ctx.segment = segment
        ctx.set_materialize_grads(False)
        out, segment.out = segment.out, None
        ctx.mark_non_differentiable(*[x for x in out if not _differentiable(x)])
        return tuple(out)

    @staticmethod
    def backward(ctx, *cotangents):
        if torch.is_grad_enabled():  # (the engine runs backward functions in grad mode only for create_graph=True)
            segment = ctx.segment
            raise RuntimeError(
                f"unroll: the meta-gradient through a checkpointed unroll (steps {segment.start} to "
                f"{segment.stop - 1} are one segment) is first order: its backward cannot be differentiated, so "
                "create_graph=True would give wrong higher derivatives. Use checkpoint=None for them."
            )
        with torch.no_grad():
            return (None, *ctx.segment.backward(cotangents, ctx.needs_input_grad[1:]))


def _same(a: _Tensor, b: _Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all())


def _check_graph(roots: list, copies: list, recorder: _Recorder) -> None:
    """The graph of one step reaches only the copies and the recorded closure
    tensors: else an operation the recording did not see read a tensor that
    requires grad, and its gradient would be missing."""
    leaves = {id(c) for c in copies}
    stops = set()
    for e in recorder.external.values():
        if e.requires_grad:
            if e.grad_fn is None:
                leaves.add(id(e))
            else:
                stops.add(e.grad_fn)
    seen = set()
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen or node in stops:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            if id(variable) not in leaves:
                raise RuntimeError(
                    f"unroll: a step reads {_describe(variable)} through an operation that it could not record "
                    "(an extension called outside PyTorch's dispatcher?), so the meta-gradient to it would be "
                    "missing; pass it through torch operations, or use checkpoint=None"
                )
            continue
        for nxt, _ in node.next_functions:
            if nxt is not None:
                stack.append(nxt)


def _cuda_states(carry: list) -> list:
    devices = sorted({x.device.index or 0 for x in carry if x.is_cuda})
    return [(d, torch.cuda.get_rng_state(d)) for d in devices]


def _cuda_states_now(states: list) -> list:
    return [(d, torch.cuda.get_rng_state(d)) for d, _ in states]


def _set_cuda_states(states: list) -> None:
    for d, s in states:
        torch.cuda.set_rng_state(s, d)
