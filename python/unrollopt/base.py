"""The optimizer interface: a pure ``(init, update)`` pair, as in optax."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

#: A pytree of tensors: a tensor, or tuples, lists, dicts (and named tuples) of
#: pytrees. ``None`` leaves stand for parameters without a gradient.
Params = Any
Updates = Any
OptState = Any

__all__ = [
    "ChainedGradientTransformation",
    "GradientTransformation",
    "IdentityGradientTransformation",
    "OptState",
    "Params",
    "UpdateFn",
    "Updates",
]


#: unrollopt.chain and unrollopt.identity, which the classes here make: put
#: here by unrollopt.transform, which is built on this module.
CONSTRUCTORS: dict[str, Callable[..., Any]] = {}


class UpdateFn(Protocol):
    def __call__(
        self,
        updates: Updates,
        state: OptState,
        *,
        params: Params | None = None,
        inplace: bool = True,
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """An optimizer as two pure functions.

    ``init(params) -> state`` makes the initial state for a pytree of parameters.
    ``update(updates, state, *, params=None, inplace=True) -> (updates, state)``
    turns gradients into updates (to add to the parameters with
    :func:`unrollopt.apply_updates`).

    ``inplace=False`` computes new tensors and is differentiable: use it inside
    an unrolled inner loop whose gradients were taken with
    ``create_graph=True``. ``inplace=True`` reuses the gradient and state buffers
    (a plain, faster optimizer step) and raises if a tensor it would overwrite
    is needed for a gradient.

    The constructors' transformations compare equal when made by equal calls
    and pickle as the call that made them.
    """

    init: Callable[[Params], OptState]
    update: UpdateFn

    def chain(self, next: GradientTransformation) -> GradientTransformation:  # noqa: A002 (TorchOpt's name)
        """``unrollopt.chain(self, next)``, TorchOpt's method."""
        return CONSTRUCTORS["chain"](self, next)


class _MadeBy(type):
    """isinstance(t, cls) for a transformation made by cls's constructor."""

    def __instancecheck__(cls, obj: object) -> bool:
        call = getattr(obj, "call", None)
        return isinstance(obj, GradientTransformation) and call is not None and call.fn is cls._constructor()


class ChainedGradientTransformation(metaclass=_MadeBy):
    """TorchOpt's class of chained transformations: ``ChainedGradientTransformation(*ts)``
    is :func:`unrollopt.chain` ``(*ts)``, and ``isinstance`` recognises what
    ``chain`` made (with more than one transformation)."""

    def __new__(cls, *transformations: GradientTransformation) -> GradientTransformation:  # type: ignore[misc]
        return cls._constructor()(*transformations)

    @staticmethod
    def _constructor() -> Callable[..., GradientTransformation]:
        return CONSTRUCTORS["chain"]


class IdentityGradientTransformation(metaclass=_MadeBy):
    """TorchOpt's class of the identity: ``IdentityGradientTransformation()`` is
    :func:`unrollopt.identity` ``()``, and ``isinstance`` recognises it."""

    def __new__(cls) -> GradientTransformation:  # type: ignore[misc]
        return cls._constructor()()

    @staticmethod
    def _constructor() -> Callable[..., GradientTransformation]:
        return CONSTRUCTORS["identity"]
