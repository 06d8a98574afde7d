"""``torch.optim``-style optimizers over the same math as the functional ones.

Besides a number or a 0-d tensor, ``lr`` may be a schedule (a function of the
step count, see :mod:`unrollopt.schedule`), as in TorchOpt: each step calls it
with the number of steps the parameter has taken before.
"""

from __future__ import annotations

import functools
import inspect
from collections import defaultdict
from typing import Any, Callable, Iterable, Optional, Union

import torch

from unrollopt import (
    _adadelta,
    _adagrad,
    _adam,
    _adamax,
    _lion,
    _nadam,
    _radam,
    _rmsprop,
    _sgd,
    _signatures,
    _step,
    alias,
)
from unrollopt._hyperparameters import Hyperparameter

#: A learning rate: a number, a 0-d tensor, or a schedule (step count -> rate).
RateOrSchedule = Union[Hyperparameter, Callable[[torch.Tensor], Hyperparameter]]

__all__ = [
    "Adadelta", "AdaDelta", "Adagrad", "AdaGrad", "Adam", "AdamW", "Adamax", "AdaMax", "Lion", "NAdam", "RAdam",
    "RMSprop", "RMSProp", "SGD",
]  # fmt: skip


def _identity(value: Any) -> Any:
    """A setting's value as a comparable key, tensors by identity."""
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    if isinstance(value, (tuple, list)):
        return tuple(_identity(v) for v in value)
    return value


class _Optimizer(torch.optim.Optimizer):
    """A ``torch.optim`` optimizer whose step is :func:`_step.step` in place.

    A subclass names its functional ``alias`` (whose settings, checks, defaults
    and annotations its constructor takes: those named ``positional`` may
    also be passed by position, as ``torch.optim`` orders them), the
    ``config`` of a group (a function of the group's settings, by name) and
    the ``plain`` step; it gives the names of its per-parameter state in
    ``torch.optim``'s state dict (in the order of the operator's states), and,
    where they differ from the default, how a parameter's step number is kept.
    """

    _plain: _step.PlainStep
    _make_config: Callable[..., _step.Config]
    _config_settings: tuple[str, ...]  # the group settings _make_config takes
    _state_keys: dict[str, str]  # operator state name -> torch.optim state key

    def __init_subclass__(
        cls,
        *,
        alias: Optional[Callable[..., Any]] = None,
        config: Optional[Callable[..., _step.Config]] = None,
        plain: Optional[_step.PlainStep] = None,
        positional: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if alias is None:  # a subclass of an optimizer (a user's): inherits it all
            return
        assert config is not None and plain is not None, cls
        cls._plain, cls._make_config = staticmethod(plain), staticmethod(config)  # type: ignore[assignment]
        parameters = inspect.signature(alias).parameters
        cls._config_settings = tuple(n for n in inspect.signature(config).parameters if n in parameters)

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
            cls.__name__, alias, body, before=[params], drop=["moment_requires_grad"], positional=positional,
            annotations={"lr": "RateOrSchedule"},
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
        return type(self)._make_config(**{name: group[name] for name in self._config_settings})

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
        by default from torch.optim's ``step`` state (a float32 tensor)."""
        return float(state["step"]) + 1 if "step" in state else 1.0

    def _step_config(
        self, group: dict[str, Any], config: _step.Config, state: dict[str, Any], step: float
    ) -> _step.Config:
        """The config of a step of the parameters whose (first) state is ``state``."""
        return config

    def _state_key(self, state: dict[str, Any]) -> Any:
        """What, besides the step number, parameters stepped together must share."""
        return None

    def _advance(self, group: dict[str, Any], states: list[dict[str, Any]]) -> None:
        """Records that the parameters with these states (stepped together) took a step."""
        for state in states:
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
        torch._foreach_add_([state["step"] for state in states], 1.0)  # one call, not one per parameter

    def _initial_value(self, group: dict[str, Any], key: str) -> float:
        """The value a state (by its torch.optim key) starts with."""
        return 0.0

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
            keys = [self._state_keys[name] for name in config.state_names]
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
                by_step[self._next_step(state), self._state_key(state), count, decayed].append((p, state))
            for (step, _, count, decayed), members in by_step.items():
                step_config = self._step_config(group, config, members[0][1], step)
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
                        else torch.full_like(p, self._initial_value(group, key), memory_format=torch.preserve_format)
                        for p, state in members
                    ]
                    for key in keys
                ]
                _step.step(
                    type(self)._plain,
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
                self._advance(group, [state for _, state in members])
        return loss


class Adam(_Optimizer, alias=alias.adam, config=_adam.config, plain=_adam.plain, positional=("amsgrad",)):
    """Adam, behaving as ``torch.optim.Adam``: parameter groups, ``zero_grad``,
    ``step(closure)``, ``state_dict``/``load_state_dict`` (its state uses
    ``torch.optim.Adam``'s keys ``step``, ``exp_avg``, ``exp_avg_sq``, so state
    dicts move between the two).

    The update is the one documented in :func:`unrollopt.adam` (``amsgrad`` as
    ``torch.optim.Adam``'s, state key ``max_exp_avg_sq``); ``eps_root`` is the
    one addition. With ``use_accelerated_op=True`` each group's step is one
    fused multi-tensor call that updates parameters and moments in place.
    """

    _state_keys = {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"}


class AdamW(
    Adam, alias=alias.adamw, config=functools.partial(_adam.config, decoupled=True), plain=_adam.plain,
    positional=("amsgrad",),
):  # fmt: skip
    """AdamW, behaving as ``torch.optim.AdamW`` (decoupled weight decay; state
    keys ``step``, ``exp_avg``, ``exp_avg_sq``, so state dicts move between the
    two). The update is the one documented in :func:`unrollopt.adamw`;
    ``eps_root`` and ``mask`` are the additions: ``mask`` (a group setting, as
    in TorchOpt's ``AdamW``) limits the weight decay to the parameters where it
    is True, a sequence of bools with one per parameter of the group or a
    function of the tuple of the group's parameters giving one.
    """


class Adamax(Adam, alias=alias.adamax, config=_adamax.config, plain=_adamax.plain):
    """Adamax, behaving as ``torch.optim.Adamax`` (state keys ``step``,
    ``exp_avg``, ``exp_inf``, so state dicts move between the two). The update
    is the one documented in :func:`unrollopt.adamax`.
    """

    _state_keys = {"mu": "exp_avg", "nu": "exp_inf"}


#: The spelling of optax and torchopt.
AdaMax = Adamax


class Lion(_Optimizer, alias=alias.lion, config=_lion.config, plain=_lion.plain):
    """Lion, the ``torch.optim`` way (parameter groups, ``zero_grad``,
    ``step(closure)``, ``state_dict``; state keys ``step`` and ``exp_avg``, the
    momentum). The update is the one documented in :func:`unrollopt.lion`;
    ``mask`` limits the weight decay as :class:`AdamW`'s does.
    """

    _state_keys = {"mu": "exp_avg"}


class RMSprop(_Optimizer, alias=alias.rmsprop, config=_rmsprop.config, plain=_rmsprop.plain):
    """RMSprop, behaving as ``torch.optim.RMSprop`` (alpha, eps, weight decay,
    momentum, centered, maximize, and optax's ``nesterov`` and ``initial_scale``; state keys ``step``, ``square_avg``,
    ``grad_avg`` when centered, ``momentum_buffer`` with momentum, so state
    dicts move between the two). The update is the one documented in
    :func:`unrollopt.rmsprop`. The step is counted (torch.optim.RMSprop keeps
    it) though the update does not use it.
    """

    _state_keys = {"square_avg": "square_avg", "grad_avg": "grad_avg", "momentum_buffer": "momentum_buffer"}

    def _initial_value(self, group: dict[str, Any], key: str) -> float:
        # The running average of squares starts at initial_scale (optax's and TorchOpt's option; 0 as torch).
        return float(group["initial_scale"]) if key == "square_avg" else 0.0


#: The spelling of optax and torchopt.
RMSProp = RMSprop


class Adagrad(_Optimizer, alias=alias.adagrad, config=_adagrad.config, plain=_adagrad.plain):
    """Adagrad, behaving as ``torch.optim.Adagrad`` (lr decay, weight decay,
    initial accumulator value, maximize; state keys ``step`` and ``sum``, so
    state dicts move between the two). The update is the one documented in
    :func:`unrollopt.adagrad`. Unlike ``torch.optim.Adagrad``, the state of a
    parameter is created at its first step, not in the constructor, and a
    group's own ``initial_accumulator_value`` is used (``torch.optim.Adagrad``
    starts every sum at the constructor's value).
    """

    _state_keys = {"sum": "sum"}

    def _initial_value(self, group: dict[str, Any], key: str) -> float:
        return float(group["initial_accumulator_value"])


class Adadelta(_Optimizer, alias=alias.adadelta, config=_adadelta.config, plain=_adadelta.plain):
    """Adadelta, behaving as ``torch.optim.Adadelta`` (state keys ``step``,
    ``square_avg``, ``acc_delta``, so state dicts move between the two). The
    update is the one documented in :func:`unrollopt.adadelta`.
    """

    _state_keys = {"square_avg": "square_avg", "acc_delta": "acc_delta"}


class SGD(_Optimizer, alias=alias.sgd, config=_sgd.config, plain=_sgd.plain):
    """Stochastic gradient descent, behaving as ``torch.optim.SGD`` (momentum,
    dampening, Nesterov, weight decay, maximize; state key ``momentum_buffer``,
    so state dicts move between the two). The update is the one documented in
    :func:`unrollopt.sgd`.
    """

    _state_keys = {"momentum_buffer": "momentum_buffer"}

    def _next_step(self, state: dict[str, Any]) -> float:
        # torch.optim.SGD's rule: the first step with momentum starts the buffer;
        # like torch.optim.SGD it keeps no step count.
        return 2.0 if "momentum_buffer" in state else 1.0

    def _advance(self, group: dict[str, Any], states: list[dict[str, Any]]) -> None:
        if callable(group["lr"]):  # a schedule needs the count
            super()._advance(group, states)


#: The spelling of torchopt.
AdaGrad = Adagrad
AdaDelta = Adadelta


class RAdam(Adam, alias=alias.radam, config=_radam.config, plain=_radam.plain, positional=("decoupled_weight_decay",)):
    """RAdam, behaving as ``torch.optim.RAdam`` (weight decay, optionally
    decoupled, maximize; state keys ``step``, ``exp_avg``, ``exp_avg_sq``, so
    state dicts move between the two). The update is the one documented in
    :func:`unrollopt.radam`.
    """


class NAdam(Adam, alias=alias.nadam, config=_nadam.config, plain=_nadam.plain, positional=("decoupled_weight_decay",)):
    """NAdam, behaving as ``torch.optim.NAdam`` (weight decay, optionally
    decoupled, momentum decay, maximize; state keys ``step``, ``mu_product``,
    ``exp_avg``, ``exp_avg_sq``, so state dicts move between the two). The
    update is the one documented in :func:`unrollopt.nadam`; like
    ``torch.optim.NAdam``, each parameter keeps its product of momentum
    coefficients in the state (a 0-d tensor of the default scalar dtype).
    """

    @staticmethod
    def _product(group: dict[str, Any], state: dict[str, Any], step: float) -> torch.Tensor:
        # torch.optim.NAdam's arithmetic: mu_product *= mu, in the state's dtype.
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        product = state.get("mu_product", torch.ones((), dtype=dtype))
        return product * _nadam.momentum_coefficient(group["betas"][0], step, group["momentum_decay"])

    def _state_key(self, state: dict[str, Any]) -> Any:
        return float(state["mu_product"]) if "mu_product" in state else None

    def _step_config(
        self, group: dict[str, Any], config: _step.Config, state: dict[str, Any], step: float
    ) -> _step.Config:
        return config.replace(mu_product=float(self._product(group, state, step)))

    def _advance(self, group: dict[str, Any], states: list[dict[str, Any]]) -> None:
        for state in states:
            state["mu_product"] = self._product(group, state, self._next_step(state))
        super()._advance(group, states)
