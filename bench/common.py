"""Shared measurement helpers of the benchmark suite: medians of repeats with a
warm-up, page-fault counts, peak memory, the copy-bandwidth floor, and which
allocator this process runs with."""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)
# Keep freed pages instead of returning them to the kernel: the caching
# behaviour the issue asks for (no page faults on reuse).
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
FLOAT32 = 4  # bytes


def find_jemalloc() -> str | None:
    """Path of Debian's libjemalloc.so.2, or None (install: apt-get install libjemalloc2)."""
    return next((p for p in JEMALLOC_CANDIDATES if os.path.exists(p)), None)


def jemalloc_env(path: str) -> dict[str, str]:
    return dict(os.environ, LD_PRELOAD=path, MALLOC_CONF=JEMALLOC_CONF)


def allocator_in_use() -> str:
    """'jemalloc' if it is mapped into this process (the preload worked), else 'default'."""
    return "jemalloc" if "jemalloc" in Path("/proc/self/maps").read_text() else "default"


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Timing:
    seconds: float  # median over the repeats
    faults: float  # median minor page faults per call (each one maps a fresh 4 KiB page)
    repeats: int

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


def measure(fn, repeats: int, warmup: int = 1) -> Timing:
    """Median wall time and minor page faults of ``fn()`` over ``repeats`` calls,
    after ``warmup`` untimed calls (first-call costs: dispatch caches, allocator pools)."""
    return measure_interleaved({"fn": fn}, repeats, warmup)["fn"]


def measure_interleaved(fns: dict, repeats: int, warmup: int = 1, block: int = 1) -> dict:
    """``measure`` for several callables at once, in turns of ``block`` timed
    calls each, ``repeats`` calls of each in all, so that a change in the
    machine's load affects them alike. A block of more than one call measures
    what a loop that runs one of them sees: its code and data in the caches
    (a call of each in turn measures them evicted by the others' on small
    workloads, where that is much of the time)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    gc.collect()
    times: dict = {name: [] for name in fns}
    faults: dict = {name: [] for name in fns}
    for _ in range(-(-repeats // block)):
        for name, fn in fns.items():
            for _ in range(block):
                f0 = minor_faults()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                faults[name].append(minor_faults() - f0)
    return {
        name: Timing(statistics.median(times[name]), statistics.median(faults[name]), len(times[name])) for name in fns
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The resident set's high-water mark (VmHWM) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()
