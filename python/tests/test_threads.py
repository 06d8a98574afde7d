"""The CPU kernels run on torch's intra-op threads (at::parallel_for is inline
OpenMP in torch's headers: a build without OpenMP would silently run them on one
thread)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import unrollopt  # noqa: F401  (registers the operators)

TASKS = Path("/proc/self/task")


def cpu_ticks_per_thread() -> dict[str, int]:
    """utime + stime (clock ticks) of every thread of this process."""
    ticks = {}
    for task in TASKS.iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        ticks[task.name] = int(fields[11]) + int(fields[12])
    return ticks


@pytest.mark.skipif(not TASKS.exists(), reason="reads /proc/self/task (Linux)")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_a_large_step_runs_on_two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        n = 1 << 23
        gen = torch.Generator().manual_seed(0)
        params, grads = [torch.randn(n, generator=gen)], [torch.randn(n, generator=gen)]
        states = [torch.rand(n, generator=gen) for _ in range(2)]
        hyper = [torch.tensor(v, dtype=torch.float64) for v in (1e-3, 0.9, 0.999, 0.0)]
        step = torch.tensor(3.0, dtype=torch.float64)
        op = torch.ops.unrollopt.adam_
        op(params, grads, states[:1], states[1:], step, *hyper, 1e-8, 0.0, False, True)  # starts the pool
        before = cpu_ticks_per_thread()
        for _ in range(40):
            op(params, grads, states[:1], states[1:], step, *hyper, 1e-8, 0.0, False, True)
        after = cpu_ticks_per_thread()
    finally:
        torch.set_num_threads(old)
    used = sorted((after[t] - before.get(t, 0) for t in after), reverse=True)
    # Both halves of every call ran, each on its own thread: the second-busiest
    # thread did a real share of the work.
    assert used[0] > 0
    assert used[1] >= 0.25 * used[0], used[:4]
