"""Every optimizer, one module each (``adam.py``: Adam's and AdamW's state,
alias with its settings, defaults and equations, and the facts the
``torch.optim``-style class needs), and :data:`DEFINITIONS`, the list every
engine is made from (:mod:`unrollopt.alias`, :mod:`unrollopt.optim`,
:mod:`unrollopt.meta`). A module added here is found: nothing else lists it."""

from __future__ import annotations

import importlib
import pkgutil

from unrollopt._optimizer import Definition

#: Every optimizer's definition: by module name, then in the module's order.
DEFINITIONS: list[Definition] = []

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    _found = importlib.import_module(f"{__name__}.{_module}")
    DEFINITIONS += [
        value.definition
        for value in vars(_found).values()
        if isinstance(getattr(value, "definition", None), Definition) and value.__module__ == _found.__name__
    ]
