"""Adamax (Kingma and Ba, 2015, section 7.1), Adam with the infinity norm. The
fused step is ``cpp/include/unrollopt/rules/adamax.h``."""

from __future__ import annotations

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation
from unrollopt.optimizers.adam import ScaleByAdamState


@optimizer(
    ScaleByAdamState,
    class_name="Adamax",
    spellings=("AdaMax",),
    torch_class="torch.optim.Adamax",
    state_keys={"mu": "exp_avg", "nu": "exp_inf"},
)
def adamax(lr=..., betas=..., eps=..., weight_decay=...) -> GradientTransformation:
    r"""Adamax (Kingma and Ba, 2015, section 7.1), Adam with the infinity norm, as
    ``torch.optim.Adamax`` computes it, as a differentiable transformation.

    With :math:`t` the step number, :math:`s = -1` when maximizing (else 1) and
    :math:`\lambda` the weight decay (L2, added to the gradient):

    .. math::

        g' &= s\,g + \lambda\,\theta \\
        \mu_t &= \beta_1 \mu_{t-1} + (1 - \beta_1)\, g' \\
        \nu_t &= \max(\beta_2 \nu_{t-1},\ |g'| + \epsilon) \\
        u_t &= -\frac{\mathrm{lr}}{1 - \beta_1^t}\, \frac{\mu_t}{\nu_t}

    (the state's ``nu`` holds :math:`\nu_t`, the infinity norm). Derivatives
    where the step is not differentiable (the fused operator's backward): the
    maximum passes the cotangent to the argument it selected, to
    :math:`\beta_2 \nu_{t-1}` at a tie; :math:`d|x|/dx` is the sign of
    :math:`x`, 0 at 0. (The plain path, the same rule in ATen operations,
    makes the same choices.)

    Args:
        betas: decay rates of the first moment and of the infinity norm, each in [0, 1).
        eps: added to :math:`|g'|` (keeps :math:`\nu_t` positive).
    """
    ...
