"""Differentiable object-oriented optimizers for ``nn.Module``s: ``step(loss)``
takes an inner step whose result stays in the autograd graph."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from unrollopt import _fused, alias
from unrollopt._hyperparameters import Hyperparameter
from unrollopt.base import GradientTransformation, OptState
from unrollopt.update import apply_updates

__all__ = [
    "MetaOptimizer",
    "MetaAdaDelta",
    "MetaAdadelta",
    "MetaAdaGrad",
    "MetaAdagrad",
    "MetaAdaMax",
    "MetaAdam",
    "MetaAdamW",
    "MetaAdamax",
    "MetaNAdam",
    "MetaRAdam",
    "MetaRMSProp",
    "MetaRMSprop",
    "MetaSGD",
]


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
        self.param_groups: list[list[_Slot]] = []
        self.state_groups: list[OptState] = []
        self.add_param_group(module)

    def add_param_group(self, module: nn.Module) -> None:
        """Adds the parameters of ``module`` as a new group, with its own state."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
        slots = _parameter_slots(module)
        if not slots:
            raise ValueError(f"{type(module).__name__} has no parameters to optimize")
        self.state_groups.append(self.impl.init(tuple(s.get() for s in slots)))
        self.param_groups.append(slots)
        self._slots = [slot for group in self.param_groups for slot in group]

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
        quiet = _fused.first_order_on_purpose.set(True) if self.first_order else None
        try:
            for slots, state in zip(self.param_groups, self.state_groups):
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
                _fused.first_order_on_purpose.reset(quiet)
        # Only now, with every group computed, is anything replaced.
        self.state_groups = new_states
        for slot, p in zip(self._slots, new_params):
            slot.set(p)

    def state_dict(self) -> tuple[OptState, ...]:
        """The optimizer state of each group (tensors by reference)."""
        return tuple(self.state_groups)

    def load_state_dict(self, state_dict: tuple[OptState, ...]) -> None:
        if len(state_dict) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(state_dict)} groups but the optimizer has {len(self.param_groups)}")
        self.state_groups = list(state_dict)


class MetaAdadelta(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.adadelta` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 1.0,
        rho: Hyperparameter = 0.9,
        eps: float = 1e-6,
        weight_decay: Hyperparameter = 0.0,
        *,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.adadelta(
            lr, rho, eps, weight_decay, moment_requires_grad=moment_requires_grad, maximize=maximize,
            use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaAdagrad(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.adagrad` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 1e-2,
        lr_decay: Hyperparameter = 0.0,
        weight_decay: Hyperparameter = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.adagrad(
            lr, lr_decay, weight_decay, initial_accumulator_value, eps, moment_requires_grad=moment_requires_grad,
            maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaAdam(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.adam` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 1e-3,
        betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 0.0,
        *,
        eps_root: float = 0.0,
        amsgrad: bool = False,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.adam(
            lr, betas, eps, weight_decay, eps_root=eps_root, amsgrad=amsgrad, moment_requires_grad=moment_requires_grad,
            maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaAdamW(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.adamw` (same arguments; ``mask``,
    a function of the parameters or a tuple of bools in the module's parameter
    order, limits the weight decay)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 1e-3,
        betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 1e-2,
        *,
        eps_root: float = 0.0,
        amsgrad: bool = False,
        mask: Any = None,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.adamw(
            lr, betas, eps, weight_decay, eps_root=eps_root, amsgrad=amsgrad, mask=mask,
            moment_requires_grad=moment_requires_grad, maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaAdamax(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.adamax` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 2e-3,
        betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 0.0,
        *,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.adamax(
            lr, betas, eps, weight_decay, moment_requires_grad=moment_requires_grad, maximize=maximize,
            use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaRMSProp(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.rmsprop` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 1e-2,
        alpha: Hyperparameter = 0.99,
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 0.0,
        momentum: Hyperparameter = 0.0,
        centered: bool = False,
        *,
        initial_scale: float = 0.0,
        nesterov: bool = False,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.rmsprop(
            lr, alpha, eps, weight_decay, momentum, centered, initial_scale=initial_scale, nesterov=nesterov,
            moment_requires_grad=moment_requires_grad, maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


#: The spelling of ``torch.optim.RMSprop``.
MetaRMSprop = MetaRMSProp


class MetaRAdam(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.radam` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 1e-3,
        betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 0.0,
        *,
        decoupled_weight_decay: bool = False,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.radam(
            lr, betas, eps, weight_decay, decoupled_weight_decay=decoupled_weight_decay,
            moment_requires_grad=moment_requires_grad, maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaNAdam(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.nadam` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate = 2e-3,
        betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 0.0,
        momentum_decay: float = 4e-3,
        *,
        decoupled_weight_decay: bool = False,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.nadam(
            lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
            moment_requires_grad=moment_requires_grad, maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


class MetaSGD(MetaOptimizer):
    """:class:`MetaOptimizer` with :func:`unrollopt.sgd` (same arguments)."""

    def __init__(
        self,
        module: nn.Module,
        lr: alias.LearningRate,
        momentum: Hyperparameter = 0.0,
        dampening: Hyperparameter = 0.0,
        weight_decay: Hyperparameter = 0.0,
        nesterov: bool = False,
        *,
        moment_requires_grad: bool = False,
        maximize: bool = False,
        use_accelerated_op: bool = False,
        first_order: bool = False,
    ) -> None:
        impl = alias.sgd(
            lr, momentum, dampening, weight_decay, nesterov, moment_requires_grad=moment_requires_grad,
            maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(module, impl, first_order=first_order)


#: TorchOpt's spellings.
MetaAdaDelta = MetaAdadelta
MetaAdaGrad = MetaAdagrad
MetaAdaMax = MetaAdamax
