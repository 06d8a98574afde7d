"""Optimizers as differentiable ``(init, update)`` transformations."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from unrollopt import _adam, _pytree
from unrollopt._hyperparameters import Hyperparameter
from unrollopt.base import GradientTransformation, OptState, Params, Updates

__all__ = ["adam", "ScaleByAdamState"]


class ScaleByAdamState(NamedTuple):
    """Adam's state: the moment estimates (pytrees like the parameters) and the
    number of steps taken (a 0-d int64 tensor)."""

    mu: Params
    nu: Params
    count: torch.Tensor


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
        betas: decay rates of the two moment estimates, each in [0, 1).
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
    hp = _adam.AdamHyperparameters.checked(lr, betas, eps, weight_decay, eps_root, maximize)
    fused = bool(use_accelerated_op)

    def init(params: Params) -> ScaleByAdamState:
        def zeros(p: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if p is None:
                return None
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be a pytree of tensors, got a {type(p).__name__}")
            return torch.zeros_like(p, requires_grad=moment_requires_grad)

        leaves, spec = _pytree.flatten(params)
        return ScaleByAdamState(
            mu=_pytree.unflatten([zeros(p) for p in leaves], spec),
            nu=_pytree.unflatten([zeros(p) for p in leaves], spec),
            count=torch.zeros((), dtype=torch.int64),
        )

    def update(
        updates: Updates,
        state: OptState,
        *,
        params: Optional[Params] = None,
        inplace: bool = True,
    ) -> tuple[Updates, ScaleByAdamState]:
        if not isinstance(state, ScaleByAdamState):
            raise TypeError(f"state must be a ScaleByAdamState, got {type(state).__name__}")
        grads, spec = _pytree.flatten(updates)
        mus = _pytree.flatten_like(state.mu, spec, "state.mu")
        nus = _pytree.flatten_like(state.nu, spec, "state.nu")
        if params is None:
            if hp.uses_params:
                raise ValueError("weight_decay is not 0: pass the parameters as update(..., params=params)")
            ps = None
        else:
            ps = _pytree.flatten_like(params, spec, "params")
        live = _pytree.present(grads)
        for i in live:
            if mus[i] is None or nus[i] is None or (ps is not None and ps[i] is None):
                raise ValueError(f"updates has a tensor at leaf {i} where the state or params has None")
        g = [grads[i] for i in live]
        m = [mus[i] for i in live]
        v = [nus[i] for i in live]
        p = [ps[i] for i in live] if ps is not None else []
        _adam.check_tensors("update", g, m, v, p)
        if inplace:
            _adam.check_inplace_allowed("update", g, m, v, p, hp=hp)
        count = state.count + 1
        new_u, new_m, new_v = _adam.step(g, m, v, p, count, hp, fused=fused, inplace=inplace)
        out_u, out_m, out_v = list(grads), list(mus), list(nus)
        for k, i in enumerate(live):
            out_u[i], out_m[i], out_v[i] = new_u[k], new_m[k], new_v[k]
        new_state = ScaleByAdamState(
            mu=_pytree.unflatten(out_m, spec),
            nu=_pytree.unflatten(out_v, spec),
            count=count,
        )
        return _pytree.unflatten(out_u, spec), new_state

    return GradientTransformation(init, update)
