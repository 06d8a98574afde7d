"""AdamW in its three forms: unrollopt.AdamW against torch.optim.AdamW (steps,
param groups, state dicts both ways), meta-gradients through unrolled steps of
unrollopt.adamw and unrollopt.MetaAdamW against an independent float64
reference (tensor hyperparameters included), and hyperparameter validation."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch
from conftest import F64, gen, is_finite, max_rel_err, rand_pos, randn, ref_adamw_step, unrollopt
from torch import nn
from torch.func import functional_call

STEPS = 50

# --- unrollopt.AdamW against torch.optim.AdamW ----------------------------------------


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
    for be, ep, wd, mx in itertools.product(((0.9, 0.999), (0.5, 0.8)), (1e-8, 1e-2), (0.0, 0.1), (False, True))
]


def options_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items() if v is not False)


@pytest.mark.parametrize("options", GRID, ids=options_id)
def test_matches_torch_adamw(fused, options):
    m = make_model(0)
    sign = -1.0 if options["maximize"] else 1.0
    ref, ref_opt, ref_losses = train(lambda p: torch.optim.AdamW(p, lr=0.02, **options), m, sign=sign)
    got, opt, losses = train(lambda p: unrollopt.AdamW(p, lr=0.02, **options, use_accelerated_op=fused), m, sign=sign)
    assert_params_rel(got, ref)
    assert max_rel_err(got[0], m["params"][0]) > 1e-2  # the parameters moved
    assert 0 < sign * losses[-1] < 0.8 * sign * losses[0]
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        assert set(s) == {"step", "exp_avg", "exp_avg_sq"}
        assert float(s["step"]) == float(t["step"]) == STEPS
        for key in ("exp_avg", "exp_avg_sq"):
            assert max_rel_err(s[key], t[key]) <= 1e-10, key
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


def test_defaults_match_torch_adamw():
    p = torch.zeros(2, requires_grad=True)
    ours = unrollopt.AdamW([p]).defaults
    theirs = torch.optim.AdamW([p]).defaults
    for key in ("lr", "betas", "eps", "weight_decay", "maximize"):
        assert ours[key] == theirs[key], key
    assert ours["weight_decay"] == 1e-2


def test_param_groups_with_different_hyperparameters(fused):
    m = make_model(1)
    groups = [
        dict(params=[0], lr=0.03, betas=(0.8, 0.9)),
        dict(params=[1], weight_decay=0.2, eps=1e-3),
        dict(params=[2], lr=0.005, maximize=True),
    ]
    ref, ref_opt, _ = train(lambda g: torch.optim.AdamW(g, lr=0.01), m, groups=groups)
    got, opt, _ = train(lambda g: unrollopt.AdamW(g, lr=0.01, use_accelerated_op=fused), m, groups=groups)
    assert_params_rel(got, ref)
    assert max_rel_err(got[2], m["params"][2]) > 1e-3  # the maximized group moved too
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.01, 0.005]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-2, 0.2, 1e-2]


def test_state_dict_round_trip(fused):
    m = make_model(5)
    hp = dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05)
    full, _, _ = train(lambda p: unrollopt.AdamW(p, **hp, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: unrollopt.AdamW(p, **hp, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = unrollopt.AdamW(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.02 and opt2.param_groups[0]["weight_decay"] == 0.05
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, 1e-14)


@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
def test_state_dict_interop_with_torch_adamw(fused, direction):
    m = make_model(6)
    hp = dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6)
    ref, ref_opt, _ = train(lambda p: torch.optim.AdamW(p, **hp), m, steps=30)
    if direction == "torch_to_unrollopt":
        first = lambda p: torch.optim.AdamW(p, **hp)  # noqa: E731
        second = lambda p: unrollopt.AdamW(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: unrollopt.AdamW(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: torch.optim.AdamW(p, lr=0.9)  # noqa: E731
    half, opt, _ = train(first, m, steps=15)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) >= {"step", "exp_avg", "exp_avg_sq"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = second(params)
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"], group["eps"]) == (0.02, (0.85, 0.99), 0.05, 1e-6)
    if isinstance(opt2, unrollopt.AdamW):
        assert group["use_accelerated_op"] == fused
    for _ in range(15):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, ref, 1e-10)
    for p, q in zip(params, ref):
        for key in ("exp_avg", "exp_avg_sq"):
            assert max_rel_err(opt2.state[p][key], ref_opt.state[q][key]) <= 1e-10
        assert float(opt2.state[p]["step"]) == 30


# --- meta-gradients through unrolled unrollopt.adamw ------------------------------------


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
        new = [ref_adamw_step(g, m, v, p, t, **hp) for g, m, v, p in zip(grads, ms, vs, params)]
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
    dict(eps=1e-8, eps_root=0.0, wd=0.0, maximize=False),
    dict(eps=1e-8, eps_root=0.0, wd=0.05, maximize=False),
    dict(eps=1e-3, eps_root=1e-6, wd=0.05, maximize=True),
    dict(eps=0.1, eps_root=0.0, wd=0.2, maximize=False),
]


@pytest.mark.parametrize("cfg", META_CONFIGS, ids=options_id)
def test_meta_gradient_matches_reference(fused, cfg):
    pb = make_problem(0)
    opt = unrollopt.adamw(
        0.05, (0.8, 0.9), cfg["eps"], cfg["wd"], eps_root=cfg["eps_root"], maximize=cfg["maximize"],
        use_accelerated_op=fused,
    )  # fmt: skip
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, state = unrolled_unrollopt(pb, opt, use_params=cfg["wd"] > 0)
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, ref_ms, ref_vs = unrolled_reference(
        pb, lr=0.05, b1=0.8, b2=0.9, eps=cfg["eps"], eps_root=cfg["eps_root"], wd=cfg["wd"], maximize=cfg["maximize"]
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
    opt = unrollopt.adamw(h["lr"], (h["b1"], h["b2"]), 1e-6, h["wd"], use_accelerated_op=fused)
    loss, _, _ = unrolled_unrollopt(pb, opt)
    got = torch.autograd.grad(loss, [*h.values(), pb["meta_w"], pb["w0"]])
    r = tensors()
    ref_loss, _, _, _ = unrolled_reference(pb, lr=r["lr"], b1=r["b1"], b2=r["b2"], eps=1e-6, wd=r["wd"])
    expected = torch.autograd.grad(ref_loss, [*r.values(), pb["meta_w"], pb["w0"]])
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[:4])


def test_exact_backward_where_second_moment_is_zero():
    """A parameter element the inner loss ignores: its gradient, moments and Adam
    part of the update are exactly 0 (only the decay moves it). Plain autograd
    gets NaN from sqrt'(0); the fused backward is exact and finite, and equals
    plain autograd on the problem where the dead element only decays."""
    g = gen(4)
    x = randn(g, 6, 3)
    y = randn(g, 6)
    xv = randn(g, 5, 3)
    yv = randn(g, 5)
    w0 = randn(g, 3, requires_grad=True)
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 0.0], dtype=F64)

    def run(fused):
        opt = unrollopt.adamw(lr=lr, betas=(0.9, 0.99), weight_decay=0.1, use_accelerated_op=fused)
        params = (w0,)
        state = opt.init(params)
        for _ in range(3):
            grads = torch.autograd.grad(((x @ (params[0] * mask) - y) ** 2).mean(), params, create_graph=True)
            updates, state = opt.update(grads, state, params=params, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        assert float(state.nu[0][2].detach()) == 0.0
        return torch.autograd.grad(((xv @ params[0] - yv) ** 2).mean(), (w0, lr))

    plain = run(False)
    assert torch.isnan(plain[0]).all()
    fused = run(True)
    assert all(is_finite(t) for t in fused)
    # Reference: the live elements by plain autograd, the dead one only decays.
    lr2 = lr.detach().clone().requires_grad_()
    live = w0.detach()[:2].clone().requires_grad_()
    dead = w0.detach()[2:].clone().requires_grad_()
    p, q, m, v = live, dead, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    for t in (1, 2, 3):
        (gr,) = torch.autograd.grad(((x[:, :2] @ p - y) ** 2).mean(), (p,), create_graph=True)
        u, m, v = ref_adamw_step(gr, m, v, p, t, lr=lr2, b1=0.9, b2=0.99, eps=1e-8, wd=0.1)
        p, q = p + u, q - lr2 * 0.1 * q
    expected = torch.autograd.grad(((xv @ torch.cat([p, q]) - yv) ** 2).mean(), (live, dead, lr2))
    assert_rel([fused[0], fused[1]], [torch.cat(expected[:2]), expected[2]], 1e-10, "meta-gradient")


# --- MetaAdamW ---------------------------------------------------------------------


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


def reference_meta_adamw(net, steps, **hp):
    x, y, meta = net_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    ms = {k: torch.zeros_like(v) for k, v in params.items()}
    vs = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(1, steps + 1):
        loss = net_inner_loss(functional_call(net, params, (x,)), y, meta)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            u, ms[k], vs[k] = ref_adamw_step(g, ms[k], vs[k], p, t, **hp)
            new[k] = p + u
        params = new
    return functional_call(net, params, (x,)).pow(2).sum(), meta, params


META_ADAMW_CONFIGS = [
    dict(lr=0.05),
    dict(lr=0.05, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1, maximize=True),
]


@pytest.mark.parametrize("cfg", META_ADAMW_CONFIGS, ids=options_id)
def test_meta_adamw_meta_gradient_matches_reference(fused, cfg):
    net = Net()
    b1, b2 = cfg.get("betas", (0.9, 0.999))
    ref_outer, ref_meta, ref_params = reference_meta_adamw(
        net, 3, lr=cfg["lr"], b1=b1, b2=b2, eps=cfg.get("eps", 1e-8), wd=cfg.get("weight_decay", 1e-2),
        maximize=cfg.get("maximize", False),
    )  # fmt: skip
    (expected,) = torch.autograd.grad(ref_outer, ref_meta)
    x, y, meta = net_data()
    opt = unrollopt.MetaAdamW(net, **cfg, use_accelerated_op=fused)
    for _ in range(3):
        opt.step(net_inner_loss(net(x), y, meta))
    outer = net(x).pow(2).sum()
    (got,) = torch.autograd.grad(outer, meta)
    assert abs(outer.item() - ref_outer.item()) <= 1e-12 * abs(ref_outer.item())
    assert_rel([got], [expected], 1e-10, "meta-gradient")
    assert got.abs().max() > 0
    for name, p in net.named_parameters():
        assert max_rel_err(p, ref_params[name]) <= 1e-12, name


def test_meta_optimizer_with_adamw_equals_meta_adamw(fused):
    results = []
    for make in (
        lambda net: unrollopt.MetaOptimizer(net, unrollopt.adamw(lr=0.1, weight_decay=0.1, use_accelerated_op=fused)),
        lambda net: unrollopt.MetaAdamW(net, lr=0.1, weight_decay=0.1, use_accelerated_op=fused),
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
    ("eps_root", dict(eps_root=-1.0)),
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]

APIS = {
    "adamw": lambda **kw: unrollopt.adamw(**kw),
    "AdamW": lambda **kw: unrollopt.AdamW([torch.zeros(2, requires_grad=True)], **kw),
    "MetaAdamW": lambda **kw: unrollopt.MetaAdamW(nn.Linear(2, 1), **kw),
}


@pytest.mark.parametrize("name,kwargs", BAD_HYPERPARAMETERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HYPERPARAMETERS)])
@pytest.mark.parametrize("api", list(APIS))
def test_bad_hyperparameter_value(api, name, kwargs):
    with pytest.raises(ValueError, match=re.escape(name)):
        APIS[api](**kwargs)


def test_adamw_needs_params_with_weight_decay(fused):
    params = {"w": torch.ones(3, dtype=F64)}
    opt = unrollopt.adamw(weight_decay=0.1, use_accelerated_op=fused)
    state = opt.init(params)
    grads = {"w": randn(gen(2), 3)}
    with pytest.raises(ValueError, match="weight_decay"):
        opt.update(grads, state)
    # Without weight decay no params are needed, and the step is Adam's.
    opt0 = unrollopt.adamw(lr=0.1, weight_decay=0.0, use_accelerated_op=fused)
    u, _ = opt0.update(grads, opt0.init(params), inplace=False)
    ua, _ = unrollopt.adam(lr=0.1, use_accelerated_op=fused).update(grads, unrollopt.adam().init(params), inplace=False)
    assert torch.equal(u["w"], ua["w"]) and u["w"].abs().min() > 0
