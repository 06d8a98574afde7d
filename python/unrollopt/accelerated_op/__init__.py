"""TorchOpt's ``torchopt.accelerated_op``: whether the fused operators run on a
device (:func:`unrollopt.accelerated_op_available`, also as ``is_available``),
and TorchOpt's Adam operator object (``adam_op.AdamOp``) on unrollopt's fused
Adam."""

from unrollopt.accelerated import accelerated_op_available
from unrollopt.accelerated_op import adam_op
from unrollopt.accelerated_op.adam_op import AdamOp

is_available = accelerated_op_available

__all__ = ["AdamOp", "accelerated_op_available", "adam_op", "is_available"]
