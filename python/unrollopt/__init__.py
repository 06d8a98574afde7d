"""unrollopt: differentiable optimizer steps for PyTorch.

Functional optimizers (``unrollopt.adam``) are differentiable ``(init, update)``
pairs over pytrees of tensors; ``unrollopt.Adam`` is a ``torch.optim``
optimizer. ``use_accelerated_op=True`` runs fused C++ operators
(``torch.ops.unrollopt.*``) with exact hand-written backward passes.
"""

import os as _os

import torch as _torch  # the extension links against torch's libraries

from unrollopt._build_info import TORCH_VERSION as _BUILT_WITH_TORCH
from unrollopt._build_info import VERSION as __version__

if _torch.__version__ != _BUILT_WITH_TORCH:
    raise ImportError(
        f"unrollopt {__version__} was built against torch {_BUILT_WITH_TORCH}, but torch "
        f"{_torch.__version__} is installed. Rebuild it against the installed torch: "
        "pip install --no-build-isolation --no-deps --force-reinstall <unrollopt source>"
    )

from unrollopt import (
    _C,  # noqa: E402  (loads the operators)
    _inductor,  # noqa: E402
    _vmap,  # noqa: E402
)

_vmap.register()
_inductor.register()
from unrollopt import (  # noqa: E402
    _serialization,  # noqa: E402
    alias,
    meta,
    optim,
    pytree,
    transform,
)
from unrollopt._step import FirstOrderWarning  # noqa: E402
from unrollopt._unroll import unroll  # noqa: E402  (long unrolls in bounded memory)
from unrollopt.accelerated import accelerated_op_available  # noqa: E402
from unrollopt.alias import *  # noqa: E402, F403  (every optimizer's alias and state)
from unrollopt.base import GradientTransformation  # noqa: E402
from unrollopt.meta import *  # noqa: E402, F403  (MetaOptimizer and every Meta class)
from unrollopt.optim import *  # noqa: E402, F403  (every torch.optim-style class)
from unrollopt.schedule import exponential_decay, linear_schedule, polynomial_schedule  # noqa: E402
from unrollopt.transform import *  # noqa: E402, F403  (every gradient transformation)
from unrollopt.update import apply_updates  # noqa: E402
from unrollopt.utils import (  # noqa: E402
    ModuleState,
    extract_state_dict,
    module_clone,
    module_detach_,
    recover_state_dict,
    stop_gradient,
)
from unrollopt.wrappers import FuncOptimizer, Optimizer  # noqa: E402

_serialization.register()  # checkpoints load with torch.load(..., weights_only=True)
from unrollopt import accelerated_op, hook, typing  # noqa: E402, F401  (TorchOpt's module paths)
from unrollopt.optim import func as _optim_func  # noqa: E402, F401  (unrollopt.optim.func)

#: For C++ programs: pass to CMake as CMAKE_PREFIX_PATH (with torch's) to
#: find_package(unrollopt) from this installation.
cmake_prefix_path = _os.path.join(_os.path.dirname(_C.__file__), "share", "cmake")

__all__ = [
    "module_detach_",
    "pytree",
    "FirstOrderWarning",
    "FuncOptimizer",
    "Optimizer",
    "accelerated_op_available",
    "apply_updates",
    "cmake_prefix_path",
    "exponential_decay",
    "extract_state_dict",
    "GradientTransformation",
    "linear_schedule",
    "module_clone",
    "ModuleState",
    "polynomial_schedule",
    "recover_state_dict",
    "stop_gradient",
    "unroll",
]
__all__ += alias.__all__
__all__ += meta.__all__
__all__ += optim.__all__
__all__ += transform.__all__
