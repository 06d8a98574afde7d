"""unrollopt's benchmark suite (issue 6): measures only, never passes or fails.

    python bench/run.py [--quick] [--allocator {default,jemalloc,both}] [--threads N] [--note TEXT]

Runs every workload once per allocator, each allocator in its own process
(jemalloc through LD_PRELOAD with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1),
with 2 torch threads; times are medians over repeats after a warm-up, and every
reference is measured in the same run. Writes docs/benchmarks.md and
docs/benchmarks.png (elsewhere with --output / --plot). --quick uses small sizes
and few repeats (a smoke run: about a minute on a quiet machine; it skips torch.compile).
--threads changes the torch thread count (default 2, the issue's setting).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import allocator_in_use, cpu_model, find_jemalloc, jemalloc_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2  # the setting

CONFIGS = {
    "full": dict(
        bandwidth=(26, 11), log2_sizes=[16, 20, 24], repeats_small=9, repeats_large=5,
        model=(50, 64, 32), model_repeats=5, peak=(22, 20), nondiff=(1 << 22, 31),
        unroll=(24, 5), unroll_repeats=3, compile=True, maml_repeats=11,
    ),
    "quick": dict(
        bandwidth=(22, 3), log2_sizes=[12, 16], repeats_small=3, repeats_large=3,
        model=(50, 8, 8), model_repeats=2, peak=(16, 20), nondiff=(1 << 16, 3),
        unroll=(14, 5), unroll_repeats=3, compile=False, maml_repeats=3,
    ),
}  # fmt: skip


def run_workloads(cfg: dict, log=print, threads: int = THREADS) -> dict:
    """Every workload in this process (whatever allocator it runs with)."""
    import torch
    import workloads as w

    import unrollopt

    torch.set_num_threads(threads)
    out = {
        "allocator": allocator_in_use(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "unrollopt": unrollopt.__version__,
    }

    def stage(name, fn, *args):
        start = time.perf_counter()
        out[name] = fn(*args)
        log(f"[{out['allocator']}] {name}: {time.perf_counter() - start:.1f} s")

    stage("bandwidth", w.bench_bandwidth, *cfg["bandwidth"])
    repeats_for = lambda log2: cfg["repeats_small"] if log2 <= 20 else cfg["repeats_large"]  # noqa: E731
    out["steps"] = []
    for optimizer in w.OPTIMIZERS:
        stage("steps_" + optimizer, w.bench_steps, optimizer, cfg["log2_sizes"], repeats_for)
        out["steps"] += out.pop("steps_" + optimizer)
    stage("saved", w.bench_saved_bytes)
    stage("model", w.bench_model, *cfg["model"], cfg["model_repeats"])
    stage("peak", w.bench_peak_memory, *cfg["peak"])
    stage("nondiff", w.bench_nondiff, *cfg["nondiff"])
    stage("maml", w.bench_maml, cfg["maml_repeats"])
    stage("unroll", w.bench_unroll, *cfg["unroll"], cfg["unroll_repeats"], cfg["compile"])
    # The same at 2^16, with 1 thread and with the run's: where a second thread
    # starts to pay for waking it.
    out["unroll_small"] = []
    for k in sorted({1, threads}):
        torch.set_num_threads(k)
        stage("unroll_small_one", w.bench_unroll, 16, cfg["unroll"][1], 3 * cfg["unroll_repeats"], cfg["compile"])
        out["unroll_small"].append({**out.pop("unroll_small_one"), "threads": k})
    torch.set_num_threads(threads)
    # Measured again at the end: other processes' memory traffic changes it.
    # The floors use the higher of the two (the lower floor).
    stage("bandwidth_end", w.bench_bandwidth, *cfg["bandwidth"])
    bw = max(out["bandwidth"]["bandwidth"], out["bandwidth_end"]["bandwidth"])
    for row in out["steps"] + out["nondiff"] + [out["unroll"]]:
        row["floor_ms"] = row["bytes"] / bw * 1e3
    out["config"] = cfg
    return out


def run_allocator(allocator: str, mode: str, threads: int) -> dict | None:
    """The workloads in a subprocess with the allocator's environment; None if
    jemalloc is not installed."""
    env = dict(os.environ)
    if allocator == "jemalloc":
        path = find_jemalloc()
        if path is None:
            print("jemalloc not found (Debian/Ubuntu: apt-get install libjemalloc2): skipping its run", file=sys.stderr)
            return None
        env = jemalloc_env(path)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        subprocess.run([sys.executable, __file__, "--worker", mode, str(result), "--threads", str(threads)],
                       env=env, check=True)  # fmt: skip
        data = json.loads(result.read_text())
    if data["allocator"] != allocator:
        raise RuntimeError(f"asked for the {allocator} allocator but the worker ran with {data['allocator']}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats, no torch.compile")
    parser.add_argument("--allocator", choices=("default", "jemalloc", "both"), default="both")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch intra-op threads (default 2)")
    parser.add_argument("--note", default="", help="a remark written into the report (e.g. machine load)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks.png")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        mode, path = args.worker
        data = run_workloads(CONFIGS[mode], lambda s: print(s, file=sys.stderr, flush=True), args.threads)
        Path(path).write_text(json.dumps(data))
        return

    import report

    mode = "quick" if args.quick else "full"
    allocators = ("default", "jemalloc") if args.allocator == "both" else (args.allocator,)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    results = {a: run_allocator(a, mode, args.threads) for a in allocators}
    # The note itself is printed in the report, not in the command line.
    argv = ["TEXT" if prev == "--note" else a for prev, a in zip([""] + sys.argv[1:], sys.argv[1:])]
    command = shlex.join(["python", "bench/run.py", *argv])
    machine = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "mode": mode,
        "seconds": time.perf_counter() - start,
        "load": (load_start, os.getloadavg()[0]),
        "note": args.note,
        "jemalloc": find_jemalloc(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.markdown(results, machine, args.plot))
    try:
        report.plot(results, args.plot)
        wrote = f"{args.output} and {args.plot}"
    except ImportError as e:  # the tables do not need matplotlib
        print(f"no plot: {e} (pip install matplotlib)", file=sys.stderr)
        wrote = str(args.output)
    print(f"wrote {wrote} ({machine['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
