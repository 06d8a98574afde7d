"""The README's Python snippets run as written (each in a fresh namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index):
    torch.manual_seed(index)
    namespace: dict = {"__name__": f"readme_snippet_{index}"}
    exec(compile(SNIPPETS[index], f"README.md python snippet {index}", "exec"), namespace)
    # Each computes a meta-gradient: it exists and is finite.
    found = [v for k, v in namespace.items() if k in ("lr_grad", "meta_grads")]
    for value in found:
        for t in value.values() if isinstance(value, dict) else [value]:
            assert torch.isfinite(t).all()
    if "net" in namespace and "meta_grads" not in namespace:
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in namespace["net"].parameters())
