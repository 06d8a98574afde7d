"""Meta-gradients through long unrolls (issue 27): peak memory and time of
``unrollopt.unroll`` with the full graph and with checkpointed segments.

The workload is data hyper-cleaning: an MLP 64-256-256-10 (85k parameters)
trained by K Adam steps (fused, learned log learning rate) on 512 examples
weighted by sigmoid(phi), in minibatches of 128 taken in turn; the outer loss
is the validation cross-entropy at theta_K, and the meta-gradient is taken with
respect to (phi, log_lr). float32, 1 thread.

Each (K, variant) runs in its own process: a warm-up unroll of a few steps,
then the measured unroll and its meta-gradient (memory: the resident set's
high-water mark above its size just before, after the warm-up; time: forward
plus backward, the median of the repeats).

    python bench/long_unroll.py                  # K = 100, 1000, 10000; prints a table
    python bench/long_unroll.py --ks 100 1000    # fewer
    python bench/long_unroll.py --write-docs     # and docs/benchmarks.md's section 9 + docs/long_unroll.png
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, peak_rss_bytes, rss_bytes  # noqa: E402

import unrollopt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "long_unroll.png"
SECTION = "## 9. Long unrolls: `unrollopt.unroll` with checkpointed segments (issue 27)"
SIZES = (64, 256, 256, 10)
N_TRAIN, N_VAL, BATCH = 512, 256, 128
FULL_GRAPH_MAX_K = 1000  # beyond, the full graph needs tens of GB
FIXED_S = 20


PEERS = ("hand-written", "TorchOpt")  # full-graph loops of other kinds, K <= FULL_GRAPH_MAX_K


def variants(k: int, peers: bool = True) -> list[str]:
    out = ["full graph"] if k <= FULL_GRAPH_MAX_K else []
    if peers and k <= FULL_GRAPH_MAX_K:
        out += [p for p in PEERS if p != "TorchOpt" or _has_torchopt()]
    return out + ["sqrt", f"s={FIXED_S}"]


def _has_torchopt() -> bool:
    try:
        import torchopt  # noqa: F401
    except ImportError:
        return False
    return True


def checkpoint_of(variant: str):
    if variant in ("full graph", "sqrt"):
        return None if variant == "full graph" else "sqrt"
    return int(variant.split("=")[1])


def problem(dtype: torch.dtype = torch.float32, seed: int = 0):
    """(theta0, phi, log_lr, inner loss_fn(params, t), outer loss(params)) of the hyper-cleaning workload."""
    g = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(a, b, generator=g, dtype=dtype) / a**0.5 for a, b in zip(SIZES[:-1], SIZES[1:])]

    def labels(x):
        h = x
        for w in teacher[:-1]:
            h = torch.tanh(h @ w)
        return (h @ teacher[-1]).argmax(1)

    x_train = torch.randn(N_TRAIN, SIZES[0], generator=g, dtype=dtype)
    y_train = labels(x_train)
    flip = torch.rand(N_TRAIN, generator=g) < 0.4
    y_train = torch.where(flip, torch.randint(0, SIZES[-1], (N_TRAIN,), generator=g), y_train)
    x_val = torch.randn(N_VAL, SIZES[0], generator=g, dtype=dtype)
    y_val = labels(x_val)
    theta0 = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        theta0 += [torch.randn(b, a, generator=g, dtype=dtype) * (2 / a) ** 0.5, torch.zeros(b, dtype=dtype)]
    phi = torch.zeros(N_TRAIN, dtype=dtype, requires_grad=True)
    log_lr = torch.tensor(-6.0, dtype=dtype, requires_grad=True)

    def forward(params, x):
        for i in range(0, len(params) - 2, 2):
            x = F.relu(F.linear(x, params[i], params[i + 1]))
        return F.linear(x, params[-2], params[-1])

    def make_inner(weights):
        def inner(params, t):
            start = (t % (N_TRAIN // BATCH)) * BATCH
            rows = slice(start, start + BATCH)
            ce = F.cross_entropy(forward(params, x_train[rows]), y_train[rows], reduction="none")
            return (weights[rows] * ce).mean()

        return inner

    def outer(params):
        return F.cross_entropy(forward(params, x_val), y_val)

    return theta0, phi, log_lr, make_inner, outer


def meta_gradient(k: int, variant: str, dtype=torch.float32):
    theta0, phi, log_lr, make_inner, outer = problem(dtype)
    weights = torch.sigmoid(phi)
    inner = make_inner(weights)
    if variant == "hand-written":  # textbook Adam in torch ops, the loop a user writes
        params = [p.requires_grad_() for p in theta0]
        lr = log_lr.exp()
        mu, nu = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
        for t in range(1, k + 1):
            grads = torch.autograd.grad(inner(params, t - 1), params, create_graph=True)
            mu = [0.9 * m + 0.1 * g for m, g in zip(mu, grads)]
            nu = [0.999 * v + 0.001 * g * g for v, g in zip(nu, grads)]
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            params = [p - lr * (m / c1) / ((v / c2).sqrt() + 1e-8) for p, m, v in zip(params, mu, nu)]
    elif variant == "TorchOpt":
        import torchopt

        params = tuple(p.requires_grad_() for p in theta0)
        opt = torchopt.adam(lr=log_lr.exp())
        state = opt.init(params)
        for t in range(k):
            grads = torch.autograd.grad(inner(params, t), params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = torchopt.apply_updates(params, updates, inplace=False)
    else:
        opt = unrollopt.adam(log_lr.exp(), use_accelerated_op=True)
        params, _ = unrollopt.unroll(inner, theta0, opt, k, checkpoint=checkpoint_of(variant))
    return torch.autograd.grad(outer(params), [phi, log_lr])


def second_order(repeats: int = 5, calls: int = 20) -> dict:
    """One step's second-order terms, the backward of a step needs for a cotangent gbar at its
    gradient: (H_theta_theta gbar, H_phi_theta gbar), by reverse-over-reverse (the tape of
    autograd.grad(create_graph=True), what unroll does) and forward-over-reverse (torch.func.jvp of
    torch.func.grad, MixFlow-MG's way), on one minibatch of the workload: CPU time per call (the
    minimum over the repeats) and the largest difference."""
    from torch.func import grad, jvp

    torch.set_num_threads(1)
    theta0, phi, _, make_inner, _ = problem()
    gen = torch.Generator().manual_seed(1)
    gbar = [torch.randn(p.shape, generator=gen) for p in theta0]

    def loss(params, phi):
        return make_inner(torch.sigmoid(phi))(params, 0)

    def reverse_over_reverse():
        t = [p.detach().requires_grad_() for p in theta0]
        f = phi.detach().requires_grad_()
        g = torch.autograd.grad(loss(t, f), t, create_graph=True)
        return torch.autograd.grad(g, (*t, f), gbar)

    def forward_over_reverse():
        _, (h_theta, h_phi) = jvp(grad(loss, argnums=(0, 1)), (theta0, phi.detach()), (gbar, torch.zeros_like(phi)))
        return (*h_theta, h_phi)

    fns = {"reverse-over-reverse": reverse_over_reverse, "forward-over-reverse": forward_over_reverse}
    a, b = (fn() for fn in fns.values())
    diff = max(((u - v).abs().max() / v.abs().max().clamp_min(1e-30)).item() for u, v in zip(a, b))
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.process_time()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.process_time() - t0) / calls)
    return {"ms": {k: v * 1e3 for k, v in best.items()}, "rel_diff": diff}


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    """Resets VmHWM to the current resident set (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(variant: str, k: int, repeats: int) -> dict:
    """One (K, variant), in this process."""
    torch.set_num_threads(1)
    warm = "s=3" if variant in ("sqrt", f"s={FIXED_S}") else variant
    meta_gradient(10, warm)  # first-call costs: dispatch caches, the allocator's pools
    times, cpu, peaks, grads = [], [], [], None
    for _ in range(repeats):
        _trim()
        if not _reset_peak() and peaks:
            break  # (without clear_refs the high-water mark of the first run stays)
        before = rss_bytes()
        t0, c0 = time.perf_counter(), time.process_time()
        grads = meta_gradient(k, variant)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        peaks.append(peak_rss_bytes() - before)
        del before
    g_phi, g_lr = grads
    return {
        "variant": variant,
        "k": k,
        "seconds": statistics.median(times),
        "times": times,
        "cpu_seconds": statistics.median(cpu),
        "cpu_times": cpu,
        "peak": max(peaks),
        "peaks": peaks,
        "grad_phi": g_phi.tolist(),
        "grad_log_lr": g_lr.item(),
    }


def run_child(variant: str, k: int, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", variant, str(k), str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"variant": variant, "k": k, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def agreement(rows: list[dict]) -> None:
    """Each row's meta-gradient against the full graph's (or sqrt's) at the same K: the largest
    difference relative to the largest entry."""
    by_k: dict = {}
    for r in rows:
        if "error" not in r:
            by_k.setdefault(r["k"], []).append(r)
    for group in by_k.values():
        ref = group[0]
        ref_g = torch.tensor(ref["grad_phi"] + [ref["grad_log_lr"]], dtype=torch.float64)
        for r in group:
            g = torch.tensor(r["grad_phi"] + [r["grad_log_lr"]], dtype=torch.float64)
            r["vs"] = ref["variant"]
            r["nan"] = int(g.isnan().sum())
            r["rel_diff"] = ((g - ref_g).abs().max() / ref_g.abs().max()).item()


def fmt_mb(b: float) -> str:
    return f"{b / 1e6:,.0f} MB"


def table(rows: list[dict]) -> str:
    lines = [
        "| K | variant | peak memory | memory / full graph | wall time | CPU time | CPU time / full graph "
        "| meta-gradient vs first row |",
        "|---|---|---|---|---|---|---|---|",
    ]
    full = {r["k"]: r for r in rows if r["variant"] == "full graph" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['k']:,} | {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        f = full.get(r["k"])
        other = f is not None and r is not f
        mem_ratio = ""
        if other:
            mem_ratio = f"1/{f['peak'] / r['peak']:.1f}" if r["peak"] < f["peak"] else f"{r['peak'] / f['peak']:.1f}x"
        time_ratio = f"{r['cpu_seconds'] / f['cpu_seconds']:.2f}x" if other else ""
        diff = f"{r['rel_diff']:.1e}" if r.get("vs") and r["vs"] != r["variant"] else ""
        if r.get("nan"):
            diff = f"NaN in {r['nan']} of {len(r['grad_phi']) + 1} entries"
        lines.append(
            f"| {r['k']:,} | {r['variant']} | {fmt_mb(r['peak'])} | {mem_ratio} | {r['seconds']:.2f} s "
            f"| {r['cpu_seconds']:.2f} s | {time_ratio} | {diff} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """The issue's targets against the rows."""
    get = {(r["k"], r["variant"]): r for r in rows if "error" not in r}
    out = []
    full, sq = get.get((1000, "full graph")), get.get((1000, "sqrt"))
    if full and sq:
        out.append(
            f"Targets of issue 27: at K = 1,000, `sqrt` holds {fmt_mb(sq['peak'])} against the full graph's "
            f"{fmt_mb(full['peak'])} (1/{full['peak'] / sq['peak']:.1f}; target at most 1/15) in "
            f"{sq['cpu_seconds'] / full['cpu_seconds']:.2f}x its CPU time "
            f"({sq['seconds'] / full['seconds']:.2f}x its wall time; target at most 1.4x)."
        )
    big = [r for r in rows if r["k"] == 10000 and "error" not in r]
    if big:
        worst = max(big, key=lambda r: r["peak"])
        out.append(
            f"At K = 10,000 every checkpointed setting runs in under 1 GB (at most {fmt_mb(worst['peak'])}, "
            f"`{worst['variant']}`)."
            if worst["peak"] < 1e9
            else f"At K = 10,000 `{worst['variant']}` needs {fmt_mb(worst['peak'])}: above the 1 GB target."
        )
    return " ".join(out)


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = []
    for r in rows:
        if r["variant"] not in names:
            names.append(r["variant"])
    for name in names:
        pts = sorted((r["k"], r["peak"] / 1e6) for r in rows if r["variant"] == name and "error" not in r)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1000, color="gray", ls="--", lw=0.8)
    ax.text(ax.get_xlim()[0] * 1.1, 1100, "1 GB", color="gray", fontsize=8)
    ax.set_xlabel("inner steps K")
    ax.set_ylabel("peak memory above the start (MB)")
    ax.set_title("Meta-gradient through K Adam steps (hyper-cleaning MLP, float32)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_docs(rows: list[dict], machine: str, second: dict | None = None) -> None:
    text = DOCS.read_text()
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        tail = text[nxt + 1 :] if nxt >= 0 else ""
        text = text[:start].rstrip("\n") + "\n\n"
    else:
        tail = ""
        text = text.rstrip("\n") + "\n\n"
    body = [
        SECTION,
        "",
        "Data hyper-cleaning: an MLP 64-256-256-10 (85k parameters) trained by K Adam steps with a "
        "learned log learning rate on 512 examples weighted by sigmoid(phi), minibatches of 128 in turn; "
        "outer loss the validation cross-entropy at theta_K; meta-gradient with respect to (phi, log_lr). "
        "`full graph` is `unrollopt.unroll(..., checkpoint=None)` with the fused Adam (the plain loop), "
        "`hand-written` the same loop with Adam's equations in torch ops, `TorchOpt` the loop with "
        "`torchopt.adam` (0.7.3); `sqrt` is `unroll`'s default (segments of ceil(sqrt(K)) steps) and "
        f"`s={FIXED_S}` segments of {FIXED_S} steps, both fused. The full-graph loops run up to K = 1,000 "
        "(beyond, they need tens of GB). Each row runs in its own process: peak memory is the resident "
        "set's high-water mark above its size just before the unroll (after a warm-up unroll of 10 steps); "
        "time is the unroll plus the meta-gradient's backward, wall and CPU time of the process (the "
        "machine was shared with other jobs, so CPU time is the steadier one; medians of 3 repeats up to "
        "K = 1,000, one run beyond); the ratios are to the `full graph` row's CPU time and memory. The "
        "last column is the largest difference of the meta-gradient (phi and log_lr) from the first row's "
        "at the same K, relative to its largest entry (float32: the segments sum the per-step "
        "contributions in another order). The hand-written and TorchOpt loops give NaN meta-gradients "
        "here: the derivative of sqrt at a second moment of exactly 0 (the parameters of ReLU units that "
        "are dead on a minibatch get gradients of exactly 0), where unrollopt's backward gives the finite "
        "limit.",
        "",
        table(rows),
        "",
        machine,
        "",
        summary(rows),
        "",
        *([second_order_text(second), ""] if second else []),
        f"![peak memory against K]({PLOT.name})",
        "",
    ]
    DOCS.write_text(text + "\n".join(body) + ("\n" + tail if tail else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-peers", action="store_true", help="without the hand-written and TorchOpt loops")
    parser.add_argument("--from-json", type=Path, help="report the rows of an earlier --json run (no measuring)")
    parser.add_argument("--second-order", action="store_true", help="also time one step's second-order terms")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "K", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, k, repeats = args.child
        print(json.dumps(child(variant, int(k), int(repeats))))
        return
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        if args.second_order:
            saved["second_order"] = second_order()
        report(saved["rows"], saved["machine"], args, saved.get("second_order"))
        return
    load0 = os.getloadavg()[0]
    rows = []
    for k in args.ks:
        for variant in variants(k, not args.no_peers):
            row = run_child(variant, k, 3 if k <= FULL_GRAPH_MAX_K else 1)
            rows.append(row)
            if "error" in row:
                print(f"K={k} {variant}: failed: {row['error']}", flush=True)
            else:
                print(
                    f"K={k} {variant}: {fmt_mb(row['peak'])}, {row['seconds']:.2f} s wall {row['times']}, "
                    f"{row['cpu_seconds']:.2f} s CPU {row['cpu_times']}",
                    flush=True,
                )
    machine = (
        f"{cpu_model()}, 1 thread; torch {torch.__version__}; load average {load0:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after."
    )
    report(rows, machine, args, second_order() if args.second_order else None)


def report(rows: list[dict], machine: str, args, second: dict | None = None) -> None:
    agreement(rows)
    print(table(rows))
    print(machine)
    if second:
        print(second_order_text(second))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": machine, "second_order": second}))
    if args.write_docs:
        plot(rows, PLOT)
        write_docs(rows, machine, second)


def second_order_text(second: dict) -> str:
    ror, fwd = second["ms"]["reverse-over-reverse"], second["ms"]["forward-over-reverse"]
    return (
        "Second-order terms without the double-backward tape (issue 27, item 3): the backward of one step "
        "needs, for the cotangent at its gradient, H_theta_theta gbar and H_phi_theta gbar. On one minibatch "
        f"of this workload (`--second-order`), reverse-over-reverse (the tape of `autograd.grad(create_graph=True)`, "
        f"what `unroll` recomputes) takes {ror:.2f} ms of CPU time and forward-over-reverse "
        f"(`torch.func.jvp` of `torch.func.grad`, MixFlow-MG's way) {fwd:.2f} ms "
        f"({fwd / ror:.1f}x; the two agree to {second['rel_diff']:.0e}, relative). With segments recomputed in "
        "the backward the tape lives for one segment only, so forward-over-reverse could save at most that "
        "part of one segment's graph (its memory was not measured here), at the cost of a slower backward: "
        "not shipped."
    )


if __name__ == "__main__":
    main()
