"""One outer iteration of MAML on sinusoids (examples/maml_sinusoid.py's default
configuration: MLP 1-40-40-1, meta-batch 4, 10 shots, 5 inner steps, outer Adam
step), in every way a user would write it, timed interleaved in one run:

* unrollopt, a ``MetaSGD`` / ``MetaAdam`` per task (the example's loop), fused
  and plain;
* unrollopt the torch.func way (``vmap`` over the tasks of ``grad`` through the
  functional ``unrollopt.sgd`` / ``adam``; the example's ``--vmap``), fused and plain;
* hand-written SGD / Adam in torch ops, with ``torch.autograd.grad`` per task,
  and with ``torch.func`` (``functional_call``, ``grad``, ``vmap`` over the tasks);
* TorchOpt 0.7.3 (``MetaSGD`` / ``MetaAdam``) and higher 0.2.1
  (``innerloop_ctx``), where installed
  (``pip install --no-deps torchopt==0.7.3 higher==0.2.1 optree graphviz``).

    python bench/maml.py [--threads 1 2] [--repeats 40] [--output docs/maml_benchmark.md]
    python bench/maml.py --compiled [...] [--jax-python PATH] [--min-chunk-size N]   (the torch.compile rows, and
        JAX + optax's where installed: bench/maml_compiled.py, bench/maml_jax.py)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch
from torch.func import functional_call, grad, grad_and_value, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, measure_interleaved  # noqa: E402

import unrollopt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def load_example():
    spec = importlib.util.spec_from_file_location("maml_sinusoid", ROOT / "examples" / "maml_sinusoid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peers() -> dict:
    """The peer libraries that are installed, by name (a note for the others)."""
    found = {}
    for name in ("torchopt", "higher"):
        try:
            found[name] = __import__(name)
        except ImportError as e:
            found[name] = f"not installed ({e})"
    return found


# --- hand-written inner steps on dicts of tensors ------------------------------------


def sgd_step(params, grads, state, lr, t):
    return {k: p - lr * grads[k] for k, p in params.items()}, state


def adam_init(params):
    return ({k: torch.zeros_like(p) for k, p in params.items()}, {k: torch.zeros_like(p) for k, p in params.items()})


def adam_step(params, grads, state, lr, t):
    (b1, b2), (m, v) = ADAM_BETAS, state
    m = {k: b1 * m[k] + (1 - b1) * g for k, g in grads.items()}
    v = {k: b2 * v[k] + (1 - b2) * g * g for k, g in grads.items()}
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    new = {k: p - lr * (m[k] / bc1) / ((v[k] / bc2).sqrt() + ADAM_EPS) for k, p in params.items()}
    return new, (m, v)


HAND_WRITTEN = {"sgd": (lambda params: None, sgd_step), "adam": (adam_init, adam_step)}


def outer_iteration(net, meta_batch, sample, lr: float = 3e-3):
    """One outer iteration as a callable: ``sample(generator)`` draws a
    meta-batch, ``meta_batch(tasks)`` writes its meta-gradient into ``net``'s
    ``.grad``, then an outer Adam step; returns the meta-gradient (every
    variant's first call sees the same tasks and initial parameters)."""
    meta_opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)

    def run():
        tasks = sample(gen)
        meta_opt.zero_grad()
        meta_batch(tasks)
        grads = [p.grad.clone() for p in net.parameters()]
        meta_opt.step()
        return grads

    return run


def variants(ex, inner: str) -> dict:
    """name -> one outer iteration (sample a meta-batch, meta-gradient, outer
    Adam step) for every way of writing it that is available here."""
    out = {}

    def outer(net, meta_batch):
        return outer_iteration(net, meta_batch, lambda gen: ex.sample_tasks(4, 10, 10, gen))

    for fused in (True, False):
        args = ex.parse_args(["--inner-optimizer", inner] + ([] if fused else ["--no-use-accelerated-op"]))
        kind = "fused" if fused else "plain"
        net = ex.make_net(0)
        inner_opt = ex.make_inner_optimizer(net, args)
        out[f"unrollopt {kind}, Meta{inner.upper() if inner == 'sgd' else 'Adam'} loop"] = outer(
            net, lambda tasks, net=net, o=inner_opt, a=args: ex.meta_batch_loop(net, o, tasks, a)
        )
        net = ex.make_net(0)
        opt = ex.make_inner_transformation(args)
        out[f"unrollopt {kind} + vmap"] = outer(
            net, lambda tasks, net=net, o=opt, a=args: ex.meta_batch_vmap(net, o, tasks, a)
        )

    args = ex.parse_args(["--inner-optimizer", inner])
    init, step = HAND_WRITTEN[inner]

    net = ex.make_net(0)

    def hand_loop(tasks, net=net):
        meta = dict(net.named_parameters())
        for t in range(4):
            params, state = meta, init(meta)
            for i in range(args.inner_steps):
                loss = ex.mse(functional_call(net, params, (tasks.x_support[t],)), tasks.y_support[t])
                grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=True)))
                params, state = step(params, grads, state, args.inner_lr, i + 1)
            (ex.mse(functional_call(net, params, (tasks.x_query[t],)), tasks.y_query[t]) / 4).backward()

    out["hand-written, autograd.grad loop"] = outer(net, hand_loop)

    net = ex.make_net(0)

    def hand_vmap(tasks, net=net):
        def support(params, x, y):
            return ex.mse(functional_call(net, params, (x,)), y)

        def task_loss(params, xs, ys, xq, yq):
            state = init(params)
            for i in range(args.inner_steps):
                params, state = step(params, grad(support)(params, xs, ys), state, args.inner_lr, i + 1)
            return support(params, xq, yq)

        meta = dict(net.named_parameters())
        grads, _ = vmap(grad_and_value(task_loss), in_dims=(None, 0, 0, 0, 0))(
            {k: v.detach() for k, v in meta.items()}, tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query
        )
        for k, p in meta.items():
            p.grad = grads[k].mean(0)

    out["hand-written, torch.func + vmap"] = outer(net, hand_vmap)

    found = peers()
    if not isinstance(found["torchopt"], str):
        torchopt = found["torchopt"]
        net = ex.make_net(0)
        make = (lambda n: torchopt.MetaSGD(n, lr=args.inner_lr)) if inner == "sgd" else (
            lambda n: torchopt.MetaAdam(n, lr=args.inner_lr))  # fmt: skip
        topt = make(net)

        def torchopt_loop(tasks, net=net, topt=topt):
            net_state = torchopt.extract_state_dict(net, by="reference")
            opt_state = torchopt.extract_state_dict(topt, by="reference")
            for t in range(4):
                torchopt.recover_state_dict(net, net_state)
                torchopt.recover_state_dict(topt, opt_state)
                for _ in range(args.inner_steps):
                    topt.step(ex.mse(net(tasks.x_support[t]), tasks.y_support[t]))
                (ex.mse(net(tasks.x_query[t]), tasks.y_query[t]) / 4).backward()
            torchopt.recover_state_dict(net, net_state)
            torchopt.recover_state_dict(topt, opt_state)
            torchopt.stop_gradient(net)
            torchopt.stop_gradient(topt)

        out[f"TorchOpt Meta{'SGD' if inner == 'sgd' else 'Adam'} loop"] = outer(net, torchopt_loop)
    if not isinstance(found["higher"], str):
        higher = found["higher"]
        net = ex.make_net(0)
        make = (lambda p: torch.optim.SGD(p, lr=args.inner_lr)) if inner == "sgd" else (
            lambda p: torch.optim.Adam(p, lr=args.inner_lr))  # fmt: skip
        inner_torch = make(net.parameters())

        def higher_loop(tasks, net=net, inner_torch=inner_torch):
            for t in range(4):
                with higher.innerloop_ctx(net, inner_torch, copy_initial_weights=False) as (fnet, diffopt):
                    for _ in range(args.inner_steps):
                        diffopt.step(ex.mse(fnet(tasks.x_support[t]), tasks.y_support[t]))
                    (ex.mse(fnet(tasks.x_query[t]), tasks.y_query[t]) / 4).backward()

        out["higher innerloop_ctx"] = outer(net, higher_loop)
    return out


def bench(threads_list, repeats: int) -> list[dict]:
    """Rows (inner, threads, variant -> median ms) measured in this run."""
    ex = load_example()
    saved = torch.get_num_threads()
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        for inner in ("sgd", "adam"):
            timings = measure_interleaved(variants(ex, inner), repeats, warmup=3)
            rows.append({"inner": inner, "threads": threads, **{k: t.ms for k, t in timings.items()}})
    torch.set_num_threads(saved)
    return rows


REFERENCE = "hand-written, torch.func + vmap"


def report(rows: list[dict], header: str) -> str:
    """Markdown: one table per (inner optimizer, threads), fastest first, with
    each variant's time over the hand-written torch.func + vmap loop's."""
    out = [header, ""]
    for row in rows:
        out += [f"### {row['inner']}, {row['threads']} thread(s)", "",
                f"| variant | ms per outer iteration | / {REFERENCE} |", "|---|---|---|"]  # fmt: skip
        items = {k: v for k, v in row.items() if k not in ("inner", "threads")}
        for k, v in sorted(items.items(), key=lambda kv: kv[1]):
            out.append(f"| {k} | {v:.2f} | {v / row[REFERENCE]:.2f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--output", help="also write the tables to this markdown file")
    parser.add_argument("--compiled", action="store_true", help="the torch.compile rows (bench/maml_compiled.py)")
    parser.add_argument("--jax-python", default=sys.executable,
                        help="with --compiled: the Python with jax and optax for their rows (default: this one)")  # fmt: skip
    parser.add_argument("--min-chunk-size", type=int,
                        help="with --compiled: torch._inductor.config.cpp.min_chunk_size, the fewest elements per "
                             "thread for which Inductor runs a kernel on several threads (default: Inductor's)")  # fmt: skip
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if args.compiled:
        import maml_compiled
        import torch._inductor.config as inductor

        if args.min_chunk_size is not None:
            inductor.cpp.min_chunk_size = args.min_chunk_size

        rows = maml_compiled.bench(load_example(), outer_iteration, HAND_WRITTEN, measure_interleaved,
                                   args.threads, args.repeats, args.jax_python)  # fmt: skip
        header = (f"{cpu_model()}, {os.cpu_count()} CPUs; torch {torch.__version__}, unrollopt "
                  f"{unrollopt.__version__}; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
                  f"medians of {args.repeats} calls of each, interleaved in turns of {maml_compiled.BLOCK}, after "
                  "3 warm-up calls (with JAX: in rounds, below); first call = compilation and one run; Inductor's "
                  f"cpp.min_chunk_size {inductor.cpp.min_chunk_size}.")  # fmt: skip
        text = maml_compiled.report(rows, header)
        print(text)
        if args.output:
            Path(args.output).write_text(text + "\n")
        return
    versions = ", ".join(f"{name} {mod if isinstance(mod, str) else getattr(mod, '__version__', 'installed')}"
                         for name, mod in peers().items())  # fmt: skip
    rows = bench(args.threads, args.repeats)
    header = (f"{cpu_model()}, {os.cpu_count()} CPUs; torch {torch.__version__}, unrollopt {unrollopt.__version__}; "
              f"{versions}; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; medians of "
              f"{args.repeats} interleaved repeats after 3 warm-up calls.")  # fmt: skip
    text = report(rows, header)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
