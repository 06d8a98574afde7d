"""One differentiable Adam step (forward + backward) on one float32 tensor:
the fused operator vs unrollopt's plain-PyTorch path, against the memory
bandwidth floor. Medians of repeats; every number comes from this one run.

    python bench/adam_step.py [--log2-sizes 16 20] [--repeats 21] [--threads N]

The floor is the bytes an ideal kernel moves (forward: read g, mu, nu, p and
write update, mu', nu'; backward: read three cotangents and g, mu, nu, p, write
four gradients: 18 values per element) divided by the bandwidth of a measured
copy of 2^26 float32 values.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import unrollopt
from unrollopt import _adam, _fused

VALUES_PER_ELEMENT = 18


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(repeats: int) -> float:
    src = torch.rand(1 << 26)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * src.element_size() / seconds


def step_fn(n: int, fused: bool):
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(n, generator=g).requires_grad_()
    mu = (0.1 * torch.randn(n, generator=g)).requires_grad_()
    nu = (0.1 * torch.rand(n, generator=g)).requires_grad_()
    param = torch.randn(n, generator=g).requires_grad_()
    cotangents = [torch.randn(n, generator=g) for _ in range(3)]
    config = _adam.config(1e-3, (0.9, 0.999), 1e-8, 1e-2, 0.0, False)
    count = torch.tensor(3)

    def run():
        (update,), ((new_mu,), (new_nu,)) = _fused.step(
            _adam.plain, [grad], [[mu], [nu]], [param], count, config, fused=fused, inplace=False
        )
        torch.autograd.grad([update, new_mu, new_nu], [grad, mu, nu, param], cotangents)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2-sizes", type=int, nargs="+", default=[16, 20])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bandwidth = copy_bandwidth(args.repeats)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, unrollopt {unrollopt.__version__}")
    print(f"# copy bandwidth {bandwidth / 1e9:.1f} GB/s (2^26 float32, median of {args.repeats})")
    print("| elements | floor (ms) | fused (ms) | plain (ms) | plain / fused | floor / fused |")
    print("|---|---|---|---|---|---|")
    for log2 in args.log2_sizes:
        n = 1 << log2
        floor = VALUES_PER_ELEMENT * 4 * n / bandwidth
        fused = median_seconds(step_fn(n, True), args.repeats)
        plain = median_seconds(step_fn(n, False), args.repeats)
        print(f"| 2^{log2} | {floor * 1e3:.3f} | {fused * 1e3:.3f} | {plain * 1e3:.3f} | "
              f"{plain / fused:.2f} | {floor / fused:.2f} |")


if __name__ == "__main__":
    main()
