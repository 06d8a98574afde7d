"""The fused operators' large CPU outputs ask the kernel for transparent huge
pages (README: Benchmarks), unless UNROLLOPT_HUGE_PAGES=0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    try:
        return re.search(r"\[(\w+)\]", THP.read_text()).group(1)
    except (OSError, AttributeError):
        return None


pytestmark = pytest.mark.skipif(
    thp_mode() != "madvise",
    reason=f"transparent huge pages are {thp_mode()!r} here, not 'madvise': the advice changes nothing observable",
)

# Prints whether the mapping that holds the middle of a fused step's 16 MiB
# output may take huge pages (the THPeligible line of /proc/self/smaps).
CHILD = r"""
import torch, unrollopt
n = 1 << 22
opt = unrollopt.adam(1e-3, use_accelerated_op=True)
g = torch.randn(n)
(update,), _ = opt.update((g,), opt.init((g,)), inplace=False)
address = update.data_ptr() + update.nbytes // 2
eligible, inside = None, False
for line in open("/proc/self/smaps"):
    head = line.split()[0]
    if "-" in head and ":" not in head:
        start, end = (int(x, 16) for x in head.split("-"))
        inside = start <= address < end
    elif inside and line.startswith("THPeligible:"):
        eligible = int(line.split()[1])
print(eligible)
"""


def eligible(env_value: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "UNROLLOPT_HUGE_PAGES"}
    if env_value is not None:
        env["UNROLLOPT_HUGE_PAGES"] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_large_outputs_ask_for_huge_pages():
    assert eligible(None) == 1


def test_environment_variable_turns_the_advice_off():
    assert eligible("0") == 0
