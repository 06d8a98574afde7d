"""Optimizers as differentiable ``(init, update)`` transformations."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from unrollopt import (
    _adadelta,
    _adagrad,
    _adam,
    _adamax,
    _hyperparameters,
    _lion,
    _nadam,
    _radam,
    _rmsprop,
    _sgd,
    _step,
    _transformation,
)
from unrollopt._hyperparameters import Hyperparameter
from unrollopt._recorded import recorded
from unrollopt._transformation import LearningRate
from unrollopt.base import GradientTransformation, Params

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "lion",
    "nadam",
    "radam",
    "rmsprop",
    "sgd",
    "LearningRate",
    "NAdamState",
    "AdadeltaState",
    "AdagradState",
    "RMSPropState",
    "ScaleByAdamState",
    "ScaleByLionState",
    "SgdState",
]


class ScaleByAdamState(NamedTuple):
    """The state of Adam, AdamW, Adamax and RAdam: the moment estimates (pytrees like
    the parameters; for Adamax ``nu`` is the infinity norm), the number of
    steps taken (a 0-d int64 tensor) and, with AMSGrad, the running maximum of
    ``nu`` (else an empty tuple)."""

    mu: Params
    nu: Params
    count: torch.Tensor
    nu_max: Params = ()


class ScaleByLionState(NamedTuple):
    """Lion's state: the momentum (a pytree like the parameters) and the number
    of steps taken (a 0-d int64 tensor)."""

    mu: Params
    count: torch.Tensor


class NAdamState(NamedTuple):
    """NAdam's state: the moment estimates (pytrees like the parameters), the
    product of the momentum coefficients so far (a 0-d float64 tensor,
    differentiable with respect to a tensor beta1) and the number of steps
    taken (a 0-d int64 tensor)."""

    mu: Params
    nu: Params
    mu_product: torch.Tensor
    count: torch.Tensor


class SgdState(NamedTuple):
    """SGD's state: the momentum buffers (a pytree like the parameters, or an
    empty tuple without momentum) and the number of steps taken (a 0-d int64 tensor)."""

    momentum_buffer: Params
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
    gradient (centered only, else an empty tuple), the momentum buffer (with
    momentum only, else an empty tuple), all pytrees like the parameters, and the number of steps
    taken (a 0-d int64 tensor)."""

    square_avg: Params
    grad_avg: Params
    momentum_buffer: Params
    count: torch.Tensor


@recorded
def adadelta(
    lr: LearningRate = 1.0,
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
        lr: learning rate (scales the step); see :func:`adam`.
        rho: smoothing constant of both averages, in [0, 1].
        eps: added inside both square roots.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        moment_requires_grad: make the initial averages require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::adadelta``.

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`AdadeltaState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _adadelta.config(lr, rho, eps, weight_decay, maximize),
        _adadelta.plain,
        AdadeltaState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


@recorded
def adagrad(
    lr: LearningRate = 1e-2,
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
        lr: learning rate; see :func:`adam`.
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
    return _transformation.optimizer(
        lr,
        lambda lr: _adagrad.config(lr, lr_decay, weight_decay, eps, maximize),
        _adagrad.plain,
        AdagradState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        initial={"sum": float(_hyperparameters.check("initial_accumulator_value", initial_accumulator_value))},
    )


@recorded
def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    *,
    eps_root: float = 0.0,
    amsgrad: bool = False,
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
        lr: learning rate: a number or a 0-d tensor (which may require grad);
            a schedule, a function of the step count (from 0) giving one (see
            :func:`unrollopt.linear_schedule`); or a pytree like the parameters
            of per-parameter rates, numbers or tensors broadcastable to them
            (Meta-SGD). Gradients with respect to tensor rates are exact on
            both paths. A schedule's value is the step's lr; per-parameter
            rates multiply the update of an operator run with lr = 1 (every
            update is linear in lr).
        betas: decay rates of the two moment estimates, each in [0, 1), numbers
            or 0-d tensors.
        eps: added to the denominator's square root.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        eps_root: added inside the square root; a positive value keeps the
            gradient of plain autograd finite where the second moment is 0 (the
            fused operator's hand-written backward is exact and finite either way).
        amsgrad: AMSGrad (Reddi, Kale and Kumar, 2018): the denominator uses the
            running maximum of :math:`\nu_t` (kept in the state as ``nu_max``),
            as ``torch.optim.Adam(amsgrad=True)``; derivatives at a tie of the
            maximum go to the previous maximum.
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator (one call for all
            tensors, vectorised and multithreaded, with an exact hand-written
            backward). See :func:`unrollopt.accelerated_op_available`.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByAdamState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _adam.config(lr, betas, eps, weight_decay, eps_root, maximize, amsgrad=amsgrad),
        _adam.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


@recorded
def adamw(
    lr: LearningRate = 1e-3,
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
        lr: learning rate; see :func:`adam`.
        betas: decay rates of the two moment estimates, each in [0, 1).
        eps: added to the denominator's square root.
        weight_decay: decoupled weight decay coefficient :math:`\lambda`
            (unless it is 0, ``update`` needs ``params=``).
        eps_root: added inside the square root (see :func:`adam`).
        amsgrad: the running maximum of :math:`\nu_t` in the denominator (see :func:`adam`).
        mask: where the weight decay applies: a pytree of bools like the
            parameters, or a function of the parameters returning one (as in
            optax); None decays every parameter.
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::adamw``.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByAdamState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _adam.config(lr, betas, eps, weight_decay, eps_root, maximize, decoupled=True, amsgrad=amsgrad),
        _adam.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        decay_mask=mask,
    )


@recorded
def adamax(
    lr: LearningRate = 2e-3,
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
        lr: learning rate; see :func:`adam`.
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
    return _transformation.optimizer(
        lr,
        lambda lr: _adamax.config(lr, betas, eps, weight_decay, maximize),
        _adamax.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


@recorded
def rmsprop(
    lr: LearningRate = 1e-2,
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

    and with ``nesterov`` (and momentum) :math:`u_t = -\mathrm{lr}\,(g' / d_t + \mu\, b_t)`,
    as optax's ``rmsprop(..., nesterov=True)``.

    The fused operator's backward is exact, and finite where :math:`g' = 0`
    and the square root's argument is 0 (the update does not depend on it there).

    Args:
        lr: learning rate; see :func:`adam`.
        alpha: smoothing constant of the averages, in [0, 1].
        eps: added to the denominator's square root.
        weight_decay: L2 penalty coefficient (needs ``params=`` in ``update``).
        momentum: momentum factor :math:`\mu` (a tensor selects the momentum
            form even at 0, so that it can be learned).
        centered: normalize by the variance estimate :math:`v_t - \bar g_t^2`.
        initial_scale: the initial value of :math:`v` (``torch.optim.RMSprop``:
            0; optax and TensorFlow use 1 for some models).
        nesterov: Nesterov momentum (needs momentum; ``torch.optim.RMSprop``
            has no such option).
        moment_requires_grad: make the initial states require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator (``unrollopt::rmsprop``,
            ``rmsprop_centered``, ``rmsprop_momentum`` or
            ``rmsprop_centered_momentum``).

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`RMSPropState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _rmsprop.config(lr, alpha, eps, weight_decay, momentum, centered, maximize, nesterov),
        _rmsprop.plain,
        RMSPropState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        initial={"square_avg": float(_hyperparameters.check("initial_scale", initial_scale))},
    )


@recorded
def sgd(
    lr: LearningRate = 1e-3,
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
        lr: learning rate (default ``torch.optim.SGD``'s); see :func:`adam`.
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
    return _transformation.optimizer(
        lr,
        lambda lr: _sgd.config(lr, momentum, dampening, weight_decay, nesterov, maximize),
        _sgd.plain,
        SgdState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


@recorded
def radam(
    lr: LearningRate = 1e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    *,
    decoupled_weight_decay: bool = False,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""RAdam (Liu et al., 2020), Adam with a rectified adaptive step, as
    ``torch.optim.RAdam`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1),
    :math:`\lambda` the weight decay (L2, added to the gradient, unless
    decoupled), :math:`\rho_\infty = 2 / (1 - \beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)`:

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g'^2 \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        u_t &= -\frac{\mathrm{lr}}{1 - \beta_1^t}\, r_t \sqrt{1 - \beta_2^t}\,
               \frac{\mu_t}{\sqrt{\nu_t} + \epsilon} \text{ if } \rho_t > 5,
               \text{ else } -\frac{\mathrm{lr}}{1 - \beta_1^t}\, \mu_t

    With ``decoupled_weight_decay`` the decay is :math:`-\mathrm{lr}\,\lambda\,\theta`,
    added to :math:`u_t` instead (AdamW's). The branch is chosen per step on the
    device, without a host synchronisation.

    Args:
        lr: learning rate; see :func:`adam`.
        betas: decay rates of the two moment estimates, each in [0, 1).
        eps: added to the denominator's square root.
        weight_decay: weight decay coefficient (needs ``params=`` in ``update``).
        decoupled_weight_decay: decay the parameters as AdamW does.
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::radam``.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByAdamState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _radam.config(lr, betas, eps, weight_decay, decoupled_weight_decay, maximize),
        _radam.plain,
        ScaleByAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
    )


@recorded
def lion(
    lr: LearningRate = 1e-4,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.99),
    weight_decay: Hyperparameter = 0.0,
    *,
    mask: Any = None,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization
    Algorithms"), the sign of an interpolated momentum, as a differentiable
    transformation.

    With :math:`s = -1` when maximizing (else 1) and :math:`\lambda` the
    (decoupled) weight decay:

    .. math::

        u_t &= -\mathrm{lr} \left( \operatorname{sign}\big(\beta_1 \mu_{t-1}
               + (1 - \beta_1)\, s\,g\big) + \lambda\,\theta \right) \\
        \mu_t &= \beta_2 \mu_{t-1} + (1 - \beta_2)\, s\,g

    :math:`\operatorname{sign}(0) = 0` (``torch.sign``'s): where the
    interpolation is exactly 0 only the decay moves the parameter; a NaN
    stays NaN (``torch.sign`` would make it 0). The sign's derivative is 0
    (also at 0, as autograd's), so the step's gradient reaches the gradient
    :math:`g`, :math:`\mu` and :math:`\beta_2` only through :math:`\mu_t`,
    and :math:`\beta_1` gets none. The fused backward and the plain path
    agree exactly on finite inputs; where a gradient is NaN, autograd's
    0 * NaN makes the plain path's derivatives there NaN. Lion's steps have
    size lr in every coordinate: its lr is typically 3-10 times smaller than
    AdamW's and its weight decay as much larger.

    Args:
        lr: learning rate; see :func:`adam`.
        betas: :math:`\beta_1` (the interpolation that is signed) and
            :math:`\beta_2` (the momentum's decay), each in [0, 1).
        weight_decay: decoupled weight decay coefficient :math:`\lambda`
            (unless it is 0, ``update`` needs ``params=``).
        mask: where the weight decay applies (see :func:`adamw`).
        moment_requires_grad: make the initial momentum require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::lion``.

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScaleByLionState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _lion.config(lr, betas, weight_decay, maximize),
        _lion.plain,
        ScaleByLionState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        decay_mask=mask,
    )


@recorded
def nadam(
    lr: LearningRate = 2e-3,
    betas: tuple[Hyperparameter, Hyperparameter] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: Hyperparameter = 0.0,
    momentum_decay: float = 4e-3,
    *,
    decoupled_weight_decay: bool = False,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    r"""NAdam (Dozat, 2016), Adam with Nesterov momentum, as
    ``torch.optim.NAdam`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1),
    :math:`\lambda` the weight decay (L2, added to the gradient, unless
    decoupled), :math:`\psi` the momentum decay, the momentum coefficients
    :math:`m_t = \beta_1 (1 - \tfrac12 0.96^{t\psi})` and their product
    :math:`P_t = m_1 \cdots m_t` (kept in the state as ``mu_product``):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2)\, g'^2 \\
        d_t &= \sqrt{\nu_t / (1 - \beta_2^t)} + \epsilon \\
        u_t &= -\mathrm{lr} \left( \frac{1 - m_t}{1 - P_t}\, \frac{g'}{d_t}
               + \frac{m_{t+1}}{1 - P_t m_{t+1}}\, \frac{\mu_t}{d_t} \right)

    With ``decoupled_weight_decay`` the decay is :math:`-\mathrm{lr}\,\lambda\,\theta`,
    added to :math:`u_t` instead. :math:`P_t` is differentiable with respect
    to a tensor :math:`\beta_1`.

    Args:
        lr: learning rate; see :func:`adam`.
        betas: decay rates of the two moment estimates, each in [0, 1).
        eps: added to the denominator's square root.
        weight_decay: weight decay coefficient (needs ``params=`` in ``update``).
        momentum_decay: :math:`\psi`, at least 0.
        decoupled_weight_decay: decay the parameters as AdamW does.
        moment_requires_grad: make the initial moments require grad.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: run the fused C++ operator ``unrollopt::nadam``.

    Returns:
        A :class:`GradientTransformation` whose state is an :class:`NAdamState`.
    """
    return _transformation.optimizer(
        lr,
        lambda lr: _nadam.config(lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize),
        _nadam.plain,
        NAdamState,
        fused=bool(use_accelerated_op),
        moment_requires_grad=moment_requires_grad,
        scalars=_nadam_product,
    )


def _nadam_product(config: _step.Config, state: Optional[NAdamState], count: torch.Tensor):
    """NAdam's product of momentum coefficients: 1 at init, then times this step's."""
    if state is None:
        return config, {"mu_product": torch.ones((), dtype=torch.float64)}
    t = count.to(torch.float64)
    product = state.mu_product * _nadam.momentum_coefficient(config["beta1"], t, config.option("momentum_decay"))
    return config.replace(mu_product=product), {"mu_product": product}
