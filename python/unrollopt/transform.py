"""Gradient transformations to compose optimizers from, as in optax.

Each is a pure ``(init, update)`` pair (a :class:`GradientTransformation`):
everything it remembers is in its state, so ``init`` twice gives the same
behaviour twice. :func:`chain` composes them; for example
``chain(scale_by_adam(), scale(-lr))`` computes :func:`unrollopt.adam`'s
update. The optimizer aliases (``unrollopt.adam`` ...) compute the same numbers
as such chains, but as one fused operator per step with
``use_accelerated_op=True``; the stateful transforms here take that flag too.

Like the aliases, every ``update`` takes ``params=`` and ``inplace=``:
``inplace=False`` is the differentiable form for an unrolled inner loop.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch.utils import _pytree as _torch_pytree

from unrollopt import _hyperparameters, _pytree, _step, base
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._recorded import Call, Transformation, record, recorded
from unrollopt._transformation import mask_leaves
from unrollopt.base import GradientTransformation, OptState, Params, Updates
from unrollopt.optimizers import adadelta, adagrad, adam, adamax, lion, radam, rmsprop, sgd

__all__ = [
    "EmptyState",
    "ScaleByScheduleState",
    "add_decayed_weights",
    "chain",
    "chain_flat",
    "clip_grad_norm",
    "identity",
    "masked",
    "nan_to_num",
    "nan_to_num_hook",
    "register_hook",
    "zero_nan_hook",
    "scale",
    "scale_by_accelerated_adam",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_lion",
    "scale_by_radam",
    "scale_by_rss",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_stddev",
    "trace",
]


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


class ScaleByScheduleState(NamedTuple):
    """The number of steps taken (a 0-d int64 tensor)."""

    count: torch.Tensor


def _stateless(
    name: str,
    fn: Callable[[list[torch.Tensor], list[torch.Tensor]], list[torch.Tensor]],
    *,
    needs_params: bool = False,
    hyper: tuple = (),
    writes: bool = True,
) -> GradientTransformation:
    """A transformation without state: ``fn(updates, params)`` maps the present
    (not None) update leaves, and their parameters when ``needs_params``, to
    the new updates; ``hyper`` holds the hyperparameters ``fn`` reads (an
    in-place step refuses tensors among them that require grad, and is
    computed without a graph: it is a plain training step). ``writes=False``:
    ``fn`` returns the updates themselves, so an in-place step overwrites
    nothing and has nothing to refuse (identity, register_hook)."""

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: OptState, *, params: Optional[Params] = None, inplace: bool = True):
        leaves, spec = _pytree.flatten(updates)
        live = _pytree.present(leaves)
        us = [leaves[i] for i in live]
        _step.check_tensors(name, updates=us)
        ps: list = []
        if needs_params:
            if params is None:
                raise ValueError(f"{name}: pass the parameters as update(..., params=params)")
            all_ps = _pytree.flatten_like(params, spec, "params")
            ps = [all_ps[i] for i in live]
            _step.check_tensors(name, params=ps)
        if inplace and writes:
            _step.check_inplace_allowed(f"{name}.update", us, ps, hyper)
            with torch.no_grad():
                new = [u if v is u else u.copy_(v) for u, v in zip(us, fn(us, ps))]
        else:
            new = fn(us, ps)
        out = list(leaves)
        for k, i in enumerate(live):
            out[i] = new[k]
        return _pytree.unflatten(out, spec), state

    return GradientTransformation(init, update)


@recorded
def identity() -> GradientTransformation:
    """Leaves the updates as they are."""
    return _stateless("identity", lambda us, ps: us, writes=False)


@recorded
def scale(step_size: Hyperparameter) -> GradientTransformation:
    """Multiplies the updates by ``step_size`` (a number, or a 0-d tensor that
    may require grad; any sign: ``scale(-lr)`` turns a direction into a step)."""
    if isinstance(step_size, torch.Tensor):
        if step_size.dim() != 0 or not step_size.is_floating_point():
            raise ValueError("step_size must be a number or a 0-d floating-point tensor")
    elif not isinstance(step_size, numbers.Real) or isinstance(step_size, bool):
        raise TypeError(f"step_size must be a number or a 0-d tensor, got {type(step_size).__name__}")
    return _stateless("scale", lambda us, ps: [u * step_size for u in us], hyper=(step_size,))


@recorded
def scale_by_schedule(step_size_fn: Callable[[torch.Tensor], Hyperparameter]) -> GradientTransformation:
    """Multiplies the updates by ``step_size_fn(count)``, ``count`` the number of
    steps taken before this one (a 0-d int64 tensor; see :mod:`unrollopt.schedule`)."""
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be callable, got {type(step_size_fn).__name__}")

    def init(params: Params) -> ScaleByScheduleState:
        return ScaleByScheduleState(count=torch.zeros((), dtype=torch.int64))

    def update(updates: Updates, state: OptState, *, params: Optional[Params] = None, inplace: bool = True):
        if not isinstance(state, ScaleByScheduleState):
            raise TypeError(f"state must be a ScaleByScheduleState, got {type(state).__name__}")
        factor = step_size_fn(state.count)
        # (scale unrecorded: one is made at every step)
        updates, _ = scale.__wrapped__(factor).update(updates, EmptyState(), inplace=inplace)
        return updates, ScaleByScheduleState(count=state.count + 1)

    return GradientTransformation(init, update)


@recorded
def add_decayed_weights(weight_decay: Hyperparameter = 0.0, mask: Any = None) -> GradientTransformation:
    """Adds ``weight_decay * params`` to the updates (an L2 penalty's gradient),
    where ``mask`` (a pytree of bools like the parameters, or a function of the
    parameters giving one) is True; everywhere without a mask. ``update`` needs
    ``params=``."""
    weight_decay = _hyperparameters.check("weight_decay", weight_decay)
    if mask is None:
        return _stateless("add_decayed_weights", lambda us, ps: [u + weight_decay * p for u, p in zip(us, ps)],
                          needs_params=True, hyper=(weight_decay,))  # fmt: skip
    return masked(add_decayed_weights(weight_decay), mask)


@recorded
def clip_grad_norm(max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> GradientTransformation:
    r"""Scales the updates so that their global ``norm_type``-norm is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_`` does:
    :math:`u \min(1, \text{max\_norm} / (\lVert u \rVert_p + 10^{-6}))`
    (``norm_type`` may be ``inf``). The coefficient stays a tensor (no host
    synchronisation) and is differentiated through; ``error_if_nonfinite=True``
    raises a RuntimeError where the norm is NaN or infinite (reading it, as
    torch's does)."""
    max_norm = float(_hyperparameters.check("max_norm", max_norm))
    norm_type = float(_hyperparameters.check("norm_type", norm_type))
    if norm_type == 0.0:
        raise ValueError("Invalid norm_type: 0.0 (expected a p-norm, p > 0, or inf)")

    def clip(us: list[torch.Tensor], ps: list) -> list[torch.Tensor]:
        if not us:
            return us
        norms = torch.stack([torch.linalg.vector_norm(u, norm_type).to(torch.float64) for u in us])
        total = torch.linalg.vector_norm(norms, norm_type)
        if error_if_nonfinite and not bool(torch.isfinite(total)):
            raise RuntimeError(
                f"clip_grad_norm: the total norm of order {norm_type:g} of the updates is non-finite "
                "(error_if_nonfinite=True)"
            )
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        return [u * coef.to(u.dtype) for u in us]

    return _stateless("clip_grad_norm", clip)


@recorded
def nan_to_num(
    nan: float = 0.0, posinf: Optional[float] = None, neginf: Optional[float] = None
) -> GradientTransformation:
    """Replaces NaN, +inf and -inf in the updates (by ``nan``, and by
    ``posinf``/``neginf`` or the dtype's largest finite values), as
    :func:`torch.nan_to_num`."""
    return _stateless("nan_to_num", lambda us, ps: [torch.nan_to_num(u, nan, posinf, neginf) for u in us])


@recorded
def register_hook(hook: Callable[[torch.Tensor], Optional[torch.Tensor]]) -> GradientTransformation:
    """Leaves the updates as they are and registers ``hook`` on each update
    that requires grad (``Tensor.register_hook``): it sees, and may replace,
    the gradient that flows back through the update, as in TorchOpt, e.g.
    ``chain(register_hook(zero_nan_hook), adam(...))``."""
    if not callable(hook):
        raise TypeError(f"hook must be callable, got {type(hook).__name__}")

    def hooked(us: list[torch.Tensor], ps: list) -> list[torch.Tensor]:
        for u in us:
            if u.requires_grad:
                u.register_hook(hook)
        return us

    return _stateless("register_hook", hooked, writes=False)


def zero_nan_hook(grad: torch.Tensor) -> torch.Tensor:
    """A hook for :func:`register_hook`: NaN gradients become 0."""
    return torch.where(torch.isnan(grad), torch.zeros_like(grad), grad)


@recorded
def nan_to_num_hook(
    nan: float = 0.0, posinf: Optional[float] = None, neginf: Optional[float] = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A hook for :func:`register_hook` that replaces NaN and infinite
    gradients, as :func:`torch.nan_to_num`."""
    return lambda grad: torch.nan_to_num(grad, nan, posinf, neginf)


@recorded
def masked(inner: GradientTransformation, mask: Any = None) -> GradientTransformation:
    """Applies ``inner`` to the leaves where ``mask`` is True (a pytree of bools
    like the parameters, or a function of the parameters giving one) and leaves
    the other updates as they are; ``inner``'s state covers the masked leaves
    only. Without a mask (TorchOpt's default argument) every leaf is masked in:
    ``masked(inner)`` computes what ``inner`` does."""
    _check_transformation("inner", inner)
    if mask is None:
        return GradientTransformation(inner.init, inner.update)

    def select(tree: Any, keep: list[bool], spec: Any, name: str) -> Any:
        leaves = _pytree.flatten_like(tree, spec, name)
        return _pytree.unflatten([leaf if k else None for leaf, k in zip(leaves, keep)], spec)

    def init(params: Params) -> OptState:
        leaves, spec = _pytree.flatten(params)
        keep = mask_leaves(mask, params, spec)
        return inner.init(select(params, keep, spec, "params"))

    def update(updates: Updates, state: OptState, *, params: Optional[Params] = None, inplace: bool = True):
        leaves, spec = _pytree.flatten(updates)
        keep = mask_leaves(mask, params, spec)
        inner_params = None if params is None else select(params, keep, spec, "params")
        new, state = inner.update(select(updates, keep, spec, "updates"), state, params=inner_params, inplace=inplace)
        new_leaves = _pytree.flatten_like(new, spec, "updates")
        return _pytree.unflatten([n if k else u for u, n, k in zip(leaves, new_leaves, keep)], spec), state

    return GradientTransformation(init, update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies the transformations one after another; the state is the tuple of
    their states. As in TorchOpt, chains inside are spliced in and identities
    left out (so ``chain()`` is :func:`identity`, and the state has one entry
    per remaining transformation)."""
    flat: list[GradientTransformation] = []
    for i, t in enumerate(transforms):
        _check_transformation(f"transforms[{i}]", t)
        made_by = t.call.fn if isinstance(t, Transformation) else None
        if made_by is chain:
            flat.extend(t.call.args)
        elif made_by is not identity:
            flat.append(t)
    if not flat:
        return identity()
    flat_transforms = tuple(flat)

    def init(params: Params) -> tuple:
        return tuple(t.init(params) for t in flat_transforms)

    def update(updates: Updates, state: OptState, *, params: Optional[Params] = None, inplace: bool = True):
        if type(state) is not tuple or len(state) != len(flat_transforms):  # (a NamedTuple state is not one)
            raise TypeError(f"state must be a tuple of {len(flat_transforms)} states (chain's init)")
        new_state = []
        for t, s in zip(flat_transforms, state):
            updates, s = t.update(updates, s, params=params, inplace=inplace)
            new_state.append(s)
        return updates, tuple(new_state)

    return record(GradientTransformation(init, update), Call(chain, flat_transforms, {}))


@recorded
def chain_flat(*transforms: GradientTransformation) -> GradientTransformation:
    """:func:`chain` over the flat list of leaves (None leaves included): the
    transformations see a list however the updates are structured, and the
    result takes the updates' structure again (TorchOpt's ``chain.flat``)."""
    inner = chain(*transforms)

    def leaves(tree: Any) -> list:
        return _torch_pytree.tree_leaves(tree, is_leaf=lambda x: x is None)

    def init(params: Params) -> OptState:
        return inner.init(leaves(params))

    def update(updates: Updates, state: OptState, *, params: Optional[Params] = None, inplace: bool = True):
        flat, spec = _torch_pytree.tree_flatten(updates, is_leaf=lambda x: x is None)
        flat_params = leaves(params) if params is not None else None
        new, state = inner.update(flat, state, params=flat_params, inplace=inplace)
        return _torch_pytree.tree_unflatten(new, spec), state

    return GradientTransformation(init, update)


chain.flat = chain_flat  # type: ignore[attr-defined]
base.CONSTRUCTORS.update(chain=chain, identity=identity)


def _check_transformation(name: str, t: object) -> None:
    if not isinstance(t, GradientTransformation):
        raise TypeError(f"{name} must be a GradientTransformation, got {type(t).__name__}")


# --- the optimizers' statistics, as transformations (their fused operators with lr = -1)


@recorded
def scale_by_adam(
    b1: Hyperparameter = 0.9,
    b2: Hyperparameter = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    moment_requires_grad: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Adam's direction :math:`\hat\mu_t / (\sqrt{\hat\nu_t + \epsilon_{root}} + \epsilon)`
    with bias-corrected moments (:func:`unrollopt.adam` with lr = -1)."""
    return adam.adam.definition.direction(
        betas=(b1, b2), eps=eps, eps_root=eps_root, moment_requires_grad=moment_requires_grad,
        use_accelerated_op=use_accelerated_op,
    )  # fmt: skip


@recorded
def scale_by_accelerated_adam(
    b1: Hyperparameter = 0.9,
    b2: Hyperparameter = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """:func:`scale_by_adam` with the fused operator (TorchOpt's name for it)."""
    return scale_by_adam(b1, b2, eps, eps_root, moment_requires_grad=moment_requires_grad, use_accelerated_op=True)


@recorded
def scale_by_adamax(
    b1: Hyperparameter = 0.9,
    b2: Hyperparameter = 0.999,
    eps: float = 1e-8,
    *,
    moment_requires_grad: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    """Adamax's direction, the bias-corrected first moment over the infinity
    norm (:func:`unrollopt.adamax` with lr = -1; ``eps`` torch.optim's 1e-8)."""
    return adamax.adamax.definition.direction(
        betas=(b1, b2), eps=eps, moment_requires_grad=moment_requires_grad, use_accelerated_op=use_accelerated_op
    )


@recorded
def scale_by_lion(
    b1: Hyperparameter = 0.9,
    b2: Hyperparameter = 0.99,
    *,
    moment_requires_grad: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Lion's direction :math:`\operatorname{sign}(\beta_1 \mu_{t-1} + (1 - \beta_1)\, g)`
    and its momentum (:func:`unrollopt.lion` with lr = -1, as optax's ``scale_by_lion``)."""
    return lion.lion.definition.direction(
        betas=(b1, b2), moment_requires_grad=moment_requires_grad, use_accelerated_op=use_accelerated_op
    )


@recorded
def scale_by_radam(
    b1: Hyperparameter = 0.9,
    b2: Hyperparameter = 0.999,
    eps: float = 1e-8,
    *,
    moment_requires_grad: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    """RAdam's rectified direction (:func:`unrollopt.radam` with lr = -1; ``eps`` torch.optim's 1e-8)."""
    return radam.radam.definition.direction(
        betas=(b1, b2), eps=eps, moment_requires_grad=moment_requires_grad, use_accelerated_op=use_accelerated_op
    )


@recorded
def scale_by_adadelta(
    rho: Hyperparameter = 0.9,
    eps: float = 1e-6,
    *,
    moment_requires_grad: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Adadelta's step :math:`\sqrt{a_{t-1} + \epsilon} / \sqrt{v_t + \epsilon}\, g`
    (:func:`unrollopt.adadelta` with lr = -1)."""
    return adadelta.adadelta.definition.direction(
        rho=rho, eps=eps, moment_requires_grad=moment_requires_grad, use_accelerated_op=use_accelerated_op
    )


@recorded
def scale_by_rss(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, use_accelerated_op: bool = False
) -> GradientTransformation:
    r"""Divides by the root of the sum of squares, :math:`g / (\sqrt{S_t} + \epsilon)`
    with :math:`S_t = S_{t-1} + g^2` (:func:`unrollopt.adagrad` with lr = -1)."""
    return adagrad.adagrad.definition.direction(
        initial_accumulator_value=initial_accumulator_value, eps=eps, use_accelerated_op=use_accelerated_op
    )


def _decay(name: str, decay: Optional[Hyperparameter], **other: Optional[Hyperparameter]) -> Hyperparameter:
    """``decay``, or the one keyword TorchOpt calls it by (``alpha=``, ``momentum=``); 0.9 when neither is given."""
    ((other_name, value),) = other.items()
    if decay is not None and value is not None:
        raise TypeError(f"{name}: pass decay or {other_name} (the same thing), not both")
    return 0.9 if decay is None and value is None else (decay if decay is not None else value)


@recorded
def scale_by_rms(
    decay: Optional[Hyperparameter] = None,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    *,
    alpha: Optional[Hyperparameter] = None,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Divides by the root of the running mean of squares,
    :math:`g / (\sqrt{v_t} + \epsilon)` with :math:`v_t = d\, v_{t-1} + (1 - d)\, g^2`
    (:func:`unrollopt.rmsprop` with lr = -1). Unlike optax, ``eps`` is added
    outside the square root, as in ``torch.optim.RMSprop``."""
    return rmsprop.rmsprop.definition.direction(
        alpha=_decay("scale_by_rms", decay, alpha=alpha), eps=eps, initial_scale=initial_scale,
        use_accelerated_op=use_accelerated_op,
    )  # fmt: skip


@recorded
def scale_by_stddev(
    decay: Optional[Hyperparameter] = None,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    *,
    alpha: Optional[Hyperparameter] = None,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Divides by the running standard deviation,
    :math:`g / (\sqrt{v_t - \bar g_t^2} + \epsilon)` (centered
    :func:`unrollopt.rmsprop` with lr = -1; ``eps`` outside the square root)."""
    return rmsprop.rmsprop.definition.direction(
        alpha=_decay("scale_by_stddev", decay, alpha=alpha), eps=eps, centered=True, initial_scale=initial_scale,
        use_accelerated_op=use_accelerated_op,
    )  # fmt: skip


@recorded
def trace(
    decay: Optional[Hyperparameter] = None,
    nesterov: bool = False,
    *,
    momentum: Optional[Hyperparameter] = None,
    dampening: Hyperparameter = 0.0,
    moment_requires_grad: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Momentum: :math:`b_t = d\, b_{t-1} + (1 - \tau)\, g` (:math:`b_1 = g`),
    the update :math:`b_t` (or :math:`g + d\, b_t` with ``nesterov``);
    :func:`unrollopt.sgd` with lr = -1. ``decay`` (``momentum=`` in TorchOpt's
    spelling; default 0.9) and ``dampening`` :math:`\tau` may be 0-d tensors
    that require grad."""
    if not isinstance(nesterov, bool):  # TorchOpt's second positional argument is dampening
        raise TypeError(
            f"trace: nesterov must be a bool, got {nesterov!r} (the order is (decay, nesterov); "
            "pass TorchOpt's dampening= by keyword)"
        )
    return sgd.sgd.definition.direction(
        momentum=_decay("trace", decay, momentum=momentum), dampening=dampening, nesterov=nesterov,
        moment_requires_grad=moment_requires_grad, use_accelerated_op=use_accelerated_op,
    )  # fmt: skip
