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

from unrollopt import _C  # noqa: E402  (loads the operators)
from unrollopt.accelerated import accelerated_op_available  # noqa: E402
from unrollopt.alias import (  # noqa: E402
    AdadeltaState,
    AdagradState,
    RMSPropState,
    ScaleByAdamState,
    SgdState,
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    rmsprop,
    sgd,
)
from unrollopt.base import GradientTransformation  # noqa: E402
from unrollopt.meta import (  # noqa: E402
    MetaAdadelta,
    MetaAdagrad,
    MetaAdam,
    MetaAdamax,
    MetaAdamW,
    MetaOptimizer,
    MetaRMSProp,
    MetaRMSprop,
    MetaSGD,
)
from unrollopt.optim import SGD, Adadelta, Adagrad, AdaMax, Adam, Adamax, AdamW, RMSProp, RMSprop  # noqa: E402
from unrollopt.update import apply_updates  # noqa: E402
from unrollopt.utils import (  # noqa: E402
    ModuleState,
    extract_state_dict,
    module_clone,
    recover_state_dict,
    stop_gradient,
)

#: For C++ programs: pass to CMake as CMAKE_PREFIX_PATH (with torch's) to
#: find_package(unrollopt) from this installation.
cmake_prefix_path = _os.path.join(_os.path.dirname(_C.__file__), "share", "cmake")

__all__ = [
    "AdaMax",
    "Adadelta",
    "AdadeltaState",
    "Adagrad",
    "AdagradState",
    "Adam",
    "Adamax",
    "AdamW",
    "GradientTransformation",
    "MetaAdadelta",
    "MetaAdagrad",
    "MetaAdam",
    "MetaAdamax",
    "MetaAdamW",
    "MetaOptimizer",
    "MetaRMSProp",
    "MetaRMSprop",
    "MetaSGD",
    "ModuleState",
    "RMSProp",
    "RMSPropState",
    "RMSprop",
    "SGD",
    "ScaleByAdamState",
    "SgdState",
    "accelerated_op_available",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "apply_updates",
    "cmake_prefix_path",
    "extract_state_dict",
    "module_clone",
    "recover_state_dict",
    "rmsprop",
    "sgd",
    "stop_gradient",
]
