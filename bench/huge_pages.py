"""Whether the fused operators should ask for transparent huge pages: the
benchmark's anchor workload (the meta-gradient of a 5-step unrolled Adam at
2^24 parameters, bench/workloads.py's unroll) with UNROLLOPT_HUGE_PAGES=1 and
=0, each in its own process (the setting is read once per process), the two
alternating, with glibc's allocator; torch.compile and the hand-written loop
are timed in the same processes as the references.

    python bench/huge_pages.py [--log2 24] [--rounds 3] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import allocator_in_use, cpu_model  # noqa: E402

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
DEFRAG = Path("/sys/kernel/mm/transparent_hugepage/defrag")  # whether a fault waits for compaction
VARIANTS = ("fused", "torch.compile", "hand-written")


def child(log2: int, repeats: int, threads: int) -> dict:
    import workloads as w

    torch.set_num_threads(threads)
    out = w.bench_unroll(log2, 5, repeats, with_compile=True)
    return {v: out[v] for v in VARIANTS} | {"fused_faults": out.get("fused_faults"), "allocator": allocator_in_use()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.log2, args.repeats, args.threads)))
        return
    load = os.getloadavg()[0]
    runs: dict = {"1": [], "0": []}
    for _ in range(args.rounds):
        for setting in runs:
            env = {**os.environ, "UNROLLOPT_HUGE_PAGES": setting}
            command = [sys.executable, __file__, "--child", "--log2", str(args.log2), "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]  # fmt: skip
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            runs[setting].append(json.loads(result.stdout.strip().splitlines()[-1]))
    thp = THP.read_text().strip() if THP.exists() else "absent"
    defrag = DEFRAG.read_text().strip() if DEFRAG.exists() else "absent"
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, {args.threads} threads; torch {torch.__version__}; transparent "
          f"huge pages: {thp}, defrag: {defrag}; allocator: {runs['1'][0]['allocator']}; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; 2^{args.log2} parameters, 5 steps; medians of {args.rounds} processes "
          f"per setting (each the median of {args.repeats} calls), alternating\n")  # fmt: skip
    print("| UNROLLOPT_HUGE_PAGES | fused ms | torch.compile ms | hand-written ms | fused / compile | fused faults |")
    print("|---|---|---|---|---|---|")
    for setting, rows in runs.items():
        med = {v: statistics.median(r[v] for r in rows) for v in VARIANTS}
        faults = statistics.median(r["fused_faults"] for r in rows)
        print(f"| {setting} | {med['fused']:.0f} | {med['torch.compile']:.0f} | {med['hand-written']:.0f} | "
              f"{med['fused'] / med['torch.compile']:.2f} | {faults:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
