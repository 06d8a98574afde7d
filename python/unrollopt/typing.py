"""TorchOpt's ``torchopt.typing``: the names of unrollopt's types."""

from unrollopt.base import (
    ChainedGradientTransformation,
    GradientTransformation,
    IdentityGradientTransformation,
    OptState,
    Params,
    Updates,
)
from unrollopt.schedule import Schedule

__all__ = [
    "ChainedGradientTransformation",
    "GradientTransformation",
    "IdentityGradientTransformation",
    "OptState",
    "Params",
    "Schedule",
    "Updates",
]
