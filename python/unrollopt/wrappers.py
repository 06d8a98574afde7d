"""Object-oriented wrappers of any :class:`GradientTransformation` (the
spellings TorchOpt users know): :class:`Optimizer`, a ``torch.optim``-style
optimizer for plain training steps, and :class:`FuncOptimizer`, a
differentiable step on a pytree of parameters."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch

from unrollopt import _pytree
from unrollopt.base import GradientTransformation, OptState, Params
from unrollopt.update import apply_updates

__all__ = ["Optimizer", "FuncOptimizer"]


def _check_impl(impl: object) -> GradientTransformation:
    if not isinstance(impl, GradientTransformation):
        raise TypeError(f"impl must be a GradientTransformation (e.g. unrollopt.sgd(0.1)), got {type(impl).__name__}")
    return impl


class Optimizer:
    """A ``torch.optim``-style optimizer over any transformation:
    ``Optimizer(net.parameters(), unrollopt.chain(unrollopt.clip_grad_norm(1.0), unrollopt.sgd(0.1)))``.

    ``step()`` runs ``impl.update`` on the parameters' ``.grad`` in place and
    adds the updates to the parameters (not differentiable: a plain training
    step; the ``.grad`` tensors hold the updates afterwards, as in TorchOpt).
    Parameters whose ``.grad`` is None are left as they are. Each
    ``add_param_group`` call makes a group with its own state.
    """

    def __init__(self, params: Iterable[torch.Tensor], impl: GradientTransformation) -> None:
        self.impl = _check_impl(impl)
        self.param_groups: list[tuple[torch.Tensor, ...]] = []
        self.state_groups: list[OptState] = []
        self.add_param_group(params)

    def add_param_group(self, params: Iterable[torch.Tensor]) -> None:
        """Adds ``params`` (an iterable of tensors) as a group with its own state."""
        if isinstance(params, torch.Tensor):
            raise TypeError("params must be an iterable of tensors, got a tensor (wrap it in a list)")
        group = tuple(params)
        if not group:
            raise ValueError("params is empty")
        seen = {id(p) for g in self.param_groups for p in g}
        for i, p in enumerate(group):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params[{i}] must be a tensor, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"params[{i}] is already in a parameter group")
            seen.add(id(p))
        self.state_groups.append(self.impl.init(group))
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Resets the gradients: to None (the default, as torch.optim), or to zeros."""
        for p in (p for group in self.param_groups for p in group):
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().requires_grad_(False).zero_()

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One step of every group; ``closure`` (re-evaluating the loss with
        grad enabled) is called first, and its result returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        new_states = []
        for group, state in zip(self.param_groups, self.state_groups):
            grads = tuple(p.grad for p in group)
            updates, state = self.impl.update(grads, state, params=group, inplace=True)
            apply_updates(group, updates, inplace=True)
            new_states.append(state)
        self.state_groups = new_states
        return loss

    def state_dict(self) -> tuple[OptState, ...]:
        """The state of each group (tensors by reference)."""
        return tuple(self.state_groups)

    def load_state_dict(self, state_dict: tuple[OptState, ...]) -> None:
        if len(state_dict) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(state_dict)} groups but the optimizer has {len(self.param_groups)}")
        self.state_groups = list(state_dict)


class FuncOptimizer:
    """A differentiable step on a pytree of parameters: ``params =
    fopt.step(loss, params)`` takes the gradients of ``loss`` with
    ``create_graph=True``, runs ``impl.update`` and returns the new
    parameters (the same structure), so gradients flow back through every
    step. The optimizer state starts at the first step (``impl.init``).
    ``inplace=True`` updates in place instead (not differentiable).
    """

    def __init__(self, impl: GradientTransformation, *, inplace: bool = False) -> None:
        self.impl = _check_impl(impl)
        self.inplace = bool(inplace)
        self.optim_state: Optional[OptState] = None

    def step(self, loss: torch.Tensor, params: Params, inplace: Optional[bool] = None) -> Params:
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss must be a scalar tensor")
        inplace = self.inplace if inplace is None else bool(inplace)
        if self.optim_state is None:
            self.optim_state = self.impl.init(params)
        leaves, spec = _pytree.flatten(params)
        wanted = [p for p in leaves if isinstance(p, torch.Tensor) and p.requires_grad]
        if not wanted:
            raise ValueError("none of params requires grad")
        found = iter(torch.autograd.grad(loss, wanted, create_graph=not inplace, allow_unused=True))
        grads = [next(found) if isinstance(p, torch.Tensor) and p.requires_grad else None for p in leaves]
        updates, self.optim_state = self.impl.update(
            _pytree.unflatten(grads, spec), self.optim_state, params=params, inplace=inplace
        )
        if inplace:
            with torch.no_grad():
                return apply_updates(params, updates, inplace=True)
        return apply_updates(params, updates, inplace=False)

    def state_dict(self) -> Optional[OptState]:
        return self.optim_state

    def load_state_dict(self, state: Optional[OptState]) -> None:
        self.optim_state = state
