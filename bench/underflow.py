"""Meta-gradients where squares underflow, in float32, bfloat16 and float16
against float64: python/tests/test_underflow.py's synthetic table (loss
1/2 sum c_i (theta_i - phi_i)^2, c = [1, s, 10 s, 1000 s], s = 1e-18 ... 1e-25,
1, 2 and 5 steps) for every optimizer, fused and plain. Prints, per optimizer,
path and dtype: the cases whose meta-gradient is not finite where float64's is
(finite and below 1e30), and the largest errors against float64 of the
elements with tiny gradients (relative) and of the first one (c = 1, whose
meta-gradient is set by cancellation: absolute, and relative to its own size).

    python bench/underflow.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python" / "tests"))

from test_underflow import OPTIMIZERS, SCALES, STEPS, synthetic_meta_gradient  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def measure(name: str, fused: bool, dtype) -> dict:
    bad = cases = 0
    tiny_rel = first_abs = first_rel = 0.0
    for scale in SCALES:
        for steps in STEPS:
            exact = synthetic_meta_gradient(name, fused, torch.float64, scale, steps)
            got = synthetic_meta_gradient(name, fused, dtype, scale, steps).to(torch.float64)
            in_range = torch.isfinite(exact) & (exact.abs() < 1e30)
            cases += 1
            if not bool(torch.isfinite(got[in_range]).all()):
                bad += 1
                continue
            err = (got - exact).abs()
            nonzero = exact[1:] != 0
            if bool(nonzero.any()):
                tiny_rel = max(tiny_rel, (err[1:][nonzero] / exact[1:][nonzero].abs()).max().item())
            first_abs = max(first_abs, err[0].item())
            if exact[0] != 0:
                first_rel = max(first_rel, err[0].item() / abs(exact[0].item()))
    return dict(bad=bad, cases=cases, tiny_rel=tiny_rel, first_abs=first_abs, first_rel=first_rel)


def main() -> None:
    print(f"torch {torch.__version__}")
    print(
        "| optimizer | path | dtype | not finite where float64 is | tiny elements, max rel. error "
        "| first element, max abs. error | (rel.) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in OPTIMIZERS:
        for fused in (True, False):
            for label, dtype in DTYPES.items():
                m = measure(name, fused, dtype)
                print(
                    f"| {name} | {'fused' if fused else 'plain'} | {label} | {m['bad']} of {m['cases']} "
                    f"| {m['tiny_rel']:.1e} | {m['first_abs']:.1e} | {m['first_rel']:.1e} |"
                )


if __name__ == "__main__":
    main()
