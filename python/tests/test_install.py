"""What an install built without the CUDA kernels does on GPUs (a CUDA build of
torch with no CUDA toolkit at build time gives one): accelerated_op_available
says False for CUDA, and use_accelerated_op=True on CUDA tensors is a clear
error naming the cause and the fix, never a crash. No GPU is needed: a stand-in
tensor that says it is on CUDA takes the dispatcher's own CUDA entry of the
operator, as a real GPU tensor would."""

from __future__ import annotations

import pytest
import torch

import unrollopt
from unrollopt import _build_info

cpu_kernels_only = pytest.mark.skipif(_build_info.CUDA_KERNELS, reason="this build has the CUDA kernels")


def test_every_operator_has_a_cuda_entry():
    # The CUDA kernels or, in a build without them, an entry that says why.
    for op in ("unrollopt::adam", "unrollopt::adam_", "unrollopt::adam_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    assert _build_info.CUDA_KERNELS or _build_info.NO_CUDA_REASON


@cpu_kernels_only
def test_no_cuda_without_cuda_kernels():
    assert not unrollopt.accelerated_op_available(torch.device("cuda"))
    assert not unrollopt.accelerated_op_available("cuda:0")
    assert not unrollopt.accelerated_op_available(["cpu", "cuda"])
    assert unrollopt.accelerated_op_available("cpu")


class OnCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA (no GPU needed). The fused operators
    are sent to their CUDA kernel through the dispatcher, as a real CUDA tensor's
    would be; any other op runs on the CPU data."""

    @staticmethod
    def __new__(cls, data: torch.Tensor):
        t = torch.Tensor._make_wrapper_subclass(
            cls, data.shape, dtype=data.dtype, device=torch.device("cuda", 0), requires_grad=data.requires_grad
        )
        t.data_ = data
        return t

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "unrollopt":
            return func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA), *args, **kwargs)

        def unwrap(x):
            if isinstance(x, OnCuda):
                return x.data_
            if isinstance(x, (list, tuple)):
                return type(x)(unwrap(y) for y in x)
            return x

        return func(*unwrap(list(args)), **{k: unwrap(v) for k, v in kwargs.items()})


@cpu_kernels_only
def test_the_operator_on_cuda_says_why():
    # The stand-in reaches the operator's CUDA entry, as C++ callers and
    # torch.ops.unrollopt would: an error naming the cause and the fix.
    g = OnCuda(torch.randn(4))
    with pytest.raises(NotImplementedError) as error:
        hyper = [torch.tensor(v) for v in (0.1, 0.9, 0.999, 0.0)]
        torch.ops.unrollopt.adam(
            [g], [OnCuda(torch.zeros(4))], [OnCuda(torch.zeros(4))], [], torch.tensor(1.0), *hyper, 1e-8, 0.0, False
        )
    message = str(error.value)
    assert "unrollopt::adam on CUDA tensors: this build of unrollopt has no CUDA kernels" in message
    assert _build_info.NO_CUDA_REASON in message
    assert "nvcc" in message and "use_accelerated_op=False" in message


@cpu_kernels_only
@pytest.mark.parametrize("inplace", [False, True])
def test_fused_step_on_cuda_is_a_clear_error(inplace):
    opt = unrollopt.adam(0.1, use_accelerated_op=True)
    params = [OnCuda(torch.randn(4))]
    state = opt.init(params)
    grads = [OnCuda(torch.randn(4))]
    with pytest.raises(RuntimeError) as error:
        opt.update(grads, state, inplace=inplace)
    message = str(error.value)
    # The cause: a build with the CPU kernels only, and why.
    assert "use_accelerated_op=True on cuda:0" in message
    assert "built with the CPU kernels only" in message
    assert _build_info.NO_CUDA_REASON in message
    # The fix: rebuild with the toolkit, or the plain path.
    assert "rebuild it with the CUDA toolkit's nvcc first on PATH" in message
    assert "use_accelerated_op=False" in message
