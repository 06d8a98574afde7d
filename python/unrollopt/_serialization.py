"""Checkpoints that load with ``torch.load(..., weights_only=True)``.

Under ``weights_only=True`` (torch.load's default) the unpickler builds only
allowlisted types and calls only allowlisted functions. What unrollopt puts in
a checkpoint is its own: the optimizers' state NamedTuples (alone, in tuples,
in ``extract_state_dict``'s results), and transformations and schedules, which
pickle as the public constructor call that made them. Exactly those types and
functions are allowlisted here, nothing broader. A transformation holding a
user's own function (``register_hook(my_hook)``, a schedule of one's own) pickles
with it, and ``torch.load(..., weights_only=True)`` then refuses that function by
name ("Unsupported global"); allowlist it with
``torch.serialization.add_safe_globals([my_hook])`` if it is trusted, or load
with ``weights_only=False``.
"""

from __future__ import annotations

from typing import Any

import torch


def safe_globals() -> list[Any]:
    """unrollopt's own types and constructors that checkpoints hold (each
    optimizer's state and alias also by the names ``unrollopt.alias`` gave
    them before they moved to :mod:`unrollopt.optimizers`)."""
    from unrollopt import transform, utils
    from unrollopt._recorded import CONSTRUCTORS, _remake
    from unrollopt.optimizers import DEFINITIONS

    states = [
        obj
        for module in (transform, utils)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, tuple) and obj.__module__ == module.__name__
    ]
    states += {d.state: None for d in DEFINITIONS}  # (states shared by several optimizers once)
    earlier = [(obj, f"unrollopt.alias.{obj.__name__}") for obj in [*states, *(d.alias for d in DEFINITIONS)]
               if obj.__module__.startswith("unrollopt.optimizers.")]  # fmt: skip
    functions = [_remake, transform.chain, transform.zero_nan_hook, transform.nan_to_num_hook]
    return [*states, *functions, *CONSTRUCTORS, *earlier]


def register() -> None:
    torch.serialization.add_safe_globals(safe_globals())
