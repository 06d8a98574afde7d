"""Adamax in its three forms: unrollopt.Adamax against torch.optim.Adamax (steps,
param groups, state dicts both ways), meta-gradients through unrolled steps of
unrollopt.adamax and unrollopt.MetaAdamax against an independent float64
reference (tensor hyperparameters included), the documented derivatives at the
maximum's ties and at g' = 0, and hyperparameter validation."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch
from conftest import F64, gen, is_finite, max_rel_err, rand_pos, randn, ref_adamax_step, unrollopt
from torch import nn
from torch.func import functional_call

STEPS = 50

# --- unrollopt.Adamax against torch.optim.Adamax ----------------------------------------


def make_model(seed, dtype=F64):
    g = gen(seed)
    return dict(
        x=randn(g, 16, 5, dtype=dtype),
        y=randn(g, 16, 2, dtype=dtype),
        params=[randn(g, 2, 5, dtype=dtype), randn(g, 2, dtype=dtype), randn(g, 5, dtype=dtype)],
    )


def loss_fn(m, params):
    w, b, s = params
    return ((m["x"] * (1 + 0.1 * s) @ w.T + b - m["y"]) ** 2).mean() + 0.01 * (w**4).sum()


def train(opt_factory, m, steps=STEPS, groups=None, sign=1.0):
    params = [p.detach().clone().requires_grad_() for p in m["params"]]
    if groups is None:
        opt = opt_factory(params)
    else:
        opt = opt_factory([{**g, "params": [params[i] for i in g["params"]]} for g in groups])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = sign * loss_fn(m, params)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return params, opt, losses


def assert_params_rel(a, b, rtol=1e-10):
    for i, (x, y) in enumerate(zip(a, b)):
        assert is_finite(x), f"param {i} is not finite"
        err = max_rel_err(x, y)
        assert err <= rtol, f"param {i}: relative error {err:.3g}"


GRID = [
    dict(betas=be, eps=ep, weight_decay=wd, maximize=mx)
    # (Adamax with small betas and eps = 1e-8 is ill-conditioned on this problem: a
    # 1e-15 relative change of the initial parameters moves the result by 3e-10.)
    for be, ep, wd, mx in itertools.product(((0.9, 0.999), (0.8, 0.95)), (1e-8, 1e-2), (0.0, 0.1), (False, True))
]


def options_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items() if v is not False)


@pytest.mark.parametrize("options", GRID, ids=options_id)
def test_matches_torch_adamax(fused, options):
    m = make_model(0)
    sign = -1.0 if options["maximize"] else 1.0
    ref, ref_opt, ref_losses = train(lambda p: torch.optim.Adamax(p, lr=0.02, **options), m, sign=sign)
    got, opt, losses = train(lambda p: unrollopt.Adamax(p, lr=0.02, **options, use_accelerated_op=fused), m, sign=sign)
    assert_params_rel(got, ref)
    assert max_rel_err(got[0], m["params"][0]) > 1e-2  # the parameters moved
    assert 0 < sign * losses[-1] < 0.8 * sign * losses[0]
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        assert set(s) == {"step", "exp_avg", "exp_inf"}
        assert float(s["step"]) == float(t["step"]) == STEPS
        for key in ("exp_avg", "exp_inf"):
            assert max_rel_err(s[key], t[key]) <= 1e-10, key
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


def test_defaults_match_torch_adamax():
    p = torch.zeros(2, requires_grad=True)
    ours = unrollopt.Adamax([p]).defaults
    theirs = torch.optim.Adamax([p]).defaults
    for key in ("lr", "betas", "eps", "weight_decay", "maximize"):
        assert ours[key] == theirs[key], key
    assert ours["lr"] == 2e-3 and ours["weight_decay"] == 0.0


def test_param_groups_with_different_hyperparameters(fused):
    m = make_model(1)
    groups = [
        dict(params=[0], lr=0.03, betas=(0.8, 0.9)),
        dict(params=[1], weight_decay=0.2, eps=1e-3),
        dict(params=[2], lr=0.005, maximize=True),
    ]
    ref, ref_opt, _ = train(lambda g: torch.optim.Adamax(g, lr=0.01), m, groups=groups)
    got, opt, _ = train(lambda g: unrollopt.Adamax(g, lr=0.01, use_accelerated_op=fused), m, groups=groups)
    assert_params_rel(got, ref)
    assert max_rel_err(got[2], m["params"][2]) > 1e-3  # the maximized group moved too
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.01, 0.005]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.2, 0.0]


def test_state_dict_round_trip(fused):
    m = make_model(5)
    hp = dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05)
    full, _, _ = train(lambda p: unrollopt.Adamax(p, **hp, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: unrollopt.Adamax(p, **hp, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_inf"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = unrollopt.Adamax(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.02 and opt2.param_groups[0]["weight_decay"] == 0.05
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, 1e-14)


@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
def test_state_dict_interop_with_torch_adamax(fused, direction):
    m = make_model(6)
    hp = dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6)
    ref, ref_opt, _ = train(lambda p: torch.optim.Adamax(p, **hp), m, steps=30)
    if direction == "torch_to_unrollopt":
        first = lambda p: torch.optim.Adamax(p, **hp)  # noqa: E731
        second = lambda p: unrollopt.Adamax(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: unrollopt.Adamax(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: torch.optim.Adamax(p, lr=0.9)  # noqa: E731
    half, opt, _ = train(first, m, steps=15)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) >= {"step", "exp_avg", "exp_inf"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = second(params)
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"], group["eps"]) == (0.02, (0.85, 0.99), 0.05, 1e-6)
    if isinstance(opt2, unrollopt.Adamax):
        assert group["use_accelerated_op"] == fused
    for _ in range(15):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, ref, 1e-10)
    for p, q in zip(params, ref):
        for key in ("exp_avg", "exp_inf"):
            assert max_rel_err(opt2.state[p][key], ref_opt.state[q][key]) <= 1e-10
        assert float(opt2.state[p]["step"]) == 30


# --- meta-gradients through unrolled unrollopt.adamax ------------------------------------


def make_problem(seed):
    g = gen(seed)
    return dict(
        x=randn(g, 8, 4),
        y=randn(g, 8, 3),
        xv=randn(g, 6, 4),
        yv=randn(g, 6, 3),
        meta_w=rand_pos(g, 8, low=0.5).requires_grad_(),
        w0=randn(g, 3, 4, requires_grad=True),
        b0=randn(g, 3, requires_grad=True),
    )


def inner_loss(pb, w, b):
    r = pb["x"] @ w.T + b - pb["y"]
    return (pb["meta_w"][:, None] * r**2).mean() + 0.1 * (w**3).sum()


def outer_loss(pb, w, b):
    return ((pb["xv"] @ w.T + b - pb["yv"]) ** 2).mean()


def unrolled_unrollopt(pb, opt, steps=3, use_params=True):
    params = (pb["w0"], pb["b0"])
    state = opt.init(params)
    for _ in range(steps):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        updates, state = opt.update(grads, state, params=params if use_params else None, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    return outer_loss(pb, *params), params, state


def unrolled_reference(pb, steps=3, **hp):
    params = [pb["w0"], pb["b0"]]
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [ref_adamax_step(g, m, v, p, t, **hp) for g, m, v, p in zip(grads, ms, vs, params)]
        params = [p + u for p, (u, _, _) in zip(params, new)]
        ms = [m for _, m, _ in new]
        vs = [v for _, _, v in new]
    return outer_loss(pb, *params), params, ms, vs


def assert_rel(actual, expected, rtol, what):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert is_finite(a), f"{what}[{i}] is not finite"
        err = max_rel_err(a, e)
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


META_CONFIGS = [
    dict(eps=1e-8, wd=0.0, maximize=False),
    dict(eps=1e-8, wd=0.05, maximize=False),
    dict(eps=1e-3, wd=0.05, maximize=True),
    # eps large enough that |g'| + eps is selected at some steps and beta2 * nu at others.
    dict(eps=0.5, wd=0.2, maximize=False),
]


@pytest.mark.parametrize("cfg", META_CONFIGS, ids=options_id)
def test_meta_gradient_matches_reference(fused, cfg):
    pb = make_problem(0)
    opt = unrollopt.adamax(
        0.05, (0.8, 0.9), cfg["eps"], cfg["wd"], maximize=cfg["maximize"],
        use_accelerated_op=fused,
    )  # fmt: skip
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, state = unrolled_unrollopt(pb, opt, use_params=cfg["wd"] > 0)
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, ref_ms, ref_vs = unrolled_reference(
        pb, lr=0.05, b1=0.8, b2=0.9, eps=cfg["eps"], wd=cfg["wd"], maximize=cfg["maximize"]
    )
    expected = torch.autograd.grad(ref_loss, meta)
    assert isinstance(state, unrollopt.ScaleByAdamState) and int(state.count) == 3
    assert_rel(state.mu, ref_ms, 1e-12, "mu")
    assert_rel(state.nu, ref_vs, 1e-12, "nu")
    assert_rel(params, ref_params, 1e-12, "params")
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(g.abs().max() > 0 for g in got)


def test_meta_gradient_tensor_hyperparameters(fused):
    """Meta-learned lr, betas and weight_decay (0-d tensors that require grad)."""
    pb = make_problem(1)
    values = dict(lr=0.05, b1=0.8, b2=0.95, wd=0.1)

    def tensors():
        return {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in values.items()}

    h = tensors()
    opt = unrollopt.adamax(h["lr"], (h["b1"], h["b2"]), 1e-6, h["wd"], use_accelerated_op=fused)
    loss, _, _ = unrolled_unrollopt(pb, opt)
    got = torch.autograd.grad(loss, [*h.values(), pb["meta_w"], pb["w0"]])
    r = tensors()
    ref_loss, _, _, _ = unrolled_reference(pb, lr=r["lr"], b1=r["b1"], b2=r["b2"], eps=1e-6, wd=r["wd"])
    expected = torch.autograd.grad(ref_loss, [*r.values(), pb["meta_w"], pb["w0"]])
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[:4])


def test_derivative_conventions_at_ties_and_zero_gradient():
    """Where the step is not differentiable the fused backward uses the
    documented one-sided derivatives: the maximum gives the whole cotangent to
    beta2 * nu at a tie, and d|g'|/dg' = 0 at g' = 0. Elements: a tie, g' = 0
    (beta2 * nu selected), a tie at g' = 0, and the two ordinary branches."""
    b2, eps = 0.5, 0.25
    g = torch.tensor([0.75, 0.0, 0.0, -2.0, 0.5], dtype=F64)  # |g| + eps: 1, .25, .25, 2.25, .75
    nu = torch.tensor([2.0, 1.0, 0.5, 1.0, 3.0], dtype=F64)  # beta2 * nu: 1, .5, .25, .5, 1.5
    mu = torch.tensor([0.5, -1.0, 2.0, 1.0, -0.5], dtype=F64)
    hyper = [torch.tensor(v, dtype=F64) for v in (0.1, 0.8, b2, 0.0)]
    cu = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0], dtype=F64)
    cs = [torch.tensor([0.3, 0.2, -0.1, 0.4, 0.6], dtype=F64), torch.tensor([0.7, -0.4, 0.9, 0.2, -0.3], dtype=F64)]
    opts = [eps, 0.0]
    u, (m1, v1) = torch.ops.unrollopt.adamax([g], [mu, nu], [], torch.tensor(2), hyper, opts)
    gg, gs, _, gh = torch.ops.unrollopt.adamax_backward(
        [cu], cs, [g], [mu, nu], [], torch.tensor(2), hyper, opts, [True, True, False, True, True, True, True]
    )
    # By hand: selection of beta2 * nu where beta2 * nu >= |g'| + eps.
    sel_a = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0], dtype=F64)
    sign = torch.tensor([1.0, 0.0, 0.0, -1.0, 1.0], dtype=F64)
    step_size = -0.1 / (1 - 0.8**2)
    assert torch.equal(v1, torch.tensor([1.0, 0.5, 0.25, 2.25, 1.5], dtype=F64))
    g_mu = cs[0] + cu * step_size / v1
    g_nu = cs[1] - cu * step_size * m1 / v1**2
    expected_g = 0.2 * g_mu + sign * (1 - sel_a) * g_nu
    torch.testing.assert_close(gg[0], expected_g, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gs[1], b2 * sel_a * g_nu, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gs[0], 0.8 * g_mu, rtol=1e-14, atol=1e-15)
    # d/d beta2: only where beta2 * nu was selected.
    torch.testing.assert_close(gh[2], (sel_a * g_nu * nu).sum(), rtol=1e-13, atol=0)
    assert all(is_finite(t) for t in (*gg, *gs, *gh)) and float(gh[2]) != 0
    # Away from those points the fused backward is autograd's of the reference (elements 3 and 4).
    leaves = [t[3:].clone().requires_grad_() for t in (g, mu, nu)]
    ru, rm, rv = ref_adamax_step(*leaves[:2], leaves[2], None, 2, lr=0.1, b1=0.8, b2=b2, eps=eps)
    ref = torch.autograd.grad((ru * cu[3:]).sum() + (rm * cs[0][3:]).sum() + (rv * cs[1][3:]).sum(), leaves)
    torch.testing.assert_close(gg[0][3:], ref[0], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gs[1][3:], ref[2], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(u[0], step_size * m1 / v1, rtol=1e-15, atol=0)


def test_plain_and_fused_agree_away_from_ties(fused):
    """Both paths through 3 unrolled steps with learned lr and betas, where the
    maximum selects each argument somewhere (eps comparable to |g|)."""
    pb = make_problem(2)
    values = dict(lr=0.05, b1=0.7, b2=0.99)
    h = {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in values.items()}
    opt = unrollopt.adamax(h["lr"], (h["b1"], h["b2"]), 0.05, use_accelerated_op=fused)
    loss, _, state = unrolled_unrollopt(pb, opt, use_params=False)
    got = torch.autograd.grad(loss, [*h.values(), pb["w0"]])
    r = {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in values.items()}
    ref_loss, _, _, ref_vs = unrolled_reference(pb, lr=r["lr"], b1=r["b1"], b2=r["b2"], eps=0.05)
    expected = torch.autograd.grad(ref_loss, [*r.values(), pb["w0"]])
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert_rel(state.nu, ref_vs, 1e-12, "nu")
    # beta2 enters only through the maximum: beta2 * nu was selected somewhere.
    assert float(got[2]) != 0


# --- MetaAdamax ---------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = gen(seed)
        self.fc1 = nn.Linear(3, 6).to(F64)
        self.fc2 = nn.Linear(6, 1).to(F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def net_data():
    g = gen(1)
    return randn(g, 10, 3), randn(g, 10, 1), randn(g, 10, 1, requires_grad=True)


def net_inner_loss(out, y, meta):
    return ((out - y) ** 2 * torch.sigmoid(meta)).mean()


def reference_meta_adamax(net, steps, **hp):
    x, y, meta = net_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    ms = {k: torch.zeros_like(v) for k, v in params.items()}
    vs = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(1, steps + 1):
        loss = net_inner_loss(functional_call(net, params, (x,)), y, meta)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            u, ms[k], vs[k] = ref_adamax_step(g, ms[k], vs[k], p, t, **hp)
            new[k] = p + u
        params = new
    return functional_call(net, params, (x,)).pow(2).sum(), meta, params


META_ADAMW_CONFIGS = [
    dict(lr=0.05),
    dict(lr=0.05, betas=(0.8, 0.9), eps=0.2, weight_decay=0.1, maximize=True),
]


@pytest.mark.parametrize("cfg", META_ADAMW_CONFIGS, ids=options_id)
def test_meta_adamax_meta_gradient_matches_reference(fused, cfg):
    net = Net()
    b1, b2 = cfg.get("betas", (0.9, 0.999))
    ref_outer, ref_meta, ref_params = reference_meta_adamax(
        net, 3, lr=cfg["lr"], b1=b1, b2=b2, eps=cfg.get("eps", 1e-8), wd=cfg.get("weight_decay", 0.0),
        maximize=cfg.get("maximize", False),
    )  # fmt: skip
    (expected,) = torch.autograd.grad(ref_outer, ref_meta)
    x, y, meta = net_data()
    opt = unrollopt.MetaAdamax(net, **cfg, use_accelerated_op=fused)
    for _ in range(3):
        opt.step(net_inner_loss(net(x), y, meta))
    outer = net(x).pow(2).sum()
    (got,) = torch.autograd.grad(outer, meta)
    assert abs(outer.item() - ref_outer.item()) <= 1e-12 * abs(ref_outer.item())
    assert_rel([got], [expected], 1e-10, "meta-gradient")
    assert got.abs().max() > 0
    for name, p in net.named_parameters():
        assert max_rel_err(p, ref_params[name]) <= 1e-12, name


def test_meta_optimizer_with_adamax_equals_meta_adamax(fused):
    results = []
    for make in (
        lambda net: unrollopt.MetaOptimizer(net, unrollopt.adamax(lr=0.1, weight_decay=0.1, use_accelerated_op=fused)),
        lambda net: unrollopt.MetaAdamax(net, lr=0.1, weight_decay=0.1, use_accelerated_op=fused),
    ):
        net = Net(3)
        x, y, meta = net_data()
        opt = make(net)
        for _ in range(3):
            opt.step(net_inner_loss(net(x), y, meta))
        outer = net(x).pow(2).sum()
        results.append((outer.detach(), torch.autograd.grad(outer, meta)[0]))
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(g1, g2) and g1.abs().max() > 0


# --- hyperparameter validation -------------------------------------------------------

BAD_HYPERPARAMETERS = [
    ("lr", dict(lr=-0.1)),
    ("lr", dict(lr=float("nan"))),
    ("lr", dict(lr=torch.tensor(-1.0))),
    ("betas[0]", dict(betas=(1.0, 0.999))),
    ("betas[1]", dict(betas=(0.9, -0.1))),
    ("betas[1]", dict(betas=(0.9, torch.tensor(1.5, dtype=F64)))),
    ("eps", dict(eps=-1e-8)),
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]

APIS = {
    "adamax": lambda **kw: unrollopt.adamax(**kw),
    "Adamax": lambda **kw: unrollopt.Adamax([torch.zeros(2, requires_grad=True)], **kw),
    "MetaAdamax": lambda **kw: unrollopt.MetaAdamax(nn.Linear(2, 1), **kw),
}


@pytest.mark.parametrize("name,kwargs", BAD_HYPERPARAMETERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HYPERPARAMETERS)])
@pytest.mark.parametrize("api", list(APIS))
def test_bad_hyperparameter_value(api, name, kwargs):
    with pytest.raises(ValueError, match=re.escape(name)):
        APIS[api](**kwargs)


def test_adamax_needs_params_with_weight_decay_and_first_step(fused):
    params = {"w": torch.ones(3, dtype=F64)}
    opt = unrollopt.adamax(weight_decay=0.1, use_accelerated_op=fused)
    state = opt.init(params)
    grads = {"w": randn(gen(2), 3)}
    with pytest.raises(ValueError, match="weight_decay"):
        opt.update(grads, state)
    # Without weight decay no params are needed; the first step is -lr * g / (|g| + eps).
    opt0 = unrollopt.adamax(lr=0.1, weight_decay=0.0, use_accelerated_op=fused)
    u, _ = opt0.update(grads, opt0.init(params), inplace=False)
    torch.testing.assert_close(u["w"], -0.1 * grads["w"] / (grads["w"].abs() + 1e-8), rtol=1e-14, atol=0)
    assert u["w"].abs().min() > 0
