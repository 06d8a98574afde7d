"""Smoke test of the benchmark suite (bench/): its workloads run at tiny sizes,
and the variants it times against each other compute the same thing (never a
check on time)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import unrollopt

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import workloads as w  # noqa: E402
from run import run_workloads  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-6)


def assert_all_close(results: dict, rtol: float, atol: float) -> None:
    """Every variant's tensors equal the first variant's."""
    (first, expected), *others = results.items()
    for name, actual in others:
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            if a is None:  # torch.optim's RMSprop gives no lr gradient
                continue
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name} vs {first}: {m}")


@pytest.mark.parametrize("optimizer", list(w.OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_variants_agree(optimizer, dtype):
    """fused, plain and torch.optim give the same gradients with respect to the
    gradient, the states and the lr (in float32 up to torch.optim's other order
    of operations)."""
    results = {v: w.step_problem(optimizer, 100, v, dtype)() for v in w.STEP_VARIANTS}
    assert all(g.abs().sum() > 0 for g in results["fused"])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-4)
    assert_all_close(results, **tol)


def test_constant_lr_variants_give_the_other_gradients():
    fused = w.step_problem("adam", 100, "fused")()
    constant_lr = w.step_problem("adam", 100, w.NO_LR_GRAD)()
    assert_all_close({"fused": fused[:-1], w.NO_LR_GRAD: constant_lr}, rtol=0, atol=0)
    fused = w.unroll_problem(64, 2, "fused")()
    assert_all_close({"fused": fused[:1], w.NO_LR_GRAD: w.unroll_problem(64, 2, w.NO_LR_GRAD)()}, rtol=0, atol=0)


def test_unroll_variants_agree():
    results = {v: w.unroll_problem(256, 5, v)() for v in ("fused", "plain", "hand-written")}
    assert_all_close(results, rtol=1e-4, atol=1e-5)


def test_model_variants_agree():
    results = {v: w.model_problem(3, 4, 5, v)() for v in ("fused", "plain", "torch.func")}
    assert len(results["fused"]) == 6
    assert_all_close(results, rtol=1e-3, atol=1e-6)


def test_nondiff_variants_agree():
    results = {v: [p.detach() for p in w.nondiff_problem(300, 3, v)()] for v in w.NONDIFF_VARIANTS}
    assert_all_close(results, **TOL)


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_maml_variants_agree(inner):
    """Every way bench/maml.py writes the MAML iteration (unrollopt's loop and
    vmap, fused and plain, hand-written, the peers where installed) gives the
    same float32 meta-gradient on the same tasks."""
    import maml

    results = {name: run() for name, run in maml.variants(maml.load_example(), inner).items()}
    assert len(results) >= 6
    if inner == "adam":
        # The hand-written step and TorchOpt's are NaN here (sqrt(v)'s derivative
        # at a zero second moment, a ReLU unit without gradient, times a zero
        # first moment); higher masks those NaNs with hooks, which changes the
        # gradient. unrollopt's four agree and are finite.
        results = {k: v for k, v in results.items() if k.startswith("unrollopt")}
        assert len(results) == 4 and all(torch.isfinite(g).all() for v in results.values() for g in v)
    assert_all_close(results, rtol=1e-4, atol=1e-6)


def test_jax_peer_runs_or_says_why_not():
    """bench/maml_jax.py (JAX + optax, the compiled rows' peer) gives a time for
    each inner optimizer where jax and optax are installed; where not, the
    compiled rows get the reason instead of failing."""
    import maml_compiled

    got = maml_compiled.jax_timings(sys.executable, threads=1, repeats=2)
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        assert "No module named" in got["missing"], got
        return
    assert got["sgd"]["ms"] > 0 and got["adam"]["ms"] > 0 and got["adam"]["first_call_s"] > 0


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_conv4_variants_agree(inner):
    """bench/conv4.py's variants (a narrow Conv4, 2 inner steps) give the same
    meta-gradient: float32 through two second-order steps of a conv net, so
    agreement to about 1e-4 of the largest entry."""
    import conv4

    results = {name: run() for name, run in conv4.variants(inner, channels=4, inner_steps=2).items()}
    assert len(results) >= 4
    if inner == "adam":  # as in the MAML test: the hand-written sqrt's NaN at a zero moment
        results = {k: v for k, v in results.items() if k.startswith("unrollopt")}
        assert all(torch.isfinite(g).all() for v in results.values() for g in v)
    assert_all_close(results, rtol=1e-4, atol=1e-5)


def test_fused_steps_keep_no_intermediates_for_backward():
    """The fused backward recomputes the step from its inputs: the only
    full-size tensors its graph holds are the step's inputs. The plain paths of
    the adaptive optimizers keep intermediates (the saved-tensor hooks see
    them, so the count is not vacuous)."""
    rows = {r["optimizer"]: r for r in w.bench_saved_bytes(log2=8)}
    for name, row in rows.items():
        assert row["fused_intermediates"] == 0, name
        assert 0 < row["fused"] <= 4 * 5, name  # g, p and at most 3 states, float32
    for name in ("adam", "adamw", "adamax", "radam", "nadam", "rmsprop", "adagrad", "adadelta"):
        assert rows[name]["plain_intermediates"] > 0, name


def test_suite_end_to_end(tmp_path):
    """Every workload through run_workloads at tiny sizes, then the report."""
    cfg = dict(
        bandwidth=(12, 2), log2_sizes=[8], repeats_small=2, repeats_large=2, model=(2, 4, 4), model_repeats=2,
        peak=(10, 3), nondiff=(1 << 10, 2), unroll=(8, 2), unroll_repeats=2, compile=False, maml_repeats=1,
    )  # fmt: skip
    result = run_workloads(cfg, log=lambda s: None)
    assert result["bandwidth"]["bandwidth"] > 0
    assert {s["optimizer"] for s in result["steps"]} == set(w.OPTIMIZERS)
    assert all(p["unroll"] >= 0 for p in result["peak"])
    machine = dict(cpu="cpu", cpus=2, date="today", command="python bench/run.py", mode="test", seconds=1.0, load=(0.0, 0.0),
                   note="a note", jemalloc=None)  # fmt: skip
    text = report.markdown({"default": result, "jemalloc": None}, machine, tmp_path / "b.png")
    assert "## Targets of issue 6" in text and "a note" in text and "**not installed**" in text
    assert "keeps for its backward" in text
    report.plot({"default": result}, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0


def test_exact_hand_written_adam_differentiates_as_unrollopt():
    """bench/maml_compiled.py's hand-written Adam with an exact root (the
    compiled rows' comparator with unrollopt's guarantee) gives the derivative
    unrollopt gives where a square underflows: one step from a zero second
    moment with |g| ~ 1e-22, where float32's nu' is 0 and float64's ~1e-47.
    The cotangent of the previous second moment is then large but finite
    (float64's, to a few dozen float32 roundings), where the safe root's is 0."""
    import maml_compiled as mc

    gen = torch.Generator().manual_seed(0)
    g, p, b = (torch.randn(64, generator=gen, dtype=torch.float64) for _ in range(3))
    g[:32] *= 1e-22

    def nu_cotangent(step, dtype):
        nu = torch.zeros(64, dtype=dtype, requires_grad=True)
        if step == "unrollopt":
            opt = unrollopt.adam(0.01, use_accelerated_op=True)
            state = opt.init({"w": p.to(dtype)})._replace(nu={"w": nu})
            updates, _ = opt.update({"w": g.to(dtype)}, state, inplace=False)
            new = p.to(dtype) + updates["w"]
        else:
            new, _ = step({"w": p.to(dtype)}, {"w": g.to(dtype)}, ({"w": torch.zeros_like(nu)}, {"w": nu}), 0.01, 1)
            new = new["w"]
        return torch.autograd.grad((b.to(dtype) * new).sum(), nu)[0].double()

    expected = nu_cotangent(mc.adam_step_safe, torch.float64)  # nothing underflows in float64
    assert expected[:32].abs().min() > 1e10
    for step in (mc.adam_step_exact, "unrollopt"):
        torch.testing.assert_close(nu_cotangent(step, torch.float32), expected, rtol=64 * 2.0**-24, atol=0.0)
    assert (nu_cotangent(mc.adam_step_safe, torch.float32)[:32] == 0).all()
