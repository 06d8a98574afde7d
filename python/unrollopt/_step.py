"""One optimizer step over lists of tensors, shared by every optimizer, by
either path: the fused operator ``torch.ops.unrollopt.<name>`` or its plain
twin ``<name>_plain`` (the same rule in ATen operations), behind the same
checks and the same in-place semantics; and :class:`Config`, an optimizer's
checked settings for its operator."""

from __future__ import annotations

import contextvars
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from unrollopt import _C, _hyperparameters
from unrollopt._hyperparameters import Hyperparameter
from unrollopt.accelerated import _unavailable

Tensors = Sequence[torch.Tensor]
States = Sequence[Tensors]


Description = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], frozenset[str]]
_DESCRIPTIONS: dict[str, Description] = {}


def describe(op: str) -> Description:
    """(state names, hyperparameter names, option names, flags) of the operator
    ``op``, in its order, read from its schema (``torch.ops.unrollopt.<op>``:
    its rule's own lists); the flags are the options of type bool.
    (Cached in a dict: torch.compile traces that, and warns of functools.cache.)"""
    found = _DESCRIPTIONS.get(op)
    if found is None:
        states, hyper, options, flags = _C.describe(op)
        found = _DESCRIPTIONS[op] = (tuple(states), tuple(hyper), tuple(options), frozenset(flags))
    return found


for _op in _C.operator_names():  # all of them now: torch.compile cannot call _C (a graph break)
    describe(_op)


@dataclass(frozen=True)
class Config:
    """An optimizer's checked settings for its operator ``op``, in the
    operator's order; made by name with :meth:`of`."""

    op: str  # operator name, e.g. "adam"
    hyper: tuple[Hyperparameter, ...]  # numbers or 0-d tensors
    options: tuple[float | bool, ...]  # as the operator takes them: a flag is a bool
    state_names: tuple[str, ...] = field(init=False, compare=False)
    hyper_names: tuple[str, ...] = field(init=False, compare=False)
    option_names: tuple[str, ...] = field(init=False, compare=False)
    # The 0-d tensors the fused operator takes, made once.
    tensors: tuple[torch.Tensor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        states, hyper_names, option_names, _ = describe(self.op)
        object.__setattr__(self, "state_names", states)
        object.__setattr__(self, "hyper_names", hyper_names)
        object.__setattr__(self, "option_names", option_names)
        object.__setattr__(self, "tensors", tuple(_hyperparameters.as_tensor(h) for h in self.hyper))

    @classmethod
    def of(cls, op: str, settings: dict[str, Hyperparameter]) -> "Config":
        """The settings of ``op`` (each checked already) picked by name from
        ``settings``; the operator says their order."""
        _, hyper_names, option_names, flags = describe(op)
        missing = [name for name in (*hyper_names, *option_names) if name not in settings]
        if missing:  # a bug here, not the caller's
            raise AssertionError(f"unrollopt.{op} takes {missing}, not given")
        options = tuple(bool(settings[n]) if n in flags else float(settings[n]) for n in option_names)
        return cls(op, tuple(settings[n] for n in hyper_names), options)

    def __getitem__(self, name: str) -> Hyperparameter:
        return self.hyper[self.hyper_names.index(name)]

    def option(self, name: str) -> float | bool:
        return self.options[self.option_names.index(name)]

    def values(self, *names: str) -> tuple:
        """The hyperparameters and options of these names."""
        return tuple(self[n] if n in self.hyper_names else self.option(n) for n in names)

    def replace(self, **hyper: Hyperparameter) -> "Config":
        """The same settings with some hyperparameters replaced (unchecked)."""
        values = tuple(hyper.get(name, value) for name, value in zip(self.hyper_names, self.hyper))
        return Config(self.op, values, self.options)

    @property
    def uses_params(self) -> bool:
        """Whether the step reads the parameters (a weight decay that is not a constant 0)."""
        return "weight_decay" in self.hyper_names and not _hyperparameters.is_zero(self["weight_decay"])


def check_tensors(what: str, **lists: Tensors) -> None:
    """TypeError, naming the argument, for anything in the lists that is not a tensor."""
    for name, ts in lists.items():
        for i, t in enumerate(ts):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"unrollopt.{what}: {name}[{i}] must be a tensor, got {type(t).__name__}")


#: Set while a caller takes a first-order step on purpose (MetaOptimizer(first_order=True)).
first_order_on_purpose: contextvars.ContextVar[bool] = contextvars.ContextVar("first_order_on_purpose", default=False)


class FirstOrderWarning(UserWarning):
    """A differentiable update got gradients without a graph for parameters
    that carry one: the meta-gradient silently loses its second-order terms
    (the usual cause: an inner ``torch.autograd.grad`` without
    ``create_graph=True``). Silence it where that is intended (first-order
    MAML written by hand) with
    ``warnings.filterwarnings("ignore", category=unrollopt.FirstOrderWarning)``
    (pytest: ``-W ignore::unrollopt.FirstOrderWarning``)."""


def warn_if_first_order(grads: Tensors, params: Tensors) -> None:
    """A FirstOrderWarning when a differentiable step gets gradients that do
    not require grad while its parameters are themselves results of a
    differentiable computation (non-leaf tensors that require grad: an
    unrolled inner loop after its first step), where a meta-gradient is
    evidently wanted. Not for leaf parameters: that is plain training written
    with inplace=False, where nobody wants a meta-gradient (and a one-step
    loop, which looks the same). Cheap where nothing is wrong: the first
    gradient requires grad."""
    if not params or any(g.requires_grad for g in grads) or not torch.is_grad_enabled():
        return
    if not any(p.requires_grad and p.grad_fn is not None for p in params) or first_order_on_purpose.get():
        return
    if torch._C._functorch.is_functorch_wrapped_tensor(params[0]):  # torch.func tracks its own levels
        return
    warnings.warn(
        "unrollopt: a differentiable update (inplace=False) got gradients that do not require grad, "
        "for parameters that are results of earlier differentiable steps: the step is first-order "
        "(the meta-gradient does not flow through the gradients). In an unrolled inner loop compute "
        "them with torch.autograd.grad(..., create_graph=True). For a first-order step on purpose use "
        "MetaOptimizer(..., first_order=True), or silence this warning with "
        'warnings.filterwarnings("ignore", category=unrollopt.FirstOrderWarning).',
        FirstOrderWarning,
        stacklevel=3,
    )


def check_inplace_allowed(
    what: str, written: Tensors, params: Tensors = (), hyper: Sequence[object] = (), config: Optional[Config] = None
) -> None:
    """An in-place step cannot carry gradients: refuse it (before touching
    anything) where autograd would need them: a tensor it overwrites
    (``written``: gradients, states) or a tensor hyperparameter requires grad,
    or a parameter it reads is the result of a differentiable step (not a
    leaf). Leaf parameters that require grad (``nn.Parameter``s read by a
    weight decay) are what a plain training step has: allowed."""
    if not torch.is_grad_enabled():
        return
    hyper = [*hyper, *(config.tensors if config is not None else ())]
    if (
        any(t.requires_grad for t in written)
        or any(isinstance(h, torch.Tensor) and h.requires_grad for h in hyper)
        or any(p.requires_grad and p.grad_fn is not None for p in params)
    ):
        raise RuntimeError(
            f"{what}(..., inplace=True) would overwrite tensors that autograd needs (a gradient, a "
            "state or a tensor hyperparameter requires grad, or a parameter is the result of a "
            "differentiable step). Inside a differentiable inner loop pass inplace=False; for a plain "
            "optimizer step run under torch.no_grad()."
        )


def step(
    grads: Tensors,
    states: States,
    params: Tensors,
    count: torch.Tensor,
    config: Config,
    *,
    fused: bool,
    inplace: bool,
    update_params: bool = False,
    what: Optional[str] = None,
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """One step; ``count`` is the step number after incrementing, ``states`` one
    list per state of the optimizer, ``params`` may be empty when the step does
    not read them; ``what`` names the caller in errors (default: the operator).

    ``fused`` selects the operator ``torch.ops.unrollopt.<op>`` (its kernels and
    hand-written backward), otherwise ``<op>_plain``: the same rule as ATen
    operations, differentiated by autograd (the plain path).

    Out of place it returns new ``(updates, states)``. In place it overwrites
    the states, and writes the updates into ``grads`` or, with
    ``update_params``, adds them to ``params``; it returns the overwritten lists.
    """
    what = what or config.op
    # The step reads the parameters only for a weight decay (a 0 times an
    # infinite parameter would be a NaN); with update_params it writes them.
    read = list(params) if config.uses_params else []
    if fused:
        # The operator checks everything before it computes or writes anything;
        # where it refuses, the Python checks find the clearer message.
        try:
            if inplace:
                getattr(torch.ops.unrollopt, config.op + "_")(
                    params if update_params else read,
                    grads,
                    *states,
                    count,
                    *_tensors(config),
                    *config.options,
                    update_params,
                )
                return list(params if update_params else grads), [list(ts) for ts in states]
            return _call(config.op, grads, states, read, count, config)
        except (TypeError, RuntimeError):
            clearer = _diagnosis(what, config, grads, states, read)
            if clearer is None:
                raise
            raise clearer from None

    check_tensors(what, grads=grads, params=read, **dict(zip(config.state_names, states)))
    if not inplace:
        return _call(config.op + "_plain", grads, states, read, count, config)
    target = ("params", list(params)) if update_params else ("grads", list(grads))
    other = ("grads", list(grads)) if update_params else ("params", read)
    named = [(name, list(ts)) for name, ts in zip(config.state_names, states)]
    for name, ts in [target, *named]:
        _C.check_writable(config.op, name, ts)
    _C.check_no_aliasing(config.op, [target, *named], [other])
    with torch.no_grad():  # not differentiable (the caller refused what would need it)
        updates, new_states = _call(config.op + "_plain", grads, states, read, count, config)
        # (tensor by tensor: the _foreach_ operations have no vmap rule)
        for old, new in zip(states, new_states):
            for t, value in zip(old, new):
                t.copy_(value)
        for t, u in zip(target[1], updates):
            t.add_(u) if update_params else t.copy_(u)
    return list(target[1]), [list(ts) for ts in states]


def next_scalar(name: str, previous: torch.Tensor, config: Config, step: torch.Tensor) -> torch.Tensor:
    """The rule's scalar state ``name`` (NAdam's ``mu_product``) after step
    ``step``, from its value before, in that value's dtype (differentiable):
    ``torch.ops.unrollopt.<op>_next_<name>``, the rule's ``scalar_factor``
    times the value before."""
    hyper = [previous if n == name else t for n, t in zip(config.hyper_names, _tensors(config))]
    return getattr(torch.ops.unrollopt, f"{config.op}_next_{name}")(step, *hyper, *config.options)


def _call(op: str, grads: Tensors, states: States, params: Tensors, count: torch.Tensor, config: Config):
    """``torch.ops.unrollopt.<op>`` out of place: (updates, new states)."""
    out = getattr(torch.ops.unrollopt, op)(grads, *states, params, count, *_tensors(config), *config.options)
    if not states:  # one output: the updates
        return out, []
    return out[0], list(out[1:])


def _diagnosis(what: str, config: Config, grads: Tensors, states: States, params: Tensors) -> Optional[Exception]:
    """The clear error for a fused call that the operator refused, if there is one."""
    try:
        check_tensors(what, grads=grads, params=params, **dict(zip(config.state_names, states)))
    except TypeError as e:
        return e
    device = grads[0].device if grads else None
    if device is not None and device.type not in ("cpu", "meta") and not _C.accelerated_op_available(str(device)):
        return RuntimeError(
            f"use_accelerated_op=True on {device} (unrollopt.accelerated_op_available is False): "
            + _unavailable(device)
        )
    return None


def _tensors(config: Config) -> tuple[torch.Tensor, ...]:
    """The hyperparameters as the operators take them. Under torch.compile a
    number becomes a constant of the graph: the 0-d tensors made once would
    be inputs of it, and dynamo traces a function again to specialize each
    float input (a second trace: twice the compile time)."""
    if torch.compiler.is_compiling():
        return tuple(_hyperparameters.as_tensor(h) for h in config.hyper)
    return config.tensors
