"""Checking hyperparameters once, when an optimizer is made."""

from __future__ import annotations

import math
import numbers
from typing import Union

import torch

from unrollopt import _C

#: A hyperparameter: a number, or a 0-d floating-point tensor (which may require
#: grad, to meta-learn it).
Hyperparameter = Union[float, torch.Tensor]

#: The settings whose range is not [0, inf], by the C++ check's own rule (read
#: once, so that the check below traces under torch.compile).
_RANGES = {name: (low, high, high_open) for name, low, high, high_open in _C.bounded_settings()}


def check(name: str, value: object, *, range: str | None = None) -> Hyperparameter:  # noqa: A002
    """Returns ``value`` if it lies in the range of the setting ``range``
    (default ``name``: beta1, beta2, ... in [0, 1), alpha and rho in [0, 1], every
    other in [0, inf]); else raises ValueError, by the C++ optimizers' own check
    (``_C.check_setting``: the comparison here reads its ranges), or TypeError for a value that is not a number or a
    0-d float tensor. A tensor on a GPU is returned unchecked (reading it would
    synchronise), and so is one batched by ``torch.vmap`` (its values cannot be
    read there)."""
    low, high, high_open = _RANGES.get(range or name, (0.0, math.inf, False))
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a number or a 0-d tensor, got a tensor of shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if value.device.type != "cpu" or is_batched(value):
            return value
        if torch.compiler.is_compiling():
            # Reading the value would be a data-dependent graph break: the
            # compiled code checks it when it runs (a RuntimeError there).
            inside = (value >= low) & ((value < high) if high_open else (value <= high))
            expected = f"{low:g} <= {name} {'<' if high_open else '<='} {high:g}"
            torch._assert_async(inside, f"Invalid {name}: a tensor outside its range (expected {expected})")
            return value
        number = float(value.detach().item())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        value = number
    else:
        raise TypeError(f"{name} must be a number or a 0-d tensor, got {type(value).__name__}")
    if not (low <= number and (number < high if high_open else number <= high)):
        _C.check_setting(name, number, range or "")  # raises, with the C++ optimizers' message
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


def check_betas(betas: object, n: int = 2) -> tuple[Hyperparameter, ...]:
    """``betas``, a tuple or list of ``n`` decay rates, each checked in its range (beta1, beta2, ...)."""
    names = ", ".join(f"beta{i + 1}" for i in range(n))
    if not isinstance(betas, (tuple, list)) or len(betas) != n:
        kind = {2: "a pair", 3: "a triple"}.get(n, f"{n} numbers")
        raise ValueError(f"betas must be {kind} ({names}), got {betas!r}")
    return tuple(check(f"betas[{i}]", beta, range=f"beta{i + 1}") for i, beta in enumerate(betas))


def as_tensor(value: Hyperparameter) -> torch.Tensor:
    """The 0-d tensor the fused operators take (float64 for a number)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=torch.float64)


def is_zero(value: Hyperparameter) -> bool:
    """Whether a hyperparameter is a constant zero (a tensor never is: it may be learned)."""
    return not isinstance(value, torch.Tensor) and value == 0.0
