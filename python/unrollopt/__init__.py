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
    _vmap,  # noqa: E402
)

_vmap.register()
from unrollopt import alias, meta, optim, pytree  # noqa: E402
from unrollopt.accelerated import accelerated_op_available  # noqa: E402
from unrollopt.alias import *  # noqa: E402, F403  (every optimizer's alias and state)
from unrollopt.base import GradientTransformation  # noqa: E402
from unrollopt.meta import *  # noqa: E402, F403  (MetaOptimizer and every Meta class)
from unrollopt.optim import *  # noqa: E402, F403  (every torch.optim-style class)
from unrollopt.schedule import exponential_decay, linear_schedule, polynomial_schedule  # noqa: E402
from unrollopt.transform import (  # noqa: E402
    EmptyState,
    ScaleByScheduleState,
    add_decayed_weights,
    chain,
    clip_grad_norm,
    identity,
    masked,
    nan_to_num,
    nan_to_num_hook,
    register_hook,
    scale,
    scale_by_accelerated_adam,
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_lion,
    scale_by_radam,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    scale_by_stddev,
    trace,
    zero_nan_hook,
)
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

#: For C++ programs: pass to CMake as CMAKE_PREFIX_PATH (with torch's) to
#: find_package(unrollopt) from this installation.
cmake_prefix_path = _os.path.join(_os.path.dirname(_C.__file__), "share", "cmake")

__all__ = [
    "module_detach_",
    "scale_by_rss",
    "scale_by_radam",
    "scale_by_adamax",
    "scale_by_lion",
    "scale_by_adadelta",
    "scale_by_accelerated_adam",
    "pytree",
    "FuncOptimizer",
    "Optimizer",
    "accelerated_op_available",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_grad_norm",
    "cmake_prefix_path",
    "EmptyState",
    "exponential_decay",
    "extract_state_dict",
    "GradientTransformation",
    "identity",
    "linear_schedule",
    "masked",
    "module_clone",
    "ModuleState",
    "nan_to_num",
    "nan_to_num_hook",
    "register_hook",
    "zero_nan_hook",
    "polynomial_schedule",
    "recover_state_dict",
    "scale",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_stddev",
    "ScaleByScheduleState",
    "stop_gradient",
    "trace",
]
__all__ += alias.__all__
__all__ += meta.__all__
__all__ += optim.__all__
