"""Arithmetic on pytrees of tensors, leaf by leaf (the helpers TorchOpt users
know as ``torchopt.pytree.*``), on ``torch.utils._pytree``. ``None`` leaves
(parameters without a gradient) stay ``None``; the trees of one call must have
one structure."""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Optional, Union

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_map, tree_unflatten

__all__ = ["tree_add", "tree_add_scalar_mul", "tree_sub", "tree_sub_scalar_mul", "tree_mul", "tree_matmul",
           "tree_scalar_mul", "tree_truediv", "tree_vdot_real", "tree_pos", "tree_neg", "tree_flatten_as_tuple",
           "tree_wait"]  # fmt: skip

Scalar = Union[float, torch.Tensor]


def _leafwise(fn: Callable[..., Any], *trees: Any) -> Any:
    """``fn`` of the trees' leaves at each position; None where the first is None."""
    if not trees:
        raise TypeError("expected at least one tree")
    return tree_map(lambda x, *ys: None if x is None else fn(x, *ys), trees[0], *trees[1:])


def tree_add(*trees: Any) -> Any:
    """The leafwise sum of one or more trees."""
    return _leafwise(lambda *xs: functools.reduce(operator.add, xs), *trees)


def tree_add_scalar_mul(tree_x: Any, tree_y: Any, alpha: Optional[Scalar] = None) -> Any:
    """``tree_x + alpha * tree_y``, leafwise (``x.add(y, alpha=alpha)``; alpha None is 1)."""
    if alpha is None:
        return _leafwise(lambda x, y: x.add(y), tree_x, tree_y)
    return _leafwise(lambda x, y: x.add(y, alpha=alpha), tree_x, tree_y)


def tree_sub_scalar_mul(tree_x: Any, tree_y: Any, alpha: Optional[Scalar] = None) -> Any:
    """``tree_x - alpha * tree_y``, leafwise (``x.sub(y, alpha=alpha)``; alpha None is 1)."""
    if alpha is None:
        return _leafwise(lambda x, y: x.sub(y), tree_x, tree_y)
    return _leafwise(lambda x, y: x.sub(y, alpha=alpha), tree_x, tree_y)


def tree_sub(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x - tree_y``, leafwise."""
    return _leafwise(operator.sub, tree_x, tree_y)


def tree_mul(*trees: Any) -> Any:
    """The leafwise product of one or more trees."""
    return _leafwise(lambda *xs: functools.reduce(operator.mul, xs), *trees)


def tree_matmul(*trees: Any) -> Any:
    """The leafwise matrix product of one or more trees (``x @ y @ ...``)."""
    return _leafwise(lambda *xs: functools.reduce(operator.matmul, xs), *trees)


def tree_scalar_mul(scalar: Scalar, tree: Any) -> Any:
    """``scalar * tree`` (a number or a 0-d tensor, which may require grad)."""
    return _leafwise(lambda x: scalar * x, tree)


def tree_truediv(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x / tree_y``, leafwise."""
    return _leafwise(operator.truediv, tree_x, tree_y)


def tree_vdot_real(tree_x: Any, tree_y: Any) -> float:
    """The real part of the inner product of two trees, as a Python float (as
    TorchOpt's): the sum over leaves of ``Re(vdot(x, y))``; None leaves count
    as 0. Not differentiable (it reads the value); for a differentiable one sum
    ``torch.vdot(x.flatten(), y.flatten()).real`` over the leaves."""
    xs, spec_x = tree_flatten(tree_x)
    ys, spec_y = tree_flatten(tree_y)
    if spec_x != spec_y:
        raise ValueError(f"tree_vdot_real: the trees differ in structure: {spec_x} and {spec_y}")
    return sum(
        torch.vdot(x.reshape(-1), y.reshape(-1)).real.item() for x, y in zip(xs, ys) if x is not None and y is not None
    )


def tree_pos(tree: Any) -> Any:
    """``+tree``, leafwise."""
    return _leafwise(operator.pos, tree)


def tree_neg(tree: Any) -> Any:
    """``-tree``, leafwise."""
    return _leafwise(operator.neg, tree)


def tree_flatten_as_tuple(tree: Any) -> tuple[tuple[Any, ...], TreeSpec]:
    """``(leaves as a tuple, spec)``: ``torch.utils._pytree.tree_flatten`` with a tuple."""
    leaves, spec = tree_flatten(tree)
    return tuple(leaves), spec


def tree_wait(future_tree: Any) -> Any:
    """A tree of ``torch.futures.Future`` to the tree of their results (waits for all)."""
    futures, spec = tree_flatten(future_tree)
    return tree_unflatten(torch.futures.wait_all(futures), spec)
