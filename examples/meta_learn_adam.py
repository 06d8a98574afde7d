"""Meta-learns an initialisation through unrolled, fused Adam steps, then checks
the meta-gradient.

Each task is a linear regression whose true weights are drawn around a shared
(unknown) centre. The inner loop adapts the weights to a task's training set with
a few differentiable Adam steps (``unrollopt.adam(use_accelerated_op=True)``); the
outer loop learns the initial weights theta0 that adapt best, by backpropagating
the test loss through the inner steps.

Finally, in float64, it compares the meta-gradient of the fused path with the
plain-PyTorch path and with a central finite difference, and exits non-zero if
they disagree.

    python examples/meta_learn_adam.py [--outer-steps 200] [--inner-steps 5]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import unrollopt


def make_tasks(n_tasks: int, dim: int, shots: int, generator: torch.Generator, dtype, centre):
    w = centre + 0.3 * torch.randn(n_tasks, dim, generator=generator, dtype=dtype)
    x_train = torch.randn(n_tasks, shots, dim, generator=generator, dtype=dtype)
    x_test = torch.randn(n_tasks, 4 * shots, dim, generator=generator, dtype=dtype)
    y_train = torch.einsum("tsd,td->ts", x_train, w)
    y_test = torch.einsum("tsd,td->ts", x_test, w)
    return x_train, y_train, x_test, y_test


def adapted_test_loss(theta0, tasks, inner_steps: int, fused: bool) -> torch.Tensor:
    """Mean test loss after adapting theta0 to each task with unrolled Adam."""
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    x_train, y_train, x_test, y_test = tasks
    losses = []
    for t in range(x_train.shape[0]):
        params = (theta0,)
        state = opt.init(params)
        for _ in range(inner_steps):
            (w,) = params
            inner = ((x_train[t] @ w - y_train[t]) ** 2).mean()
            grads = torch.autograd.grad(inner, params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        (w,) = params
        losses.append(((x_test[t] @ w - y_test[t]) ** 2).mean())
    return torch.stack(losses).mean()


def check_meta_gradient(dim: int, inner_steps: int, seed: int) -> tuple[float, float]:
    """Relative disagreement of the fused meta-gradient (float64) with the plain
    path, and with a central finite difference along a random direction."""
    g = torch.Generator().manual_seed(seed + 1)
    centre = torch.randn(dim, generator=g, dtype=torch.float64)
    tasks = make_tasks(2, dim, 10, g, torch.float64, centre)
    theta0 = torch.randn(dim, generator=g, dtype=torch.float64, requires_grad=True)
    fused = torch.autograd.grad(adapted_test_loss(theta0, tasks, inner_steps, True), theta0)[0]
    plain = torch.autograd.grad(adapted_test_loss(theta0, tasks, inner_steps, False), theta0)[0]
    direction = torch.randn(dim, generator=g, dtype=torch.float64)
    h = 1e-6
    shifted = lambda sign: (theta0.detach() + sign * h * direction).requires_grad_()  # noqa: E731
    up = adapted_test_loss(shifted(+1), tasks, inner_steps, True)
    down = adapted_test_loss(shifted(-1), tasks, inner_steps, True)
    finite_difference = ((up - down) / (2 * h)).item()
    directional = torch.dot(fused, direction).item()
    vs_plain = ((fused - plain).norm() / plain.norm()).item()
    vs_fd = abs(directional - finite_difference) / max(abs(finite_difference), 1e-12)
    print("meta-gradient check (float64):")
    print(f"  fused vs plain PyTorch path: relative difference {vs_plain:.2e}")
    print(
        f"  directional derivative: fused {directional:+.10f}, finite difference {finite_difference:+.10f} (relative difference {vs_fd:.2e})"
    )
    return vs_plain, vs_fd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outer-steps", type=int, default=200)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--tasks-per-batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--plain", action="store_true", help="use the plain-PyTorch path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    fused = not args.plain
    print(
        f"unrollopt {unrollopt.__version__}, torch {torch.__version__}, fused kernels: {fused} "
        f"(available on CPU: {unrollopt.accelerated_op_available('cpu')})"
    )
    g = torch.Generator().manual_seed(args.seed)
    centre = 2.0 * torch.randn(args.dim, generator=g)
    theta0 = torch.zeros(args.dim, requires_grad=True)
    meta_opt = torch.optim.Adam([theta0], lr=0.05)
    held_out = make_tasks(32, args.dim, args.shots, g, torch.float32, centre)

    def evaluate() -> float:
        return adapted_test_loss(theta0, held_out, args.inner_steps, fused).item()

    before = evaluate()
    start = time.perf_counter()
    for step in range(1, args.outer_steps + 1):
        tasks = make_tasks(args.tasks_per_batch, args.dim, args.shots, g, torch.float32, centre)
        meta_opt.zero_grad()
        loss = adapted_test_loss(theta0, tasks, args.inner_steps, fused)
        loss.backward()
        meta_opt.step()
        if step % max(1, args.outer_steps // 5) == 0:
            print(f"  outer step {step:4d}: meta-training loss {loss.item():.4f}")
    elapsed = time.perf_counter() - start
    after = evaluate()
    print(
        f"held-out test loss after {args.inner_steps} inner Adam steps: "
        f"{before:.4f} from theta0 = 0, {after:.4f} from the meta-learned theta0 "
        f"({elapsed / args.outer_steps * 1e3:.1f} ms per outer step)"
    )

    vs_plain, vs_fd = check_meta_gradient(8, args.inner_steps, args.seed)
    # Both paths are exact to rounding; a finite difference is good to about 1e-8.
    ok = vs_plain < 1e-10 and vs_fd < 1e-6 and after < before
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
