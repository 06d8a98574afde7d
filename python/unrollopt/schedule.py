"""Schedules: functions of the step count (a 0-d int64 tensor, from 0) giving a
hyperparameter, as in optax. They are pure tensor arithmetic, so they need no
host synchronisation, trace under ``torch.compile`` and, given tensor values
that require grad, are differentiable with respect to them. Pass one as an
optimizer's ``lr`` or to :func:`unrollopt.scale_by_schedule`."""

from __future__ import annotations

import numbers
from typing import Callable, Optional

import torch

from unrollopt._hyperparameters import Hyperparameter
from unrollopt._recorded import recorded

__all__ = ["Schedule", "exponential_decay", "linear_schedule", "polynomial_schedule"]

#: A schedule: step count -> value (a 0-d tensor).
Schedule = Callable[[torch.Tensor], torch.Tensor]


def _check_value(name: str, value: object) -> Hyperparameter:
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise TypeError(f"{name} must be a number or a 0-d floating-point tensor")
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be a number or a 0-d floating-point tensor, got {type(value).__name__}")


def _check_steps(name: str, value: object, low: int = 0) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"Invalid {name}: {value} (expected {name} >= {low})")
    return int(value)


def _as_tensor(value: Hyperparameter) -> torch.Tensor:
    """A 0-d float64 tensor, differentiable with respect to a tensor ``value``."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64)
    return torch.tensor(value, dtype=torch.float64)


def _steps(count: torch.Tensor, begin: int) -> torch.Tensor:
    """The count since ``begin`` (0 before it), in float64."""
    return (torch.as_tensor(count).to(torch.float64) - begin).clamp(min=0)


@recorded
def polynomial_schedule(
    init_value: Hyperparameter,
    end_value: Hyperparameter,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""From ``init_value`` to ``end_value`` over ``transition_steps`` steps
    starting at ``transition_begin``, then constant:

    .. math:: v(t) = (v_0 - v_1) \left(1 - \frac{\min(t - t_0, T)}{T}\right)^p + v_1

    (``init_value`` throughout when ``transition_steps`` is 0).
    """
    init_value = _check_value("init_value", init_value)
    end_value = _check_value("end_value", end_value)
    power = float(_check_value("power", power))
    transition_steps = _check_steps("transition_steps", transition_steps)
    transition_begin = _check_steps("transition_begin", transition_begin)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        if transition_steps == 0:
            return _as_tensor(init_value)
        frac = 1 - _steps(count, transition_begin).clamp(max=transition_steps) / transition_steps
        return (init_value - end_value) * frac**power + end_value

    return schedule


@recorded
def linear_schedule(
    init_value: Hyperparameter,
    end_value: Hyperparameter,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """From ``init_value`` to ``end_value`` linearly over ``transition_steps``
    steps starting at ``transition_begin``, then constant (:func:`polynomial_schedule`
    with power 1)."""
    return polynomial_schedule(init_value, end_value, 1.0, transition_steps, transition_begin)


@recorded
def exponential_decay(
    init_value: Hyperparameter,
    transition_steps: int = 1,
    decay_rate: Optional[float] = None,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[Hyperparameter] = None,
) -> Schedule:
    r"""``init_value`` times ``decay_rate`` to the power of the steps since
    ``transition_begin`` divided by ``transition_steps`` (rounded down with
    ``staircase``), bounded by ``end_value`` if given (from below when decaying,
    from above when ``decay_rate > 1``):

    .. math:: v(t) = v_0\, r^{(t - t_0) / T}

    The positional order is optax's, ``(init_value, transition_steps,
    decay_rate)``; TorchOpt's is ``(init_value, decay_rate, transition_begin,
    transition_steps)``, so pass its arguments by keyword (``transition_steps``
    defaults to 1 in both). ``decay_rate`` is required.
    """
    init_value = _check_value("init_value", init_value)
    if isinstance(transition_steps, numbers.Real) and not isinstance(transition_steps, numbers.Integral):
        raise TypeError(
            f"transition_steps must be an int, got {transition_steps!r}: the positional order is "
            "(init_value, transition_steps, decay_rate), optax's; pass TorchOpt's decay_rate= by keyword"
        )
    transition_steps = _check_steps("transition_steps", transition_steps, 1)
    if decay_rate is None:
        raise TypeError("exponential_decay() missing required argument: 'decay_rate'")
    decay_rate = float(_check_value("decay_rate", decay_rate))
    if decay_rate <= 0:
        raise ValueError(f"Invalid decay_rate: {decay_rate} (expected 0 < decay_rate)")
    transition_begin = _check_steps("transition_begin", transition_begin)
    if end_value is not None:
        end_value = _check_value("end_value", end_value)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        p = _steps(count, transition_begin) / transition_steps
        if staircase:
            p = p.floor()
        value = init_value * decay_rate**p
        if end_value is None:
            return value
        bound = _as_tensor(end_value)
        return torch.maximum(value, bound) if decay_rate < 1 else torch.minimum(value, bound)

    return schedule
