"""Transformations and schedules that remember the call that made them.

The public constructors (``unrollopt.adam``, ``chain``, ``linear_schedule`` ...)
build closures, which neither pickle nor compare. :func:`recorded` wraps such
a constructor so that what it returns carries its call (the constructor and
its bound arguments): two results compare equal when made by equal calls
(tensors by value), pickle as that call, and print as it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, TypeVar

import torch

from unrollopt.base import GradientTransformation

F = TypeVar("F", bound=Callable[..., Any])


class Call(NamedTuple):
    """A constructor and the arguments it was called with (defaults left out)."""

    fn: Callable[..., Any]
    args: tuple
    kwargs: dict

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Call)
            and self.fn is other.fn
            and same(self.args, other.args)
            and same(self.kwargs, other.kwargs)
        )

    def __hash__(self) -> int:  # consistent with __eq__: the values are left out (tensors, lists)
        return hash((self.fn, len(self.args), tuple(sorted(self.kwargs))))

    def __repr__(self) -> str:
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"unrollopt.{self.fn.__name__}({', '.join(shown)})"


def same(a: Any, b: Any) -> bool:
    """Structural equality: containers by their items, tensors by dtype, shape,
    ``requires_grad`` and values, anything else by ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and (
                a is b
                or (
                    a.dtype == b.dtype
                    and a.requires_grad == b.requires_grad
                    and torch.equal(a.detach().cpu(), b.detach().cpu())
                )
            )
        )
    if isinstance(a, _Recorded):  # (a transformation is a tuple of closures: compare the calls)
        return a == b
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class _Recorded:
    """Equality, hash, pickling and repr from ``self.call``."""

    call: Call

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Recorded) and self.call == other.call

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        # (getattr: torch.compile may hash one it creates before its __init__ ran,
        # as torch 2.11's dynamo does when it is called.)
        return hash(getattr(self, "call", None))

    def __reduce__(self) -> tuple:
        return _remake, (self.call.fn, self.call.args, self.call.kwargs)

    def __repr__(self) -> str:
        return repr(self.call)


def _remake(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


class Transformation(_Recorded, GradientTransformation):
    """A :class:`GradientTransformation` made by a public constructor."""

    def __new__(cls, init: Any, update: Any, call: Call) -> "Transformation":
        self = super().__new__(cls, init, update)
        self.call = call
        return self


class Function(_Recorded):
    """A function made by a public constructor: a schedule, a hook."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], call: Call) -> None:
        self._fn = fn
        self.call = call

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._fn(tensor)


def record(result: Any, call: Call) -> Any:
    """``result`` (a transformation, or a function: a schedule, a hook) carrying ``call``."""
    if isinstance(result, GradientTransformation):
        return Transformation(result.init, result.update, call)
    return Function(result, call)


#: Every constructor wrapped by :func:`recorded` (the functions a pickled
#: transformation or schedule is remade by; _serialization allowlists them).
CONSTRUCTORS: list[Callable[..., Any]] = []


def recorded(constructor: F) -> F:
    """Wraps a constructor of transformations or functions so that its results
    remember the call (its arguments bound to its signature, so that
    ``adam(1e-3)``, ``adam(lr=1e-3)`` and ``adam()`` are one call)."""
    signature = inspect.signature(constructor)
    defaults = {name: p.default for name, p in signature.parameters.items()}

    @functools.wraps(constructor)
    def made(*args: Any, **kwargs: Any) -> Any:
        result = constructor(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        positional, named = [], {}
        for name, value in bound.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                positional.extend(value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif not same(value, defaults[name]):
                named[name] = value
        return record(result, Call(made, tuple(positional), named))

    CONSTRUCTORS.append(made)
    return made  # type: ignore[return-value]
