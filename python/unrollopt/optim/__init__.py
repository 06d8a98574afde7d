"""``torch.optim``-style optimizers over the same math as the functional ones,
one per optimizer of :mod:`unrollopt.optimizers`, made from its definition.

Besides a number or a 0-d tensor, ``lr`` may be a schedule (a function of the
step count, see :mod:`unrollopt.schedule`), as in TorchOpt: each step calls it
with the number of steps the parameter has taken before.
"""

from __future__ import annotations

import inspect
import textwrap
from collections import defaultdict
from typing import Any, Callable, Iterable, Optional, Union

import torch

from unrollopt import _signatures, _step
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._optimizer import Definition
from unrollopt.optimizers import DEFINITIONS

#: A learning rate: a number, a 0-d tensor, or a schedule (step count -> rate).
RateOrSchedule = Union[Hyperparameter, Callable[[torch.Tensor], Hyperparameter]]

__all__: list[str] = []


def _identity(value: Any) -> Any:
    """A setting's value as a comparable key, tensors by identity."""
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    if isinstance(value, (tuple, list)):
        return tuple(_identity(v) for v in value)
    return value


class _Optimizer(torch.optim.Optimizer):
    """A ``torch.optim`` optimizer whose step is :func:`_step.step` in place,
    made from an optimizer's :class:`Definition` (its alias's settings, checks,
    defaults and annotations are the constructor's: those the definition names
    ``positional`` may also be passed by position, as ``torch.optim`` orders
    them; its state keys and step count are ``torch.optim``'s)."""

    _definition: Definition

    def __init_subclass__(cls, *, definition: Optional[Definition] = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if definition is None:  # a subclass of an optimizer (a user's): inherits it all
            return
        cls._definition = definition
        alias = definition.alias

        def body(self: _Optimizer, arguments: dict[str, Any]) -> None:
            params = arguments.pop("params")
            settings = {**defaults, **arguments}
            # Bad settings raise before anything is made, as the alias's (e.g.
            # an initial state's value) and as a group's (lr one number or schedule).
            alias(**arguments)
            self._checked_config(settings)
            torch.optim.Optimizer.__init__(self, params, settings)

        params = inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Iterable[Any]")
        init = _signatures.constructor(
            cls.__name__, alias, body, before=[params], drop=["moment_requires_grad"],
            positional=definition.positional, annotations={"lr": "RateOrSchedule"},
        )  # fmt: skip
        defaults = _signatures.defaults(init)
        if "__init__" not in cls.__dict__:  # (a class may write its own)
            cls.__init__ = init  # type: ignore[method-assign]

    # Each class's own, made in __init_subclass__ (its signature is the alias's:
    # inspect.signature and help() show it; static type checkers see this one).
    def __init__(self, params: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is not an optimizer of its own; use unrollopt.Adam etc.")

    def _config(self, group: dict[str, Any]) -> _step.Config:
        """The group's settings for its operator."""
        parameters = self._definition.signature.parameters
        return self._definition.config({name: value for name, value in group.items() if name in parameters})

    def _checked_config(self, group: dict[str, Any]) -> _step.Config:
        """``_config`` of the group, with a schedule as lr standing for its values (checked at each step)."""
        if callable(group["lr"]):
            group = {**group, "lr": 1.0}
        return self._config(group)

    def _cached_config(self, group: dict[str, Any]) -> _step.Config:
        """The group's config, made (and checked) again only when a setting
        changed: a value, or which tensor a tensor setting is (a tensor changed
        in place is read by the operator where it is)."""
        key = tuple((k, _identity(v)) for k, v in group.items() if k != "params")
        cache = self.__dict__.setdefault("_configs", {})
        hit = cache.get(id(group))
        if hit is None or hit[0] != key:
            hit = cache[id(group)] = (key, self._checked_config(group))
        return hit[1]

    def _count(self, state: dict[str, Any]) -> float:
        """The number of steps the parameter has taken (what a schedule as lr is given)."""
        return float(state["step"]) if "step" in state else 0.0

    @staticmethod
    def _decay_mask(group: dict[str, Any]) -> Optional[list[bool]]:
        """The group's ``mask`` as one bool per parameter (None: decay everywhere)."""
        mask = group.get("mask")
        if mask is None:
            return None
        if callable(mask):
            mask = mask(tuple(group["params"]))
        if isinstance(mask, (str, bytes)) or not isinstance(mask, Iterable):
            raise TypeError(
                f"mask must be a sequence of bools (one per parameter) or a function giving one, got {type(mask).__name__}"
            )
        mask = list(mask)
        if len(mask) != len(group["params"]):
            raise ValueError(f"mask has {len(mask)} entries for a group of {len(group['params'])} parameters")
        for i, m in enumerate(mask):
            if not isinstance(m, bool):
                raise TypeError(f"mask[{i}] must be a bool, got {type(m).__name__}")
        return mask

    def _next_step(self, state: dict[str, Any]) -> float:
        """The step number (counting from 1) the parameter's next step takes:
        from torch.optim's ``step`` state (a float32 tensor); without one
        (torch.optim.SGD's rule: it keeps no step count), 1 until the
        parameter has a state, 2 after (all such a step reads of it)."""
        if not self._definition.counts_steps:
            return 2.0 if next(iter(self._definition.state_keys.values())) in state else 1.0
        return float(state["step"]) + 1 if "step" in state else 1.0

    def _scalar(self, config: _step.Config, state: dict[str, Any], step: float) -> Optional[torch.Tensor]:
        """The optimizer's scalar state (NAdam's product) after this step, if it has one."""
        scalar = self._definition.scalar
        if scalar is None:
            return None
        # torch.optim.NAdam's arithmetic: in the state's dtype, the default scalar one.
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        previous = state.get(scalar.name, torch.full((), scalar.initial, dtype=dtype))
        return scalar.advance(previous, config, torch.tensor(step, dtype=torch.float64))

    def _advance(self, group: dict[str, Any], states: list[dict[str, Any]], scalar: Optional[torch.Tensor]) -> None:
        """Records that the parameters with these states (stepped together) took a step."""
        if scalar is not None:
            for state in states:
                state[self._definition.scalar.name] = scalar.clone()  # type: ignore[union-attr]
        if not self._definition.counts_steps and not callable(group["lr"]):  # (a schedule needs the count)
            return
        for state in states:
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
        torch._foreach_add_([state["step"] for state in states], 1.0)  # one call, not one per parameter

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # A torch.optim checkpoint lacks unrollopt's own options.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group is checked before any is stepped.
        configs = [self._cached_config(group) for group in self.param_groups]
        masks = [self._decay_mask(group) for group in self.param_groups]
        for group, config, mask in zip(self.param_groups, configs, masks):
            keys = [self._definition.state_keys[name] for name in config.state_names]
            initial = {name: float(group[setting]) for name, setting in self._definition.choices.initial.items()}
            scalar_name = self._definition.scalar.name if self._definition.scalar is not None else None
            schedule = group["lr"] if callable(group["lr"]) else None
            # One fused call per step number (parameters of a group share it
            # unless some had no gradient in earlier steps), step count for a
            # schedule and whether the weight decay applies.
            by_step: dict[tuple, list[tuple[torch.Tensor, dict]]] = defaultdict(list)
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"unrollopt.{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                count = self._count(state) if schedule is not None else None
                decayed = mask is None or mask[i]
                shared = float(state[scalar_name]) if scalar_name in state else None  # (NAdam's product)
                by_step[self._next_step(state), shared, count, decayed].append((p, state))
            for (step, _, count, decayed), members in by_step.items():
                step_config = config
                scalar = self._scalar(config, members[0][1], step)
                if scalar is not None:
                    step_config = step_config.replace(**{scalar_name: float(scalar)})
                if schedule is not None:
                    step_config = step_config.replace(lr=schedule(torch.tensor(int(count))))
                if not decayed:
                    step_config = step_config.replace(weight_decay=0.0)
                params = [p for p, _ in members]
                # New state starts at zero; it is stored only once the step succeeded.
                states = [
                    [
                        state[key]
                        if key in state
                        else torch.full_like(p, initial.get(name, 0.0), memory_format=torch.preserve_format)
                        for p, state in members
                    ]
                    for name, key in zip(config.state_names, keys)
                ]
                _step.step(
                    [p.grad for p in params],
                    states,
                    params,
                    torch.tensor(step, dtype=torch.float64),
                    step_config,
                    fused=bool(group["use_accelerated_op"]),
                    inplace=True,
                    update_params=True,
                )
                for i, (_, state) in enumerate(members):
                    for key, values in zip(keys, states):
                        state[key] = values[i]
                self._advance(group, [state for _, state in members], scalar)
        return loss


def _docstring(d: Definition) -> str:
    """The class's docstring, from the definition."""
    keys = ["step"] if d.counts_steps else []
    keys += [d.scalar.name] if d.scalar is not None else []
    keys += list(d.state_keys.values())
    shown = ", ".join(f"``{k}``" for k in keys)
    behaves = f"behaving as ``{d.torch_class}``" if d.torch_class else "the ``torch.optim`` way"
    moves = ", so state dicts move between the two" if d.torch_class else ""
    doc = (
        f"{d.class_name}, {behaves}: parameter groups, ``zero_grad``, ``step(closure)``, "
        f"``state_dict``/``load_state_dict`` (state keys {shown}, those its settings use{moves}). "
        f"The update is the one documented in :func:`unrollopt.{d.name}`; with "
        "``use_accelerated_op=True`` each group's step is one fused multi-tensor call that "
        "updates the parameters and the state in place."
    )
    doc += " " + " ".join(d.notes.split()) if d.notes else ""
    return textwrap.fill(doc, 80, break_on_hyphens=False) + "\n"


for _definition in DEFINITIONS:
    _class = type(_definition.class_name, (_Optimizer,), {"__doc__": _docstring(_definition), "__module__": __name__},
                  definition=_definition)  # fmt: skip
    for _name in (_definition.class_name, *_definition.spellings):
        globals()[_name] = _class
        __all__.append(_name)
