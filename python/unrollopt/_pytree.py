"""Flattening parameter pytrees to the tensor lists the operators take."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

__all__ = ["flatten", "flatten_like", "unflatten"]


def flatten(tree: Any) -> tuple[list[Any], TreeSpec]:
    return tree_flatten(tree)


def flatten_like(tree: Any, spec: TreeSpec, name: str) -> list[Any]:
    """The leaves of ``tree``, which must have the structure ``spec``."""
    leaves, tree_spec = tree_flatten(tree)
    if tree_spec != spec:
        raise ValueError(
            f"{name} does not have the structure of the updates: expected {spec}, got {tree_spec}"
        )
    return leaves


def unflatten(leaves: list[Any], spec: TreeSpec) -> Any:
    return tree_unflatten(leaves, spec)


def present(leaves: list[Optional[torch.Tensor]]) -> list[int]:
    """Positions of the leaves that are not None."""
    return [i for i, leaf in enumerate(leaves) if leaf is not None]
