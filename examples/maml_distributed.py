"""MAML on sinusoids (examples/maml_sinusoid.py) with the meta-batch split across
processes by torch.distributed: data parallelism over tasks.

Every rank draws the same meta-batch (same seed), adapts the model with
``unrollopt.MetaSGD`` / ``MetaAdam`` on its share of the tasks, one after
another, and backpropagates their query losses into the meta-parameters'
``.grad``; then one all-reduce sums the meta-gradients of all ranks (each rank's
already weighted by its share of the meta-batch), and every rank takes the same
outer Adam step, so the meta-parameters stay identical everywhere.

No DistributedDataParallel: its hooks would all-reduce after every task's
backward (or need ``no_sync`` around all but the last), and its reducer expects
the module's parameters to stay the leaves it registered, while the inner loop
replaces them by the adapted (non-leaf) tensors. One explicit all-reduce of the
flattened meta-gradient per outer step is the whole communication.

    python -m torch.distributed.run --nproc_per_node=2 examples/maml_distributed.py --outer-steps 3 --check
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 \\
        examples/maml_distributed.py --meta-batch 64

gloo on CPUs, NCCL when every rank has a GPU (``--device cuda``). With ``--check``
(float64) rank 0 also computes the first outer step's meta-batch in one process
and prints how far the distributed meta-gradient is from it. Without it the
script trains and rank 0 writes the loss curve (``--output``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import maml_sinusoid as ex  # noqa: E402  (the tasks, the model and the per-task loop)

import unrollopt  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outer-steps", type=int, default=500)
    parser.add_argument("--meta-batch", type=int, default=8, help="tasks per outer step, over all ranks")
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=10)
    parser.add_argument("--inner-optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--outer-lr", type=float, default=3e-3)
    parser.add_argument("--use-accelerated-op", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check", action="store_true", help="float64; rank 0 checks the first meta-gradient against one process"
    )
    parser.add_argument("--output", default="maml_distributed.png", help="rank 0's loss curve (PNG)")
    args = parser.parse_args(argv)
    if args.meta_batch < 1 or args.outer_steps < 1:
        parser.error("--meta-batch and --outer-steps must be at least 1")
    return args


def shard(n: int, rank: int, world: int) -> range:
    """This rank's tasks of a meta-batch of n: contiguous, sizes differing by at most 1."""
    return range(rank * n // world, (rank + 1) * n // world)


def select(tasks: ex.Tasks, indices: range) -> ex.Tasks:
    return ex.Tasks(*(t[indices.start : indices.stop] for t in tasks))


def local_meta_gradient(net, inner_opt, tasks: ex.Tasks, indices: range, args) -> float:
    """This rank's part of the meta-batch's mean query loss, backpropagated into
    the meta-parameters' .grad (weighted by its share of the tasks)."""
    if len(indices) == 0:
        return 0.0
    mine = select(tasks, indices)
    loss = ex.meta_batch_loop(net, inner_opt, mine, args)  # the mean over this rank's tasks
    share = len(indices) / tasks.x_support.shape[0]
    for p in net.parameters():
        p.grad.mul_(share)
    return loss * share


def all_reduce_gradients(net: torch.nn.Module) -> None:
    """Sums the meta-gradients of every rank: one all-reduce of one flat buffer."""
    grads = [p.grad for p in net.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def make_model(args, device):
    net = ex.make_net(args.seed).to(device)
    return net, ex.make_inner_optimizer(net, args)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check:
        torch.set_default_dtype(torch.float64)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        device = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    if rank == 0:
        print(f"unrollopt {unrollopt.__version__}, torch {torch.__version__}: MAML, meta-batch {args.meta_batch} "
              f"over {world} ranks ({dist.get_backend()}), {args.inner_steps} inner {args.inner_optimizer} steps "
              f"(fused: {args.use_accelerated_op})")  # fmt: skip
    net, inner_opt = make_model(args, device)
    meta_opt = torch.optim.Adam(net.parameters(), lr=args.outer_lr)
    generator = torch.Generator().manual_seed(args.seed)  # the same stream, so the same tasks, on every rank
    mine = shard(args.meta_batch, rank, world)
    losses, status, start = [], 0, time.perf_counter()
    for step in range(args.outer_steps):
        tasks = ex.Tasks(*(t.to(device) for t in ex.sample_tasks(args.meta_batch, args.k_shot, args.k_shot, generator)))
        meta_opt.zero_grad(set_to_none=False)
        for p in net.parameters():  # a rank without tasks contributes zeros
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        loss = torch.tensor(local_meta_gradient(net, inner_opt, tasks, mine, args), device=device)
        all_reduce_gradients(net)
        dist.all_reduce(loss)
        if step == 0 and args.check and rank == 0:
            status = check(args, device, tasks, [p.grad.clone() for p in net.parameters()])
        meta_opt.step()
        losses.append(loss.item())
    if rank == 0:
        elapsed = time.perf_counter() - start
        print(f"{args.outer_steps} outer steps in {elapsed:.1f} s ({elapsed / args.outer_steps * 1e3:.1f} ms each); "
              f"meta-training loss {losses[0]:.4f} -> {losses[-1]:.4f}")  # fmt: skip
        if not args.check:
            plot(args.output, losses)
    dist.barrier()
    dist.destroy_process_group()
    return status


def check(args, device, tasks: ex.Tasks, distributed: list[torch.Tensor]) -> int:
    """The first meta-batch in this one process (a fresh model: the same initial
    meta-parameters); 0 if the distributed meta-gradient matches it."""
    net, inner_opt = make_model(args, device)
    ex.meta_batch_loop(net, inner_opt, tasks, args)
    single = [p.grad for p in net.parameters()]
    diff = max(((d - s).abs().max() / s.abs().max()).item() for d, s in zip(distributed, single))
    print(f"distributed meta-gradient matches single-process: max rel diff {diff:.3e}")
    return 0 if diff <= 1e-10 else 1


def plot(path: str, losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(losses)
    ax.set(xlabel="outer step", ylabel="meta-training loss (query MSE)", yscale="log",
           title="MAML on sinusoids, meta-batch split across ranks")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"loss curve written to {path}")


if __name__ == "__main__":
    sys.exit(main())
