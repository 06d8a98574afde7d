"""TorchOpt's ``torchopt.accelerated_op.adam_op.AdamOp`` on unrollopt's fused Adam."""

from __future__ import annotations

from typing import Optional, Union

import torch

__all__ = ["AdamOp"]


class AdamOp:
    """One fused Adam step on a tensor, as TorchOpt's operator object:
    ``AdamOp(b1, b2, eps, eps_root=, inplace=)(mu, nu, updates, count)``
    returns ``(mu', nu', direction)`` with the bias-corrected direction
    mu_hat / (sqrt(nu_hat + eps_root) + eps) at step ``count`` (counting from
    1). ``inplace=False`` is differentiable (exact backward);
    ``inplace=True`` overwrites ``mu``, ``nu`` and ``updates``. It is
    :func:`unrollopt.transform.scale_by_adam` with ``use_accelerated_op=True``.
    """

    def __init__(
        self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, eps_root: float = 0.0, inplace: bool = True
    ) -> None:
        from unrollopt.transform import scale_by_adam

        self.b1, self.b2, self.eps, self.eps_root, self.inplace = b1, b2, eps, eps_root, inplace
        self._transformation = scale_by_adam(b1, b2, eps, eps_root, use_accelerated_op=True)

    def __call__(
        self, mu: torch.Tensor, nu: torch.Tensor, updates: Optional[torch.Tensor], count: Union[int, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        from unrollopt.alias import ScaleByAdamState

        if updates is None:
            return mu, nu, None
        steps_taken = torch.as_tensor(count, dtype=torch.int64) - 1
        state = ScaleByAdamState(mu=mu, nu=nu, count=steps_taken)
        direction, new = self._transformation.update(updates, state, inplace=self.inplace)
        return new.mu, new.nu, direction
