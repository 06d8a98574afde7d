"""Differentiable object-oriented optimizers for ``nn.Module``s: ``step(loss)``
takes an inner step whose result stays in the autograd graph."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from unrollopt import _signatures, _step
from unrollopt.base import GradientTransformation, OptState
from unrollopt.optimizers import DEFINITIONS
from unrollopt.update import apply_updates

__all__ = ["MetaOptimizer"]


class _Slot(NamedTuple):
    """Where a parameter lives: ``module._parameters[name]``."""

    module: nn.Module
    name: str

    def get(self) -> torch.Tensor:
        return self.module._parameters[self.name]

    def set(self, value: torch.Tensor) -> None:
        # Bypasses nn.Module.__setattr__, which accepts only nn.Parameter: the
        # new value is the (non-leaf) result of a differentiable step.
        self.module._parameters[self.name] = value


def _parameter_slots(module: nn.Module) -> list[_Slot]:
    slots, seen = [], set()
    for submodule in module.modules():
        for name, p in submodule._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                slots.append(_Slot(submodule, name))
    return slots


class MetaOptimizer:
    """Wraps a functional optimizer (a :class:`GradientTransformation`) into a
    differentiable optimizer over a module's parameters.

    ``step(loss)`` takes the gradients of ``loss`` with respect to the module's
    current parameters (with ``create_graph=True``), updates out of place, and
    puts the new tensors into the module, so its next forward uses them and
    gradients flow back through every step taken. Buffers are not touched;
    parameters that ``loss`` does not use keep their value.

    Args:
        module: the module whose parameters are optimized.
        impl: the functional optimizer, e.g. ``unrollopt.sgd(lr=1.0)``.
        first_order: if True, the inner gradients are taken without
            ``create_graph`` (same forward values, no second-order terms).
    """

    def __init__(self, module: nn.Module, impl: GradientTransformation, *, first_order: bool = False) -> None:
        if not isinstance(impl, GradientTransformation):
            raise TypeError(f"impl must be a GradientTransformation, got {type(impl).__name__}")
        self.impl = impl
        self.first_order = bool(first_order)
        # Where each group's parameters live (module, name), in module.parameters() order.
        self.slot_groups: list[list[_Slot]] = []
        self.state_groups: list[OptState] = []
        self.add_param_group(module)

    @property
    def param_groups(self) -> list[list[_Slot]]:
        """Deprecated: :attr:`slot_groups` (where each group's parameters live;
        not ``torch.optim``'s list of dicts)."""
        warnings.warn(
            "MetaOptimizer.param_groups is now slot_groups (it is not torch.optim's list of dicts)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.slot_groups

    def add_param_group(self, module: nn.Module) -> None:
        """Adds the parameters of ``module`` as a new group, with its own state."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
        slots = _parameter_slots(module)
        if not slots:
            raise ValueError(f"{type(module).__name__} has no parameters to optimize")
        self.state_groups.append(self.impl.init(tuple(s.get() for s in slots)))
        self.slot_groups.append(slots)
        self._slots = [slot for group in self.slot_groups for slot in group]

    def step(self, loss: torch.Tensor) -> None:
        """Takes one differentiable step down ``loss``."""
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss must be a tensor, got {type(loss).__name__}")
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        if not torch.is_grad_enabled():
            raise RuntimeError(
                f"{type(self).__name__}.step: grad mode is off (inside torch.no_grad() or "
                "torch.inference_mode()), so the step could not be differentiated; take the inner "
                "steps with grad enabled (for a plain, non-differentiable step use a torch.optim "
                "optimizer)"
            )
        params = [slot.get() for slot in self._slots]
        wanted = [p for p in params if p.requires_grad]
        if not loss.requires_grad or not wanted:
            raise ValueError("loss does not depend on the parameters being optimized")
        grads = torch.autograd.grad(loss, wanted, create_graph=not self.first_order, allow_unused=True)
        if len(wanted) < len(params):
            it = iter(grads)
            grads = [next(it) if p.requires_grad else None for p in params]
        if all(g is None for g in grads):
            raise ValueError("loss does not depend on the parameters being optimized")
        new_states, new_params = [], []
        start = 0
        quiet = _step.first_order_on_purpose.set(True) if self.first_order else None
        try:
            for slots, state in zip(self.slot_groups, self.state_groups):
                group_params = tuple(params[start : start + len(slots)])
                group_grads = tuple(grads[start : start + len(slots)])
                start += len(slots)
                updates, state = self.impl.update(group_grads, state, params=group_params, inplace=False)
                if type(updates) is tuple and len(updates) == len(slots) and all(u is not None for u in updates):
                    new_params += torch._foreach_add(group_params, updates)  # one autograd node for the group
                else:
                    new_params += apply_updates(group_params, updates, inplace=False)
                new_states.append(state)
        finally:
            if quiet is not None:
                _step.first_order_on_purpose.reset(quiet)
        # Only now, with every group computed, is anything replaced.
        self.state_groups = new_states
        for slot, p in zip(self._slots, new_params):
            slot.set(p)

    def state_dict(self) -> tuple[OptState, ...]:
        """The optimizer state of each group (tensors by reference)."""
        return tuple(self.state_groups)

    def load_state_dict(self, state_dict: tuple[OptState, ...]) -> None:
        if len(state_dict) != len(self.slot_groups):
            raise ValueError(f"state_dict has {len(state_dict)} groups but the optimizer has {len(self.slot_groups)}")
        self.state_groups = list(state_dict)


def _meta_optimizer(name: str, alias_fn: Callable[..., GradientTransformation]) -> type[MetaOptimizer]:
    """The :class:`MetaOptimizer` over the alias ``alias_fn``, with its signature:
    ``module``, the alias's arguments (names, order, defaults and types are the
    alias's own), and ``first_order``."""

    def body(self: MetaOptimizer, arguments: dict[str, Any]) -> None:
        module = arguments.pop("module")
        first_order = arguments.pop("first_order", False)
        MetaOptimizer.__init__(self, module, alias_fn(**arguments), first_order=first_order)

    Parameter = inspect.Parameter
    module = Parameter("module", Parameter.POSITIONAL_OR_KEYWORD, annotation="nn.Module")
    first_order = Parameter("first_order", Parameter.KEYWORD_ONLY, default=False, annotation="bool")
    init = _signatures.constructor(name, alias_fn, body, before=[module], after=[first_order])
    alias_name = alias_fn.__name__
    doc = (
        f":class:`MetaOptimizer` with :func:`unrollopt.{alias_name}`: ``module``, then the "
        f"arguments of :func:`unrollopt.{alias_name}` (the same names, order and defaults), "
        "and ``first_order`` (see :class:`MetaOptimizer`). The transformation sees the "
        "parameters as a tuple in ``module.parameters()`` order (the order of, e.g., AdamW's ``mask``)."
    )
    return type(name, (MetaOptimizer,), {"__init__": init, "__doc__": doc, "__module__": __name__})


for _definition in DEFINITIONS:
    _class = _meta_optimizer("Meta" + _definition.class_name, _definition.alias)
    for _name in (_definition.class_name, *_definition.spellings):  # (TorchOpt's spellings too)
        globals()["Meta" + _name] = _class
        __all__.append("Meta" + _name)
