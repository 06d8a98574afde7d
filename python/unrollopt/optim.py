"""``torch.optim``-style optimizers over the same math as the functional ones."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Optional

import torch

from unrollopt import _adam, _fused, _sgd
from unrollopt._hyperparameters import Hyperparameter

__all__ = ["Adam", "SGD"]


class _Optimizer(torch.optim.Optimizer):
    """A ``torch.optim`` optimizer whose step is :func:`_fused.step` in place.

    Subclasses give the group's :class:`_fused.Config`, the plain step, the
    names of their per-parameter state in ``torch.optim``'s state dict (in the
    order of the operator's states), and how a parameter's step number is kept.
    """

    _plain: _fused.PlainStep
    _state_keys: dict[str, str]  # operator state name -> torch.optim state key

    def _config(self, group: dict[str, Any]) -> _fused.Config:
        raise NotImplementedError

    def _next_step(self, state: dict[str, Any]) -> float:
        """The step number (counting from 1) the parameter's next step takes."""
        raise NotImplementedError

    def _advance(self, state: dict[str, Any]) -> None:
        """Records that a step was taken."""

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
        configs = [self._config(group) for group in self.param_groups]
        for group, config in zip(self.param_groups, configs):
            keys = [self._state_keys[name] for name in config.state_names]
            # One fused call per step number (parameters of a group share it
            # unless some had no gradient in earlier steps).
            by_step: dict[float, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"unrollopt.{type(self).__name__} does not support sparse gradients")
                by_step[self._next_step(self.state[p])].append(p)
            for step, params in by_step.items():
                # New state starts at zero; it is stored only once the step succeeded.
                states = [
                    [self.state[p].get(key, torch.zeros_like(p, memory_format=torch.preserve_format)) for p in params]
                    for key in keys
                ]
                _fused.step(
                    type(self)._plain,
                    [p.grad for p in params],
                    states,
                    params,
                    torch.tensor(step, dtype=torch.float64),
                    config,
                    fused=bool(group["use_accelerated_op"]),
                    inplace=True,
                    update_params=True,
                )
                for i, p in enumerate(params):
                    for key, values in zip(keys, states):
                        self.state[p][key] = values[i]
                    self._advance(self.state[p])
        return loss


class Adam(_Optimizer):
    """Adam, behaving as ``torch.optim.Adam``: parameter groups, ``zero_grad``,
    ``step(closure)``, ``state_dict``/``load_state_dict`` (its state uses
    ``torch.optim.Adam``'s keys ``step``, ``exp_avg``, ``exp_avg_sq``, so state
    dicts move between the two).

    The update is the one documented in :func:`unrollopt.adam`; ``eps_root`` is
    the one addition. With ``use_accelerated_op=True`` each group's step is one
    fused multi-tensor call that updates parameters and moments in place.
    """

    _plain = _adam.plain
    _state_keys = {"mu": "exp_avg", "nu": "exp_avg_sq"}

    def __init__(
        self,
        params: Iterable[Any],
        lr: Hyperparameter = 1e-3,
        betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyperparameter = 0.0,
        *,
        eps_root: float = 0.0,
        maximize: bool = False,
        use_accelerated_op: bool = False,
    ) -> None:
        _adam.config(lr, betas, eps, weight_decay, eps_root, maximize)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, eps_root=eps_root,
            maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _config(self, group: dict[str, Any]) -> _fused.Config:
        return _adam.config(
            group["lr"], group["betas"], group["eps"], group["weight_decay"], group["eps_root"], group["maximize"]
        )

    def _next_step(self, state: dict[str, Any]) -> float:
        return float(state["step"]) + 1 if "step" in state else 1.0

    def _advance(self, state: dict[str, Any]) -> None:
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["step"] += 1


class SGD(_Optimizer):
    """Stochastic gradient descent, behaving as ``torch.optim.SGD`` (momentum,
    dampening, Nesterov, weight decay, maximize; state key ``momentum_buffer``,
    so state dicts move between the two). The update is the one documented in
    :func:`unrollopt.sgd`.
    """

    _plain = _sgd.plain
    _state_keys = {"momentum_buffer": "momentum_buffer"}

    def __init__(
        self,
        params: Iterable[Any],
        lr: Hyperparameter = 1e-3,
        momentum: Hyperparameter = 0.0,
        dampening: Hyperparameter = 0.0,
        weight_decay: Hyperparameter = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        use_accelerated_op: bool = False,
    ) -> None:
        _sgd.config(lr, momentum, dampening, weight_decay, nesterov, maximize)
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, use_accelerated_op=use_accelerated_op,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _config(self, group: dict[str, Any]) -> _fused.Config:
        return _sgd.config(
            group["lr"], group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"],
            group["maximize"],
        )  # fmt: skip

    def _next_step(self, state: dict[str, Any]) -> float:
        # torch.optim.SGD's rule: the first step with momentum starts the buffer.
        return 2.0 if "momentum_buffer" in state else 1.0
