"""Whether the fused operators can run on a device."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch

from unrollopt import _C, _build_info

__all__ = ["accelerated_op_available"]

Device = Union[torch.device, str, int]


def accelerated_op_available(devices: Optional[Union[Device, Iterable[Device]]] = None) -> bool:
    """Whether ``use_accelerated_op=True`` can run on every device given.

    ``devices`` is a ``torch.device``, a string (``"cpu"``, ``"cuda:0"``), an
    int (a CUDA device index), or an iterable of these; ``None`` means the CPU
    (whose kernels every build has; TorchOpt's ``accelerated_op_available()``
    checks CUDA as well: ask for ``"cuda"`` for that). ``"meta"`` is True: the
    shape-only kernels ``torch.compile`` traces with. CUDA is True where this
    build has CUDA kernels and that GPU is present. Returns False, never
    raises, for anything it cannot use (an unknown device string, a GPU that is
    absent, an empty iterable).
    """
    try:
        if devices is None:
            devices = [torch.device("cpu")]
        elif isinstance(devices, (torch.device, str, int)):
            devices = [devices]
        devices = list(devices)
        if not devices:
            return False
        for device in devices:
            if isinstance(device, bool):
                return False
            if isinstance(device, int):
                device = torch.device("cuda", device)
            if not _C.accelerated_op_available(str(torch.device(device))):
                return False
        return True
    except Exception:
        return False


def _unavailable(device: torch.device) -> str:
    """Why the fused operators cannot run on ``device``, and what to do: for the
    error of ``use_accelerated_op=True`` there."""
    plain = "or pass use_accelerated_op=False (the plain PyTorch path)"
    if device.type == "cuda" and not _build_info.CUDA_KERNELS:
        return (
            f"this unrollopt was built with the CPU kernels only ({_build_info.NO_CUDA_REASON} at build time). "
            "For the fused operators on the GPU, rebuild it with the CUDA toolkit's nvcc first on PATH "
            "(pip install --no-build-isolation --no-deps --force-reinstall <unrollopt source>), " + plain
        )
    if device.type == "cuda":
        return f"this build has CUDA kernels, but torch sees no GPU {device}; " + plain
    return f"the fused operators have no kernel for device {device}; " + plain
