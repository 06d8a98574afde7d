"""NAdam (Dozat, 2016), Adam with Nesterov momentum. The step (fused and plain) is
``cpp/include/unrollopt/rules/nadam.h``, and so is the product of momentum coefficients,
a state of the rule's own (its ``scalar``), which every engine keeps."""

from __future__ import annotations

from typing import NamedTuple

import torch

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation, Params
from unrollopt.optimizers import adam


class NAdamState(NamedTuple):
    """NAdam's state: the moment estimates (pytrees like the parameters), the
    product of the momentum coefficients so far (a 0-d float64 tensor,
    differentiable with respect to a tensor beta1) and the number of steps
    taken (a 0-d int64 tensor)."""

    mu: Params
    nu: Params
    mu_product: torch.Tensor
    count: torch.Tensor


@optimizer(
    NAdamState,
    class_name="NAdam",
    torch_class="torch.optim.NAdam",
    state_keys=adam.STATE_KEYS,
    positional=("decoupled_weight_decay",),
    notes="""Like ``torch.optim.NAdam``, each parameter keeps its product of
    momentum coefficients in the state (``mu_product``, a 0-d tensor of the
    default scalar dtype).""",
)
def nadam(
    lr=..., betas=..., eps=..., weight_decay=..., momentum_decay=..., *, decoupled_weight_decay=...
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
        weight_decay: weight decay coefficient (needs ``params=`` in ``update``).
        momentum_decay: :math:`\psi`, at least 0.
        decoupled_weight_decay: decay the parameters as AdamW does.
    """
    ...
