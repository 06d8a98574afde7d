"""unrollopt.adam (the functional (init, update) pair): meta-gradients through
unrolled inner loops against an independent float64 reference, the exact
backward where the second moment is 0, and equality of the fused and plain
paths over dtypes, sizes, layouts and pytrees."""

from __future__ import annotations

import pytest
import torch
from references import (
    F64,
    assert_close,
    gen,
    inner_loss,
    is_finite,
    make_problem,
    max_rel_err,
    outer_loss,
    rand_pos,
    randn,
    ref_adam_step,
    unrolled_unrollopt,
    unrollopt,
)

# --- the inner problem: make_problem, inner_loss, outer_loss, unrolled_unrollopt (conftest.py)


def unrolled_reference(pb, steps=3, **hp):
    params = [pb["w0"], pb["b0"]]
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [ref_adam_step(g, m, v, p, t, **hp) for g, m, v, p in zip(grads, ms, vs, params)]
        params = [p + u for p, (u, _, _) in zip(params, new)]
        ms = [m for _, m, _ in new]
        vs = [v for _, _, v in new]
    return outer_loss(pb, *params), params, (ms, vs)


def assert_rel(actual, expected, rtol, what):
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert is_finite(a), f"{what}[{i}] is not finite"
        err = max_rel_err(a, e)
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
@pytest.mark.parametrize("wd", [0.0, 0.03], ids=["no_wd", "wd"])
@pytest.mark.parametrize("eps_root", [0.0, 1e-6], ids=["eps_root0", "eps_root"])
@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.1])
def test_meta_gradient_matches_reference(fused, eps, eps_root, wd, maximize):
    pb = make_problem(0)
    hp = dict(lr=0.05, b1=0.9, b2=0.99, eps=eps, eps_root=eps_root, wd=wd, maximize=maximize)
    opt = unrollopt.adam(
        lr=0.05, betas=(0.9, 0.99), eps=eps, weight_decay=wd, eps_root=eps_root,
        maximize=maximize, use_accelerated_op=fused,
    )  # fmt: skip
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, _ = unrolled_unrollopt(pb, opt, use_params=wd > 0)
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, _ = unrolled_reference(pb, **hp)
    expected = torch.autograd.grad(ref_loss, meta)
    assert_rel(params, ref_params, 1e-12, "params")
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert any(g.abs().max() > 0 for g in got)


def test_meta_gradient_tensor_hyperparameters(fused):
    """Meta-learned lr, betas and weight decay (0-d tensors that require grad)."""
    pb = make_problem(1)
    lr, b1, b2, wd = (torch.tensor(x, dtype=F64, requires_grad=True) for x in (0.05, 0.8, 0.95, 0.02))
    opt = unrollopt.adam(lr=lr, betas=(b1, b2), eps=1e-3, weight_decay=wd, eps_root=1e-6, use_accelerated_op=fused)
    meta = (lr, b1, b2, wd, pb["meta_w"], pb["w0"])
    loss, _, _ = unrolled_unrollopt(pb, opt, use_params=True)
    got = torch.autograd.grad(loss, meta)

    lr2, b12, b22, wd2 = (t.detach().clone().requires_grad_() for t in (lr, b1, b2, wd))
    ref_loss, _, _ = unrolled_reference(pb, lr=lr2, b1=b12, b2=b22, eps=1e-3, eps_root=1e-6, wd=wd2)
    expected = torch.autograd.grad(ref_loss, (lr2, b12, b22, wd2, pb["meta_w"], pb["w0"]))
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[:4])


def test_meta_gradient_float32_hyperparameter_tensors(fused):
    """float32 0-d hyperparameters with float64 parameters: the forward (bias
    corrections included) runs in float64 at the float32-rounded values, so the
    loss and the parameters' meta-gradient match the float64 reference to
    float64 precision; the hyperparameters' own gradients are float32 tensors,
    accumulated over their uses in float32, so they match to float32 precision
    relative to the largest of them."""
    pb = make_problem(2)
    vals = (0.05, 0.8, 0.95)
    lr, b1, b2 = (torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in vals)
    opt = unrollopt.adam(lr=lr, betas=(b1, b2), eps=1e-3, use_accelerated_op=fused)
    loss, _, _ = unrolled_unrollopt(pb, opt)
    got = torch.autograd.grad(loss, (lr, b1, b2, pb["w0"]))
    ref = [t.detach().to(F64).requires_grad_() for t in (lr, b1, b2)]
    ref_loss, _, _ = unrolled_reference(pb, lr=ref[0], b1=ref[1], b2=ref[2], eps=1e-3)
    expected = torch.autograd.grad(ref_loss, (*ref, pb["w0"]))
    assert abs(loss.item() - ref_loss.item()) <= 1e-14 * abs(ref_loss.item())
    assert all(t.dtype == torch.float32 for t in got[:3])
    scale = max(abs(float(e)) for e in expected[:3])
    for g_, e_ in zip(got[:3], expected[:3]):
        assert abs(float(g_) - float(e_)) <= 4 * 2.0**-23 * scale, (float(g_), float(e_))
    assert_rel(got[3:], expected[3:], 1e-10, "meta-gradient")


def test_moment_requires_grad(fused):
    """moment_requires_grad=True: gradients w.r.t. the initial moments."""
    g = gen(3)
    p0 = randn(g, 5, requires_grad=True)
    target = randn(g, 5)
    opt = unrollopt.adam(lr=0.1, eps=1e-3, moment_requires_grad=True, use_accelerated_op=fused)
    state = opt.init((p0,))
    assert state.mu[0].requires_grad and state.nu[0].requires_grad
    assert state.count.dtype == torch.int64 and int(state.count) == 0
    mu0, nu0 = state.mu[0], state.nu[0]
    params = (p0,)
    for _ in range(2):
        grads = torch.autograd.grad(((params[0] - target) ** 2).sum(), params, create_graph=True)
        updates, state = opt.update(grads, state, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    assert int(state.count) == 2
    got = torch.autograd.grad((params[0] ** 2).sum(), (mu0, nu0))
    # Reference: nu0 = 0 is a point where sqrt is not differentiable in plain
    # autograd, so shift nu0 by a tiny positive amount in both computations.
    assert is_finite(got[0]) and got[0].abs().max() > 0
    m_ref = torch.zeros(5, dtype=F64, requires_grad=True)
    v_ref = torch.zeros(5, dtype=F64, requires_grad=True)
    p, m, v = p0, m_ref, v_ref
    for t in (1, 2):
        (gr,) = torch.autograd.grad(((p - target) ** 2).sum(), (p,), create_graph=True)
        u, m, v = ref_adam_step(gr, m, v, None, t, lr=0.1, b1=0.9, b2=0.999, eps=1e-3)
        p = p + u
    exp = torch.autograd.grad((p**2).sum(), (m_ref, v_ref))
    assert_rel(got, exp, 1e-10, "gradient w.r.t. the initial moments")


# --- exactness where the second moment is 0 ----------------------------------------


@pytest.mark.parametrize("wrt_hyper", [False, True])
def test_exact_backward_where_second_moment_is_zero(wrt_hyper):
    """eps_root=0 and a parameter element the inner loss does not depend on (it is
    multiplied by a 0 mask, as a pruned weight is): its gradient is exactly 0 at
    every step, so its second moment stays exactly 0 and its update is
    identically 0 (mu' = 0 in the numerator). Naive autograd differentiates sqrt
    at 0, gets 0 * inf = NaN, and the NaN reaches every meta-gradient through the
    mask's product (NaN * 0 = NaN) and beta2 through the bias correction. The
    fused operator's hand-written backward is exact there (d u / d nu' = 0 where
    mu' = 0), and so is the plain path; the meta-gradients are finite and equal to those of the problem
    with that element removed (whose own meta-gradient is analytical: w[2] stays
    w0[2], so d outer / d w0[2] = w0[2])."""
    g = gen(4)
    x = randn(g, 6, 3)
    y = randn(g, 6)
    xv = randn(g, 5, 2)
    yv = randn(g, 5)
    w0 = randn(g, 3, requires_grad=True)  # w0[2] never enters the inner loss
    h = [torch.tensor(v, dtype=F64, requires_grad=wrt_hyper) for v in (0.1, 0.9, 0.99)]

    mask = torch.tensor([1.0, 1.0, 0.0], dtype=F64)

    def inner(w):
        return ((x @ (w * mask) - y) ** 2).mean()

    def outer(w):
        return ((xv @ w[:2] - yv) ** 2).mean() + w[2] ** 2 * 0.5

    def run(fused):
        opt = unrollopt.adam(lr=h[0], betas=(h[1], h[2]), eps=1e-8, eps_root=0.0, use_accelerated_op=fused)
        params = (w0,)
        state = opt.init(params)
        for _ in range(3):
            grads = torch.autograd.grad(inner(params[0]), params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        assert float(state.nu[0][2].detach()) == 0.0 and float(state.mu[0][2].detach()) == 0.0
        assert float(params[0][2].detach()) == float(w0[2].detach())  # the update there is exactly 0
        wrt = (w0, *h) if wrt_hyper else (w0,)
        return torch.autograd.grad(outer(params[0]), wrt)

    # Both paths are exact there: the fused backward by construction, the plain
    # path by not differentiating sqrt(nu') where mu' = 0.
    fused_grads = run(fused=True)
    assert all(is_finite(t) for t in fused_grads)
    plain = run(fused=False)
    assert_rel(plain, fused_grads, 1e-10, "plain vs fused")

    # Reference: the live elements alone, the dead element analytically
    # (d outer / d w0[2] = w0[2], since w[2] = w0[2] at every step).
    live0 = w0.detach()[:2].clone().requires_grad_()
    hr = [t.detach().clone().requires_grad_() for t in h]
    p, m, v = live0, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    for t in (1, 2, 3):
        (gr,) = torch.autograd.grad(((x[:, :2] @ p - y) ** 2).mean(), (p,), create_graph=True)
        u, m, v = ref_adam_step(gr, m, v, None, t, lr=hr[0], b1=hr[1], b2=hr[2], eps=1e-8)
        p = p + u
    ref_out = ((xv @ p - yv) ** 2).mean()
    wrt = (live0, *hr) if wrt_hyper else (live0,)
    ref = torch.autograd.grad(ref_out, wrt)
    expected_w = torch.cat([ref[0], w0.detach()[2:]])
    assert_rel([fused_grads[0]], [expected_w], 1e-10, "meta-gradient w.r.t. w0")
    if wrt_hyper:
        assert_rel(fused_grads[1:], ref[1:], 1e-10, "meta-gradient w.r.t. hyperparameters")


# --- fused and plain paths compute the same values ---------------------------------


def run_steps(opt, grads_seq, params, *, inplace, use_params):
    state = opt.init(params)
    outs = []
    for grads in grads_seq:
        grads = torch.utils._pytree.tree_map(lambda t: t.clone(), grads)
        updates, state = opt.update(grads, state, params=params if use_params else None, inplace=inplace)
        outs.append((updates, state.mu, state.nu))
        if inplace:
            outs[-1] = torch.utils._pytree.tree_map(lambda t: t.clone(), outs[-1])
    return outs, state


@pytest.mark.parametrize("size", [0, 1, 3, 1025, 2049, 65537])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_fused_equals_plain_sizes(size, inplace):
    g = gen(size)
    params = [randn(g, size)]
    grads_seq = [[randn(g, size)] for _ in range(3)]
    kw = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.01, eps_root=1e-9)
    a, sa = run_steps(unrollopt.adam(**kw), grads_seq, params, inplace=inplace, use_params=True)
    b, sb = run_steps(
        unrollopt.adam(**kw, use_accelerated_op=True), grads_seq, params, inplace=inplace, use_params=True
    )
    # (atol: mu' = b1 mu + (1 - b1) g' cancels at a few elements, where the
    # order of the floating-point operations shows in the relative error)
    assert_close(b, a, rtol=1e-13, atol=1e-15)
    assert int(sa.count) == int(sb.count) == 3
    # And both agree with the textbook reference.
    m = v = torch.zeros(size, dtype=F64)
    for t, (gr,) in enumerate(grads_seq, 1):
        u, m, v = ref_adam_step(gr, m, v, params[0], t, lr=0.01, b1=0.8, b2=0.95, eps=1e-8, eps_root=1e-9, wd=0.01)
    assert_close(b[-1], ([u], [m], [v]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("maximize", [False, True])
def test_fused_equals_plain_dtypes_mixed_sizes(dtype, maximize):
    g = gen(5)
    sizes = [(7,), (3, 5), (1,), (0,), (33, 31)]
    params = [randn(g, *s, dtype=dtype) for s in sizes]
    grads_seq = [[randn(g, *s, dtype=dtype) for s in sizes] for _ in range(3)]
    kw = dict(lr=0.02, eps=1e-6, weight_decay=0.1, maximize=maximize)
    a, _ = run_steps(unrollopt.adam(**kw), grads_seq, params, inplace=False, use_params=True)
    b, _ = run_steps(unrollopt.adam(**kw, use_accelerated_op=True), grads_seq, params, inplace=False, use_params=True)
    rtol = 1e-13 if dtype == F64 else 2e-5
    assert_close(b, a, rtol=rtol, atol=1e-7 if dtype == torch.float32 else 1e-15)
    assert all(t.dtype == dtype for t in b[-1][0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_against_float32(dtype):
    """Half types are computed in float32 inside the fused kernel: one step equals
    the float64 reference on the upcast inputs, rounded once (up to an ulp)."""
    g = gen(6)
    shapes = [(1000,), (17, 3)]
    grads = [randn(g, *s, dtype=dtype) for s in shapes]
    mus = [(0.1 * randn(g, *s)).to(dtype) for s in shapes]
    nus = [rand_pos(g, *s, dtype=dtype, low=0.05) for s in shapes]
    params = [randn(g, *s, dtype=dtype) for s in shapes]
    hp = dict(lr=0.1, b1=0.9, b2=0.999, eps=1e-8, wd=0.05)
    opt_f = unrollopt.adam(lr=0.1, weight_decay=0.05, use_accelerated_op=True)
    opt_p = unrollopt.adam(lr=0.1, weight_decay=0.05)
    state = unrollopt.ScaleByAdamState(mu=mus, nu=nus, count=torch.tensor(4))
    uf, sf = opt_f.update(grads, state, params=params, inplace=False)
    up, sp = opt_p.update(grads, state, params=params, inplace=False)
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    for i in range(len(shapes)):
        ru, rm, rv = ref_adam_step(*(t[i].to(F64) for t in (grads, mus, nus, params)), 5, **hp)
        assert uf[i].dtype == sf.mu[i].dtype == sf.nu[i].dtype == dtype
        assert_close(uf[i], ru, rtol=ulp, atol=1e-6)
        assert_close(sf.mu[i], rm, rtol=ulp, atol=1e-6)
        assert_close(sf.nu[i], rv, rtol=ulp, atol=1e-6)
        # The plain path computes in the half type itself: looser.
        assert_close(up[i].float(), uf[i].float(), rtol=8 * ulp, atol=1e-4)


def test_strided_views(fused):
    """Non-contiguous grads, state and params, in and out of place."""
    g = gen(7)
    base_p = randn(g, 40, 30)
    base_p2 = randn(g, 40, 30)
    base_g = randn(g, 40, 30)
    base_g_2 = randn(g, 40, 30)
    params = [base_p[:, ::3], base_p2.T[::2]]
    grads = [base_g[:, 1::3], base_g_2.T[1::2]]
    assert not any(t.is_contiguous() for t in params + grads)
    kw = dict(lr=0.01, weight_decay=0.02, use_accelerated_op=fused)
    opt = unrollopt.adam(**kw)
    state = opt.init(params)
    big_m = randn(g, 80, 60)
    big_v = rand_pos(g, 80, 60)
    state = unrollopt.ScaleByAdamState(
        mu=[big_m[::2, ::6], big_m[1::2, 1::4].T[:, :40][:15]],
        nu=[big_v[::2, ::6], big_v[1::2, 1::4].T[:, :40][:15]],
        count=torch.tensor(1),
    )
    assert [t.shape for t in state.mu] == [t.shape for t in params]
    assert not any(t.is_contiguous() for t in state.mu + state.nu)
    expected = [
        ref_adam_step(gr, m, v, p, 2, lr=0.01, b1=0.9, b2=0.999, eps=1e-8, wd=0.02)
        for gr, m, v, p in zip(grads, state.mu, state.nu, params)
    ]
    u, s2 = opt.update(grads, state, params=params, inplace=False)
    for i, (ru, rm, rv) in enumerate(expected):
        assert_close([u[i], s2.mu[i], s2.nu[i]], [ru, rm, rv], rtol=1e-13, atol=1e-18)

    # In place: the views (and so their bases) are written.
    mu_snap = big_m.clone()
    grads_c = [base_g.clone()[:, 1::3], base_g_2.clone().T[1::2]]  # non-contiguous, overwritten by the updates
    u2, s3 = opt.update(grads_c, state, params=params, inplace=True)
    assert_close(grads_c, [ru for ru, _, _ in expected], rtol=1e-13, atol=1e-18)
    for i, (ru, rm, rv) in enumerate(expected):
        assert_close([u2[i], s3.mu[i], state.mu[i], state.nu[i]], [ru, rm, rm, rv], rtol=1e-13, atol=1e-18)
    # Elements of the base outside the views are untouched.
    touched = torch.zeros_like(big_m, dtype=torch.bool)
    touched[::2, ::6] = True
    touched[1::2, 1::4].T[:, :40][:15] = True
    assert torch.equal(big_m[~touched], mu_snap[~touched])
    # apply_updates in place on strided params.
    before = [p.clone() for p in params]
    unrollopt.apply_updates(params, u2)
    assert_close(params, [b + du for b, du in zip(before, u2)], rtol=1e-15, atol=0)


def test_pytrees_dict_tuple_and_none_leaves(fused):
    g = gen(8)
    params = {"w": randn(g, 3, 2), "frozen": None, "blocks": (randn(g, 4), [randn(g, 2, 2), None])}
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    state = opt.init(params)
    assert state.mu["frozen"] is None and state.nu["blocks"][1][1] is None
    assert torch.equal(state.mu["w"], torch.zeros(3, 2, dtype=F64))
    grads = {"w": randn(g, 3, 2), "frozen": None, "blocks": (randn(g, 4), [randn(g, 2, 2), None])}
    updates, state2 = opt.update(grads, state, inplace=False)
    assert updates["frozen"] is None and updates["blocks"][1][1] is None
    pairs = [
        (updates["w"], grads["w"]),
        (updates["blocks"][0], grads["blocks"][0]),
        (updates["blocks"][1][0], grads["blocks"][1][0]),
    ]
    for u, gr in pairs:
        z = torch.zeros_like(gr)
        ru, _, _ = ref_adam_step(gr, z, z, None, 1, lr=0.1, b1=0.9, b2=0.999, eps=1e-8)
        assert_close(u, ru, rtol=1e-13)
    new_params = unrollopt.apply_updates(params, updates, inplace=False)
    assert new_params["frozen"] is None
    assert_close(new_params["w"], params["w"] + updates["w"], rtol=0, atol=0)


def test_none_grad_leaves_keep_their_state(fused):
    """A parameter without a gradient this step (None grad, tensor state) keeps
    its moments and gets a None update."""
    g = gen(9)
    params = {"a": randn(g, 3), "b": randn(g, 4)}
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    state = opt.init(params)
    u, state = opt.update({"a": randn(g, 3), "b": randn(g, 4)}, state, inplace=False)
    mu_b, nu_b = state.mu["b"], state.nu["b"]
    u, state2 = opt.update({"a": randn(g, 3), "b": None}, state, inplace=False)
    assert u["b"] is None
    assert state2.mu["b"] is mu_b and state2.nu["b"] is nu_b
    assert not torch.equal(state2.mu["a"], state.mu["a"])
    assert int(state2.count) == 2


def test_fused_inplace_equals_out_of_place(fused):
    g = gen(10)
    params = [randn(g, 50), randn(g, 3, 3)]
    grads_seq = [[randn(g, 50), randn(g, 3, 3)] for _ in range(4)]
    opt = unrollopt.adam(lr=0.01, weight_decay=0.1, use_accelerated_op=fused)
    a, sa = run_steps(opt, grads_seq, params, inplace=False, use_params=True)
    b, sb = run_steps(opt, grads_seq, params, inplace=True, use_params=True)
    assert_close(b, a, rtol=1e-15, atol=0)
    assert int(sb.count) == 4


def test_apply_updates():
    g = gen(11)
    params = (randn(g, 3), {"x": randn(g, 2), "y": None})
    updates = (randn(g, 3), {"x": None, "y": None})
    out = unrollopt.apply_updates(params, updates, inplace=False)
    assert torch.equal(out[0], params[0] + updates[0])
    assert out[1]["x"] is params[1]["x"] and out[1]["y"] is None
    before = params[0].clone()
    res = unrollopt.apply_updates(params, updates)
    assert res is params
    assert torch.equal(params[0], before + updates[0])
    # In place on leaves that require grad (a plain optimizer step) is allowed.
    p = randn(g, 3, requires_grad=True)
    u = randn(g, 3)
    ref = p.detach() + u
    unrollopt.apply_updates([p], [u])
    assert torch.equal(p.detach(), ref) and p.is_leaf


@pytest.mark.parametrize("hyper_dtype", [F64, torch.float32])
def test_second_order_path_agrees_with_first_order_path(hyper_dtype):
    """The fused op's backward runs the fused kernel normally and, when the
    backward itself must be differentiable (create_graph=True), the same math on
    tensors. Both must give the same first-order values. With float64 tensors
    and float32 0-d hyperparameters they should agree to float64 rounding, as
    the forward computes the bias corrections (and eps) in float64 whatever the
    dtypes. (Currently the differentiable form computes the coefficients in the
    hyperparameters' dtype, float32, so the meta-gradient changes by ~1e-7
    relative when create_graph=True is passed.)"""
    pb = make_problem(4)
    lr, b1, b2 = (torch.tensor(x, dtype=hyper_dtype, requires_grad=True) for x in (0.05, 0.8, 0.95))
    opt = unrollopt.adam(lr=lr, betas=(b1, b2), eps=1e-3, use_accelerated_op=True)
    wrt = (pb["w0"], pb["b0"], pb["meta_w"])
    loss, _, _ = unrolled_unrollopt(pb, opt)
    first = torch.autograd.grad(loss, wrt, retain_graph=True)
    second = torch.autograd.grad(loss, wrt, create_graph=True)
    assert_rel(second, first, 1e-13, "meta-gradient with create_graph=True")
