"""Checking hyperparameters once, when an optimizer is made."""

from __future__ import annotations

import math
import numbers
from typing import Union

import torch

#: A hyperparameter: a number, or a 0-d floating-point tensor (which may require
#: grad, to meta-learn it).
Hyperparameter = Union[float, torch.Tensor]


def check(
    name: str,
    value: object,
    low: float = 0.0,
    high: float = math.inf,
    *,
    high_open: bool = False,
) -> Hyperparameter:
    """Returns ``value`` if it lies in [low, high] (or [low, high)); else raises
    ValueError (or TypeError for a value that is not a number or a 0-d float tensor).
    A tensor on a GPU is returned unchecked (reading it would synchronise), and
    so is one batched by ``torch.vmap`` (its values cannot be read there)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a number or a 0-d tensor, got a tensor of shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if value.device.type != "cpu" or is_batched(value):
            return value
        number = float(value.detach().item())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        value = number
    else:
        raise TypeError(f"{name} must be a number or a 0-d tensor, got {type(value).__name__}")
    inside = low <= number and (number < high if high_open else number <= high)
    if not inside:
        upper = "" if high == math.inf else f" {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"Invalid {name}: {number} (expected {low:g} <= {name}{upper})")
    return value


def is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is batched by ``torch.vmap`` (at any level of nested transforms)."""
    if torch.compiler.is_compiling():  # dynamo traces vmap itself; it cannot call these
        return False
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            return True
        t = functorch.get_unwrapped(t)
    return False


def check_betas(betas: object) -> tuple[Hyperparameter, Hyperparameter]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return (
        check("betas[0]", betas[0], 0.0, 1.0, high_open=True),
        check("betas[1]", betas[1], 0.0, 1.0, high_open=True),
    )


def as_tensor(value: Hyperparameter) -> torch.Tensor:
    """The 0-d tensor the fused operators take (float64 for a number)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=torch.float64)


def is_zero(value: Hyperparameter) -> bool:
    """Whether a hyperparameter is a constant zero (a tensor never is: it may be learned)."""
    return not isinstance(value, torch.Tensor) and value == 0.0
