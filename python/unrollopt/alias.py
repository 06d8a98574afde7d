"""Optimizers as differentiable ``(init, update)`` transformations."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch

from unrollopt import _adam, _fused, _pytree, _sgd
from unrollopt._hyperparameters import Hyperparameter
from unrollopt.base import GradientTransformation, OptState, Params, Updates

__all__ = ["adam", "sgd", "ScaleByAdamState", "SgdState"]


class ScaleByAdamState(NamedTuple):
    """Adam's state: the moment estimates (pytrees like the parameters) and the
    number of steps taken (a 0-d int64 tensor)."""

    mu: Params
    nu: Params
    count: torch.Tensor


class SgdState(NamedTuple):
    """SGD's state: the momentum buffers (a pytree like the parameters, or None
    without momentum) and the number of steps taken (a 0-d int64 tensor)."""

    momentum_buffer: Optional[Params]
    count: torch.Tensor


def _transformation(
    config: _fused.Config,
    plain: _fused.PlainStep,
    state_type: Callable[..., Any],
    *,
    fused: bool,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """The ``(init, update)`` pair of one optimizer: pytrees in, lists to
    :func:`_fused.step`, pytrees out. The state holds one pytree per state of
    the optimizer (fields named after them; others None) and ``count``."""
    names = config.state_names
    fields = [f for f in state_type._fields if f != "count"]

    def init(params: Params) -> OptState:
        def zeros(p: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if p is None:
                return None
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be a pytree of tensors, got a {type(p).__name__}")
            return torch.zeros_like(p, requires_grad=moment_requires_grad)

        leaves, spec = _pytree.flatten(params)
        trees = {name: _pytree.unflatten([zeros(p) for p in leaves], spec) for name in names}
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
