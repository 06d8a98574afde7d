"""One optimizer step over lists of tensors, shared by every optimizer: the fused
operator ``torch.ops.unrollopt.<name>`` or the optimizer's plain-PyTorch math,
behind the same checks and the same in-place semantics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from unrollopt import _C, _hyperparameters
from unrollopt._hyperparameters import Hyperparameter

Tensors = Sequence[torch.Tensor]
States = Sequence[Tensors]


@dataclass(frozen=True)
class Config:
    """An optimizer's checked settings, in its operator's order (``cpp/include/unrollopt/ops.h``)."""

    op: str  # operator name, e.g. "adam"
    state_names: tuple[str, ...]
    hyper_names: tuple[str, ...]
    hyper: tuple[Hyperparameter, ...]  # numbers or 0-d tensors
    options: tuple[float, ...]
    # The 0-d tensors the fused operator takes, made once.
    tensors: tuple[torch.Tensor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(_hyperparameters.as_tensor(h) for h in self.hyper))

    def __getitem__(self, name: str) -> Hyperparameter:
        return self.hyper[self.hyper_names.index(name)]

    def replace(self, **hyper: Hyperparameter) -> "Config":
        """The same settings with some hyperparameters replaced (unchecked)."""
        values = tuple(hyper.get(name, value) for name, value in zip(self.hyper_names, self.hyper))
        return Config(self.op, self.state_names, self.hyper_names, values, self.options)

    @property
    def uses_params(self) -> bool:
        """Whether the step reads the parameters (a weight decay that is not a constant 0)."""
        return "weight_decay" in self.hyper_names and not _hyperparameters.is_zero(self["weight_decay"])


# plain(grads, states, params, count, config, inplace, update_params) -> (updates, states)
PlainStep = Callable[[Tensors, States, Tensors, torch.Tensor, Config, bool, bool], tuple[list, list]]


def check_tensors(what: str, **lists: Tensors) -> None:
    """TypeError, naming the argument, for anything in the lists that is not a tensor."""
    for name, ts in lists.items():
        for i, t in enumerate(ts):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"unrollopt.{what}: {name}[{i}] must be a tensor, got {type(t).__name__}")


def check_inplace_allowed(what: str, *lists: Tensors, config: Optional[Config] = None) -> None:
    """An in-place step cannot carry gradients: refuse it (before touching
    anything) when autograd would need them."""
    if not torch.is_grad_enabled():
        return
    tensors = [t for ts in lists for t in ts]
    if config is not None:
        tensors += list(config.tensors)
    if any(t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{what}(..., inplace=True) would overwrite tensors that autograd needs (an input "
            "requires grad). Inside a differentiable inner loop pass inplace=False; for a plain "
            "optimizer step run under torch.no_grad()."
        )


def step(
    plain: PlainStep,
    grads: Tensors,
    states: States,
    params: Tensors,
    count: torch.Tensor,
    config: Config,
    *,
    fused: bool,
    inplace: bool,
    update_params: bool = False,
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """One step; ``count`` is the step number after incrementing, ``states`` one
    list per state of the optimizer, ``params`` may be empty when the step does
    not read them.

    Out of place it returns new ``(updates, states)``. In place it overwrites
    the states, and writes the updates into ``grads`` or, with
    ``update_params``, adds them to ``params``; it returns the overwritten lists.
    """
    check_tensors(config.op, grads=grads, params=params, **dict(zip(config.state_names, states)))
    if fused:  # the operator checks the rest
        if grads and grads[0].device.type not in ("cpu", "meta"):
            if not _C.accelerated_op_available(str(grads[0].device)):
                raise RuntimeError(
                    f"use_accelerated_op=True: the fused operators have no kernel for device "
                    f"{grads[0].device} in this build (unrollopt.accelerated_op_available is False); "
                    "use use_accelerated_op=False there"
                )
        flat = [t for ts in states for t in ts]
        if inplace:
            op = getattr(torch.ops.unrollopt, config.op + "_")
            op(params, grads, flat, count, config.tensors, config.options, update_params)
            return list(params if update_params else grads), [list(ts) for ts in states]
        updates, flat = getattr(torch.ops.unrollopt, config.op)(
            grads, flat, params, count, config.tensors, config.options
        )
        n = len(grads)
        return updates, [flat[k * n : (k + 1) * n] for k in range(len(states))]

    # The operator's own checks, for the plain path.
    named = [(name, list(ts)) for name, ts in zip(config.state_names, states)]
    _C.check_parameter_lists(config.op, list(grads), named, list(params))
    if inplace:
        _C.check_writable(config.op, "params" if update_params else "grads", list(params if update_params else grads))
        for name, ts in named:
            _C.check_writable(config.op, name, ts)
    return plain(grads, states, params, count, config, inplace, update_params)


def finish(
    u: torch.Tensor, i: int, grads: Tensors, params: Tensors, inplace: bool, update_params: bool
) -> torch.Tensor:
    """Where a plain step's update goes: returned, written into the gradient,
    or added to the parameter."""
    if not inplace:
        return u
    return params[i].add_(u) if update_params else grads[i].copy_(u)
