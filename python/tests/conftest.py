"""The fixtures of the unrollopt test suite (its helpers and references are in
references.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["plain", "fused"])
def fused(request) -> bool:
    return request.param
