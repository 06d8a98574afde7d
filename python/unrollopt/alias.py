"""Optimizers as differentiable ``(init, update)`` transformations."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch

from unrollopt import (
    _adadelta,
    _adagrad,
    _adam,
    _adamax,
    _fused,
    _hyperparameters,
    _pytree,
    _rmsprop,
    _sgd,
)
from unrollopt._hyperparameters import Hyperparameter
from unrollopt.base import GradientTransformation, OptState, Params, Updates

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "rmsprop",
    "sgd",
    "AdadeltaState",
    "AdagradState",
    "RMSPropState",
    "ScaleByAdamState",
    "SgdState",
]


class ScaleByAdamState(NamedTuple):
    """The state of Adam, AdamW and Adamax: the moment estimates (pytrees like
    the parameters; for Adamax ``nu`` is the infinity norm) and the number of
    steps taken (a 0-d int64 tensor)."""

    mu: Params
    nu: Params
    count: torch.Tensor


class SgdState(NamedTuple):
    """SGD's state: the momentum buffers (a pytree like the parameters, or None
    without momentum) and the number of steps taken (a 0-d int64 tensor)."""

    momentum_buffer: Optional[Params]
    count: torch.Tensor


class AdadeltaState(NamedTuple):
    """Adadelta's state: the running averages of the squared gradient and of
    the squared step (pytrees like the parameters) and the number of steps
    taken (a 0-d int64 tensor)."""

    square_avg: Params
    acc_delta: Params
    count: torch.Tensor


class AdagradState(NamedTuple):
    """Adagrad's state: the sum of squared gradients (a pytree like the
    parameters) and the number of steps taken (a 0-d int64 tensor)."""

    sum: Params
    count: torch.Tensor


class RMSPropState(NamedTuple):
    """RMSprop's state: the running average of the squared gradient, of the
    gradient (centered only, else None), the momentum buffer (with momentum
    only, else None), all pytrees like the parameters, and the number of steps
    taken (a 0-d int64 tensor)."""

    square_avg: Params
    grad_avg: Optional[Params]
    momentum_buffer: Optional[Params]
    count: torch.Tensor


def _transformation(
    config: _fused.Config,
    plain: _fused.PlainStep,
    state_type: Callable[..., Any],
    *,
    fused: bool,
    moment_requires_grad: bool = False,
    initial: Optional[dict[str, float]] = None,
) -> GradientTransformation:
    """The ``(init, update)`` pair of one optimizer: pytrees in, lists to
    :func:`_fused.step`, pytrees out. The state holds one pytree per state of
    the optimizer (fields named after them; others None) and ``count``; each
    starts at its value in ``initial`` (default 0)."""
    names = config.state_names
    fields = [f for f in state_type._fields if f != "count"]

    def init(params: Params) -> OptState:
        def filled(p: Optional[torch.Tensor], value: float) -> Optional[torch.Tensor]:
            if p is None:
                return None
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be a pytree of tensors, got a {type(p).__name__}")
            return torch.full_like(p, value, requires_grad=moment_requires_grad)

        leaves, spec = _pytree.flatten(params)
        values = {name: (initial or {}).get(name, 0.0) for name in names}
        trees = {name: _pytree.unflatten([filled(p, values[name]) for p in leaves], spec) for name in names}
        return state_type(**{f: trees.get(f) for f in fields}, count=torch.zeros((), dtype=torch.int64))

    def update(
        updates: Updates,
        state: OptState,
        *,
        params: Optional[Params] = None,
        inplace: bool = True,
    ) -> tuple[Updates, OptState]:
        if not isinstance(state, state_type):
            raise TypeError(f"state must be a {state_type.__name__}, got {type(state).__name__}")
        grads, spec = _pytree.flatten(updates)
        states = [_pytree.flatten_like(getattr(state, name), spec, f"state.{name}") for name in names]
        if params is None:
            if config.uses_params:
                raise ValueError("weight_decay is not 0: pass the parameters as update(..., params=params)")
            ps = None
        else:
            ps = _pytree.flatten_like(params, spec, "params")
        live = _pytree.present(grads)
        for i in live:
            if any(s[i] is None for s in states) or (ps is not None and ps[i] is None):
                raise ValueError(f"updates has a tensor at leaf {i} where the state or params has None")
        g = [grads[i] for i in live]
        s = [[leaves[i] for i in live] for leaves in states]
        p = [ps[i] for i in live] if ps is not None else []
        _fused.check_tensors("update", grads=g, params=p, **dict(zip(names, s)))
        if inplace:
            _fused.check_inplace_allowed("update", g, p, *s, config=config)
        count = state.count + 1
        new_g, new_s = _fused.step(plain, g, s, p, count, config, fused=fused, inplace=inplace)
        out_u, out_s = list(grads), [list(leaves) for leaves in states]
        for k, i in enumerate(live):
            out_u[i] = new_g[k]
            for j in range(len(names)):
                out_s[j][i] = new_s[j][k]
        trees = {name: _pytree.unflatten(out_s[j], spec) for j, name in enumerate(names)}
        return _pytree.unflatten(out_u, spec), state_type(**{f: trees.get(f) for f in fields}, count=count)

    return GradientTransformation(init, update)


def adadelta(
    lr: Hyperparameter = 1.0,
    rho: Hyperparameter = 0.9,
    eps: float = 1e-6,
    weight_decay: Hyperparameter = 0.0,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Adadelta (Zeiler, 2012) as ``torch.optim.Adadelta`` computes it, as a
    differentiable transformation.

    With :math:`s = -1` when maximizing (else 1) and :math:`\lambda` the weight
    decay (L2, added to the gradient):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        v_t &= \rho\, v_{t-1} + (1 - \rho)\, g'^2 \\
        \Delta_t &= \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g' \\
        a_t &= \rho\, a_{t-1} + (1 - \rho)\, \Delta_t^2 \\
        u_t &= -\mathrm{lr}\, \Delta_t

    Args:
        lr: learning rate (scales the step), a number or a 0-d tensor (which may require grad).
        rho: smoothing constant of both averages, in [0, 1].
        eps: added inside both square roots.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        moment_requires_grad: make the initial averages require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::adadelta``.

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`AdadeltaState`.
    """
    return _transformation(
        _adadelta.config(lr, rho, eps, weight_decay, maximize),
        _adadelta.plain,
        AdadeltaState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


def adagrad(
    lr: Hyperparameter = 1e-2,
    lr_decay: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Adagrad (Duchi, Hazan and Singer, 2011) as ``torch.optim.Adagrad``
    computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1),
    :math:`\lambda` the weight decay (L2) and :math:`\eta` the lr decay:

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        S_t &= S_{t-1} + g'^2 \\
        u_t &= -\frac{\mathrm{lr}}{1 + (t - 1)\,\eta}\, \frac{g'}{\sqrt{S_t} + \epsilon}

    The fused operator's backward is exact, and finite where :math:`S_t = 0`
    (there :math:`g' = 0` and the update does not depend on :math:`S_t`).

    Args:
        lr: learning rate, a number or a 0-d tensor (which may require grad).
        lr_decay: learning rate decay :math:`\eta`.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        initial_accumulator_value: the initial value of :math:`S`.
        eps: added to the denominator's square root.
        moment_requires_grad: make the initial sums require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::adagrad``.

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`AdagradState`.
    """
    return _transformation(
        _adagrad.config(lr, lr_decay, weight_decay, eps, maximize),
        _adagrad.plain,
        AdagradState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        initial={"sum": float(_hyperparameters.check("initial_accumulator_value", initial_accumulator_value))},
    )


def adam(
    lr: Hyperparameter = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    *,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Adam (Kingma and Ba, 2015) as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1) and
    :math:`\lambda` the weight decay (L2, added to the gradient as in
    ``torch.optim.Adam``):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g'^2 \\
        u_t &= -\frac{\mathrm{lr}}{1 - \beta_1^t}\,
               \frac{\mu_t}{\sqrt{\nu_t / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}

    With ``eps_root = 0`` this is ``torch.optim.Adam``'s step; bias corrections are
    computed in float64 whatever the parameters' dtype.

    Args:
        lr: learning rate, a number or a 0-d tensor (which may require grad).
        betas: decay rates of the two moment estimates, each in [0, 1), numbers
            or 0-d tensors.
        eps: added to the denominator's square root.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        eps_root: added inside the square root; a positive value keeps the
            gradient of plain autograd finite where the second moment is 0 (the
            fused operator's hand-written backward is exact and finite either way).
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator (one call for all
            tensors, vectorised and multithreaded, with an exact hand-written
            backward). See :func:`unrollopt.accelerated_op_available`.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByAdamState`.
    """
    return _transformation(
        _adam.config(lr, betas, eps, weight_decay, eps_root, maximize),
        _adam.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


def adamw(
    lr: Hyperparameter = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 1e-2,
    *,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""AdamW (Loshchilov and Hutter, 2019): Adam with decoupled weight decay, as
    ``torch.optim.AdamW`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1) and
    :math:`\lambda` the weight decay:

    .. math::

        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, s\,g \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g^2 \\
        u_t &= -\mathrm{lr}\,\lambda\,\theta -\frac{\mathrm{lr}}{1 - \beta_1^t}\,
               \frac{\mu_t}{\sqrt{\nu_t / (1 - \beta_2^t) + \epsilon_{root}} + \epsilon}

    (``torch.optim.AdamW`` multiplies the parameters by :math:`1 - \mathrm{lr}\,\lambda`
    and then takes Adam's step: :math:`\theta + u_t`). With ``eps_root = 0`` this
    is ``torch.optim.AdamW``'s step.

    Args:
        lr: learning rate, a number or a 0-d tensor (which may require grad).
        betas: decay rates of the two moment estimates, each in [0, 1).
        eps: added to the denominator's square root.
        weight_decay: decoupled weight decay coefficient :math:`\lambda`
            (unless it is 0, ``update`` needs ``params=``).
        eps_root: added inside the square root (see :func:`adam`).
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::adamw``.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByAdamState`.
    """
    return _transformation(
        _adam.config(lr, betas, eps, weight_decay, eps_root, maximize, decoupled=True),
        _adam.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


def adamax(
    lr: Hyperparameter = 2e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Adamax (Kingma and Ba, 2015, section 7.1), Adam with the infinity norm, as
    ``torch.optim.Adamax`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1) and
    :math:`\lambda` the weight decay (L2, added to the gradient):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \max(\beta_2 \nu_{t-1},\ |g'| + \epsilon) \\
        u_t &= -\frac{\mathrm{lr}}{1 - \beta_1^t}\, \frac{\mu_t}{\nu_t}

    Derivatives where the step is not differentiable (the fused operator's
    backward): the maximum passes the cotangent to the argument it selected,
    to :math:`\beta_2 \nu_{t-1}` at a tie; :math:`d|x|/dx` is the sign of
    :math:`x`, 0 at 0. (The plain path is differentiated by autograd, whose
    ``torch.maximum`` splits a tie evenly.)

    Args:
        lr: learning rate, a number or a 0-d tensor (which may require grad).
        betas: decay rates of the first moment and of the infinity norm, each in [0, 1).
        eps: added to :math:`|g'|` (keeps :math:`\nu_t` positive).
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::adamax``.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByAdamState`
        (``nu`` holds the infinity norm).
    """
    return _transformation(
        _adamax.config(lr, betas, eps, weight_decay, maximize),
        _adamax.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


def rmsprop(
    lr: Hyperparameter = 1e-2,
    alpha: Hyperparameter = 0.99,
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    momentum: Hyperparameter = 0.0,
    centered: bool = False,
    *,
    initial_scale: float = 0.0,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""RMSprop (Hinton, Srivastava and Swersky, 2012) as ``torch.optim.RMSprop``
    computes it, as a differentiable transformation.

    With :math:`s = -1` when maximizing (else 1) and :math:`\lambda` the weight
    decay (L2, added to the gradient):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        v_t &= \alpha\, v_{t-1} + (1 - \alpha)\, g'^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1 - \alpha)\, g' \quad\text{(centered only)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon \\
        b_t &= \mu\, b_{t-1} + g' / d_t, \quad u_t = -\mathrm{lr}\, b_t
            \quad\text{(with momentum; else } u_t = -\mathrm{lr}\, g' / d_t)

    The fused operator's backward is exact, and finite where :math:`g' = 0`
    and the square root's argument is 0 (the update does not depend on it there).

    Args:
        lr: learning rate, a number or a 0-d tensor (which may require grad).
        alpha: smoothing constant of the averages, in [0, 1].
        eps: added to the denominator's square root.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        momentum: momentum factor :math:`\mu` (a tensor selects the momentum
            form even at 0, so that it can be learned).
        centered: normalize by the variance estimate :math:`v_t - \bar g_t^2`.
        initial_scale: the initial value of :math:`v` (``torch.optim.RMSprop``:
            0; optax and TensorFlow use 1 for some models).
        moment_requires_grad: make the initial states require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator (``unrollopt::rmsprop``,
            ``rmsprop_centered``, ``rmsprop_momentum`` or
            ``rmsprop_centered_momentum``).

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`RMSPropState`.
    """
    return _transformation(
        _rmsprop.config(lr, alpha, eps, weight_decay, momentum, centered, maximize),
        _rmsprop.plain,
        RMSPropState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        initial={"square_avg": float(_hyperparameters.check("initial_scale", initial_scale))},
    )


def sgd(
    lr: Hyperparameter,
    momentum: Hyperparameter = 0.0,
    dampening: Hyperparameter = 0.0,
    weight_decay: Hyperparameter = 0.0,
    nesterov: bool = False,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Stochastic gradient descent, with ``torch.optim.SGD``'s momentum, as a
    differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing and
    :math:`\lambda` the weight decay:

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        b_t &= g' \text{ if } t = 1 \text{ else } \mu\, b_{t-1} + (1 - \tau)\, g' \\
        u_t &= -\mathrm{lr}\,(g' + \mu\, b_t) \text{ (Nesterov) or } -\mathrm{lr}\, b_t

    Without momentum (:math:`\mu = 0`) :math:`u_t = -\mathrm{lr}\, g'` and the
    state holds no buffer.

    Args:
        lr: learning rate, a number or a 0-d tensor (which may require grad).
        momentum: momentum factor :math:`\mu` (a tensor selects the momentum form
            even at 0, so that it can be learned).
        dampening: dampening :math:`\tau` of the momentum.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        nesterov: Nesterov momentum (needs momentum and zero dampening).
        moment_requires_grad: make the initial momentum buffers require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator.

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`SgdState`.
    """
    return _transformation(
        _sgd.config(lr, momentum, dampening, weight_decay, nesterov, maximize),
        _sgd.plain,
        SgdState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )
