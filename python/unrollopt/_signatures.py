"""Constructors that take an optimizer alias's settings: the Meta classes and
the ``torch.optim``-style classes are made from the alias (``unrollopt.adam``
...), so the names, order, defaults and annotations are written once, there."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

Parameter = inspect.Parameter


def constructor(
    name: str,
    alias_fn: Callable[..., Any],
    body: Callable[..., None],
    *,
    before: Iterable[Parameter] = (),
    after: Iterable[Parameter] = (),
    drop: Iterable[str] = (),
    positional: Iterable[str] = (),
    annotations: dict[str, str] | None = None,
) -> Callable[..., None]:
    """An ``__init__(self, *before, <alias's settings>, *after)`` for the class
    ``name`` that calls ``body(self, arguments)`` with the arguments given, by
    name. The alias's settings keep their order; those named in ``drop`` are
    left out, those in ``positional`` may be passed by position (after the
    alias's own positional ones, as ``torch.optim`` orders them), and
    ``annotations`` replaces some annotations."""
    drop, positional, annotations = set(drop), tuple(positional), annotations or {}
    settings = [p for p in inspect.signature(alias_fn).parameters.values() if p.name not in drop]
    settings = [p.replace(annotation=annotations.get(p.name, p.annotation)) for p in settings]
    first = [p for p in settings if p.kind is Parameter.POSITIONAL_OR_KEYWORD]
    first += [p.replace(kind=Parameter.POSITIONAL_OR_KEYWORD) for n in positional for p in settings if p.name == n]
    rest = [p for p in settings if p.kind is Parameter.KEYWORD_ONLY and p.name not in positional]
    self = Parameter("self", Parameter.POSITIONAL_OR_KEYWORD)
    signature = inspect.Signature([self, *before, *first, *rest, *after], return_annotation="None")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            arguments = signature.bind(self, *args, **kwargs).arguments
        except TypeError as error:  # as a plain function would say it, with its name
            raise TypeError(f"{name}() {error}") from None
        del arguments["self"]
        body(self, arguments)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{name}.__init__"
    return __init__


def defaults(init: Callable[..., None]) -> dict[str, Any]:
    """The default of every parameter of ``init`` that has one."""
    params = inspect.signature(init).parameters.values()
    return {p.name: p.default for p in params if p.default is not Parameter.empty}
