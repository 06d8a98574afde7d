"""Arithmetic on pytrees of tensors, leaf by leaf (the helpers TorchOpt users
know as ``torchopt.pytree.*``), on ``torch.utils._pytree``. ``None`` leaves
(parameters without a gradient) stay ``None``; the trees of one call must have
one structure."""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Union

import torch
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["tree_add", "tree_sub", "tree_mul", "tree_scalar_mul", "tree_truediv", "tree_vdot_real", "tree_pos",
           "tree_neg"]  # fmt: skip

Scalar = Union[float, torch.Tensor]


def _leafwise(fn: Callable[..., Any], *trees: Any) -> Any:
    """``fn`` of the trees' leaves at each position; None where the first is None."""
    if not trees:
        raise TypeError("expected at least one tree")
    return tree_map(lambda x, *ys: None if x is None else fn(x, *ys), trees[0], *trees[1:])


def tree_add(*trees: Any) -> Any:
    """The leafwise sum of one or more trees."""
    return _leafwise(lambda *xs: functools.reduce(operator.add, xs), *trees)


def tree_sub(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x - tree_y``, leafwise."""
    return _leafwise(operator.sub, tree_x, tree_y)


def tree_mul(*trees: Any) -> Any:
    """The leafwise product of one or more trees."""
    return _leafwise(lambda *xs: functools.reduce(operator.mul, xs), *trees)


def tree_scalar_mul(scalar: Scalar, tree: Any) -> Any:
    """``scalar * tree`` (a number or a 0-d tensor, which may require grad)."""
    return _leafwise(lambda x: scalar * x, tree)


def tree_truediv(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x / tree_y``, leafwise."""
    return _leafwise(operator.truediv, tree_x, tree_y)


def tree_vdot_real(tree_x: Any, tree_y: Any) -> torch.Tensor:
    """The real part of the inner product of two trees: the sum over leaves of
    ``Re(vdot(x, y))`` (a 0-d tensor; None leaves count as 0)."""
    xs, spec_x = tree_flatten(tree_x)
    ys, spec_y = tree_flatten(tree_y)
    if spec_x != spec_y:
        raise ValueError(f"tree_vdot_real: the trees differ in structure: {spec_x} and {spec_y}")
    terms = [torch.vdot(x.reshape(-1), y.reshape(-1)).real for x, y in zip(xs, ys) if x is not None and y is not None]
    return functools.reduce(operator.add, terms) if terms else torch.zeros(())


def tree_pos(tree: Any) -> Any:
    """``+tree``, leafwise."""
    return _leafwise(operator.pos, tree)


def tree_neg(tree: Any) -> Any:
    """``-tree``, leafwise."""
    return _leafwise(operator.neg, tree)
