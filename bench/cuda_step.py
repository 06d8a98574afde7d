"""Adam steps on a CUDA GPU, against the memory bandwidth floor and torch's
fused Adam. Medians of CUDA-event timings (each the mean of 4 calls in a row);
every number comes from this one run.

    python bench/cuda_step.py [--log2-size 26] [--repeats 21]

Rows:
- differentiable fused step (unrollopt.adam out of place, forward + backward):
  it must move 18 float32 values per element (forward: read g, mu, nu, p and
  write update, mu', nu'; backward: read three cotangents and g, mu, nu, p and
  write four gradients); the floor is those bytes over the bandwidth of a
  measured device copy of 2^26 float32 values (bytes read + written).
- the same step on the plain-PyTorch path (use_accelerated_op=False).
- the non-differentiable in-place step (unrollopt.Adam with
  use_accelerated_op=True: read g, mu, nu, p, write p, mu, nu: 7 values)
  against torch.optim.Adam(fused=True), on one tensor and on 64 tensors.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import unrollopt
from unrollopt import _step
from unrollopt.optimizers import adam

DIFFERENTIABLE_VALUES = 18
INPLACE_VALUES = 7


def median_ms(fn, repeats: int, inner: int = 4) -> float:
    """Median over `repeats` of the mean time of `inner` calls in a row (so the
    host's time per call overlaps the GPU's, as in a training loop)."""
    fn()  # warm up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of a device-to-device copy (read + written)."""
    src = torch.rand(1 << 26, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def differentiable_step(n: int, fused: bool):
    g = torch.Generator(device="cuda").manual_seed(0)
    grad = torch.randn(n, generator=g, device="cuda").requires_grad_()
    mu = (0.1 * torch.randn(n, generator=g, device="cuda")).requires_grad_()
    nu = (0.1 * torch.rand(n, generator=g, device="cuda")).requires_grad_()
    param = torch.randn(n, generator=g, device="cuda").requires_grad_()
    cotangents = [torch.randn(n, generator=g, device="cuda") for _ in range(3)]
    definition = adam.adam.definition
    config = definition.config(definition.settings(lr=1e-3, weight_decay=1e-2))
    count = torch.tensor(3)

    def run():
        (update,), ((new_mu,), (new_nu,)) = _step.step(
            [grad], [[mu], [nu]], [param], count, config, fused=fused, inplace=False
        )
        torch.autograd.grad([update, new_mu, new_nu], [grad, mu, nu, param], cotangents)

    return run


def inplace_step(n: int, tensors: int, ours: bool):
    g = torch.Generator(device="cuda").manual_seed(1)
    params = [torch.randn(n // tensors, generator=g, device="cuda") for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, device="cuda")
    if ours:
        opt = unrollopt.Adam(params, lr=1e-3, weight_decay=1e-2, use_accelerated_op=True)
    else:
        opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-2, fused=True)
    opt.step()  # creates the state
    return opt.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2-size", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    assert torch.cuda.is_available() and unrollopt.accelerated_op_available("cuda"), "needs a GPU and a CUDA build"
    n = 1 << args.log2_size
    bandwidth = copy_bandwidth(args.repeats)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, unrollopt {unrollopt.__version__}")
    print(f"# device copy {bandwidth / 1e9:.0f} GB/s (2^26 float32, read + written, median of {args.repeats})")
    print(f"# 2^{args.log2_size} float32 elements; times are medians of {args.repeats} (CUDA events)")
    print("| step | time (ms) | floor (ms) | floor / time | vs torch fused Adam |")
    print("|---|---|---|---|---|")

    def floor_ms(values: int) -> float:
        return values * 4 * n / bandwidth * 1e3

    for name, fused in (("differentiable, fused", True), ("differentiable, plain ops", False)):
        ms = median_ms(differentiable_step(n, fused), args.repeats)
        floor = floor_ms(DIFFERENTIABLE_VALUES)
        print(f"| {name} (fwd + bwd) | {ms:.3f} | {floor:.3f} | {floor / ms:.2f} | |")
        torch.cuda.empty_cache()
    for tensors in (1, 64):
        ours = median_ms(inplace_step(n, tensors, True), args.repeats)
        torch.cuda.empty_cache()
        theirs = median_ms(inplace_step(n, tensors, False), args.repeats)
        torch.cuda.empty_cache()
        floor = floor_ms(INPLACE_VALUES)
        print(
            f"| in place, {tensors} tensor(s): unrollopt | {ours:.3f} | {floor:.3f} | {floor / ours:.2f} | "
            f"{ours / theirs:.2f}x |"
        )
        print(
            f"| in place, {tensors} tensor(s): torch.optim.Adam(fused=True) | {theirs:.3f} | {floor:.3f} | "
            f"{floor / theirs:.2f} | 1.00x |"
        )


if __name__ == "__main__":
    main()
