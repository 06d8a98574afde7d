"""One differentiable step (forward + backward) of every optimizer on one
float32 tensor: the fused operator (use_accelerated_op=True) vs unrollopt's
plain-PyTorch path, medians of repeats, both measured in this one run.

    python bench/optimizer_steps.py [--log2-size 20] [--repeats 15] [--threads 2]

Also counted: the bytes per element that the step's autograd graph saves for
its backward (see ``saved_bytes``).

The step is the functional alias's ``update(..., inplace=False)`` on a state
after a few steps (moments nonzero), with weight decay (so the parameters are
read), followed by the gradient of the update and new states with respect to
the gradient, the states and the parameters (random cotangents).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import unrollopt

OPTIMIZERS = {
    "sgd (momentum)": lambda f: unrollopt.sgd(1e-2, momentum=0.9, weight_decay=1e-2, use_accelerated_op=f),
    "adam": lambda f: unrollopt.adam(1e-3, weight_decay=1e-2, use_accelerated_op=f),
    "adamw": lambda f: unrollopt.adamw(1e-3, weight_decay=1e-2, use_accelerated_op=f),
    "adamax": lambda f: unrollopt.adamax(2e-3, weight_decay=1e-2, use_accelerated_op=f),
    "radam": lambda f: unrollopt.radam(1e-3, weight_decay=1e-2, use_accelerated_op=f),
    "nadam": lambda f: unrollopt.nadam(2e-3, weight_decay=1e-2, use_accelerated_op=f),
    "rmsprop": lambda f: unrollopt.rmsprop(1e-2, weight_decay=1e-2, use_accelerated_op=f),
    "rmsprop (centered, momentum)": lambda f: unrollopt.rmsprop(
        1e-2, weight_decay=1e-2, momentum=0.9, centered=True, use_accelerated_op=f
    ),
    "adagrad": lambda f: unrollopt.adagrad(1e-2, weight_decay=1e-2, use_accelerated_op=f),
    "adadelta": lambda f: unrollopt.adadelta(1.0, weight_decay=1e-2, use_accelerated_op=f),
    "lion": lambda f: unrollopt.lion(1e-4, weight_decay=1e-1, use_accelerated_op=f),
}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_problem(make, n: int, fused: bool):
    """The step's forward (a callable returning the update and the new state
    tensors) and the tensors it is differentiated with respect to."""
    g = torch.Generator().manual_seed(0)
    opt = make(fused)
    param = torch.randn(n, generator=g)
    state = opt.init([param])
    for _ in range(6):  # a state with nonzero moments (RAdam: past its plain-momentum steps)
        _, state = opt.update([torch.randn(n, generator=g)], state, params=[param], inplace=False)
    leaves, spec = torch.utils._pytree.tree_flatten(state)
    tensors = [t for t in leaves if isinstance(t, torch.Tensor) and t.shape == (n,)]
    for t in tensors:
        t.requires_grad_()
    param.requires_grad_()
    grad = torch.randn(n, generator=g, requires_grad=True)

    def forward():
        (update,), new_state = opt.update([grad], state, params=[param], inplace=False)
        return [update] + [t for t in torch.utils._pytree.tree_leaves(new_state)
                           if isinstance(t, torch.Tensor) and t.shape == (n,)]  # fmt: skip

    return forward, [grad, param, *tensors]


def step_fn(make, n: int, fused: bool):
    forward, inputs = step_problem(make, n, fused)

    def run():
        outs = forward()
        torch.autograd.grad(outs, inputs, [torch.ones_like(o) for o in outs])

    return run


def saved_bytes(make, n: int, fused: bool) -> tuple[float, float]:
    """Bytes per element that one step's autograd graph keeps for its
    backward (distinct full-size storages, seen through saved-tensor hooks):
    in all, and those that are not the step's own inputs (its intermediates,
    memory that exists only because the step is differentiated)."""
    forward, inputs = step_problem(make, n, fused)
    input_storages = {t.untyped_storage().data_ptr() for t in inputs}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == n:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = forward()
    del outs
    total = sum(saved.values()) / n
    intermediates = sum(b for ptr, b in saved.items() if ptr not in input_storages) / n
    return total, intermediates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2-size", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = 1 << args.log2_size
    print(
        f"# one differentiable step, 2^{args.log2_size} float32, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, median of {args.repeats}"
    )
    # One untimed pass first: glibc's malloc raises its mmap threshold once
    # large blocks are freed, after which fresh tensors stop costing page
    # faults; without it the first rows pay what later rows do not.
    for make in OPTIMIZERS.values():
        for fused in (True, False):
            step_fn(make, n, fused)()
    print("| optimizer | fused (ms) | plain (ms) | plain / fused "
          "| saved for backward (bytes/element), fused: all / intermediates | plain: all / intermediates |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, make in OPTIMIZERS.items():
        fused = median_seconds(step_fn(make, n, True), args.repeats)
        plain = median_seconds(step_fn(make, n, False), args.repeats)
        saved = [saved_bytes(make, n, f) for f in (True, False)]
        saved_cells = " | ".join(f"{total:g} / {inter:g}" for total, inter in saved)
        print(f"| {name} | {fused * 1e3:.2f} | {plain * 1e3:.2f} | {plain / fused:.2f}x | {saved_cells} |")


if __name__ == "__main__":
    main()
