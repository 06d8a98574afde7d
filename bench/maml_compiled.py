"""The compiled rows of bench/maml.py: one outer iteration of MAML on
sinusoids (examples/maml_sinusoid.py's configuration: MLP 1-40-40-1,
meta-batch 4, 10 shots, 5 inner steps, outer Adam step) with the meta-batch's
``vmap(grad_and_value(...))`` function under ``torch.compile(fullgraph=True)``
(Inductor), every way of writing its inner step:

* hand-written SGD / Adam on dicts of tensors (bench/maml.py's), and for Adam
  also with a safe square root (the double ``where`` that keeps the derivative
  finite where the second moment is 0: the naive one gives NaN meta-gradients
  on this workload, wherever a ReLU unit is dead for a task), and with an
  exact one (whole iteration only): unrollopt's guarantee written by hand, the
  root recomputed from scaled inputs where squares may have underflowed;
* unrollopt ``sgd`` / ``adam`` fused (``use_accelerated_op=True``; Inductor
  compiles the operators' decompositions: the rule's step and vjp in ATen
  operations) and plain (the rule's step, differentiated by autograd);
* unrollopt ``MetaSGD`` / ``MetaAdam`` on the module, each task's inner loop
  and query loss compiled (examples/maml_sinusoid.py ``--compile`` without
  ``--vmap``);
* "whole iteration": the hand-written and the unrollopt ``vmap`` rows with
  the outer Adam step inside the compiled function too, as JAX + optax runs
  it (the rows above step ``torch.optim.Adam`` eagerly after it). The outer
  step is the same functional Adam in each (``outer_adam``).

Each variant compiles its own code object (variants that shared one would
share dynamo's cache and pay for each other's guards). Timed interleaved in
turns of ``BLOCK`` calls, medians; the first call (compilation) is reported
separately. And the peer,
JAX + optax under ``jit`` (bench/maml_jax.py), where an interpreter with
``jax`` and ``optax`` is given (``--jax-python``, default this one): in a
process of its own on as many CPUs as threads, alternating with the PyTorch
rows of that thread count in ``ROUNDS`` rounds (medians of the rounds'
medians).

    python bench/maml.py --compiled [--threads 1 2] [--repeats 100] [--jax-python PATH]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import types
from pathlib import Path

import torch
from torch.func import functional_call, grad, grad_and_value, vmap

import unrollopt

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def adam_moments(grads, moments):
    """Adam's first and second moments after a step, as dicts of tensors."""
    (b1, b2), (m, v) = ADAM_BETAS, moments
    m = {k: b1 * m[k] + (1 - b1) * g for k, g in grads.items()}
    v = {k: b2 * v[k] + (1 - b2) * g * g for k, g in grads.items()}
    return m, v


def safe_sqrt(x):
    """sqrt(x) with a derivative of 0 at x = 0 (the double ``where``), not inf."""
    zero = x == 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, x).sqrt())


def adam_step_safe(params, grads, state, lr, t):
    """bench/maml.py's hand-written Adam with the double-where square root."""
    (b1, b2), (m, v) = ADAM_BETAS, adam_moments(grads, state)
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    new = {k: p - lr * (m[k] / bc1) / (safe_sqrt(v[k] / bc2) + ADAM_EPS) for k, p in params.items()}
    return new, (m, v)


EXACT_SCALE = {torch.float32: 2.0**64, torch.float64: 2.0**500}


def adam_step_exact(params, grads, state, lr, t):
    """The hand-written Adam with unrollopt's guarantee: the square root of the
    second moment recomputed from inputs scaled by ``EXACT_SCALE`` where it is
    below the smallest normal number (where g * g may have underflowed), so that
    its derivative stays the exact, finite one; and the double ``where`` at 0.
    (Autograd carries the cotangent of the scaled mean, the root's over
    2 S^2 sqrt(nu'): with S = 2^96, the scale of unrollopt's backward, that is
    subnormal in float32 and loses digits; unrollopt's backward divides by the
    unscaled root instead.)"""
    (b1, b2), v_old = ADAM_BETAS, state[1]
    m, v = adam_moments(grads, state)
    bc1, bc2 = 1 - b1**t, 1 - b2**t

    def root(k):
        tiny = v[k] < torch.finfo(v[k].dtype).tiny
        scale = torch.where(tiny, torch.full_like(v[k], EXACT_SCALE[v[k].dtype]), 1.0)
        g = grads[k] * scale
        return safe_sqrt(b2 * (v_old[k] * scale * scale) + (1 - b2) * g * g) / scale

    new = {k: p - lr * (m[k] / bc1) / (root(k) / bc2**0.5 + ADAM_EPS) for k, p in params.items()}
    return new, (m, v)


def _own_code(fn, name):
    """``fn`` with a code object of its own (dynamo caches by code object)."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def outer_adam(params, grads, state, lr=3e-3):
    """The outer Adam step of the whole-iteration rows, functional (the step
    count a tensor: it changes every iteration)."""
    (b1, b2), (*moments, t) = ADAM_BETAS, state
    t = t + 1
    m, v = adam_moments(grads, moments)
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    new = {k: p - lr * (m[k] / bc1) / ((v[k] / bc2).sqrt() + ADAM_EPS) for k, p in params.items()}
    return new, (m, v, t)


def _functional(ex, net, inner, args, step=None, init=None, opt=None, whole=False):
    """The meta-batch's vmap(grad_and_value(task loss)) function, compiled;
    with ``whole``, followed by the outer step: (params, outer state, tasks...)
    -> (new params, new outer state, meta-gradient)."""

    def support(params, x, y):
        return ex.mse(functional_call(net, params, (x,)), y)

    def task_loss(params, xs, ys, xq, yq):
        if opt is not None:
            state = opt.init(params)
            for _ in range(args.inner_steps):
                updates, state = opt.update(grad(support)(params, xs, ys), state, inplace=False)
                params = unrollopt.apply_updates(params, updates, inplace=False)
        else:
            state = init(params)
            for i in range(args.inner_steps):
                params, state = step(params, grad(support)(params, xs, ys), state, args.inner_lr, i + 1)
        return support(params, xq, yq)

    batched = vmap(grad_and_value(task_loss), in_dims=(None, 0, 0, 0, 0))

    def meta_gradient(*a):
        return batched(*a)

    def outer_iteration(params, state, *tasks):
        grads, _ = batched(params, *tasks)
        grads = {k: g.mean(0) for k, g in grads.items()}
        return (*outer_adam(params, grads, state), grads)

    fn = outer_iteration if whole else meta_gradient
    return torch.compile(_own_code(fn, f"{fn.__name__}_{id(net)}"), fullgraph=True)


class WholeIteration:
    """A whole-iteration row: builds its run from the sampler (as
    bench/maml.py's outer_iteration does for the other rows)."""

    def __init__(self, net, fn):
        self.net, self.fn = net, fn

    def run(self, sample):
        params = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        state = (*({k: torch.zeros_like(p) for k, p in params.items()} for _ in range(2)), torch.zeros(()))
        gen = torch.Generator().manual_seed(0)

        def run():
            nonlocal params, state
            tasks = sample(gen)
            params, state, grads = self.fn(params, state, tasks.x_support, tasks.y_support, tasks.x_query,
                                           tasks.y_query)  # fmt: skip
            return list(grads.values())

        return run


EXACT = "hand-written, exact sqrt"


def variants(ex, hand_written: dict, inner: str) -> dict:
    """name -> (net, meta_batch(tasks)) for every compiled way."""
    args = ex.parse_args(["--inner-optimizer", inner, "--compile"])
    out = {}

    def vmapped(fn, net):
        meta = dict(net.named_parameters())

        def meta_batch(tasks):
            grads, _ = fn({k: v.detach() for k, v in meta.items()}, tasks.x_support, tasks.y_support,
                          tasks.x_query, tasks.y_query)  # fmt: skip
            for k, p in meta.items():
                p.grad = grads[k].mean(0)

        return meta_batch

    # Each way of writing the inner step (its _functional arguments, made afresh
    # for each row), compiled as the meta-gradient and as the whole iteration.
    init, step = hand_written[inner]
    make = unrollopt.sgd if inner == "sgd" else unrollopt.adam
    ways = {"hand-written": lambda: dict(step=step, init=init)}
    if inner == "adam":
        ways["hand-written, safe sqrt"] = lambda: dict(step=adam_step_safe, init=init)
        ways[EXACT] = lambda: dict(step=adam_step_exact, init=init)
    for fused in (True, False):
        ways[f"unrollopt {'fused' if fused else 'plain'} + vmap"] = lambda f=fused: dict(
            opt=make(args.inner_lr, use_accelerated_op=f)
        )
    for whole in (False, True):
        for name, how in ways.items():
            if name == EXACT and not whole:
                continue  # its first call alone takes 1.5 minutes
            net = ex.make_net(0)
            fn = _functional(ex, net, inner, args, **how(), whole=whole)
            if whole:
                out[f"{name}, whole iteration compiled"] = WholeIteration(net, fn)
            else:
                out[f"{name}, compiled"] = (net, vmapped(fn, net))
    net = ex.make_net(0)
    inner_opt = ex.make_inner_optimizer(net, args)
    query_loss = ex.make_adapted_query_loss(net, inner_opt, args)
    out[f"unrollopt Meta{'SGD' if inner == 'sgd' else 'Adam'} loop, compiled per task"] = (
        net, lambda tasks, net=net, o=inner_opt, q=query_loss: ex.meta_batch_loop(net, o, tasks, args, q))  # fmt: skip
    return out


JAX = "JAX + optax, jit (own process)"
# Calls of a variant in a row (measure_interleaved): a training loop's, with
# its compiled code and data in the caches, as JAX's (a process of its own).
BLOCK = 10
# JAX's process and the PyTorch rows alternate in rounds (a JAX process, then
# repeats / ROUNDS calls of each PyTorch variant), so that a change in the
# shared machine's load reaches both (at 2 threads it decides much of the
# time); each row is the median of its rounds' medians.
ROUNDS = 3


def jax_timings(python: str, threads: int, repeats: int) -> dict:
    """bench/maml_jax.py's timings by inner optimizer, or {"missing": why}."""
    command = [
        python,
        str(Path(__file__).with_name("maml_jax.py")),
        "--threads",
        str(threads),
        "--repeats",
        str(repeats),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"missing": str(e)}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"missing": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(ex, outer_iteration, hand_written, measure_interleaved, threads_list, repeats: int,
          jax_python: str | None = None) -> list[dict]:  # fmt: skip
    """Rows (inner, threads, variant -> median ms, and compile seconds) measured in this run."""
    saved = torch.get_num_threads()
    torch._dynamo.config.cache_size_limit = 64
    rounds = ROUNDS if jax_python else 1
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        torch._dynamo.reset()  # each thread count compiles afresh (Inductor's kernels depend on it)
        runs, first_call_s = {}, {}
        for inner in ("sgd", "adam"):
            runs[inner], first_call_s[inner] = {}, {}
            for name, how in variants(ex, hand_written, inner).items():
                sample = lambda gen: ex.sample_tasks(4, 10, 10, gen)  # noqa: E731
                run = how.run(sample) if isinstance(how, WholeIteration) else outer_iteration(*how, sample)
                start = time.perf_counter()
                run()
                first_call_s[inner][name] = time.perf_counter() - start
                runs[inner][name] = run
        ms = {inner: {name: [] for name in fns} for inner, fns in runs.items()}
        peers = []
        for _ in range(rounds):
            if jax_python:
                peers.append(jax_timings(jax_python, threads, -(-repeats // rounds)))
            for inner, fns in runs.items():
                for name, t in measure_interleaved(fns, -(-repeats // rounds), warmup=3, block=BLOCK).items():
                    ms[inner][name].append(t.ms)
        for inner in runs:
            row = {"inner": inner, "threads": threads, "first_call_s": first_call_s[inner],
                   "ms": {name: statistics.median(v) for name, v in ms[inner].items()}}  # fmt: skip
            measured = [peer for peer in peers if inner in peer]
            if measured:
                row["ms"][JAX] = statistics.median(peer[inner]["ms"] for peer in measured)
                row["first_call_s"][JAX] = statistics.median(peer[inner]["first_call_s"] for peer in measured)
                row["jax"] = measured[0]["jax"]
            elif peers:
                row["jax_missing"] = peers[0].get("missing", "no timing")
            rows.append(row)
    torch.set_num_threads(saved)
    return rows


REFERENCE = "hand-written, compiled"


def report(rows: list[dict], header: str) -> str:
    out = [header, ""]
    for row in rows:
        ms = row["ms"]
        peer = JAX in ms
        out += [f"### {row['inner']}, {row['threads']} thread(s), compiled", "",
                f"| variant | ms per outer iteration | / {REFERENCE} |{' / JAX + optax |' if peer else ''} first call (s) |",
                "|---|---|---|" + ("---|" if peer else "") + "---|"]  # fmt: skip
        for k, v in sorted(ms.items(), key=lambda kv: kv[1]):
            versus_jax = f" {v / ms[JAX]:.2f} |" if peer else ""
            out.append(f"| {k} | {v:.3f} | {v / ms[REFERENCE]:.2f} |{versus_jax} {row['first_call_s'][k]:.1f} |")
        if peer:
            out += ["", f"JAX {row['jax']}: a process of its own, alternating with the rows above in {ROUNDS} rounds."]
        elif "jax_missing" in row:
            out += ["", f"JAX + optax not measured: {row['jax_missing']}"]
        out.append("")
    return "\n".join(out)
