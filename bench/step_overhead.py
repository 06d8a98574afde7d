"""The cost around the fused operator at MAML size, per optimizer: one
differentiable step (inputs that require grad, as in an unrolled inner loop) of

* the bare operator ``torch.ops.unrollopt.<rule>`` (with the arguments that
  ``update`` passes it);
* ``unrollopt.<optimizer>(..., use_accelerated_op=True).update(grads, state,
  params=params, inplace=False)`` on a tuple of tensors;

for the 6 tensors of the MLP 1-40-40-1 (1,761 values) and for 100 tensors of 17
values; and ``MetaOptimizer.step`` on that MLP against its parts: the forward
and ``torch.autograd.grad(..., create_graph=True)`` it must take anyway, plus
``update`` plus the new parameters. Interleaved, medians.

    python bench/step_overhead.py [--repeats 2000] [--threads 1] [--output FILE]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model  # noqa: E402

import unrollopt  # noqa: E402
from unrollopt import _step  # noqa: E402

MLP_SHAPES = [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]
OPTIMIZERS = {
    "sgd": lambda: unrollopt.sgd(0.1, use_accelerated_op=True),
    "sgd momentum": lambda: unrollopt.sgd(0.1, momentum=0.9, use_accelerated_op=True),
    "adam": lambda: unrollopt.adam(1e-3, use_accelerated_op=True),
    "adamw": lambda: unrollopt.adamw(1e-3, use_accelerated_op=True),
    "adamax": lambda: unrollopt.adamax(use_accelerated_op=True),
    "nadam": lambda: unrollopt.nadam(use_accelerated_op=True),
    "radam": lambda: unrollopt.radam(use_accelerated_op=True),
    "rmsprop": lambda: unrollopt.rmsprop(use_accelerated_op=True),
    "adagrad": lambda: unrollopt.adagrad(use_accelerated_op=True),
    "adadelta": lambda: unrollopt.adadelta(use_accelerated_op=True),
    "lion": lambda: unrollopt.lion(use_accelerated_op=True),
}


def interleaved(fns: dict, repeats: int) -> dict:
    """Median µs of each callable, one call of each in turn per repeat."""
    for fn in fns.values():
        for _ in range(50):
            fn()
    times: dict = {k: [] for k in fns}
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for k, fn in fns.items():
                t = time.perf_counter_ns()
                fn()
                times[k].append(time.perf_counter_ns() - t)
    finally:
        gc.enable()
    return {k: statistics.median(v) / 1e3 for k, v in times.items()}


def config_of(opt: unrollopt.GradientTransformation) -> _step.Config:
    """The checked settings an alias's update runs its operator with."""
    return next(c.cell_contents for c in opt.update.__closure__ if isinstance(c.cell_contents, _step.Config))


def update_vs_bare(name: str, shapes, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    params = tuple(torch.randn(s, generator=gen).requires_grad_() for s in shapes)
    grads = tuple(torch.randn(s, generator=gen).requires_grad_() for s in shapes)
    opt = OPTIMIZERS[name]()
    state = opt.init(params)
    _, state = opt.update(grads, state, params=params, inplace=False)  # past the first step
    c = config_of(opt)
    states = [list(getattr(state, field)) for field in c.state_names]
    count = state.count + 1
    op = getattr(torch.ops.unrollopt, c.op)
    p = list(params) if c.uses_params else []
    hyper = c.tensors
    if c.op == "nadam":  # its product of momentum coefficients is a per-step hyperparameter
        hyper = tuple(torch.tensor(0.9, dtype=torch.float64) if n == "mu_product" else t
                      for n, t in zip(c.hyper_names, c.tensors))  # fmt: skip
    g = list(grads)
    r = interleaved({
        "bare": lambda: op(g, *states, p, count, *hyper, *c.options),
        "update": lambda: opt.update(grads, state, params=params, inplace=False),
    }, repeats)  # fmt: skip
    return {"optimizer": name, "tensors": len(shapes), **r}


def meta_step(name: str, repeats: int) -> dict:
    """MetaOptimizer.step on the MLP against the forward, the inner gradient and update."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(),
                              torch.nn.Linear(40, 1))  # fmt: skip
    x, y = torch.randn(10, 1), torch.randn(10, 1)
    opt = OPTIMIZERS[name]()
    meta = unrollopt.MetaOptimizer(net, opt)
    net_state = unrollopt.extract_state_dict(net)
    opt_state = unrollopt.extract_state_dict(meta)
    params = tuple(net.parameters())

    def reset():
        unrollopt.recover_state_dict(net, net_state)
        unrollopt.recover_state_dict(meta, opt_state)

    def forward():
        reset()
        return ((net(x) - y) ** 2).mean()

    def grad():
        return torch.autograd.grad(forward(), params, create_graph=True)

    state = opt.init(params)

    def grad_update_apply():
        updates, _ = opt.update(grad(), state, params=params, inplace=False)
        return torch._foreach_add(params, updates)

    r = interleaved({
        "forward": forward,
        "forward + grad": grad,
        "forward + grad + update + add": grad_update_apply,
        "forward + MetaOptimizer.step": lambda: meta.step(forward()),
    }, repeats)  # fmt: skip
    return {"optimizer": name, **r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    parser.add_argument("--output", help="also write the tables to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = [update_vs_bare(name, shapes, args.repeats)
            for shapes in (MLP_SHAPES, [(17,)] * 100) for name in args.optimizers]  # fmt: skip
    metas = [meta_step(name, args.repeats // 4) for name in args.optimizers]
    lines = [
        f"{cpu_model()}, {args.threads} thread(s); torch {torch.__version__}, unrollopt {unrollopt.__version__}; "
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; medians of {args.repeats} interleaved "
        "calls (µs).",
        "",  # fmt: skip
        "| optimizer | tensors | bare operator | update | update / bare |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['tensors']} | {r['bare']:.1f} | {r['update']:.1f} | "
                     f"{r['update'] / r['bare']:.2f} |")  # fmt: skip
    lines += ["", "MetaOptimizer.step on the MLP 1-40-40-1 (10 points; each call first puts the "
              "meta-parameters back):", "",
              "| optimizer | forward | + autograd.grad | + update + add | + MetaOptimizer.step | step's own cost |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for m in metas:
        own = m["forward + MetaOptimizer.step"] - m["forward + grad + update + add"]
        lines.append(f"| {m['optimizer']} | {m['forward']:.1f} | {m['forward + grad']:.1f} | "
                     f"{m['forward + grad + update + add']:.1f} | {m['forward + MetaOptimizer.step']:.1f} | "
                     f"{own:+.1f} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
