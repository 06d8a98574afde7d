# Type stub of unrollopt.optim for static type checkers: its classes'
# constructors are made at import from the aliases' signatures (this file
# states them). Generated; a test checks it is current. To regenerate:
#   python -c "from unrollopt import _signatures; print(_signatures.optim_stub(), end='')" > python/unrollopt/optim/__init__.pyi

from typing import Any, Callable, Iterable, Union

import torch

from unrollopt._hyperparameters import Hyperparameter

RateOrSchedule = Union[Hyperparameter, Callable[[torch.Tensor], Hyperparameter]]

__all__ = ['Adadelta', 'AdaDelta', 'Adagrad', 'AdaGrad', 'Adam', 'AdamW', 'Adamax', 'AdaMax', 'Lion', 'NAdam', 'RAdam', 'RMSprop', 'RMSProp', 'SGD']


class Adadelta(torch.optim.Optimizer):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 1.0, rho: 'Hyperparameter' = 0.9, eps: 'float' = 1e-06, weight_decay: 'Hyperparameter' = 0.0, *, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...

AdaDelta = Adadelta


class Adagrad(torch.optim.Optimizer):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.01, lr_decay: 'Hyperparameter' = 0.0, weight_decay: 'Hyperparameter' = 0.0, initial_accumulator_value: 'float' = 0.0, eps: 'float' = 1e-10, *, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...

AdaGrad = Adagrad


class Adam(torch.optim.Optimizer):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.001, betas: 'tuple[Hyperparameter, Hyperparameter]' = (0.9, 0.999), eps: 'float' = 1e-08, weight_decay: 'Hyperparameter' = 0.0, amsgrad: 'bool' = False, *, eps_root: 'float' = 0.0, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...


class AdamW(Adam):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.001, betas: 'tuple[Hyperparameter, Hyperparameter]' = (0.9, 0.999), eps: 'float' = 1e-08, weight_decay: 'Hyperparameter' = 0.01, amsgrad: 'bool' = False, *, eps_root: 'float' = 0.0, mask: 'Any' = None, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...


class Adamax(Adam):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.002, betas: 'tuple[Hyperparameter, Hyperparameter]' = (0.9, 0.999), eps: 'float' = 1e-08, weight_decay: 'Hyperparameter' = 0.0, *, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...

AdaMax = Adamax


class Lion(torch.optim.Optimizer):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.0001, betas: 'tuple[Hyperparameter, Hyperparameter]' = (0.9, 0.99), weight_decay: 'Hyperparameter' = 0.0, *, mask: 'Any' = None, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...


class NAdam(Adam):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.002, betas: 'tuple[Hyperparameter, Hyperparameter]' = (0.9, 0.999), eps: 'float' = 1e-08, weight_decay: 'Hyperparameter' = 0.0, momentum_decay: 'float' = 0.004, decoupled_weight_decay: 'bool' = False, *, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...


class RAdam(Adam):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.001, betas: 'tuple[Hyperparameter, Hyperparameter]' = (0.9, 0.999), eps: 'float' = 1e-08, weight_decay: 'Hyperparameter' = 0.0, decoupled_weight_decay: 'bool' = False, *, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...


class RMSprop(torch.optim.Optimizer):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.01, alpha: 'Hyperparameter' = 0.99, eps: 'float' = 1e-08, weight_decay: 'Hyperparameter' = 0.0, momentum: 'Hyperparameter' = 0.0, centered: 'bool' = False, *, initial_scale: 'float' = 0.0, nesterov: 'bool' = False, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...

RMSProp = RMSprop


class SGD(torch.optim.Optimizer):
    def __init__(self, params: 'Iterable[Any]', lr: 'RateOrSchedule' = 0.001, momentum: 'Hyperparameter' = 0.0, dampening: 'Hyperparameter' = 0.0, weight_decay: 'Hyperparameter' = 0.0, nesterov: 'bool' = False, *, maximize: 'bool' = False, use_accelerated_op: 'bool' = False) -> 'None': ...
