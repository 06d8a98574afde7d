"""The engine under every optimizer alias (:mod:`unrollopt.alias`) and
stateful transform (:mod:`unrollopt.transform`): an ``(init, update)`` pair
over pytrees from an operator's :class:`_step.Config`."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import torch

from unrollopt import _hyperparameters, _pytree, _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt.base import GradientTransformation, OptState, Params, Updates

_ONE = torch.ones((), dtype=torch.int64)  # count.add(_ONE) costs half of count + 1


def _next(count: torch.Tensor) -> torch.Tensor:
    """The step count after a step. Under torch.compile by a number: ``_ONE``
    would be an input of the graph, and the count (from ``init``'s zeros) and
    the bias corrections computed from it would then be computed in every
    kernel that reads them, for every element, instead of being constants."""
    return count.add(1 if torch.compiler.is_compiling() else _ONE)


#: A learning rate: a number or 0-d tensor, a schedule (a function of the
#: step count, see :mod:`unrollopt.schedule`), or a pytree like the parameters
#: of numbers or tensors broadcastable to them (per-parameter rates, as in
#: Meta-SGD).
LearningRate = Any


def learning_rate(lr: LearningRate) -> tuple[Hyperparameter, Optional[Callable], Any]:
    """(the operator's lr, a schedule or None, a per-parameter pytree or None).

    A schedule's value and the per-parameter rates multiply the whole update
    (every optimizer's update is linear in lr, its state independent of it), so
    the operator runs with lr = 1 for a per-parameter pytree."""
    if not isinstance(lr, (dict, list, tuple)) and callable(lr):  # (dynamo cannot call callable on a dict)
        return 1.0, lr, None
    if isinstance(lr, numbers.Real) or (isinstance(lr, torch.Tensor) and lr.dim() == 0):
        return lr, None, None
    leaves, _ = _pytree.flatten(lr)
    if not leaves or isinstance(lr, (str, bytes)):
        raise TypeError(f"lr must be a number, a 0-d tensor, a schedule or a pytree of rates, got {lr!r}")
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor):
            if not leaf.is_floating_point():
                raise TypeError(f"lr[{i}] must be a floating-point tensor, got dtype {leaf.dtype}")
            if torch.compiler.is_compiling():  # checked when the compiled code runs (no graph break)
                torch._assert_async(~(leaf < 0).any(), f"Invalid lr[{i}]: a rate is negative (expected 0 <= lr)")
            elif bool((leaf.detach() < 0).any()):
                raise ValueError(f"Invalid lr[{i}]: a rate is negative (expected 0 <= lr)")
        elif leaf is not None:
            _hyperparameters.check(f"lr[{i}]", leaf)
    return 1.0, None, lr


def transformation(
    config: _step.Config,
    state_type: Callable[..., Any],
    *,
    fused: bool,
    moment_requires_grad: bool = False,
    initial: Optional[dict[str, float]] = None,
    lr_schedule: Optional[Callable[[torch.Tensor], Hyperparameter]] = None,
    lr_tree: Any = None,
    decay_mask: Any = None,
    scalars: Optional[Callable[[_step.Config, Any, torch.Tensor], tuple[_step.Config, dict]]] = None,
) -> GradientTransformation:
    """The ``(init, update)`` pair of one optimizer: pytrees in, lists to
    :func:`_step.step`, pytrees out. The state holds one pytree per state of
    the optimizer (fields named after them; the others are empty tuples, so
    that a state holds only tensors, as ``torch.func.vmap`` needs) and ``count``; each
    starts at its value in ``initial`` (default 0).

    ``lr_schedule(count)`` replaces lr at each step; ``lr_tree`` (rates per
    parameter) multiplies the updates; ``decay_mask`` (a pytree of bools like the
    parameters, or a function of the parameters giving one) limits the weight
    decay to the leaves where it is True. ``scalars(config, state, count)``
    gives the step's config and the new values of the state's other fields
    (given at init by ``scalars(config, None, 0)``).
    """
    names = config.state_names
    scalar_fields = tuple(scalars(config, None, torch.zeros((), dtype=torch.int64))[1]) if scalars is not None else ()
    tree_fields = [f for f in state_type._fields if f != "count" and f not in scalar_fields]

    def init(params: Params) -> OptState:
        def filled(p: Optional[torch.Tensor], value: float) -> Optional[torch.Tensor]:
            if p is None:
                return None
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be a pytree of tensors, got a {type(p).__name__}")
            return torch.full_like(p, value, requires_grad=moment_requires_grad)

        leaves, spec = _pytree.flatten(params)
        values = {name: (initial or {}).get(name, 0.0) for name in names}
        trees = {name: _pytree.unflatten([filled(p, values[name]) for p in leaves], spec) for name in names}
        count = torch.zeros((), dtype=torch.int64)
        extra = scalars(config, None, count)[1] if scalars is not None else {}
        return state_type(**{f: trees.get(f, ()) for f in tree_fields}, **extra, count=count)

    labels = tuple(f"state.{name}" for name in names)
    # Where each field of a new state comes from: a state's tree, a scalar, the count, or ().
    sources = tuple(
        ("tree", names.index(f)) if f in names else (("scalar", f) if f in scalar_fields else (f, None))
        for f in state_type._fields
    )

    def new_state(trees: list, extra: dict, count: torch.Tensor) -> OptState:
        fields = []
        for kind, key in sources:
            if kind == "tree":
                fields.append(trees[key])
            elif kind == "scalar":
                fields.append(extra[key])
            else:
                fields.append(count if kind == "count" else ())
        return state_type._make(fields)

    def update(
        updates: Updates,
        state: OptState,
        *,
        params: Optional[Params] = None,
        inplace: bool = True,
    ) -> tuple[Updates, OptState]:
        if not isinstance(state, state_type):
            raise TypeError(f"state must be a {state_type.__name__}, got {type(state).__name__}")
        grads, spec = _pytree.flatten(updates)
        states = [_pytree.flatten_like(getattr(state, name), spec, label) for name, label in zip(names, labels)]
        if params is None:
            # An empty tree has nothing to decay (as TorchOpt accepts it).
            if config.uses_params and any(leaf is not None for leaf in grads):
                raise ValueError("weight_decay is not 0: pass the parameters as update(..., params=params)")
            ps = None
        else:
            ps = _pytree.flatten_like(params, spec, "params")
        rates = _pytree.flatten_like(lr_tree, spec, "lr") if lr_tree is not None else None
        live, g, s, p = _live_leaves(grads, states, ps, rates)
        step_config = config
        if lr_schedule is not None:
            step_config = step_config.replace(lr=lr_schedule(state.count))
        count = _next(state.count)
        extra = {}
        if scalars is not None:
            step_config, extra = scalars(step_config, state, count)
        if inplace:
            _step.check_tensors("update", grads=g, params=p, **dict(zip(names, s)))
            written = [*g, *(t for leaves in s for t in leaves)]
            _step.check_inplace_allowed("update", written, p, rates or (), config=step_config)
        else:
            _step.warn_if_first_order(g, p)
        ks = range(len(g)) if live is None else live  # each computed leaf's index among all

        def run(gk: list, sk: list, pk: list, cfg: _step.Config) -> tuple[list, list]:
            return _step.step(gk, sk, pk, count, cfg, fused=fused, inplace=inplace, what="update")

        decayed = mask_leaves(decay_mask, params, spec)
        if not g:  # an empty tree, or no gradients: nothing to compute
            new_g, new_s = [], [[] for _ in names]
        elif decayed is None:
            new_g, new_s = run(g, s, p, step_config)
        else:  # two calls: the weight decay is off where the mask is False
            new_g, new_s = [None] * len(g), [[None] * len(g) for _ in names]
            for on, cfg in ((True, step_config), (False, step_config.replace(weight_decay=0.0))):
                group = [k for k, i in enumerate(ks) if decayed[i] is on]
                if group:
                    pk = [p[k] for k in group] if p else []
                    out_g, out_s = run([g[k] for k in group], [[t[k] for k in group] for t in s], pk, cfg)
                    new_g = _scatter(group, new_g, out_g)
                    new_s = [_scatter(group, every, out) for every, out in zip(new_s, out_s)]
        if rates is not None:
            new_g = [u.mul_(rates[i]) if inplace else u * rates[i] for u, i in zip(new_g, ks)]
        if live is not None:  # back to every leaf
            new_g, new_s = _scatter(live, grads, new_g), [_scatter(live, a, b) for a, b in zip(states, new_s)]
        trees = [_pytree.unflatten(leaves, spec) for leaves in new_s]
        return _pytree.unflatten(new_g, spec), new_state(trees, extra, count)

    return GradientTransformation(init, update)


def _live_leaves(grads: list, states: list, ps: Optional[list], rates: Optional[list]) -> tuple:
    """(the indices of the leaves with a gradient, or None when all have one;
    their gradients, states and parameters): leaves without a gradient are
    passed over (most trees have none). ValueError where a leaf with a
    gradient has no state, parameter or rate."""
    if all(leaf is not None for leaf in grads):
        p = ps if ps is not None else []
        for leaves in (*states, p):
            if any(leaf is None for leaf in leaves):
                i = next(i for i, leaf in enumerate(leaves) if leaf is None)
                raise ValueError(f"updates has a tensor at leaf {i} where the state or params has None")
        return None, grads, states, p
    live = _pytree.present(grads)
    for i in live:
        if any(s[i] is None for s in states) or (ps is not None and ps[i] is None):
            raise ValueError(f"updates has a tensor at leaf {i} where the state or params has None")
        if rates is not None and rates[i] is None:
            raise ValueError(f"updates has a tensor at leaf {i} where lr has None")
    p = [ps[i] for i in live] if ps is not None else []
    return live, [grads[i] for i in live], [[leaves[i] for i in live] for leaves in states], p


def _scatter(where: list, every: list, computed: list) -> list:
    """``every`` with the items at the indices ``where`` replaced by ``computed``."""
    out = list(every)
    for k, i in enumerate(where):
        out[i] = computed[k]
    return out


def mask_leaves(mask: Any, params: Optional[Params], spec: Any) -> Optional[list[bool]]:
    """A mask's leaves (None without a mask): a pytree of bools with the
    structure ``spec``, or a function of the parameters giving one."""
    if mask is None:
        return None
    if not isinstance(mask, (dict, list, tuple)) and callable(mask):  # (as learning_rate)
        mask = mask(params)
    leaves = _pytree.flatten_like(mask, spec, "mask")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, bool):
            raise TypeError(f"mask[{i}] must be a bool, got {type(leaf).__name__}")
    return leaves
