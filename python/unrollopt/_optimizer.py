"""What an optimizer is, stated once: :func:`optimizer` turns the declaration
in its module (``unrollopt/optimizers/<name>.py``: the alias's signature and
docstring, its state and a few facts) into the functional
alias, and keeps a :class:`Definition` that every other engine reads (the
``torch.optim``-style class, the Meta class, the transforms)."""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

import torch

from unrollopt import _C, _hyperparameters, _step, _transformation
from unrollopt._recorded import recorded
from unrollopt.base import GradientTransformation

F = TypeVar("F", bound=Callable[..., Any])

#: Settings the engines handle, not the operator (``lr`` too, but as a number
#: it is the operator's: an engine resolves a schedule or per-parameter rates first).
ENGINE_SETTINGS = ("moment_requires_grad", "use_accelerated_op", "mask")

#: The text of the settings every optimizer (or several) has, written once.
SHARED_ARGS = {
    "lr": """learning rate: a number or a 0-d tensor (which may require grad);
        a schedule, a function of the step count (from 0) giving one (see
        :func:`unrollopt.linear_schedule`); or a pytree like the parameters
        of per-parameter rates, numbers or tensors broadcastable to them
        (Meta-SGD). Gradients with respect to tensor rates are exact on
        both paths. A schedule's value is the step's lr; per-parameter
        rates multiply the update of an operator run with lr = 1 (every
        update is linear in lr).""",
    "betas": "decay rates of the moment estimates, each in [0, 1), numbers or 0-d tensors.",
    "eps": "added to the denominator's square root.",
    "weight_decay": "L2 penalty coefficient, added to the gradient (needs ``params=`` in ``update``).",
    "mask": """where the weight decay applies: a pytree of bools like the
        parameters, or a function of the parameters returning one (as in
        optax); None decays every parameter.""",
    "moment_requires_grad": "make the initial state require grad (to differentiate with respect to it).",
    "maximize": "maximize the objective instead of minimizing it.",
    "use_accelerated_op": """run the fused C++ operator (one call for all
        tensors, vectorised and multithreaded, with an exact hand-written
        backward). See :func:`unrollopt.accelerated_op_available`.""",
}


@dataclass(frozen=True)
class Scalar:
    """The rule's scalar state (NAdam's product of momentum coefficients,
    ``rules/rule.h``): a 0-d state that the operator reads as the
    hyperparameter of the same name, ``initial`` before the first step."""

    name: str
    initial: float

    def advance(self, previous: torch.Tensor, config: _step.Config, step: torch.Tensor) -> torch.Tensor:
        """Its value after step ``step``, in ``previous``'s dtype (:func:`unrollopt._step.next_scalar`)."""
        return _step.next_scalar(self.name, previous, config, step)


def _on(value: Any) -> bool:
    """A flag that is true, or a hyperparameter that is not a constant 0."""
    return value if isinstance(value, bool) else not _hyperparameters.is_zero(value)


@dataclass(frozen=True)
class Choices:
    """What an optimizer's C++ declaration (``rules/<name>.h``) states as data,
    applied to the settings by name: the operator they select (its rule, or
    its family's name with ``_`` and each variant setting that is on), the
    requirements across settings, the states that start at a setting, the
    rule's scalar state."""

    op: str
    variants: tuple[str, ...]
    requirements: tuple[tuple[str, str, bool], ...]  # (flag, setting, must be on)
    initial: dict[str, str]  # state -> setting
    scalar: Optional[Scalar]

    def operator(self, settings: dict[str, Any]) -> str:
        return self.op + "".join(f"_{v}" for v in self.variants if _on(settings[v]))

    def check(self, name: str, settings: dict[str, Any]) -> None:
        for flag, setting, on in self.requirements:
            if _on(settings[flag]) and _on(settings[setting]) != on:
                raise ValueError(f"unrollopt.{name}: {flag}=True requires {setting} {'!= 0' if on else '= 0'}")


_DECLARATIONS = _C.declarations()

#: Every optimizer's choices, by the alias's name.
CHOICES = {
    name.lower(): Choices(op, tuple(variants), tuple(requirements), dict(initial), Scalar(*scalar) if scalar else None)
    for name, op, variants, requirements, initial, scalar, _ in _DECLARATIONS
}

#: Every optimizer's defaults, as its C++ declaration states them (``beta1``,
#: ``beta2``, ... apart), by the alias's name.
DEFAULTS = {name.lower(): dict(settings) for name, settings in _C.default_settings()}

#: Every optimizer's settings' annotations, by the alias's name: by the kind
#: of each in its C++ declaration (``betas`` a tuple of hyperparameters), but
#: for the settings an engine handles (:data:`ENGINE_ANNOTATIONS`).
ANNOTATIONS = {
    name.lower(): {
        setting: {"hyperparameter": "Hyperparameter", "number": "float", "flag": "bool"}[kind]
        for setting, kind in kinds
    }
    for name, *_, kinds in _DECLARATIONS
}
ENGINE_ANNOTATIONS = {"lr": "LearningRate", "mask": "Any"}


def _completed(name: str, declared: inspect.Signature) -> inspect.Signature:
    """The declared signature (the settings' names, order and kinds) with each
    setting's annotation (:data:`ANNOTATIONS`, :data:`ENGINE_ANNOTATIONS`) and its default where it is
    written ``...`` (:data:`DEFAULTS`: ``betas`` gathered into a tuple, flags as bools)."""
    cpp = DEFAULTS[name]
    betas = tuple(v for n, v in cpp.items() if n in _BETAS)

    def complete(p: inspect.Parameter) -> inspect.Parameter:
        if p.name == "betas":
            annotation = f"tuple[{', '.join(['Hyperparameter'] * len(betas))}]"
        else:
            annotation = ENGINE_ANNOTATIONS.get(p.name) or ANNOTATIONS[name][p.name]
        default = p.default
        if default is Ellipsis:
            default = betas if p.name == "betas" else cpp[p.name]
            default = bool(default) if annotation == "bool" else default
        return p.replace(annotation=annotation, default=default)

    return declared.replace(parameters=[complete(p) for p in declared.parameters.values()])


@dataclass(frozen=True)
class Definition:
    """One optimizer, as every engine sees it.

    - ``name``, ``signature``: the alias's (its settings, defaults and annotations);
    - ``state``: its state NamedTuple;
    - ``choices``: its C++ declaration's (:class:`Choices`: the operator the
      settings select, the checks across settings, the initial states, the
      rule's scalar state, also :attr:`scalar`);
    - for the ``torch.optim``-style class: its ``class_name`` (and other
      ``spellings``), ``torch_class`` (the ``torch.optim`` class it behaves as,
      if any), ``state_keys`` (state -> ``torch.optim``'s key), ``positional``
      (keyword-only settings it takes by position, as ``torch.optim`` orders
      them), ``counts_steps`` (whether it keeps ``torch.optim``'s ``step``:
      ``torch.optim.SGD`` does not) and ``notes`` (added to its docstring).
    """

    name: str
    signature: inspect.Signature
    state: type
    choices: Choices
    class_name: str = ""
    spellings: tuple[str, ...] = ()
    torch_class: Optional[str] = None
    state_keys: dict[str, str] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    counts_steps: bool = True
    notes: str = ""
    alias: Callable[..., GradientTransformation] = field(init=False, repr=False, compare=False)
    kinds: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _kinds(self.signature))

    @property
    def scalar(self) -> Optional[Scalar]:
        return self.choices.scalar

    def settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Every setting by name (defaults filled in) from an alias call's arguments."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def config(self, settings: dict[str, Any]) -> _step.Config:
        """The operator's checked settings, from the settings by name (``lr`` a
        number or 0-d tensor): each checked by its name and range, ``betas``
        split into ``beta1``, ``beta2``, ...; the operator they select."""
        values: dict[str, Any] = {}
        for name, value in settings.items():
            kind = self.kinds[name]
            if kind == "betas":
                n = len(self.signature.parameters[name].default)
                values.update(zip(_BETAS, _hyperparameters.check_betas(value, n)))
            elif kind == "flag":
                values[name] = bool(value)
            elif kind == "number":
                values[name] = _hyperparameters.check(name, value)
        self.choices.check(self.name, values)
        if self.scalar is not None:  # set at each step
            values[self.scalar.name] = self.scalar.initial
        return _step.Config.of(self.choices.operator(values), values)

    def initial_values(self, settings: dict[str, Any]) -> dict[str, float]:
        """Each state's initial value (those not 0), checked."""
        return {state: float(_hyperparameters.check(n, settings[n])) for state, n in self.choices.initial.items()}

    def transformation(self, settings: dict[str, Any]) -> GradientTransformation:
        """The alias's ``(init, update)`` pair for these settings (by name)."""
        lr, schedule, rates = _transformation.learning_rate(settings["lr"])
        config = self.config({**settings, "lr": lr})
        return self._pair(config, settings, lr_schedule=schedule, lr_tree=rates, decay_mask=settings.get("mask"))

    def direction(self, **settings: Any) -> GradientTransformation:
        """The optimizer's update with lr = -1 (its statistics, as a transform:
        ``scale_by_adam`` ...), from some settings by name (the others at their
        defaults)."""
        settings = self.settings(**settings)
        return self._pair(self.config({**settings, "lr": 1.0}).replace(lr=-1.0), settings)

    def _pair(self, config: _step.Config, settings: dict[str, Any], **engine: Any) -> GradientTransformation:
        return _transformation.transformation(
            config,
            self.state,
            fused=bool(settings["use_accelerated_op"]),
            moment_requires_grad=bool(settings["moment_requires_grad"]),
            initial=self.initial_values(settings),
            scalars=self._scalars if self.scalar is not None else None,
            **engine,
        )

    def _scalars(self, config: _step.Config, state: Any, count: torch.Tensor) -> tuple[_step.Config, dict]:
        """The functional engine's ``scalars`` hook: the scalar state at init
        (``state`` None) or after the step ``count``, and the step's config."""
        scalar = self.scalar
        assert scalar is not None
        if state is None:
            return config, {scalar.name: torch.full((), scalar.initial, dtype=torch.float64)}
        value = scalar.advance(getattr(state, scalar.name), config, count)
        return config.replace(**{scalar.name: value}), {scalar.name: value}


_BETAS = ("beta1", "beta2", "beta3")


def _kinds(signature: inspect.Signature) -> dict[str, str]:
    """How each setting is read, from its annotation: ``lr`` and the engines'
    settings by the engines, ``betas`` as a tuple, flags as bools, the others
    as numbers (or 0-d tensors) checked by name."""
    kinds = {}
    for name, p in signature.parameters.items():
        annotation = str(p.annotation)
        if name in ENGINE_SETTINGS:
            kinds[name] = "engine"
        elif name == "betas":
            kinds[name] = "betas"
        elif annotation == "bool":
            kinds[name] = "flag"
        else:
            kinds[name] = "number"
    return kinds


#: The keyword-only flags every optimizer takes, added to each signature by :func:`optimizer`.
FLAGS = tuple(
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")
    for name in ("moment_requires_grad", "maximize", "use_accelerated_op")
)


def optimizer(state: type, **facts: Any) -> Callable[[F], F]:
    """Declares an optimizer: decorates a function whose signature and
    docstring are the alias's (its body is ``...``; the settings' annotations
    follow the C++ declaration's kinds, :data:`ANNOTATIONS`; a default written ``...`` is the C++
    declaration's, :data:`DEFAULTS`) and returns the alias, a
    recorded constructor of its transformation, with the :class:`Definition`
    as its ``definition``. The alias takes the declared settings and then
    the :data:`FLAGS` every optimizer has. ``facts`` are the Definition's other
    fields (the choices are the C++ declaration's: :data:`CHOICES`).

    The docstring's ``Args:`` list the optimizer's own settings; those in
    :data:`SHARED_ARGS` that it does not describe are added from there, in the
    signature's order, and the ``Returns:`` is added. Every setting must end up
    described."""

    def declare(declaration: F) -> F:
        name = declaration.__name__
        declared = _completed(name, inspect.signature(declaration))
        signature = declared.replace(parameters=[*declared.parameters.values(), *FLAGS])
        definition = Definition(name, signature, state, CHOICES[name], **facts)

        def alias(*args: Any, **kwargs: Any) -> GradientTransformation:
            return definition.transformation(definition.settings(*args, **kwargs))

        alias.__name__ = alias.__qualname__ = name
        alias.__module__ = declaration.__module__
        alias.__doc__ = _docstring(declaration, signature, state)
        alias.__signature__ = signature  # type: ignore[attr-defined]
        alias.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        alias.__annotations__["return"] = signature.return_annotation
        made = recorded(alias)
        made.definition = definition  # type: ignore[attr-defined]
        object.__setattr__(definition, "alias", made)
        return made  # type: ignore[return-value]

    return declare


def _docstring(declaration: Callable[..., Any], signature: inspect.Signature, state: type) -> str:
    """The declaration's docstring with the shared settings' text and the
    ``Returns:`` added (see :func:`optimizer`)."""
    doc = inspect.cleandoc(declaration.__doc__ or "")
    summary, _, own = doc.partition("\nArgs:\n")
    entries: dict[str, str] = {}
    current = None
    for line in own.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("     ") and ":" in stripped:
            current, _, text = stripped.partition(":")
            entries[current] = text.strip()
        elif current is not None and stripped:
            entries[current] += " " + stripped
    args = []
    for name in signature.parameters:
        text = entries.get(name) or SHARED_ARGS.get(name)
        if text is None:
            raise AssertionError(f"unrollopt.{declaration.__name__}: the docstring does not describe {name}")
        args.append(
            textwrap.fill(
                f"{name}: {' '.join(text.split())}",
                80,
                initial_indent="    ",
                subsequent_indent="        ",
                break_on_hyphens=False,
            )
        )
    unknown = set(entries) - set(signature.parameters)
    if unknown:
        raise AssertionError(f"unrollopt.{declaration.__name__}: the docstring describes {sorted(unknown)}")
    returns = f"A :class:`GradientTransformation` whose state is a :class:`{state.__name__}`."
    return f"{summary.rstrip()}\n\nArgs:\n" + "\n".join(args) + f"\n\nReturns:\n    {returns}\n"
