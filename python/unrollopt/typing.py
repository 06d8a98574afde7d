"""TorchOpt's ``torchopt.typing``: the names of unrollopt's types."""

from unrollopt import base
from unrollopt.base import *  # noqa: F403  (GradientTransformation, ChainedGradientTransformation, ...)
from unrollopt.schedule import Schedule

__all__ = [*base.__all__, "Schedule"]
