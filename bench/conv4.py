"""One outer iteration of MAML with a Conv4 (Finn et al.'s Omniglot model: four
blocks of 3x3 convolution with 64 channels, batch norm, ReLU and 2x2 max pooling,
then a linear 5-way head) on random Omniglot-size tasks (1x28x28 images, 5-way
5-shot: 25 support and 25 query images per task), meta-batch 2, 5 inner steps,
outer Adam step. Here the model dominates and the optimizer's own cost is
small: the question is only whether unrollopt's loop stays at least even with
hand-written code. Variants, timed interleaved in one run:

* unrollopt ``MetaSGD`` / ``MetaAdam`` on the module, fused and plain;
* hand-written SGD / Adam with ``torch.func`` (``functional_call`` and ``grad``
  per task) and with ``torch.autograd.grad`` per task;
* TorchOpt 0.7.3 ``MetaSGD`` / ``MetaAdam``, where installed.

    python bench/conv4.py [--threads 1 2] [--repeats 5] [--channels 64] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, measure_interleaved  # noqa: E402
from maml import HAND_WRITTEN, outer_iteration, peers  # noqa: E402

import unrollopt  # noqa: E402

WAYS, SHOTS, SIDE, INNER_STEPS, META_BATCH = 5, 5, 28, 5, 2
INNER_LR = {"sgd": 0.4, "adam": 1e-3}


def make_net(channels: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)

    def block(c_in: int) -> list[nn.Module]:
        # Batch norm with batch statistics only (no running buffers), as in MAML.
        return [nn.Conv2d(c_in, channels, 3, padding=1), nn.BatchNorm2d(channels, track_running_stats=False),
                nn.ReLU(), nn.MaxPool2d(2)]  # fmt: skip

    layers = block(1) + block(channels) + block(channels) + block(channels)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, WAYS))  # 28 -> 14 -> 7 -> 3 -> 1


def sample_tasks(n: int, generator: torch.Generator):
    """Support and query images (n, 25, 1, 28, 28) and labels (n, 25): each class
    a random prototype plus noise, so that the tasks can be learned."""
    protos = torch.rand(n, WAYS, 1, SIDE, SIDE, generator=generator)
    labels = torch.arange(WAYS).repeat_interleave(SHOTS).expand(n, -1)

    def images():
        noise = 0.3 * torch.randn(n, WAYS * SHOTS, 1, SIDE, SIDE, generator=generator)
        return protos.repeat_interleave(SHOTS, dim=1) + noise

    return images(), labels, images(), labels


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


def variants(inner: str, channels: int = 64, inner_steps: int = INNER_STEPS) -> dict:
    """name -> one outer iteration, returning the meta-gradient (every variant's
    first call sees the same tasks and initial parameters)."""
    lr = INNER_LR[inner]
    out = {}

    def outer(net, meta_batch):
        return outer_iteration(net, meta_batch, lambda gen: sample_tasks(META_BATCH, gen), lr=1e-3)

    for fused in (True, False):
        net = make_net(channels)
        make = unrollopt.MetaSGD if inner == "sgd" else unrollopt.MetaAdam
        inner_opt = make(net, lr=lr, use_accelerated_op=fused)

        def loop(tasks, net=net, inner_opt=inner_opt):
            xs, ys, xq, yq = tasks
            net_state = unrollopt.extract_state_dict(net, by="reference")
            opt_state = unrollopt.extract_state_dict(inner_opt, by="reference")
            for t in range(META_BATCH):
                unrollopt.recover_state_dict(net, net_state)
                unrollopt.recover_state_dict(inner_opt, opt_state)
                for _ in range(inner_steps):
                    inner_opt.step(loss_fn(net(xs[t]), ys[t]))
                (loss_fn(net(xq[t]), yq[t]) / META_BATCH).backward()
            unrollopt.recover_state_dict(net, net_state)
            unrollopt.recover_state_dict(inner_opt, opt_state)
            unrollopt.stop_gradient(net)
            unrollopt.stop_gradient(inner_opt)

        out[f"unrollopt {'fused' if fused else 'plain'}, Meta{'SGD' if inner == 'sgd' else 'Adam'} loop"] = outer(
            net, loop
        )

    init, step = HAND_WRITTEN[inner]
    net = make_net(channels)

    def hand_func(tasks, net=net):
        xs, ys, xq, yq = tasks

        def support(params, x, y):
            return loss_fn(functional_call(net, params, (x,)), y)

        meta = dict(net.named_parameters())
        for t in range(META_BATCH):
            params, state = meta, init(meta)
            for i in range(inner_steps):
                params, state = step(params, grad(support)(params, xs[t], ys[t]), state, lr, i + 1)
            (support(params, xq[t], yq[t]) / META_BATCH).backward()

    out["hand-written, torch.func grad"] = outer(net, hand_func)
    net = make_net(channels)

    def hand_autograd(tasks, net=net):
        xs, ys, xq, yq = tasks
        meta = dict(net.named_parameters())
        for t in range(META_BATCH):
            params, state = meta, init(meta)
            for i in range(inner_steps):
                loss = loss_fn(functional_call(net, params, (xs[t],)), ys[t])
                grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=True)))
                params, state = step(params, grads, state, lr, i + 1)
            (loss_fn(functional_call(net, params, (xq[t],)), yq[t]) / META_BATCH).backward()

    out["hand-written, autograd.grad loop"] = outer(net, hand_autograd)

    torchopt = peers()["torchopt"]
    if not isinstance(torchopt, str):
        net = make_net(channels)
        topt = (torchopt.MetaSGD if inner == "sgd" else torchopt.MetaAdam)(net, lr=lr)

        def torchopt_loop(tasks, net=net, topt=topt):
            xs, ys, xq, yq = tasks
            net_state = torchopt.extract_state_dict(net, by="reference")
            opt_state = torchopt.extract_state_dict(topt, by="reference")
            for t in range(META_BATCH):
                torchopt.recover_state_dict(net, net_state)
                torchopt.recover_state_dict(topt, opt_state)
                for _ in range(inner_steps):
                    topt.step(loss_fn(net(xs[t]), ys[t]))
                (loss_fn(net(xq[t]), yq[t]) / META_BATCH).backward()
            torchopt.recover_state_dict(net, net_state)
            torchopt.recover_state_dict(topt, opt_state)
            torchopt.stop_gradient(net)
            torchopt.stop_gradient(topt)

        out[f"TorchOpt Meta{'SGD' if inner == 'sgd' else 'Adam'} loop"] = outer(net, torchopt_loop)
    return out


REFERENCE = "hand-written, torch.func grad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--output", help="also write the tables to this markdown file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    saved = torch.get_num_threads()
    lines = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for inner in ("sgd", "adam"):
            timings = measure_interleaved(variants(inner, args.channels), args.repeats, warmup=1)
            lines += [f"### Conv4 ({args.channels} channels), {inner}, {threads} thread(s)", "",
                      f"| variant | ms per outer iteration | / {REFERENCE} |", "|---|---|---|"]  # fmt: skip
            for name, t in sorted(timings.items(), key=lambda kv: kv[1].seconds):
                lines.append(f"| {name} | {t.ms:.1f} | {t.seconds / timings[REFERENCE].seconds:.2f} |")
            lines.append("")
    torch.set_num_threads(saved)
    header = (f"{cpu_model()}, {os.cpu_count()} CPUs; torch {torch.__version__}, unrollopt {unrollopt.__version__}; "
              f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; medians of {args.repeats} "
              "interleaved repeats after 1 warm-up call.")  # fmt: skip
    text = "\n".join([header, ""] + lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
