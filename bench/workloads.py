"""The workloads of the benchmark suite (issue 6). Each ``*_problem`` function
builds one variant of a workload and returns a callable that runs it once and
returns what it computed (so that tests can check the variants agree); each
``bench_*`` function times the variants and returns plain dicts for the report.

Byte counts (float32 values per element that an ideal kernel must move, read +
written) are derived once, in ``step_floats`` and ``UNROLL_FLOATS_PER_STEP``.

Run as a script it is the peak-memory child of workload 5:
    python bench/workloads.py peak-memory {fused,plain} LOG2_SIZE STEPS THREADS
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call
from torch.optim.adam import adam as torch_adam
from torch.optim.rmsprop import rmsprop as torch_rmsprop
from torch.optim.sgd import sgd as torch_sgd

import unrollopt
from unrollopt.optimizers import adam as adam_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FLOAT32, measure, measure_interleaved, peak_rss_bytes, rss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LR = 1e-3
STEPS_TAKEN = 2  # the step timed is the third: past the first step's special cases (SGD's buffer)


# --- 1. memory bandwidth ---------------------------------------------------------


def bench_bandwidth(log2_size: int, repeats: int) -> dict:
    """Copy of 2^log2_size float32 into a preallocated output (the floor's
    bandwidth), and into a fresh one each time (what an out-of-place op pays
    when the allocator hands it new pages)."""
    src = torch.rand(1 << log2_size)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * FLOAT32
    into = measure(lambda: dst.copy_(src), repeats)
    fresh = measure(lambda: src.clone(), repeats)
    # Contention probe: a small parallel op with 1 thread and with the run's
    # threads. On a shared machine every parallel region waits for a descheduled
    # thread, and the second time grows far above the first.
    small, small_out = src[: 1 << 16], dst[: 1 << 16]
    threads = torch.get_num_threads()
    region = {}
    for k in (1, threads):
        torch.set_num_threads(k)
        region[k] = measure(lambda: torch.add(small, 1.0, out=small_out), 5 * repeats).ms
    torch.set_num_threads(threads)
    return {
        "region_ms": [region[1], region[threads]],
        "elements": src.numel(),
        "bandwidth": moved / into.seconds,
        "copy_ms": into.ms,
        "fresh_bandwidth": moved / fresh.seconds,
        "fresh_ms": fresh.ms,
        "fresh_faults": fresh.faults,
    }


# --- 2, 3. one differentiable optimizer step -----------------------------------------
# Inputs: the gradient g and k states (Adam: mu, nu; SGD with momentum: the
# buffer; RMSprop: square_avg) and a 0-d lr that requires grad; outputs: the
# update and the k new states. An ideal forward reads the 1 + k inputs and writes
# 1 + k outputs; an ideal backward reads the 1 + k cotangents, re-reads the 1 + k
# inputs (it saves nothing) and writes 1 + k input gradients (the lr's gradient is
# a reduction in the same pass): 5 (1 + k) values per element.

OPTIMIZERS = {
    "adam": dict(states=("mu", "nu"), make=lambda lr, fused: unrollopt.adam(lr=lr, use_accelerated_op=fused)),
    "sgd_momentum": dict(
        states=("momentum_buffer",),
        make=lambda lr, fused: unrollopt.sgd(lr=lr, momentum=0.9, use_accelerated_op=fused),
    ),
    "rmsprop": dict(states=("square_avg",), make=lambda lr, fused: unrollopt.rmsprop(lr=lr, use_accelerated_op=fused)),
}
STEP_VARIANTS = ("fused", "plain", "torch.optim")
# Also timed: the fused step with a constant lr, which measures what the lr's
# gradient costs the fused backward.
NO_LR_GRAD = "fused, constant lr"


def step_floats(optimizer: str) -> int:
    return 5 * (1 + len(OPTIMIZERS[optimizer]["states"]))


def _step_inputs(optimizer: str, n: int, dtype: torch.dtype, seed: int = 0):
    """g, the states (positive: they include second moments), the lr and one
    cotangent per output; g, states and lr require grad."""
    gen = torch.Generator().manual_seed(seed)
    k = len(OPTIMIZERS[optimizer]["states"])
    g = torch.randn(n, generator=gen, dtype=dtype).requires_grad_()
    states = [(0.01 + torch.rand(n, generator=gen, dtype=dtype)).requires_grad_() for _ in range(k)]
    cotangents = [torch.randn(n, generator=gen, dtype=dtype) for _ in range(1 + k)]
    lr = torch.tensor(LR, dtype=dtype, requires_grad=True)
    return g, states, lr, cotangents


def _torch_optim_step(optimizer: str, p, g, states, lr):
    """torch.optim's differentiable single-tensor step (its functional form, as
    ``torch.optim.X(differentiable=True).step()`` runs it). It updates in place,
    so the parameter and states it overwrites must be non-leaf copies."""
    step = torch.tensor(float(STEPS_TAKEN), dtype=p.dtype)  # incremented by the step
    if optimizer == "adam":
        torch_adam([p], [g], [states[0]], [states[1]], [], [step], foreach=False, differentiable=True,
                              amsgrad=False, beta1=0.9, beta2=0.999, lr=lr, weight_decay=0.0, eps=1e-8,
                              maximize=False)  # fmt: skip
    elif optimizer == "sgd_momentum":
        torch_sgd([p], [g], [states[0]], foreach=False, weight_decay=0.0, momentum=0.9, lr=lr,
                            dampening=0.0, nesterov=False, maximize=False)  # fmt: skip
    else:  # its addcdiv_ takes no tensor lr: a float, and no lr gradient
        torch_rmsprop([p], [g], [states[0]], [], [], [step], foreach=False, differentiable=True,
                                    lr=lr.item(), alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                                    centered=False)  # fmt: skip


def step_problem(optimizer: str, n: int, variant: str, dtype: torch.dtype = torch.float32):
    """One forward + backward of a differentiable step on n elements; the
    callable returns the gradients with respect to (g, *states, lr)."""
    g, states, lr, cotangents = _step_inputs(optimizer, n, dtype)
    if variant == "torch.optim":
        p = torch.randn(n, dtype=dtype).requires_grad_()

        def run():
            # p' = p + update: the same cotangent on p' as on the update gives the same input gradients.
            p1, s1 = p.clone(), [s.clone() for s in states]
            _torch_optim_step(optimizer, p1, g, s1, lr)
            return torch.autograd.grad([p1, *s1], [g, *states, lr], cotangents, allow_unused=True)

        return run

    lr.requires_grad_(variant != NO_LR_GRAD)
    inputs = [g, *states] + ([lr] if lr.requires_grad else [])
    opt = OPTIMIZERS[optimizer]["make"](lr, variant.startswith("fused"))
    state = opt.init((g,))
    names = OPTIMIZERS[optimizer]["states"]
    state = state._replace(**{name: (s,) for name, s in zip(names, states)}, count=torch.tensor(STEPS_TAKEN))

    def run():
        (update,), new = opt.update((g,), state, inplace=False)
        outputs = [update] + [getattr(new, name)[0] for name in names]
        return torch.autograd.grad(outputs, inputs, cotangents)

    return run


def bench_steps(optimizer: str, log2_sizes, repeats_for) -> list[dict]:
    rows = []
    for log2 in log2_sizes:
        n = 1 << log2
        row = {"optimizer": optimizer, "log2": log2, "floats": step_floats(optimizer)}
        row["bytes"] = step_floats(optimizer) * FLOAT32 * n
        for variant in STEP_VARIANTS + (NO_LR_GRAD,):
            # 3 warm-up calls: on a virtual machine the first writes to memory
            # the host has not yet backed cost far more than later ones.
            t = measure(step_problem(optimizer, n, variant), repeats_for(log2), warmup=3)
            row[variant] = t.ms
            row[variant + "_faults"] = t.faults
        rows.append(row)
    return rows


def bench_saved_bytes(log2: int = 12) -> list[dict]:
    """Per optimizer of bench/optimizer_steps.py: the bytes per element that one
    differentiable step keeps for its backward, fused and plain (no timing)."""
    from optimizer_steps import OPTIMIZERS as ALL_OPTIMIZERS
    from optimizer_steps import saved_bytes

    rows = []
    for name, make in ALL_OPTIMIZERS.items():
        row = {"optimizer": name}
        for variant in ("fused", "plain"):
            row[variant], row[variant + "_intermediates"] = saved_bytes(make, 1 << log2, variant == "fused")
        rows.append(row)
    return rows


# --- 4. a model with 100 parameter tensors: 5 unrolled MetaAdam steps -------------------


def make_mlp(layers: int, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*mods[:-1])


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2).mean()


def model_problem(layers: int, width: int, batch: int, variant: str, steps: int = 5, lr: float = 1e-2):
    """MAML-style: ``steps`` differentiable Adam steps on a support batch from
    the meta-parameters, then the query loss's gradient with respect to them.
    The callable returns the meta-gradients (one per parameter tensor)."""
    net = make_mlp(layers, width)
    gen = torch.Generator().manual_seed(1)
    x, y, xq, yq = (torch.randn(batch, width, generator=gen) for _ in range(4))
    meta = list(net.parameters())

    if variant == "torch.func":
        names = [name for name, _ in net.named_parameters()]

        def run():
            params = dict(zip(names, meta))
            mu = [torch.zeros_like(p) for p in meta]
            nu = [torch.zeros_like(p) for p in meta]
            for t in range(1, steps + 1):
                loss = mse(functional_call(net, params, (x,)), y)
                grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
                new = {}
                for i, (name, p, g) in enumerate(zip(names, params.values(), grads)):
                    mu[i] = 0.9 * mu[i] + 0.1 * g
                    nu[i] = 0.999 * nu[i] + 0.001 * g * g
                    denom = (nu[i] / (1 - 0.999**t)).sqrt() + 1e-8
                    new[name] = p - lr / (1 - 0.9**t) * mu[i] / denom
                params = new
            return torch.autograd.grad(mse(functional_call(net, params, (xq,)), yq), meta)

        return run

    init = unrollopt.extract_state_dict(net, by="reference")

    def run():
        unrollopt.recover_state_dict(net, init)
        inner = unrollopt.MetaAdam(net, lr=lr, use_accelerated_op=variant == "fused")
        for _ in range(steps):
            inner.step(mse(net(x), y))
        out = torch.autograd.grad(mse(net(xq), yq), meta)
        unrollopt.recover_state_dict(net, init)
        return out

    return run


def bench_model(layers: int, width: int, batch: int, repeats: int) -> list[dict]:
    rows = []
    for variant in ("fused", "plain", "torch.func"):
        t = measure(model_problem(layers, width, batch, variant), repeats)
        rows.append({"variant": variant, "ms": t.ms, "faults": t.faults})
    return rows


# --- 5 and the anchors' workload: an unrolled Adam meta-gradient ------------------------
# theta_0 and lr are the meta-parameters; the inner loss is 0.5 |theta - c|^2 with
# its gradient written out (theta - c), so that torch.compile sees the whole
# loop; the outer loss is |theta_T - d|^2. Per step an ideal kernel reads theta,
# c, mu, nu and writes theta', mu', nu' forward (7 values), and backward reads
# the three cotangents and the four inputs and writes three gradients (10).
UNROLL_FLOATS_PER_STEP = 17
UNROLL_VARIANTS = ("fused", "plain", "hand-written", "torch.compile", NO_LR_GRAD)


def _unroll_inputs(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    theta0 = torch.randn(n, generator=gen).requires_grad_()
    c, d = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    return theta0, torch.tensor(0.1, requires_grad=True), c, d


def hand_written_unroll(theta0, lr, c, d, steps: int):
    """The plain loop as a user writes it (textbook Adam in torch ops)."""
    theta, mu, nu = theta0, torch.zeros_like(theta0), torch.zeros_like(theta0)
    for t in range(1, steps + 1):
        g = theta - c
        mu = 0.9 * mu + 0.1 * g
        nu = 0.999 * nu + 0.001 * g * g
        theta = theta - lr / (1 - 0.9**t) * mu / ((nu / (1 - 0.999**t)).sqrt() + 1e-8)
    return ((theta - d) ** 2).sum()


def unrollopt_unroll(theta0, lr, c, d, steps: int, fused: bool):
    opt = unrollopt.adam(lr=lr, use_accelerated_op=fused)
    params = (theta0,)
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update((params[0] - c,), state, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    return ((params[0] - d) ** 2).sum()


def unroll_problem(n: int, steps: int, variant: str):
    """The callable returns the meta-gradients with respect to (theta_0, lr)
    (theta_0 only for NO_LR_GRAD)."""
    theta0, lr, c, d = _unroll_inputs(n)
    lr.requires_grad_(variant != NO_LR_GRAD)
    inputs = [theta0] + ([lr] if lr.requires_grad else [])
    if variant in ("fused", "plain", NO_LR_GRAD):
        loss_fn = lambda: unrollopt_unroll(theta0, lr, c, d, steps, variant != "plain")  # noqa: E731
    elif variant == "hand-written":
        loss_fn = lambda: hand_written_unroll(theta0, lr, c, d, steps)  # noqa: E731
    else:
        compiled = torch.compile(hand_written_unroll, dynamic=False)
        loss_fn = lambda: compiled(theta0, lr, c, d, steps)  # noqa: E731
    return lambda: torch.autograd.grad(loss_fn(), inputs)


def bench_unroll(log2: int, steps: int, repeats: int, with_compile: bool) -> dict:
    n = 1 << log2
    out = {"log2": log2, "steps": steps, "floats_per_step": UNROLL_FLOATS_PER_STEP}
    out["bytes"] = UNROLL_FLOATS_PER_STEP * steps * FLOAT32 * n
    for variant in UNROLL_VARIANTS:
        if variant == "torch.compile" and not with_compile:
            out[variant] = None
            out["compile_error"] = "skipped (--quick)"
            continue
        run = unroll_problem(n, steps, variant)
        try:
            t = measure(run, repeats, warmup=3)  # as in bench_steps (and torch.compile compiles in the first)
        except Exception as e:  # report, do not hide: torch.compile may be unusable here
            out[variant] = None
            out["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            continue
        out[variant] = t.ms
        out[variant + "_faults"] = t.faults
    return out


def peak_memory_child(variant: str, log2: int, steps: int) -> dict:
    """Runs in its own process: the resident set's growth over a ``steps``-step
    unroll and its meta-gradient, above what the process held before it."""
    run = unroll_problem(1 << log2, steps, variant)
    before = rss_bytes()
    run()
    return {"variant": variant, "before": before, "peak": peak_rss_bytes(), "unroll": peak_rss_bytes() - before}


def bench_peak_memory(log2: int, steps: int, runs: int = 3) -> list[dict]:
    """The median over ``runs`` fresh processes per variant: with glibc the
    high-water mark varies by about 10-20% between identical runs."""
    rows = []
    for variant in ("fused", "plain"):
        # A fresh process per run (same allocator environment): VmHWM is per process.
        cmd = [sys.executable, __file__, "peak-memory", variant, str(log2), str(steps), str(torch.get_num_threads())]
        results = []
        for _ in range(runs):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        row = sorted(results, key=lambda r: r["unroll"])[len(results) // 2]
        row["runs"] = [r["unroll"] for r in results]
        rows.append(row)
    return rows


# --- 6. the non-differentiable Adam step ---------------------------------------------
NONDIFF_FLOATS = 7  # reads p, g, mu, nu; writes p, mu, nu
# "unrollopt op": the operator that unrollopt.Adam.step() calls, without the
# optimizer around it (separates the kernel's time from the Python layer's).
NONDIFF_VARIANTS = ("unrollopt", "torch fused", "torch foreach", "unrollopt op")


def nondiff_problem(total: int, tensors: int, variant: str):
    gen = torch.Generator().manual_seed(0)
    size = total // tensors
    params = [torch.randn(size, generator=gen).requires_grad_() for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(size, generator=gen)
    if variant == "unrollopt op":
        definition = adam_module.adam.definition
        config = definition.config(definition.settings(lr=LR))
        grads, mu, nu = (
            [p.grad for p in params],
            [torch.zeros_like(p) for p in params],
            [torch.zeros_like(p) for p in params],
        )
        count = torch.tensor(1.0, dtype=torch.float64)  # always the first step

        def run():
            with torch.no_grad():
                torch.ops.unrollopt.adam_(params, grads, mu, nu, count, *config.tensors, *config.options, True)
            return params

        return run
    if variant == "unrollopt":
        opt = unrollopt.Adam(params, lr=LR, use_accelerated_op=True)
    else:
        opt = torch.optim.Adam(params, lr=LR, fused=variant == "torch fused", foreach=variant == "torch foreach")

    def run():
        opt.step()
        return params

    return run


def bench_nondiff(total: int, repeats: int) -> list[dict]:
    rows = []
    for tensors in (1, 100):
        row = {"tensors": tensors, "elements": total // tensors * tensors}
        row["bytes"] = NONDIFF_FLOATS * FLOAT32 * row["elements"]
        # Milliseconds per call: interleaved, the load's drift cancels out of the ratios.
        timings = measure_interleaved({v: nondiff_problem(total, tensors, v) for v in NONDIFF_VARIANTS}, repeats, 3)
        for variant, t in timings.items():
            row[variant] = t.ms
            row[variant + "_faults"] = t.faults
        rows.append(row)
    return rows


# --- 7. one outer iteration of examples/maml_sinusoid.py -------------------------------
# Every way of writing it (unrollopt's, hand-written, the peer libraries): bench/maml.py.


def bench_maml(repeats: int) -> list[dict]:
    import maml

    return maml.bench((1, 2), repeats)


if __name__ == "__main__":
    if sys.argv[1:2] == ["peak-memory"]:
        variant, log2, steps, threads = sys.argv[2], *map(int, sys.argv[3:6])
        torch.set_num_threads(threads)
        print(json.dumps(peak_memory_child(variant, log2, steps)))
    else:
        sys.exit(__doc__)
