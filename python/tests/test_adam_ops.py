"""The fused operators torch.ops.unrollopt.{adam, adam_, adam_backward}:
gradcheck / gradgradcheck of the hand-written backward, values against the
textbook reference, and torch.library.opcheck."""

from __future__ import annotations

import pytest
import torch
from conftest import F64, assert_close, gen, rand_pos, randn, ref_adam_step

OPS = torch.ops.unrollopt
SHAPES = [(3,), (2, 2)]


def make_inputs(seed, *, dtype=F64, shapes=SHAPES, requires_grad=False, nu_low=0.1, wd=0.05):
    g = gen(seed)
    grads = [randn(g, *s, dtype=dtype, requires_grad=requires_grad) for s in shapes]
    mus = [randn(g, *s, dtype=dtype, requires_grad=requires_grad) for s in shapes]
    nus = [rand_pos(g, *s, dtype=dtype, low=nu_low).requires_grad_(requires_grad) for s in shapes]
    params = [randn(g, *s, dtype=dtype, requires_grad=requires_grad) for s in shapes]
    hyper = [
        torch.tensor(x, dtype=F64, requires_grad=requires_grad) for x in (0.1, 0.8, 0.9, wd)
    ]
    return grads, mus, nus, params, hyper


# --- gradcheck / gradgradcheck --------------------------------------------------


@pytest.mark.parametrize(
    "eps,eps_root,maximize,step",
    [
        (1e-3, 1e-6, False, 3),
        (1e-3, 1e-6, True, 3),
        (1e-3, 0.0, False, 2),
        (1e-3, 0.0, True, 1),
    ],
    ids=["eps_root", "eps_root-maximize", "no_eps_root", "no_eps_root-maximize-step1"],
)
@pytest.mark.parametrize("step_dtype", [torch.int64, F64], ids=["int_step", "float_step"])
def test_gradcheck_and_gradgradcheck(eps, eps_root, maximize, step, step_dtype):
    grads, mus, nus, params, hyper = make_inputs(1, requires_grad=True)
    step_t = torch.tensor(step, dtype=step_dtype)
    n = len(grads)

    def f(*xs):
        gs, ms, vs, ps = (list(xs[k * n : (k + 1) * n]) for k in range(4))
        lr, b1, b2, wd = xs[4 * n :]
        u, m, v = OPS.adam(gs, ms, vs, ps, step_t, lr, b1, b2, wd, eps, eps_root, maximize)
        return (*u, *m, *v)

    inputs = (*grads, *mus, *nus, *params, *hyper)
    # nus stay positive under gradcheck's perturbations (>= 0.1 - 1e-6).
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_empty_params_without_weight_decay():
    grads, mus, nus, _, hyper = make_inputs(2, requires_grad=True, wd=0.0)
    lr, b1, b2, wd = hyper
    wd = wd.detach()
    step = torch.tensor(4)

    def f(g0, g1, m0, m1, v0, v1, lr, b1, b2):
        u, m, v = OPS.adam([g0, g1], [m0, m1], [v0, v1], [], step, lr, b1, b2, wd, 1e-3, 1e-6, False)
        return (*u, *m, *v)

    inputs = (*grads, *mus, *nus, lr, b1, b2)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# --- forward values against the reference ------------------------------------------


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("eps_root", [0.0, 1e-6])
@pytest.mark.parametrize("step_dtype", [torch.int64, torch.float32, F64])
def test_adam_matches_reference(maximize, eps_root, step_dtype):
    grads, mus, nus, params, hyper = make_inputs(3, shapes=[(5,), (3, 7), (1,)])
    lr, b1, b2, wd = hyper
    step = torch.tensor(3, dtype=step_dtype)
    u, m, v = OPS.adam(grads, mus, nus, params, step, lr, b1, b2, wd, 1e-8, eps_root, maximize)
    for i in range(len(grads)):
        ru, rm, rv = ref_adam_step(
            grads[i], mus[i], nus[i], params[i], 3, lr=0.1, b1=0.8, b2=0.9, eps=1e-8,
            eps_root=eps_root, wd=0.05, maximize=maximize,
        )  # fmt: skip
        assert_close(u[i], ru, rtol=1e-13, atol=1e-16)
        assert_close(m[i], rm, rtol=1e-14, atol=1e-16)
        assert_close(v[i], rv, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("update_params", [False, True])
def test_inplace_op_matches_out_of_place(update_params):
    grads, mus, nus, params, hyper = make_inputs(4, shapes=[(5,), (3, 7)])
    step = torch.tensor(2)
    u, m, v = OPS.adam(grads, mus, nus, params, step, *hyper, 1e-8, 0.0, False)
    g2, m2, v2, p2 = ([t.clone() for t in ts] for ts in (grads, mus, nus, params))
    OPS.adam_(p2, g2, m2, v2, step, *hyper, 1e-8, 0.0, False, update_params)
    assert_close(m2, m, rtol=0, atol=0)
    assert_close(v2, v, rtol=0, atol=0)
    if update_params:
        assert_close(p2, [p + du for p, du in zip(params, u)], rtol=1e-15, atol=1e-16)
        assert_close(g2, grads, rtol=0, atol=0)  # grads untouched
    else:
        assert_close(g2, u, rtol=0, atol=0)  # the updates are written into grads
        assert_close(p2, params, rtol=0, atol=0)


def test_backward_op_matches_autograd_of_reference():
    """adam_backward called directly equals the VJP of the textbook step."""
    grads, mus, nus, params, hyper = make_inputs(5, shapes=[(4,), (2, 3)])
    step = torch.tensor(3)
    c = gen(6)
    cu = [randn(c, *t.shape) for t in grads]
    cm = [randn(c, *t.shape) for t in grads]
    cv = [randn(c, *t.shape) for t in grads]
    res = OPS.adam_backward(
        cu, cm, cv, grads, mus, nus, params, step, *hyper, 1e-3, 1e-6, False, [True] * 8
    )
    leaves = [t.clone().requires_grad_() for t in (*grads, *mus, *nus, *params, *hyper)]
    n = len(grads)
    lr, b1, b2, wd = leaves[4 * n :]
    total = 0
    for i in range(n):
        u, m, v = ref_adam_step(
            leaves[i], leaves[n + i], leaves[2 * n + i], leaves[3 * n + i], 3,
            lr=lr, b1=b1, b2=b2, eps=1e-3, eps_root=1e-6, wd=wd,
        )  # fmt: skip
        total = total + (u * cu[i]).sum() + (m * cm[i]).sum() + (v * cv[i]).sum()
    expected = torch.autograd.grad(total, leaves)
    got = [*res[0], *res[1], *res[2], *res[3], *res[4:]]
    assert_close(got, list(expected), rtol=1e-11, atol=1e-14)


def test_backward_op_output_mask_and_missing_cotangents():
    grads, mus, nus, params, hyper = make_inputs(7, shapes=[(4,), (3,)])
    step = torch.tensor(2)
    cu = [randn(gen(8), 4), None]  # no cotangent for the second update
    full = OPS.adam_backward(
        cu, [None, None], [None, None], grads, mus, nus, params, step, *hyper, 1e-3, 0.0, False,
        [True] * 8,
    )  # fmt: skip
    mask = [True, False, False, False, True, False, False, False]
    part = OPS.adam_backward(
        cu, [None, None], [None, None], grads, mus, nus, params, step, *hyper, 1e-3, 0.0, False,
        mask,
    )  # fmt: skip
    assert_close(part[0], full[0], rtol=0, atol=0)
    assert len(part[1]) == len(part[2]) == len(part[3]) == 0
    assert torch.equal(part[4], full[4])
    # Unrequested hyperparameter gradients are zero.
    assert float(part[5]) == float(part[6]) == float(part[7]) == 0.0
    # The second tensor has no cotangent at all: its gradients are zero.
    assert torch.equal(full[0][1], torch.zeros(3, dtype=F64))
    assert torch.equal(full[3][1], torch.zeros(3, dtype=F64))


# --- Meta kernels -----------------------------------------------------------------


def test_meta_kernels_shapes():
    grads, mus, nus, params, hyper = make_inputs(9)
    to_meta = lambda ts: [t.to("meta") for t in ts]  # noqa: E731
    hm = [h.to("meta") for h in hyper]
    step = torch.tensor(1, device="meta")
    u, m, v = OPS.adam(to_meta(grads), to_meta(mus), to_meta(nus), to_meta(params), step, *hm, 1e-8, 0.0, False)
    for outs in (u, m, v):
        assert [t.shape for t in outs] == [t.shape for t in grads]
        assert all(t.device.type == "meta" and t.dtype == F64 for t in outs)
    with pytest.raises(ValueError, match="shape"):
        OPS.adam(to_meta(grads), to_meta(mus[::-1]), to_meta(nus), [], step, *hm, 1e-8, 0.0, False)


# --- opcheck ----------------------------------------------------------------------


def opcheck_samples_adam():
    samples = []
    for requires_grad in (False, True):
        for with_params in (True, False):
            grads, mus, nus, params, hyper = make_inputs(10, requires_grad=requires_grad)
            if not with_params:
                params = []
                hyper[3] = hyper[3].detach().zero_().requires_grad_(requires_grad)
            samples.append(
                (grads, mus, nus, params, torch.tensor(2), *hyper, 1e-3, 1e-6, not with_params)
            )
    # float32 tensors with float32 hyperparameters and a float step.
    grads, mus, nus, params, hyper = make_inputs(11, dtype=torch.float32)
    hyper = [h.float() for h in hyper]
    samples.append((grads, mus, nus, params, torch.tensor(3.0), *hyper, 1e-8, 0.0, False))
    return samples


@pytest.mark.parametrize("index", range(5))
def test_opcheck_adam(index):
    args = opcheck_samples_adam()[index]
    torch.library.opcheck(OPS.adam.default, args)


@pytest.mark.parametrize("update_params", [False, True])
def test_opcheck_adam_inplace(update_params):
    grads, mus, nus, params, hyper = make_inputs(12)
    args = (params, grads, mus, nus, torch.tensor(2), *hyper, 1e-8, 0.0, False, update_params)
    torch.library.opcheck(OPS.adam_.default, args)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_adam_backward(requires_grad):
    grads, mus, nus, params, hyper = make_inputs(13, requires_grad=requires_grad)
    c = gen(14)
    cu = [randn(c, *t.shape, requires_grad=requires_grad) for t in grads]
    cm = [randn(c, *grads[0].shape), None]
    args = (
        cu, cm, [None, None], grads, mus, nus, params, torch.tensor(2), *hyper,
        1e-3, 1e-6, False, [True, True, False, True, True, False, True, True],
    )  # fmt: skip
    torch.library.opcheck(OPS.adam_backward.default, args)


@pytest.mark.parametrize("hyper_dtype", [F64, torch.float32])
def test_backward_differentiable_form_equals_kernel(hyper_dtype):
    """adam_backward with inputs that require grad (grad mode on) runs the
    differentiable tensor form of the VJP; without, the fused kernel. For float64
    tensors both agree to float64 rounding, whatever the hyperparameters' dtype
    (the forward reads them as doubles). Currently the tensor form computes the
    coefficients (bias corrections, eps) in float32 for float32 hyperparameters:
    ~1e-7 relative differences."""
    grads, mus, nus, params, hyper = make_inputs(15, shapes=[(6,), (2, 3)])
    hyper = [h.to(hyper_dtype) for h in hyper]
    step = torch.tensor(3)
    c = gen(16)
    cu = [randn(c, *t.shape) for t in grads]
    cm = [randn(c, *t.shape) for t in grads]
    kernel = OPS.adam_backward(cu, cm, [None, None], grads, mus, nus, params, step, *hyper, 1e-3, 1e-6, False, [True] * 8)
    rg = [h.clone().requires_grad_() for h in hyper]
    tensor_form = OPS.adam_backward(cu, cm, [None, None], grads, mus, nus, params, step, *rg, 1e-3, 1e-6, False, [True] * 8)
    assert tensor_form[4].requires_grad  # the differentiable form ran
    for a, b in zip(tensor_form[:4], kernel[:4]):
        assert_close(list(a), list(b), rtol=1e-13, atol=1e-15)
    for a, b in zip(tensor_form[4:], kernel[4:]):
        assert a.dtype == b.dtype == hyper_dtype
        assert_close(a, b, rtol=1e-13 if hyper_dtype == F64 else 2e-7, atol=0)
