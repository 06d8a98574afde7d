"""Flattening parameter pytrees to the tensor lists the operators take.

``torch.utils._pytree`` is general and costs about 2 µs a node in Python; the
trees an optimizer step sees are nearly always one tuple, list or dict of
tensors (``None`` for a parameter without a gradient). Those are flattened
here directly, to the same leaves in the same order; every other tree goes to
``torch.utils._pytree``. Specs of either kind compare as torch's would."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

__all__ = ["flatten", "flatten_like", "unflatten", "present"]

_Tensor = torch.Tensor


class FlatSpec:
    """The structure of a tuple, list or dict whose items are tensors or None."""

    __slots__ = ("kind", "keys", "n")

    def __init__(self, kind: type, keys: Optional[tuple], n: int) -> None:
        self.kind, self.keys, self.n = kind, keys, n

    def __eq__(self, other: object) -> bool:
        if type(other) is FlatSpec:
            return self.kind is other.kind and self.n == other.n and self.keys == other.keys
        return isinstance(other, TreeSpec) and self.tree_spec() == other

    def __hash__(self) -> int:
        return hash((self.kind, self.keys, self.n))

    def unflatten(self, leaves: list[Any]) -> Any:
        if self.kind is dict:
            return dict(zip(self.keys, leaves))
        return list(leaves) if self.kind is list else tuple(leaves)

    def tree_spec(self) -> TreeSpec:
        """The same structure as torch's pytree spells it."""
        return tree_flatten(self.unflatten([0] * self.n))[1]

    def __repr__(self) -> str:
        return repr(self.tree_spec())


Spec = Union[FlatSpec, TreeSpec]


def _flat(items: Any) -> bool:
    for x in items:
        if x is not None and not isinstance(x, _Tensor):
            return False
    return True


def flatten(tree: Any) -> tuple[list[Any], Spec]:
    kind = type(tree)
    if kind is tuple or kind is list:
        if _flat(tree):
            return list(tree), FlatSpec(kind, None, len(tree))
    elif kind is dict:
        values = list(tree.values())
        if _flat(values):
            return values, FlatSpec(dict, tuple(tree), len(values))
    return tree_flatten(tree)


def flatten_like(tree: Any, spec: Spec, name: str, like: str = "the updates") -> list[Any]:
    """The leaves of ``tree`` (called ``name`` in errors), which must have the
    structure ``spec`` (that of ``like``)."""
    leaves, tree_spec = flatten(tree)
    if tree_spec != spec and not same_up_to_sequences(tree_spec, spec):
        raise ValueError(
            f"{name} does not have the structure of {like}: expected {spec}, got {tree_spec}"
            + _hint(spec, tree_spec, name, like)
        )
    return leaves


_SEQUENCES = (list, tuple)


def same_up_to_sequences(a: Spec, b: Spec) -> bool:
    """Whether two structures are the same where lists and tuples count as one
    kind of container: parameters kept in a list and their gradients from
    ``torch.autograd.grad`` (a tuple) are the same leaves in the same order."""
    if type(a) is FlatSpec and type(b) is FlatSpec:
        if a.kind in _SEQUENCES and b.kind in _SEQUENCES:
            return a.n == b.n
        return a == b
    a = a.tree_spec() if type(a) is FlatSpec else a
    b = b.tree_spec() if type(b) is FlatSpec else b
    if a.type in _SEQUENCES and b.type in _SEQUENCES:
        pass
    elif a.type != b.type or a.context != b.context:
        return False
    xs, ys = _children(a), _children(b)
    return len(xs) == len(ys) and all(same_up_to_sequences(x, y) for x, y in zip(xs, ys))


def _children(spec: TreeSpec) -> list:
    """A spec's children: ``children()`` (torch 2.13 and later), or the
    ``children_specs`` field (earlier, where it is not deprecated)."""
    children = getattr(spec, "children", None)
    return children() if callable(children) else spec.children_specs


def _hint(expected: Spec, got: Spec, name: str, like: str) -> str:
    """What to change, for the mismatch users make most: the same leaves in
    another kind of container."""
    if not (isinstance(expected, FlatSpec) and isinstance(got, FlatSpec)) or dict not in (expected.kind, got.kind):
        return ""
    if expected.kind is got.kind:
        return ""
    hint = f". {like[0].upper() + like[1:]} are a {expected.kind.__name__} and {name} is a {got.kind.__name__}: "
    return hint + (
        "pass both as dicts with the same keys (e.g. dict(zip(params, grads)) for a dict of "
        "parameters and a sequence of their gradients)"
    )


def unflatten(leaves: list[Any], spec: Spec) -> Any:
    if type(spec) is FlatSpec:
        return spec.unflatten(leaves)
    return tree_unflatten(leaves, spec)


def present(leaves: list[Optional[torch.Tensor]]) -> list[int]:
    """Positions of the leaves that are not None."""
    return [i for i, leaf in enumerate(leaves) if leaf is not None]
