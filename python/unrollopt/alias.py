"""Optimizers as differentiable ``(init, update)`` transformations: every
optimizer's alias (``unrollopt.adam`` ...) and state, from its module in
:mod:`unrollopt.optimizers`, where it is defined."""

from __future__ import annotations

from unrollopt._transformation import LearningRate
from unrollopt.optimizers import DEFINITIONS

__all__ = ["LearningRate"]

for _definition in DEFINITIONS:
    for _name, _value in ((_definition.name, _definition.alias), (_definition.state.__name__, _definition.state)):
        if _name not in __all__:
            globals()[_name] = _value
            __all__.append(_name)
