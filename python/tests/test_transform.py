"""The optax-style transform layer (chain, scale, scale_by_adam, trace, ...),
schedules, learning-rate schedules and per-parameter rates in the aliases,
and AdamW's decay mask: values and meta-gradients against the aliases or
independent float64 references."""

from __future__ import annotations

import pytest
import torch
from references import (
    F64,
    assert_close,
    gen,
    inner_loss,
    make_problem,
    max_rel_err,
    outer_loss,
    randn,
    ref_adam_step,
    ref_sgd_step,
    unrolled_unrollopt,
    unrollopt,
)


def unrolled(opt, seed=0, steps=3, use_params=False):
    """(outer loss, final params, meta-gradient w.r.t. meta_w, w0, b0) of the shared problem."""
    pb = make_problem(seed)
    loss, params, _ = unrolled_unrollopt(pb, opt, steps=steps, use_params=use_params)
    return loss, params, torch.autograd.grad(loss, (pb["meta_w"], pb["w0"], pb["b0"]))


def assert_same_run(a, b, rtol=1e-12, zero=()):
    """The same loss, parameters and gradients (with respect to the data's
    weights, w0, b0), none of them 0 but those numbered in ``zero``, exactly 0
    (the data's, through Lion's sign)."""
    (la, pa, ga), (lb, pb_, gb) = a, b
    assert abs(la.item() - lb.item()) <= rtol * abs(lb.item())
    for x, y in zip((*pa, *ga), (*pb_, *gb)):
        assert max_rel_err(x, y) <= rtol
    for i, g in enumerate(ga):
        assert not g.any() if i in zero else g.abs().max() > 0, i


# --- aliases are chains of transforms -------------------------------------------------

LR = 0.05
CHAINS = {
    "adam": (
        lambda f: unrollopt.adam(LR, (0.8, 0.9), use_accelerated_op=f),
        lambda f: unrollopt.chain(unrollopt.scale_by_adam(0.8, 0.9, use_accelerated_op=f), unrollopt.scale(-LR)),
        False,
    ),
    "adam-l2": (
        lambda f: unrollopt.adam(LR, (0.8, 0.9), weight_decay=0.1, use_accelerated_op=f),
        lambda f: unrollopt.chain(
            unrollopt.add_decayed_weights(0.1),
            unrollopt.scale_by_adam(0.8, 0.9, use_accelerated_op=f),
            unrollopt.scale(-LR),
        ),
        True,
    ),
    "adamw": (
        lambda f: unrollopt.adamw(LR, (0.8, 0.9), weight_decay=0.1, use_accelerated_op=f),
        lambda f: unrollopt.chain(
            unrollopt.scale_by_adam(0.8, 0.9, use_accelerated_op=f),
            unrollopt.add_decayed_weights(0.1),
            unrollopt.scale(-LR),
        ),
        True,
    ),
    "sgd-momentum": (
        lambda f: unrollopt.sgd(LR, momentum=0.9, use_accelerated_op=f),
        lambda f: unrollopt.chain(unrollopt.trace(0.9, use_accelerated_op=f), unrollopt.scale(-LR)),
        False,
    ),
    "sgd-nesterov": (
        lambda f: unrollopt.sgd(LR, momentum=0.9, nesterov=True, use_accelerated_op=f),
        lambda f: unrollopt.chain(unrollopt.trace(0.9, nesterov=True, use_accelerated_op=f), unrollopt.scale(-LR)),
        False,
    ),
    "rmsprop": (
        lambda f: unrollopt.rmsprop(LR, alpha=0.9, use_accelerated_op=f),
        lambda f: unrollopt.chain(unrollopt.scale_by_rms(0.9, use_accelerated_op=f), unrollopt.scale(-LR)),
        False,
    ),
    "rmsprop-centered": (
        lambda f: unrollopt.rmsprop(LR, alpha=0.9, centered=True, initial_scale=1.0, use_accelerated_op=f),
        lambda f: unrollopt.chain(
            unrollopt.scale_by_stddev(0.9, initial_scale=1.0, use_accelerated_op=f), unrollopt.scale(-LR)
        ),
        False,
    ),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_alias_equals_its_chain(fused, name):
    make_alias, make_chain, use_params = CHAINS[name]
    assert_same_run(
        unrolled(make_chain(fused), use_params=use_params), unrolled(make_alias(fused), use_params=use_params)
    )


def test_lion_equals_its_chain(fused):
    """lion = chain(scale_by_lion, add_decayed_weights, scale(-lr)), as in optax."""
    alias = unrollopt.lion(LR, (0.8, 0.9), weight_decay=0.1, use_accelerated_op=fused)
    chain = unrollopt.chain(
        unrollopt.scale_by_lion(0.8, 0.9, use_accelerated_op=fused),
        unrollopt.add_decayed_weights(0.1),
        unrollopt.scale(-LR),
    )
    assert_same_run(unrolled(chain, use_params=True), unrolled(alias, use_params=True), zero=(0,))


def test_chain_state_and_errors():
    t = unrollopt.chain(unrollopt.scale_by_adam(), unrollopt.scale(-0.1), unrollopt.identity())
    state = t.init([torch.ones(2)])
    assert isinstance(state, tuple) and len(state) == 2  # the identity is left out, as in TorchOpt
    assert isinstance(state[0], unrollopt.ScaleByAdamState) and state[1] == unrollopt.EmptyState()
    with pytest.raises(TypeError, match=r"transforms\[1\] must be a GradientTransformation"):
        unrollopt.chain(unrollopt.identity(), lambda u: u)
    with pytest.raises(TypeError, match="tuple of 2 states"):
        t.update([torch.ones(2)], state[0])


def test_transforms_are_pure():
    """init twice gives the same behaviour twice: nothing hides in closures."""
    t = unrollopt.chain(unrollopt.trace(0.5), unrollopt.scale_by_schedule(unrollopt.linear_schedule(1.0, 0.0, 4)))
    g = randn(gen(0), 5)
    runs = []
    for _ in range(2):
        state = t.init([g])
        outs = []
        for _ in range(3):
            u, state = t.update([g.clone()], state, inplace=False)
            outs.append(u[0])
        runs.append(torch.stack(outs))
    assert torch.equal(runs[0], runs[1])
    # And the schedule did change the scale between steps.
    assert not torch.allclose(runs[0][1] / runs[0][0], runs[0][2] / runs[0][1])


def test_inplace_transforms_write_the_updates():
    g = randn(gen(1), 4)
    expected = -0.5 * g
    u = g.clone()
    t = unrollopt.chain(unrollopt.scale(0.5), unrollopt.nan_to_num(), unrollopt.scale(-1.0))
    out, _ = t.update([u], t.init([u]))
    assert out[0] is u and torch.equal(u, expected)


def test_scale_by_tensor_is_differentiable():
    s = torch.tensor(0.3, dtype=F64, requires_grad=True)
    g = randn(gen(2), 4)
    u, _ = unrollopt.scale(s).update([g], unrollopt.EmptyState(), inplace=False)
    (grad,) = torch.autograd.grad(u[0].sum(), s)
    assert_close(grad, g.sum(), rtol=1e-15, atol=0)
    with pytest.raises(RuntimeError, match="inplace=False"):
        unrollopt.scale(s).update([g.clone()], unrollopt.EmptyState())


# --- clip_grad_norm, nan_to_num, masked, add_decayed_weights -------------------------


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    g = gen(3)
    grads = [randn(g, 3, 4), None, randn(g, 5)]
    expected = [t.clone() for t in (grads[0], grads[2])]
    total = torch.sqrt(sum((t**2).sum() for t in expected))
    coef = min(1.0, max_norm / (float(total) + 1e-6))
    t = unrollopt.clip_grad_norm(max_norm)
    out, _ = t.update(grads, t.init(grads), inplace=False)
    assert out[1] is None
    assert_close([out[0], out[2]], [e * coef for e in expected], rtol=1e-15, atol=0)
    params = [torch.nn.Parameter(torch.zeros_like(e)) for e in expected]
    for p, e in zip(params, expected):
        p.grad = e.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    assert_close([out[0], out[2]], [p.grad for p in params], rtol=1e-14, atol=0)
    assert (coef < 1) == (max_norm == 0.5)


def test_clip_grad_norm_gradient_flows_through_the_coefficient():
    t = unrollopt.clip_grad_norm(0.7)
    g = gen(4)
    inputs = (randn(g, 3, requires_grad=True), randn(g, 2, 2, requires_grad=True))

    def f(a, b):
        out, _ = t.update([a, b], unrollopt.EmptyState(), inplace=False)
        return tuple(out)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_clip_grad_norm_needs_no_host_synchronisation():
    """On meta tensors (no data) any .item() or bool() of a tensor would raise."""
    t = unrollopt.clip_grad_norm(1.0)
    grads = [torch.empty(3, 4, device="meta"), torch.empty(7, device="meta")]
    out, _ = t.update(grads, t.init(grads), inplace=False)
    assert [o.shape for o in out] == [(3, 4), (7,)] and out[0].device.type == "meta"


def test_nan_to_num():
    u = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")], dtype=F64)
    out, _ = unrollopt.nan_to_num(0.0, 5.0, -5.0).update([u], unrollopt.EmptyState(), inplace=False)
    assert torch.equal(out[0], torch.tensor([1.0, 0.0, 5.0, -5.0], dtype=F64))


@pytest.mark.parametrize("callable_mask", [False, True], ids=["tree", "callable"])
def test_masked_applies_inner_to_masked_leaves_only(fused, callable_mask):
    g = gen(5)
    params = {"w": randn(g, 3, 2), "b": randn(g, 3)}
    grads = {"w": randn(g, 3, 2), "b": randn(g, 3)}
    mask = {"w": True, "b": False}
    t = unrollopt.masked(unrollopt.adam(0.1, use_accelerated_op=fused), (lambda p: mask) if callable_mask else mask)
    state = t.init(params)
    assert state.mu["b"] is None and state.mu["w"].shape == (3, 2)
    out, state = t.update(grads, state, params=params, inplace=False)
    expected, _, _ = ref_adam_step(grads["w"], torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64), None, 1,
                                   lr=0.1, b1=0.9, b2=0.999, eps=1e-8)  # fmt: skip
    assert_close(out["w"], expected, rtol=1e-14, atol=0)
    assert out["b"] is grads["b"]


def test_add_decayed_weights_needs_params_and_respects_a_mask():
    g = gen(6)
    params, grads = [randn(g, 3), randn(g, 2)], [randn(g, 3), randn(g, 2)]
    t = unrollopt.add_decayed_weights(0.1, mask=[False, True])
    out, _ = t.update(grads, t.init(params), params=params, inplace=False)
    assert torch.equal(out[0], grads[0])
    assert_close(out[1], grads[1] + 0.1 * params[1], rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="pass the parameters"):
        unrollopt.add_decayed_weights(0.1).update(grads, unrollopt.EmptyState())
    with pytest.raises(ValueError, match="weight_decay"):
        unrollopt.add_decayed_weights(-1.0)


def test_bad_arguments():
    with pytest.raises(TypeError, match="step_size"):
        unrollopt.scale("0.1")
    with pytest.raises(ValueError, match="max_norm"):
        unrollopt.clip_grad_norm(-1.0)
    with pytest.raises(TypeError, match="step_size_fn"):
        unrollopt.scale_by_schedule(0.1)
    with pytest.raises(TypeError, match="mask\\[1\\] must be a bool"):
        t = unrollopt.masked(unrollopt.identity(), [True, 1])
        t.init([torch.ones(1), torch.ones(1)])
    with pytest.raises(ValueError, match="transition_steps"):
        unrollopt.linear_schedule(1.0, 0.0, -1)
    with pytest.raises(TypeError, match="transition_steps"):
        unrollopt.linear_schedule(1.0, 0.0, 2.5)
    with pytest.raises(ValueError, match="decay_rate"):
        unrollopt.exponential_decay(1.0, 10, 0.0)


# --- schedules -----------------------------------------------------------------------


def test_schedule_values():
    counts = torch.arange(0, 12)
    lin = unrollopt.linear_schedule(1.0, 0.2, 8, transition_begin=2)
    poly = unrollopt.polynomial_schedule(1.0, 0.2, 2.0, 8, transition_begin=2)
    exp = unrollopt.exponential_decay(1.0, 4, 0.5, transition_begin=1)
    stair = unrollopt.exponential_decay(1.0, 4, 0.5, staircase=True, end_value=0.3)
    for c in counts.tolist():
        k = min(max(c - 2, 0), 8)
        assert float(lin(torch.tensor(c))) == pytest.approx(0.8 * (1 - k / 8) + 0.2, rel=1e-15)
        assert float(poly(torch.tensor(c))) == pytest.approx(0.8 * (1 - k / 8) ** 2 + 0.2, rel=1e-15)
        assert float(exp(torch.tensor(c))) == pytest.approx(0.5 ** (max(c - 1, 0) / 4), rel=1e-15)
        assert float(stair(torch.tensor(c))) == pytest.approx(max(0.5 ** (c // 4), 0.3), rel=1e-15)
    assert float(unrollopt.linear_schedule(0.7, 0.0, 0)(torch.tensor(5))) == 0.7


def test_schedule_of_tensors_is_differentiable_and_traceable():
    init = torch.tensor(0.5, dtype=F64, requires_grad=True)
    s = unrollopt.exponential_decay(init, 2, 0.5)
    (grad,) = torch.autograd.grad(s(torch.tensor(4)), init)
    assert float(grad) == pytest.approx(0.25, rel=1e-15)
    # No host synchronisation: it runs on meta tensors.
    assert unrollopt.linear_schedule(1.0, 0.0, 10)(torch.tensor(3, device="meta")).device.type == "meta"


def test_alias_with_schedule_matches_reference(fused):
    """adam(lr=schedule): lr at step t is schedule(t - 1); with a tensor init value, its gradient."""
    init = torch.tensor(0.1, dtype=F64, requires_grad=True)
    sched = unrollopt.linear_schedule(init, 0.01, 3)
    pb = make_problem(1)
    loss, _, state = unrolled_unrollopt(pb, unrollopt.adam(sched, (0.8, 0.9), use_accelerated_op=fused))
    got = torch.autograd.grad(loss, (init, pb["meta_w"]))

    rinit = torch.tensor(0.1, dtype=F64, requires_grad=True)
    params = [pb["w0"], pb["b0"]]
    states = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    for t in range(1, 4):
        lr = (rinit - 0.01) * (1 - (t - 1) / 3) + 0.01
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [ref_adam_step(g, *s, None, t, lr=lr, b1=0.8, b2=0.9, eps=1e-8) for g, s in zip(grads, states)]
        params = [p + u for p, (u, _, _) in zip(params, new)]
        states = [(m, v) for _, m, v in new]
    ref_loss = outer_loss(pb, *params)
    expected = torch.autograd.grad(ref_loss, (rinit, pb["meta_w"]))
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    for a, b in zip(got, expected):
        assert max_rel_err(a, b) <= 1e-10 and b.abs().max() > 0


# --- per-parameter learning rates (Meta-SGD) -----------------------------------------


def test_per_parameter_learning_rates_meta_sgd(fused):
    """sgd(lr=(alpha_w, alpha_b)) with element-wise rates that require grad:
    the inner loop theta - alpha * grad, and exact gradients w.r.t. alpha."""
    g = gen(7)
    alphas = (0.05 + 0.02 * torch.rand(3, 4, generator=g, dtype=F64), torch.tensor(0.03, dtype=F64))
    alphas = tuple(a.requires_grad_() for a in alphas)
    pb = make_problem(2)
    loss, _, _ = unrolled_unrollopt(pb, unrollopt.sgd(alphas, momentum=0.5, use_accelerated_op=fused))
    got = torch.autograd.grad(loss, (*alphas, pb["meta_w"]))

    ralphas = tuple(a.detach().clone().requires_grad_() for a in alphas)
    params = [pb["w0"], pb["b0"]]
    bufs = [torch.zeros_like(p) for p in params]  # (ignored at t = 1; None would mean no momentum)
    for t in range(1, 4):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [ref_sgd_step(gr, b, None, t, lr=a, momentum=0.5) for gr, b, a in zip(grads, bufs, ralphas)]
        params = [p + u for p, (u, _) in zip(params, new)]
        bufs = [b for _, b in new]
    ref_loss = outer_loss(pb, *params)
    expected = torch.autograd.grad(ref_loss, (*ralphas, pb["meta_w"]))
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    for a, b in zip(got, expected):
        assert max_rel_err(a, b) <= 1e-10 and b.abs().max() > 0


@pytest.mark.parametrize("name", sorted(n.lower() for n, _ in unrollopt._C.default_settings()))
def test_per_parameter_learning_rates_scale_the_update(fused, name):
    """Every optimizer's update is linear in lr: per-parameter rates equal
    separate optimizers with those rates."""
    alias = getattr(unrollopt, name)
    rates = (0.02, 0.07)
    per_param = unrolled(alias(rates, use_accelerated_op=fused), use_params=name == "adamw")
    pb = make_problem(0)
    # The same run with one lr per parameter, by hand: two one-parameter optimizers.
    opts = [alias(r, use_accelerated_op=fused) for r in rates]
    params = (pb["w0"], pb["b0"])
    states = [o.init(p) for o, p in zip(opts, params)]
    for _ in range(3):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        out = [o.update(g, s, params=p, inplace=False) for o, g, s, p in zip(opts, grads, states, params)]
        params = tuple(p + u for p, (u, _) in zip(params, out))
        states = [s for _, s in out]
    loss = outer_loss(pb, *params)
    by_hand = (loss, params, torch.autograd.grad(loss, (pb["meta_w"], pb["w0"], pb["b0"])))
    # The two runs round differently: rate * (1 * x) against (rate * x), one
    # rounding more or less per element and step, i.e. about 1 ulp of lr. How
    # far that moves the result is a property of this problem: measured by
    # changing lr by 1 ulp, 1e-15 or less for every optimizer but Adadelta,
    # whose eps = 1e-6 makes sqrt(acc_delta + eps) / sqrt(square_avg + eps)
    # ill-conditioned in the first steps: up to 1.6e-13 (observed differences:
    # 3.9e-14 on an AMD EPYC, 1.2e-13 on an Intel Xeon). 1e-12 bounds it with a
    # factor 6; a wrong rate per parameter would differ in the first digit.
    assert_same_run(per_param, by_hand, rtol=1e-12, zero=(0,) if name == "lion" else ())


def test_per_parameter_learning_rates_errors():
    with pytest.raises(ValueError, match=r"lr\[1\]"):
        unrollopt.sgd([0.1, -0.1])
    with pytest.raises(ValueError, match=r"lr\[0\]"):
        unrollopt.sgd([torch.tensor([0.1, -0.2])])
    opt = unrollopt.sgd([0.1, 0.2])
    with pytest.raises(ValueError, match="lr does not have the structure"):
        opt.update([torch.ones(1)], opt.init([torch.ones(1)]))


# --- AdamW's mask --------------------------------------------------------------------


def test_adamw_mask_limits_the_weight_decay(fused):
    g = gen(8)
    params = {"w": randn(g, 4, 3), "b": randn(g, 3)}
    grads = {"w": randn(g, 4, 3), "b": randn(g, 3)}
    masked = unrollopt.adamw(0.1, weight_decay=0.5, mask={"w": True, "b": False}, use_accelerated_op=fused)
    decayed = unrollopt.adamw(0.1, weight_decay=0.5, use_accelerated_op=fused)
    plain = unrollopt.adamw(0.1, weight_decay=0.0, use_accelerated_op=fused)
    out = {}
    for name, t in (("masked", masked), ("decayed", decayed), ("plain", plain)):
        out[name], _ = t.update(grads, t.init(params), params=params, inplace=False)
    assert torch.equal(out["masked"]["w"], out["decayed"]["w"])
    assert torch.equal(out["masked"]["b"], out["plain"]["b"])
    assert not torch.equal(out["decayed"]["b"], out["plain"]["b"])
    fn_mask = unrollopt.adamw(
        0.1, weight_decay=0.5, mask=lambda p: {k: v.dim() > 1 for k, v in p.items()}, use_accelerated_op=fused
    )
    u, _ = fn_mask.update(grads, fn_mask.init(params), params=params, inplace=False)
    assert torch.equal(u["w"], out["decayed"]["w"]) and torch.equal(u["b"], out["plain"]["b"])


# --- TorchOpt's keyword arguments ------------------------------------------------------


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, float("inf")])
def test_clip_grad_norm_of_any_order_matches_torch(norm_type):
    g = torch.Generator().manual_seed(11)
    grads = [torch.randn(5, 3, generator=g, dtype=torch.float64) * 4, torch.randn(7, generator=g, dtype=torch.float64)]
    expected = [t.clone() for t in grads]
    params = [torch.zeros_like(t, requires_grad=True) for t in expected]
    for p, e in zip(params, expected):
        p.grad = e
    torch.nn.utils.clip_grad_norm_(params, 1.5, norm_type=norm_type)
    clip = unrollopt.clip_grad_norm(1.5, norm_type=norm_type)
    out, _ = clip.update(grads, clip.init(grads), inplace=False)
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def test_clip_grad_norm_error_if_nonfinite():
    grads = [torch.tensor([1.0, float("nan")], dtype=torch.float64)]
    clip = unrollopt.clip_grad_norm(1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        clip.update(grads, clip.init(grads), inplace=False)
    out, _ = unrollopt.clip_grad_norm(1.0).update(grads, (), inplace=False)  # without: NaN propagates
    assert torch.isnan(out[0]).all()
    with pytest.raises(ValueError, match="norm_type"):
        unrollopt.clip_grad_norm(1.0, norm_type=0.0)


def test_trace_with_dampening_and_torchopt_spellings_matches_torch_sgd():
    """trace(momentum=, dampening=) with scale(-lr) is torch.optim.SGD's momentum step."""
    g = torch.Generator().manual_seed(12)
    p = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    ref = p.detach().clone().requires_grad_()
    opt = unrollopt.chain(unrollopt.trace(momentum=0.8, dampening=0.3), unrollopt.scale(-0.1))
    torch_opt = torch.optim.SGD([ref], lr=0.1, momentum=0.8, dampening=0.3)
    state = opt.init((p,))
    for _ in range(4):
        grad = torch.randn(6, generator=g, dtype=torch.float64)
        updates, state = opt.update((grad.clone(),), state, inplace=False)
        with torch.no_grad():
            p += updates[0]
        ref.grad = grad
        torch_opt.step()
    torch.testing.assert_close(p, ref, rtol=1e-14, atol=1e-15)
    positional, keyword = unrollopt.trace(0.8, True), unrollopt.trace(momentum=0.8, nesterov=True)
    x = (torch.randn(3, generator=g, dtype=torch.float64),)
    s1, s2 = positional.init(x), keyword.init(x)
    for _ in range(2):  # past the first step, where the buffer starts at the gradient
        (a,), s1 = positional.update(x, s1, inplace=False)
        (b,), s2 = keyword.update(x, s2, inplace=False)
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="not both"):
        unrollopt.trace(0.9, momentum=0.9)


@pytest.mark.parametrize("name", ["scale_by_rms", "scale_by_stddev"])
def test_scale_by_rms_takes_alpha(name):
    g = [torch.randn(4, generator=torch.Generator().manual_seed(13), dtype=torch.float64)]
    by_decay = getattr(unrollopt, name)(0.7)
    by_alpha = getattr(unrollopt, name)(alpha=0.7)
    a, _ = by_decay.update(g, by_decay.init(g), inplace=False)
    b, _ = by_alpha.update(g, by_alpha.init(g), inplace=False)
    assert torch.equal(a[0], b[0])
    with pytest.raises(TypeError, match="not both"):
        getattr(unrollopt, name)(0.7, alpha=0.7)


def test_register_hook_replaces_the_gradient_through_the_updates():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    cotangent = torch.tensor([1.0, float("nan"), float("inf")], dtype=torch.float64)
    for hook, expected in ((unrollopt.zero_nan_hook, [2.0, 0.0, float("inf")]),
                           (unrollopt.nan_to_num_hook(0.0, posinf=5.0), [2.0, 0.0, 5.0])):  # fmt: skip
        t = unrollopt.chain(unrollopt.register_hook(hook), unrollopt.scale(2.0))
        (u,), _ = t.update((x * 1.0,), t.init((x,)), inplace=False)
        (grad,) = torch.autograd.grad((u * cotangent).sum(), x)
        assert torch.equal(grad, torch.tensor(expected, dtype=torch.float64))
    # Updates that do not require grad pass through (no hook to register).
    plain = unrollopt.register_hook(unrollopt.zero_nan_hook)
    (v,), _ = plain.update((torch.ones(2),), plain.init((torch.ones(2),)))
    assert torch.equal(v, torch.ones(2))
    with pytest.raises(TypeError, match="callable"):
        unrollopt.register_hook(3)
