"""``torch.optim``-style optimizers over the same math as the functional ones."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Optional

import torch

from unrollopt import _adam
from unrollopt._hyperparameters import Hyperparameter

__all__ = ["Adam"]


class Adam(torch.optim.Optimizer):
    """Adam, behaving as ``torch.optim.Adam``: parameter groups, ``zero_grad``,
    ``step(closure)``, ``state_dict``/``load_state_dict`` (its state uses
    ``torch.optim.Adam``'s keys: ``step``, ``exp_avg``, ``exp_avg_sq``).

    The update is the one documented in :func:`unrollopt.adam`; ``eps_root`` is
    the one addition. With ``use_accelerated_op=True`` each group's step is one
    fused multi-tensor call that updates parameters and moments in place.
    """

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
        _adam.AdamHyperparameters.checked(lr, betas, eps, weight_decay, eps_root, maximize)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            eps_root=eps_root,
            maximize=maximize,
            use_accelerated_op=use_accelerated_op,
        )
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # A torch.optim.Adam checkpoint lacks unrollopt's own options.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group's hyperparameters are checked before any group is stepped.
        hps = [
            _adam.AdamHyperparameters.checked(
                group["lr"], group["betas"], group["eps"], group["weight_decay"],
                group["eps_root"], group["maximize"],
            )  # fmt: skip
            for group in self.param_groups
        ]
        for group, hp in zip(self.param_groups, hps):
            # One call per step count (all parameters of a group share it unless
            # some had no gradient in earlier steps).
            by_step: dict[float, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("unrollopt.Adam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                by_step[float(state["step"])].append(p)
            for step, params in by_step.items():
                states = [self.state[p] for p in params]
                _adam.step(
                    [p.grad for p in params],
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    params,
                    torch.tensor(step + 1, dtype=torch.float64),
                    hp,
                    fused=bool(group["use_accelerated_op"]),
                    inplace=True,
                    update_params=True,
                )
                for s in states:
                    s["step"] += 1
        return loss
