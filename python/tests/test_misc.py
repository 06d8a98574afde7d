"""accelerated_op_available, the two CPU kernel variants, and thread-count
independence."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from op_cases import Grouped
from references import F64, gen, rand_pos, randn, unrollopt

# --- accelerated_op_available -------------------------------------------------------


@pytest.mark.parametrize(
    "devices",
    [None, "cpu", torch.device("cpu"), ["cpu"], ("cpu", torch.device("cpu")), iter(["cpu"]), "meta", ["cpu", "meta"]],
    ids=["None", "str", "device", "list", "tuple", "iterator", "meta", "cpu+meta"],
)
def test_accelerated_op_available_on_cpu(devices):
    """The CPU (what None means) and meta (the shape kernels torch.compile traces with)."""
    assert unrollopt.accelerated_op_available(devices) is True


@pytest.mark.parametrize(
    "devices",
    ["not-a-device", [], True, False, object(), 1.5, "mps", b"cpu", ["cpu", "not-a-device"], -1],
    ids=["garbage", "empty", "True", "False", "object", "float", "mps", "bytes", "cpu+garbage", "int-1"],
)
def test_accelerated_op_not_available(devices):
    assert unrollopt.accelerated_op_available(devices) is False


@pytest.mark.parametrize(
    "devices",
    ["cuda", "cuda:0", 0, 3, ["cpu", "cuda"], torch.device("cuda", 1)],
    ids=["cuda", "cuda:0", "int0", "int3", "cpu+cuda", "device-cuda1"],
)
def test_accelerated_op_not_available_without_cuda(devices):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    assert unrollopt.accelerated_op_available(devices) is False


# --- the two CPU kernel variants ---------------------------------------------------

# Per operator: which states (from kernel_inputs), hyperparameters and options;
# between them every coefficient of every rule is live.
KERNEL_OPS = {
    "adam": (("m", "v"), (0.01, 0.9, 0.999, 0.05), [1e-6, 1e-8, False]),
    "sgd": ((), (0.01, 0.05), [True, False]),
    "sgd_momentum": (("m",), (0.01, 0.9, 0.1, 0.05), [False, True]),
}


def compute(d):
    """Every operator's forward (three dtypes) and backward (float64) on the
    inputs ``d``. Also run in a subprocess, from its source: only torch here."""
    import torch

    out = {}
    for op, (state_keys, hyper, options) in d["ops"].items():
        hyper = [torch.tensor(h, dtype=torch.float64) for h in hyper]
        ns = len(state_keys)
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            g, p = ([t.to(dtype) for t in d[k]] for k in ("g", "p"))
            states = [[t.to(dtype) for t in d[k]] for k in state_keys]
            r = getattr(torch.ops.unrollopt, op)(g, *states, p, d["step"], *hyper, *options)
            out[(op, str(dtype))] = r if ns == 0 else [t for ts in r for t in ts]  # updates, then states
        states = [d[k] for k in state_keys]
        cs = [d[k] for k in ("cm", "cv")[:ns]]
        mask = [True] * (2 + ns + len(hyper))
        r = getattr(torch.ops.unrollopt, op + "_backward")(
            d["cu"], *cs, d["g"], *states, d["p"], d["step"], *hyper, *options, mask
        )
        out[(op, "backward")] = (r[0], [t for ts in r[1 : 1 + ns] for t in ts], r[1 + ns], list(r[2 + ns :]))
    return out


SUBPROCESS_SCRIPT = (
    "import sys, torch, unrollopt\n"
    "torch.set_num_threads(1)\n"
    + textwrap.dedent(inspect.getsource(compute))
    + "torch.save(compute(torch.load(sys.argv[1])), sys.argv[2])\n"
)


def kernel_inputs():
    g = gen(11)
    sizes = [1, 7, 1000, 20001]
    return dict(
        g=[randn(g, n) for n in sizes],
        m=[randn(g, n) for n in sizes],
        v=[rand_pos(g, n) for n in sizes],
        p=[randn(g, n) for n in sizes],
        cu=[randn(g, n) for n in sizes],
        cm=[randn(g, n) for n in sizes],
        cv=[randn(g, n) for n in sizes],
        step=torch.tensor(5),
        ops=KERNEL_OPS,
    )


def run_subprocess(tmp_path, env_value):
    d = kernel_inputs()
    inp, outp = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save(d, inp)
    env = dict(os.environ)
    env.pop("UNROLLOPT_CPU_CAPABILITY", None)
    if env_value is not None:
        env["UNROLLOPT_CPU_CAPABILITY"] = env_value
    subprocess.run([sys.executable, "-c", SUBPROCESS_SCRIPT, str(inp), str(outp)], env=env, check=True, timeout=300)
    return d, torch.load(outp)


def compare_kernels(a, b, exact):
    assert a.keys() == b.keys() == {(op, k) for op in KERNEL_OPS for k in (
        "torch.float64", "torch.float32", "torch.bfloat16", "backward")}  # fmt: skip
    for op in KERNEL_OPS:
        for key in ("torch.float64", "torch.float32", "torch.bfloat16"):
            assert len(a[op, key]) == len(b[op, key]) == 4 * (1 + len(KERNEL_OPS[op][0]))
            for x, y in zip(a[op, key], b[op, key]):
                if exact:
                    assert torch.equal(x, y), (op, key)
                elif key == "torch.float64":
                    # FMA or not: a few roundings of the operands, which can
                    # cancel (SGD's momentum), hence also relative to the scale.
                    torch.testing.assert_close(x, y, rtol=1e-14, atol=max(1e-17, 1e-15 * float(y.abs().max())))
                elif key == "torch.float32":
                    torch.testing.assert_close(x, y, rtol=1e-6, atol=max(1e-8, 1e-6 * float(y.abs().max())))
                else:  # one bfloat16 rounding of float32 values that agree to ~1e-6
                    torch.testing.assert_close(x.float(), y.float(), rtol=2**-7, atol=1e-6)
        ba, bb = a[op, "backward"], b[op, "backward"]
        assert [len(t) for t in ba] == [len(t) for t in bb]
        for la, lb in zip(ba[:3], bb[:3]):
            for x, y in zip(la, lb):
                if exact:
                    assert torch.equal(x, y), (op, "backward")
                else:
                    torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-16)
        for x, y in zip(ba[3], bb[3]):
            if exact:
                assert torch.equal(x, y), (op, "hyperparameter gradients")
            else:
                torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_default_cpu_kernel_matches_avx2(tmp_path):
    """UNROLLOPT_CPU_CAPABILITY=default selects the portable kernel (read once per
    process, so in a subprocess); its results agree with this process's kernel
    (AVX2 on a CPU with AVX2 and FMA) to rounding."""
    d, portable = run_subprocess(tmp_path, "default")
    here = compute(d)
    compare_kernels(portable, here, exact=False)
    # Sanity: the values are those of the textbook steps.
    g, m, v, p = (d[k][2] for k in ("g", "m", "v", "p"))
    gp = g + 0.05 * p
    m2 = 0.9 * m + 0.1 * gp
    v2 = 0.999 * v + 0.001 * gp**2
    ref = -0.01 * (m2 / (1 - 0.9**5)) / (torch.sqrt(v2 / (1 - 0.999**5) + 1e-8) + 1e-6)
    torch.testing.assert_close(here["adam", "torch.float64"][2], ref, rtol=1e-13, atol=1e-17)
    torch.testing.assert_close(here["sgd", "torch.float64"][2], -0.01 * (-g + 0.05 * p), rtol=1e-14, atol=1e-17)
    buf = 0.9 * m + 0.9 * gp  # dampening 0.1
    u = -0.01 * (gp + 0.9 * buf)
    torch.testing.assert_close(
        here["sgd_momentum", "torch.float64"][2], u, rtol=1e-13, atol=1e-15 * float(u.abs().max())
    )
    torch.testing.assert_close(
        here["sgd_momentum", "torch.float64"][6], buf, rtol=1e-14, atol=1e-15 * float(buf.abs().max())
    )


def test_same_kernel_in_subprocess_is_bitwise_identical(tmp_path):
    """Without the variable the subprocess picks the same kernel as this process:
    results are bitwise identical (the kernels are deterministic)."""
    d, other = run_subprocess(tmp_path, None)
    compare_kernels(other, compute(d), exact=True)


# --- threads ---------------------------------------------------------------------


@pytest.mark.parametrize("op", ["adam", "sgd_momentum"])
def test_thread_count_does_not_change_results(op):
    n = 2**18
    g = gen(12)
    state_keys, values, options = KERNEL_OPS[op]
    grads = [randn(g, n), randn(g, 1000)]
    states = [
        t
        for k in state_keys
        for t in ([rand_pos(g, n), rand_pos(g, 1000)] if k == "v" else [randn(g, n), randn(g, 1000)])
    ]
    params = [randn(g, n), randn(g, 1000)]
    cot = [randn(g, n), randn(g, 1000)]

    def run():
        hyper = [torch.tensor(v, dtype=F64, requires_grad=True) for v in values]
        u, s = Grouped(op, "")(grads, states, params, torch.tensor(7), hyper, options)
        loss = sum((ui * c).sum() for ui, c in zip(u, cot)) + sum(si.sum() for si in s)
        hg = torch.autograd.grad(loss, hyper)
        # And the in-place op.
        ps = [p.clone() for p in params]
        ss = [t.clone() for t in states]
        with torch.no_grad():
            Grouped(op, "_")(
                ps, [t.clone() for t in grads], ss, torch.tensor(7), [h.detach() for h in hyper], options, True
            )
        return [t.detach() for t in (*u, *s, *ps, *ss)], hg

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, hg1 = run()
        torch.set_num_threads(2)
        two, hg2 = run()
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    for a, b in zip(hg1, hg2):
        assert a.abs() > 0
        assert abs(float(a) - float(b)) <= 1e-12 * abs(float(a))


# --- unrollopt.pytree ----------------------------------------------------------------


def test_pytree_arithmetic_matches_leafwise_torch():
    from unrollopt import pytree

    g = torch.Generator().manual_seed(5)
    x = {
        "w": torch.randn(3, 2, generator=g, dtype=torch.float64),
        "b": (torch.randn(2, generator=g, dtype=torch.float64), None),
    }
    y = {
        "w": torch.rand(3, 2, generator=g, dtype=torch.float64) + 0.5,
        "b": (torch.rand(2, generator=g, dtype=torch.float64) + 0.5, None),
    }
    leaves = lambda t: [t["w"], t["b"][0]]  # noqa: E731
    for got, want in (
        (pytree.tree_add(x, y, x), [a + b + a for a, b in zip(leaves(x), leaves(y))]),
        (pytree.tree_sub(x, y), [a - b for a, b in zip(leaves(x), leaves(y))]),
        (pytree.tree_mul(x, y), [a * b for a, b in zip(leaves(x), leaves(y))]),
        (pytree.tree_scalar_mul(-0.5, x), [-0.5 * a for a in leaves(x)]),
        (pytree.tree_truediv(x, y), [a / b for a, b in zip(leaves(x), leaves(y))]),
        (pytree.tree_neg(x), [-a for a in leaves(x)]),
        (pytree.tree_pos(x), leaves(x)),
    ):
        assert got["b"][1] is None
        for a, b in zip(leaves(got), want):
            assert torch.equal(a, b)
    vdot = pytree.tree_vdot_real(x, y)
    assert type(vdot) is float  # as TorchOpt's
    assert vdot == pytest.approx(sum((a * b).sum() for a, b in zip(leaves(x), leaves(y))).item(), rel=1e-15)
    with pytest.raises(ValueError, match="structure"):
        pytree.tree_vdot_real(x, [x["w"]])


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_class_initial_scale_matches_the_alias(centered):
    """unrollopt.RMSprop(initial_scale=) steps as unrollopt.rmsprop(initial_scale=)."""
    g = torch.Generator().manual_seed(21)
    p = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    q = p.detach().clone()
    opt = unrollopt.RMSprop([p], lr=0.01, centered=centered, initial_scale=0.5)
    alias = unrollopt.rmsprop(0.01, centered=centered, initial_scale=0.5)
    state = alias.init((q,))
    for _ in range(3):
        grad = torch.randn(5, generator=g, dtype=torch.float64)
        p.grad = grad.clone()
        opt.step()
        (u,), state = alias.update((grad.clone(),), state, inplace=False)
        q = q + u
    torch.testing.assert_close(p.detach(), q, rtol=1e-14, atol=1e-16)
    assert unrollopt.RMSprop([p]).defaults["initial_scale"] == 0.0  # torch.optim.RMSprop starts at 0
    with pytest.raises(ValueError, match="initial_scale"):
        unrollopt.RMSprop([p], initial_scale=-1.0)
