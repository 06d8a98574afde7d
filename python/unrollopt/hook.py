"""TorchOpt's ``torchopt.hook``: the gradient hooks of :func:`unrollopt.register_hook`."""

from unrollopt.transform import nan_to_num_hook, register_hook, zero_nan_hook

__all__ = ["nan_to_num_hook", "register_hook", "zero_nan_hook"]
