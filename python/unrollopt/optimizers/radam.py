"""RAdam (Liu et al., 2020), Adam with a rectified adaptive step. The step (fused
and plain) is ``cpp/include/unrollopt/rules/radam.h``."""

from __future__ import annotations

from unrollopt._optimizer import optimizer
from unrollopt.base import GradientTransformation
from unrollopt.optimizers import adam


@optimizer(
    adam.ScaleByAdamState,
    class_name="RAdam",
    torch_class="torch.optim.RAdam",
    state_keys=adam.STATE_KEYS,
    positional=("decoupled_weight_decay",),
)
def radam(lr=..., betas=..., eps=..., weight_decay=..., *, decoupled_weight_decay=...) -> GradientTransformation:
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
        weight_decay: weight decay coefficient (needs ``params=`` in ``update``).
        decoupled_weight_decay: decay the parameters as AdamW does.
    """
    ...
