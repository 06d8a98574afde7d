"""TorchOpt's ``torchopt.optim.func``: :class:`unrollopt.FuncOptimizer` under that path."""

from unrollopt.wrappers import FuncOptimizer

__all__ = ["FuncOptimizer"]
