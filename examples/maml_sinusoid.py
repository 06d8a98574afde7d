"""MAML on sinusoid regression (Finn, Abbeel and Levine, 2017) with unrollopt's
differentiable object-oriented optimizers.

Each task is a sine wave y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi],
observed at k points x ~ U[-5, 5] (the support set). The model is an MLP
1-40-40-1 with ReLUs. The inner loop adapts it to a task's support set with a few
differentiable steps of ``unrollopt.MetaSGD`` (or ``unrollopt.MetaAdam``), which
put the adapted parameters into the module itself; the outer loop (torch.optim.Adam)
learns the initial parameters from which that adaptation works best, by
backpropagating the loss on query points of each task through the inner steps.

The bookkeeping is unrollopt's: ``extract_state_dict(..., by='reference')`` once per
outer iteration (the meta-parameters themselves, and the inner optimizer's fresh
state), ``recover_state_dict`` before each task (the module starts again from the
meta-parameters, and each task's query-loss gradient accumulates into them) and
after the last one, and ``stop_gradient`` after the outer step so that nothing of
that iteration's graph outlives it.

At the end it adapts the meta-trained model and a model that was not meta-trained
(same architecture, random initialisation) to held-out tasks with the same inner
loop, prints their test MSE, writes a figure, and exits non-zero unless
meta-training helped.

    python examples/maml_sinusoid.py [--outer-steps 2000] [--inner-optimizer {sgd,adam}]
        [--no-use-accelerated-op] [--vmap] [--compile] [--output maml_sinusoid.png]

With ``--vmap`` the meta-batch is computed the torch.func way: the adapted
query loss of a task is a function of the meta-parameters (``functional_call``,
the inner gradients by ``torch.func.grad``, the functional ``unrollopt.sgd`` or
``unrollopt.adam`` stepping them), and ``vmap(grad(...))`` runs every task of
the meta-batch at once. Both ways give the same meta-gradient.

With ``--compile`` the meta-batch runs under ``torch.compile(fullgraph=True)``:
with ``--vmap`` the whole ``vmap(grad(...))`` function (the fastest way: about
as fast as hand-written torch.func code compiled, see docs/benchmarks.md),
else each task's inner steps with the MetaOptimizer on the module and its
query loss (one graph per task; the backward pass runs compiled too). The
first outer step includes the compilation; it prints the time per outer step
after it.

With the defaults it takes about a minute on two CPU cores and needs matplotlib
and tqdm (pip install matplotlib tqdm).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

import unrollopt

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class Tasks(NamedTuple):
    """A batch of sinusoid tasks: parameters, support set and query set."""

    amplitude: torch.Tensor  # (n, 1, 1)
    phase: torch.Tensor  # (n, 1, 1)
    x_support: torch.Tensor  # (n, k, 1)
    y_support: torch.Tensor
    x_query: torch.Tensor  # (n, q, 1)
    y_query: torch.Tensor

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.sin(x - self.phase)


def uniform(low: float, high: float, shape, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def sample_tasks(n: int, k_shot: int, n_query: int, generator: torch.Generator) -> Tasks:
    amplitude = uniform(*AMPLITUDE, (n, 1, 1), generator)
    phase = uniform(*PHASE, (n, 1, 1), generator)
    x_support = uniform(*X_RANGE, (n, k_shot, 1), generator)
    x_query = uniform(*X_RANGE, (n, n_query, 1), generator)
    f = lambda x: amplitude * torch.sin(x - phase)  # noqa: E731
    return Tasks(amplitude, phase, x_support, f(x_support), x_query, f(x_query))


def make_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2).mean()


def make_inner_optimizer(net: nn.Module, args: argparse.Namespace) -> unrollopt.MetaOptimizer:
    """The differentiable inner-loop optimizer, built on ``net``'s parameters."""
    if args.inner_optimizer == "sgd":
        return unrollopt.MetaSGD(net, lr=args.inner_lr, use_accelerated_op=args.use_accelerated_op)
    return unrollopt.MetaAdam(net, lr=args.inner_lr, use_accelerated_op=args.use_accelerated_op)


def adapt(net: nn.Module, inner_opt: unrollopt.MetaOptimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """``steps`` differentiable inner steps on the support set (x, y): afterwards
    ``net``'s parameters are the adapted ones, still in the autograd graph."""
    for _ in range(steps):
        inner_opt.step(mse(net(x), y))


def make_adapted_query_loss(net: nn.Module, inner_opt: unrollopt.MetaOptimizer, args) -> Callable:
    """One task's query loss after ``args.inner_steps`` steps of ``inner_opt``
    on the module, a function of the task's tensors; with ``args.compile``,
    compiled (one graph: the MetaOptimizer's steps do not break it; the
    backward pass, outside, runs compiled too)."""

    def adapted_query_loss(x_support, y_support, x_query, y_query):
        adapt(net, inner_opt, x_support, y_support, args.inner_steps)
        return mse(net(x_query), y_query)

    if not getattr(args, "compile", False):
        return adapted_query_loss
    torch._dynamo.config.trace_autograd_ops = True  # the steps' torch.autograd.grad, in the graph
    return torch.compile(adapted_query_loss, fullgraph=True)


def meta_batch_loop(
    net: nn.Module, inner_opt: unrollopt.MetaOptimizer, tasks: Tasks, args, query_loss_fn=None
) -> float:
    """The meta-batch one task after another, with the meta-optimizer on the
    module: accumulates the meta-gradient into the meta-parameters' ``.grad``
    and returns the meta-batch's loss (mean query MSE after adaptation)."""
    # The meta-parameters themselves (by reference: the leaves the outer
    # optimizer updates) and the inner optimizer's initial state.
    net_state = unrollopt.extract_state_dict(net, by="reference")
    inner_state = unrollopt.extract_state_dict(inner_opt, by="reference")
    query_loss_fn = query_loss_fn or make_adapted_query_loss(net, inner_opt, args)
    n = tasks.x_support.shape[0]
    total = 0.0
    for t in range(n):
        # Start from the meta-parameters with a fresh inner optimizer.
        unrollopt.recover_state_dict(net, net_state)
        unrollopt.recover_state_dict(inner_opt, inner_state)
        query_loss = query_loss_fn(tasks.x_support[t], tasks.y_support[t], tasks.x_query[t], tasks.y_query[t]) / n
        # Through the inner steps into the meta-parameters' .grad, where
        # the gradients of all the tasks of the meta-batch add up.
        query_loss.backward()
        total += query_loss.item()
    # Put the meta-parameters back into the module (dropping the last task's
    # adapted parameters and their graph).
    unrollopt.recover_state_dict(net, net_state)
    unrollopt.recover_state_dict(inner_opt, inner_state)
    # The module holds the meta-parameters (leaves) and the inner optimizer its
    # initial state: stop_gradient makes sure that no autograd history survives
    # into the next outer iteration, at no cost. (In loops that carry adapted
    # parameters or optimizer state from one outer iteration to the next, it is
    # what keeps the graph and memory from growing: see
    # docs/tutorials/stop_gradient.py.)
    unrollopt.stop_gradient(net)
    unrollopt.stop_gradient(inner_opt)
    return total


def make_inner_transformation(args: argparse.Namespace) -> unrollopt.GradientTransformation:
    """The inner optimizer as a functional (init, update) pair, for torch.func."""
    alias = unrollopt.sgd if args.inner_optimizer == "sgd" else unrollopt.adam
    return alias(lr=args.inner_lr, use_accelerated_op=args.use_accelerated_op)


def make_meta_gradient(net: nn.Module, opt: unrollopt.GradientTransformation, args) -> Callable:
    """The meta-batch the torch.func way, as one function of the (detached)
    meta-parameters and the tasks' tensors: the adapted query loss of one task
    is a function of the meta-parameters (``functional_call``, inner gradients
    by ``grad``), and ``vmap(grad_and_value(...))`` computes it for every task
    at once. Returns (meta-gradients, losses), one per task; with
    ``args.compile``, compiled as one graph (``fullgraph=True``)."""

    def support_loss(params, x, y):
        return mse(functional_call(net, params, (x,)), y)

    def task_loss(params, x_support, y_support, x_query, y_query):
        state = opt.init(params)
        for _ in range(args.inner_steps):
            grads = torch.func.grad(support_loss)(params, x_support, y_support)
            updates, state = opt.update(grads, state, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        return support_loss(params, x_query, y_query)

    fn = torch.func.vmap(torch.func.grad_and_value(task_loss), in_dims=(None, 0, 0, 0, 0))
    return torch.compile(fn, fullgraph=True) if getattr(args, "compile", False) else fn


def meta_batch_vmap(net: nn.Module, opt, tasks: Tasks, args) -> float:
    """The meta-batch by ``make_meta_gradient`` (``opt``: the functional
    optimizer, or the function ``make_meta_gradient`` made, to reuse it).
    Writes the mean meta-gradient into the meta-parameters' ``.grad`` and
    returns the meta-batch's loss."""
    meta_params = dict(net.named_parameters())
    meta_gradient = make_meta_gradient(net, opt, args) if isinstance(opt, unrollopt.GradientTransformation) else opt
    detached = {k: v.detach() for k, v in meta_params.items()}
    grads, losses = meta_gradient(detached, tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query)
    for name, p in meta_params.items():
        p.grad = grads[name].mean(0)
    return losses.mean().item()


def meta_train(net: nn.Module, args: argparse.Namespace, generator: torch.Generator) -> list[float]:
    """MAML's outer loop; returns the meta-training loss (mean query MSE after
    adaptation over the meta-batch) of every outer step."""
    if args.vmap:
        meta_gradient = make_meta_gradient(net, make_inner_transformation(args), args)
        meta_batch = lambda tasks: meta_batch_vmap(net, meta_gradient, tasks, args)  # noqa: E731
    else:
        inner_opt = make_inner_optimizer(net, args)
        query_loss_fn = make_adapted_query_loss(net, inner_opt, args)
        meta_batch = lambda tasks: meta_batch_loop(net, inner_opt, tasks, args, query_loss_fn)  # noqa: E731
    meta_opt = torch.optim.Adam(net.parameters(), lr=args.outer_lr)
    losses = []
    from tqdm import tqdm  # here: the functions above run without it (bench/, tests)

    bar = tqdm(range(args.outer_steps), desc="meta-training", unit="step", dynamic_ncols=True, mininterval=0.5)
    for step in bar:
        tasks = sample_tasks(args.meta_batch, args.k_shot, args.k_shot, generator)
        start = time.perf_counter()
        meta_opt.zero_grad()
        total = meta_batch(tasks)
        meta_opt.step()
        if step == 0:  # with --compile: the compilation
            after_first = time.perf_counter()
            args.first_step_seconds = after_first - start
        losses.append(total)
        if step % 50 == 0 or step == args.outer_steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    args.step_seconds = (time.perf_counter() - after_first) / max(1, args.outer_steps - 1)
    return losses


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x)


def adapted_test_mse(net: nn.Module, tasks: Tasks, args: argparse.Namespace) -> tuple[float, float]:
    """Mean test MSE over the tasks before and after adapting ``net`` to each
    task's support set with the inner loop; ``net`` is left as it was."""
    inner_opt = make_inner_optimizer(net, args)
    net_state = unrollopt.extract_state_dict(net, by="reference")
    inner_state = unrollopt.extract_state_dict(inner_opt, by="reference")
    before, after = [], []
    for t in range(tasks.x_support.shape[0]):
        unrollopt.recover_state_dict(net, net_state)
        unrollopt.recover_state_dict(inner_opt, inner_state)
        before.append(mse(predict(net, tasks.x_query[t]), tasks.y_query[t]).item())
        adapt(net, inner_opt, tasks.x_support[t], tasks.y_support[t], args.inner_steps)
        after.append(mse(predict(net, tasks.x_query[t]), tasks.y_query[t]).item())
    unrollopt.recover_state_dict(net, net_state)
    unrollopt.recover_state_dict(inner_opt, inner_state)
    return sum(before) / len(before), sum(after) / len(after)


def adapted_predictions(net: nn.Module, task: Tasks, x: torch.Tensor, args: argparse.Namespace):
    """Predictions at x before and after adapting ``net`` to the task's support set."""
    inner_opt = make_inner_optimizer(net, args)
    net_state = unrollopt.extract_state_dict(net, by="reference")
    before = predict(net, x)
    adapt(net, inner_opt, task.x_support[0], task.y_support[0], args.inner_steps)
    after = predict(net, x)
    unrollopt.recover_state_dict(net, net_state)
    return before, after


def plot(path: str, losses: list[float], task: Tasks, meta_net: nn.Module, baseline: nn.Module, args, mses) -> None:
    import matplotlib  # here: the rest of this file runs without it (bench/, tests)

    matplotlib.use("Agg")  # offline, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_loss, ax_task) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)

    steps = torch.arange(1, len(losses) + 1)
    ax_loss.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="per outer step")
    window = max(1, min(50, len(losses) // 10))
    if window > 1:
        smooth = torch.tensor(losses).unfold(0, window, 1).mean(1)
        ax_loss.plot(steps[window - 1 :], smooth, color="tab:blue", lw=2, label=f"moving average ({window} steps)")
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_loss.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax_loss.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_loss.set_xlabel("outer step")
    ax_loss.set_ylabel("query MSE after adaptation")
    ax_loss.set_title(f"meta-training loss (meta-batch {args.meta_batch}, {args.inner_steps} inner steps)")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend()

    x = torch.linspace(*X_RANGE, 400).unsqueeze(1)
    meta_before, meta_after = adapted_predictions(meta_net, task, x, args)
    _, base_after = adapted_predictions(baseline, task, x, args)
    ax_task.plot(x, task.function(x)[0], color="black", lw=2.5, label="true function")
    ax_task.plot(x, meta_before, color="tab:blue", ls="--", lw=1.5, label="meta-trained, before adaptation")
    ax_task.plot(x, meta_after, color="tab:blue", lw=2, label=f"meta-trained, after {args.inner_steps} steps")
    ax_task.plot(x, base_after, color="tab:red", lw=2, label=f"not meta-trained, after {args.inner_steps} steps")
    ax_task.scatter(task.x_support[0], task.y_support[0], color="tab:orange", edgecolor="black", s=60, zorder=5,
                    label=f"{args.k_shot} support points")  # fmt: skip
    ax_task.set_xlabel("x")
    ax_task.set_ylabel("y")
    meta_mse, base_mse = mses
    ax_task.set_title(
        f"a held-out task. Test MSE after adaptation ({args.eval_tasks} tasks):\n"
        f"meta-trained {meta_mse:.3f}, not meta-trained {base_mse:.3f}"
    )
    fig.suptitle(
        f"MAML, {args.k_shot}-shot sinusoid regression: {args.inner_steps} inner {args.inner_optimizer} steps "
        f"(lr {args.inner_lr:g}{', fused' if args.use_accelerated_op else ''}), {args.outer_steps} outer steps",
        fontsize=13,
    )
    ax_task.grid(True, alpha=0.3)
    ax_task.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outer-steps", type=int, default=2000)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument(
        "--k-shot", type=int, default=10, help="support points per task (also query points in training)"
    )
    parser.add_argument("--meta-batch", type=int, default=4, help="tasks per outer step")
    parser.add_argument("--inner-optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--outer-lr", type=float, default=3e-3)
    parser.add_argument(
        "--use-accelerated-op",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fused C++ operators in the inner loop (default; --no-use-accelerated-op for the plain-PyTorch path)",
    )
    parser.add_argument(
        "--vmap",
        action="store_true",
        help="compute the meta-batch with torch.func (vmap over the tasks of grad through the "
        "inner loop, functional_call) instead of a loop over the tasks with a MetaOptimizer",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the meta-batch (fullgraph=True): with --vmap the whole vmap(grad(...)) "
        "function, else each task's inner steps with the MetaOptimizer and its query loss",
    )
    parser.add_argument("--eval-tasks", type=int, default=100, help="held-out tasks for the test MSE")
    parser.add_argument("--test-points", type=int, default=100, help="test points per held-out task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the tensors are tiny, and more threads only "
        "add synchronisation, which gets very slow when the CPU is shared)",
    )
    parser.add_argument("--output", default="maml_sinusoid.png", help="where to write the figure (PNG)")
    args = parser.parse_args(argv)
    for name in ("outer_steps", "inner_steps", "k_shot", "meta_batch", "eval_tasks", "test_points", "num_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    start = time.perf_counter()
    print(
        f"unrollopt {unrollopt.__version__}, torch {torch.__version__}: MAML, {args.k_shot}-shot sinusoid regression, "
        f"{args.inner_steps} inner {args.inner_optimizer} steps (lr {args.inner_lr:g}, fused: "
        f"{args.use_accelerated_op}), meta-batch {args.meta_batch}{' (vmap)' if args.vmap else ''}"
        f"{', compiled' if args.compile else ''}, "
        f"{args.outer_steps} outer Adam steps "
        f"(lr {args.outer_lr:g}), seed {args.seed}"
    )
    if args.use_accelerated_op and not unrollopt.accelerated_op_available("cpu"):
        print("the fused operators are not available on the CPU", file=sys.stderr)
        return 2

    train_generator = torch.Generator().manual_seed(args.seed)
    # Held-out tasks from their own stream: the same ones whatever the training length.
    held_out = sample_tasks(
        args.eval_tasks, args.k_shot, args.test_points, torch.Generator().manual_seed(args.seed + 1)
    )
    plot_task = sample_tasks(1, args.k_shot, 1, torch.Generator().manual_seed(args.seed + 2))

    meta_net = make_net(args.seed)
    baseline = make_net(args.seed + 1000)  # same architecture, random init, never meta-trained

    losses = meta_train(meta_net, args, train_generator)
    train_time = time.perf_counter() - start

    meta_before, meta_after = adapted_test_mse(meta_net, held_out, args)
    base_before, base_after = adapted_test_mse(baseline, held_out, args)
    print(f"test MSE over {args.eval_tasks} held-out tasks ({args.test_points} test points each):")
    print(f"  before adaptation: meta-trained {meta_before:.4f}, baseline {base_before:.4f}")
    print(f"  post-adaptation test MSE: meta-trained {meta_after:.4f}, baseline {base_after:.4f} "
          f"({base_after / meta_after:.1f}x lower with meta-training)")  # fmt: skip

    plot(args.output, losses, plot_task, meta_net, baseline, args, (meta_after, base_after))
    total = time.perf_counter() - start
    print(f"figure written to {args.output}; meta-training {train_time:.1f} s "
          f"({args.step_seconds * 1e3:.2f} ms per outer step after the first; first step "
          f"{args.first_step_seconds:.1f} s{', compilation included' if args.compile else ''}), "
          f"total {total:.1f} s")  # fmt: skip

    ok = math.isfinite(meta_after) and meta_after < base_after
    print("OK: meta-training helps" if ok else "FAILED: the meta-trained model is not better than the baseline")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
