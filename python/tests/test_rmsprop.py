"""RMSprop in its three forms: unrollopt.RMSprop against torch.optim.RMSprop
(steps, param groups, state dicts both ways), meta-gradients through unrolled
steps of unrollopt.rmsprop and unrollopt.MetaRMSProp against an independent
float64 reference (tensor hyperparameters included), the exact backward where
the square average is 0, initial_scale, and hyperparameter validation."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch
from conftest import F64, gen, is_finite, max_rel_err, rand_pos, randn, ref_rmsprop_step, unrollopt
from torch import nn
from torch.func import functional_call

STEPS = 50
KEYS = {"square_avg", "grad_avg", "momentum_buffer"}

# --- unrollopt.RMSprop against torch.optim.RMSprop ------------------------------------


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
    dict(alpha=0.9, eps=1e-8, momentum=mo, centered=ce, weight_decay=wd, maximize=mx)
    for mo, ce, wd, mx in itertools.product((0.0, 0.8), (False, True), (0.0, 0.05), (False, True))
] + [
    dict(alpha=0.99, eps=1e-2, momentum=0.5, centered=True, weight_decay=0.05, maximize=False),
    dict(alpha=0.99, eps=1e-2, momentum=0.0, centered=False, weight_decay=0.0, maximize=True),
]


def options_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items() if v is not False and v != 0.0)


def expected_keys(o):
    return {"step", "square_avg"} | ({"grad_avg"} if o["centered"] else set()) | (
        {"momentum_buffer"} if o["momentum"] else set())  # fmt: skip


@pytest.mark.parametrize("options", GRID, ids=options_id)
def test_matches_torch_rmsprop(fused, options):
    m = make_model(0)
    sign = -1.0 if options["maximize"] else 1.0
    ref, ref_opt, ref_losses = train(lambda p: torch.optim.RMSprop(p, lr=0.003, **options), m, sign=sign)
    got, opt, losses = train(lambda p: unrollopt.RMSprop(p, lr=0.003, **options, use_accelerated_op=fused), m, sign=sign)
    assert_params_rel(got, ref)
    assert max_rel_err(got[0], m["params"][0]) > 1e-2  # the parameters moved
    assert 0 < sign * losses[-1] < 0.9 * sign * losses[0]
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        assert set(s) == set(t) == expected_keys(options)
        assert float(s["step"]) == float(t["step"]) == STEPS
        for key in set(s) & KEYS:
            assert max_rel_err(s[key], t[key]) <= 1e-10, key
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


def test_defaults_match_torch_rmsprop():
    p = torch.zeros(2, requires_grad=True)
    ours = unrollopt.RMSprop([p]).defaults
    theirs = torch.optim.RMSprop([p]).defaults
    for key in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"):
        assert ours[key] == theirs[key], key
    assert unrollopt.RMSProp is unrollopt.RMSprop and unrollopt.MetaRMSprop is unrollopt.MetaRMSProp


def test_param_groups_with_different_hyperparameters(fused):
    m = make_model(1)
    groups = [
        dict(params=[0], lr=0.003, momentum=0.9, centered=True),
        dict(params=[1], weight_decay=0.2, alpha=0.8),
        dict(params=[2], lr=0.001, maximize=True, momentum=0.5),
    ]
    ref, ref_opt, _ = train(lambda g: torch.optim.RMSprop(g, lr=0.002), m, groups=groups)
    got, opt, _ = train(lambda g: unrollopt.RMSprop(g, lr=0.002, use_accelerated_op=fused), m, groups=groups)
    assert_params_rel(got, ref)
    assert max_rel_err(got[2], m["params"][2]) > 1e-3
    assert [g["lr"] for g in opt.param_groups] == [0.003, 0.002, 0.001]
    assert set(opt.state[got[0]]) == {"step", "square_avg", "grad_avg", "momentum_buffer"}
    assert set(opt.state[got[1]]) == {"step", "square_avg"}


def test_state_dict_round_trip(fused):
    m = make_model(5)
    hp = dict(lr=0.003, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.05)
    full, _, _ = train(lambda p: unrollopt.RMSprop(p, **hp, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: unrollopt.RMSprop(p, **hp, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "square_avg", "grad_avg", "momentum_buffer"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = unrollopt.RMSprop(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.003 and opt2.param_groups[0]["centered"] is True
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, 1e-14)


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
def test_state_dict_interop_with_torch_rmsprop(fused, direction, centered):
    m = make_model(6)
    hp = dict(lr=0.003, alpha=0.95, momentum=0.6, centered=centered, weight_decay=0.05, eps=1e-6)
    ref, ref_opt, _ = train(lambda p: torch.optim.RMSprop(p, **hp), m, steps=30)
    if direction == "torch_to_unrollopt":
        first = lambda p: torch.optim.RMSprop(p, **hp)  # noqa: E731
        second = lambda p: unrollopt.RMSprop(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: unrollopt.RMSprop(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: torch.optim.RMSprop(p, lr=0.9)  # noqa: E731
    half, opt, _ = train(first, m, steps=15)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == expected_keys(hp)
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = second(params)
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert (group["lr"], group["alpha"], group["momentum"], group["centered"]) == (0.003, 0.95, 0.6, centered)
    if isinstance(opt2, unrollopt.RMSprop):
        assert group["use_accelerated_op"] == fused
    for _ in range(15):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, ref, 1e-10)
    for p, q in zip(params, ref):
        for key in expected_keys(hp) & KEYS:
            assert max_rel_err(opt2.state[p][key], ref_opt.state[q][key]) <= 1e-10, key
        assert float(opt2.state[p]["step"]) == 30


# --- meta-gradients through unrolled unrollopt.rmsprop ---------------------------------


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


def unrolled_reference(pb, steps=3, *, centered=False, with_momentum=False, initial_scale=0.0, **hp):
    params = [pb["w0"], pb["b0"]]
    sqs = [torch.full_like(p, initial_scale) for p in params]
    gas = [torch.zeros_like(p) if centered else None for p in params]
    bufs = [torch.zeros_like(p) if with_momentum else None for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [ref_rmsprop_step(g, sq, ga, buf, p, **hp) for g, sq, ga, buf, p in zip(grads, sqs, gas, bufs, params)]
        params = [p + n[0] for p, n in zip(params, new)]
        sqs, gas, bufs = ([n[k] for n in new] for k in (1, 2, 3))
    return outer_loss(pb, *params), params, (sqs, gas, bufs)


def assert_rel(actual, expected, rtol, what):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert is_finite(a), f"{what}[{i}] is not finite"
        err = max_rel_err(a, e)
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


META_CONFIGS = [
    dict(momentum=0.0, centered=False, wd=0.0, maximize=False, initial_scale=0.0),
    dict(momentum=0.0, centered=True, wd=0.05, maximize=True, initial_scale=0.0),
    dict(momentum=0.8, centered=False, wd=0.05, maximize=False, initial_scale=1.0),
    dict(momentum=0.8, centered=True, wd=0.0, maximize=False, initial_scale=0.5),
]


@pytest.mark.parametrize("cfg", META_CONFIGS, ids=options_id)
def test_meta_gradient_matches_reference(fused, cfg):
    pb = make_problem(0)
    opt = unrollopt.rmsprop(
        0.02, 0.9, 1e-6, cfg["wd"], cfg["momentum"], cfg["centered"], initial_scale=cfg["initial_scale"],
        maximize=cfg["maximize"], use_accelerated_op=fused,
    )  # fmt: skip
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, state = unrolled_unrollopt(pb, opt, use_params=cfg["wd"] > 0)
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, (sqs, gas, bufs) = unrolled_reference(
        pb, centered=cfg["centered"], with_momentum=cfg["momentum"] > 0, initial_scale=cfg["initial_scale"],
        lr=0.02, alpha=0.9, eps=1e-6, wd=cfg["wd"], momentum=cfg["momentum"], maximize=cfg["maximize"],
    )  # fmt: skip
    expected = torch.autograd.grad(ref_loss, meta)
    assert isinstance(state, unrollopt.RMSPropState) and int(state.count) == 3
    assert_rel(state.square_avg, sqs, 1e-12, "square_avg")
    if cfg["centered"]:
        assert_rel(state.grad_avg, gas, 1e-12, "grad_avg")
    else:
        assert state.grad_avg is None
    if cfg["momentum"]:
        assert_rel(state.momentum_buffer, bufs, 1e-12, "momentum_buffer")
    else:
        assert state.momentum_buffer is None
    assert_rel(params, ref_params, 1e-12, "params")
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(g.abs().max() > 0 for g in got)


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_meta_gradient_tensor_hyperparameters(fused, centered):
    """Meta-learned lr, alpha, momentum and weight_decay (0-d tensors that require grad)."""
    pb = make_problem(1)
    values = dict(lr=0.02, alpha=0.9, momentum=0.6, wd=0.1)

    def tensors():
        return {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in values.items()}

    h = tensors()
    opt = unrollopt.rmsprop(h["lr"], h["alpha"], 1e-6, h["wd"], h["momentum"], centered, use_accelerated_op=fused)
    loss, _, _ = unrolled_unrollopt(pb, opt)
    got = torch.autograd.grad(loss, [*h.values(), pb["meta_w"], pb["w0"]])
    r = tensors()
    ref_loss, _, _ = unrolled_reference(
        pb, centered=centered, with_momentum=True, lr=r["lr"], alpha=r["alpha"], eps=1e-6, wd=r["wd"],
        momentum=r["momentum"],
    )  # fmt: skip
    expected = torch.autograd.grad(ref_loss, [*r.values(), pb["meta_w"], pb["w0"]])
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[:4])


def test_exact_backward_where_square_avg_is_zero():
    """A parameter element the inner loss ignores: its gradient and square
    average stay exactly 0 and so does its update. Plain autograd gets NaN from
    sqrt'(0); the fused backward is exact and finite, equal to plain autograd on
    the problem without that element (d outer / d w0[2] through w[2] = w0[2])."""
    g = gen(4)
    x = randn(g, 6, 3)
    y = randn(g, 6)
    xv = randn(g, 5, 3)
    yv = randn(g, 5)
    w0 = randn(g, 3, requires_grad=True)
    lr = torch.tensor(0.05, dtype=F64, requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 0.0], dtype=F64)

    def run(fused):
        opt = unrollopt.rmsprop(lr=lr, alpha=0.9, momentum=0.5, use_accelerated_op=fused)
        params = (w0,)
        state = opt.init(params)
        for _ in range(3):
            grads = torch.autograd.grad(((x @ (params[0] * mask) - y) ** 2).mean(), params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        assert float(state.square_avg[0][2].detach()) == 0.0
        assert float(params[0][2].detach()) == float(w0[2].detach())
        return torch.autograd.grad(((xv @ params[0] - yv) ** 2).mean(), (w0, lr))

    plain = run(False)
    assert torch.isnan(plain[0]).all()
    fused = run(True)
    assert all(is_finite(t) for t in fused)
    lr2 = lr.detach().clone().requires_grad_()
    live = w0.detach()[:2].clone().requires_grad_()
    dead = w0.detach()[2:].clone().requires_grad_()
    p, sq, buf = live, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    for _ in range(3):
        (gr,) = torch.autograd.grad(((x[:, :2] @ p - y) ** 2).mean(), (p,), create_graph=True)
        u, sq, _, buf = ref_rmsprop_step(gr, sq, None, buf, None, lr=lr2, alpha=0.9, eps=1e-8, momentum=0.5)
        p = p + u
    expected = torch.autograd.grad(((xv @ torch.cat([p, dead]) - yv) ** 2).mean(), (live, dead, lr2))
    assert_rel([fused[0], fused[1]], [torch.cat(expected[:2]), expected[2]], 1e-10, "meta-gradient")


def test_initial_scale_initializes_square_avg(fused):
    params = {"w": torch.ones(3, dtype=F64)}
    opt = unrollopt.rmsprop(lr=0.1, alpha=0.5, initial_scale=1.0, use_accelerated_op=fused)
    state = opt.init(params)
    assert torch.equal(state.square_avg["w"], torch.ones(3, dtype=F64))
    assert state.grad_avg is None and state.momentum_buffer is None
    grads = {"w": randn(gen(3), 3)}
    u, state = opt.update(grads, state, inplace=False)
    sq = 0.5 + 0.5 * grads["w"] ** 2
    torch.testing.assert_close(state.square_avg["w"], sq, rtol=1e-15, atol=0)
    torch.testing.assert_close(u["w"], -0.1 * grads["w"] / (sq.sqrt() + 1e-8), rtol=1e-14, atol=0)


# --- MetaRMSProp --------------------------------------------------------------------


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


def reference_meta_rmsprop(net, steps, *, centered=False, **hp):
    x, y, meta = net_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    with_momentum = hp.get("momentum", 0.0) != 0
    st = {k: (torch.zeros_like(v), torch.zeros_like(v) if centered else None,
              torch.zeros_like(v) if with_momentum else None) for k, v in params.items()}  # fmt: skip
    for _ in range(steps):
        loss = net_inner_loss(functional_call(net, params, (x,)), y, meta)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            u, *st[k] = ref_rmsprop_step(g, *st[k], p, **hp)
            new[k] = p + u
        params = new
    return functional_call(net, params, (x,)).pow(2).sum(), meta, params


META_RMSPROP_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.01, alpha=0.9, eps=1e-4, weight_decay=0.1, momentum=0.7, centered=True, maximize=True),
]


@pytest.mark.parametrize("cfg", META_RMSPROP_CONFIGS, ids=options_id)
def test_meta_rmsprop_meta_gradient_matches_reference(fused, cfg):
    net = Net()
    ref_outer, ref_meta, ref_params = reference_meta_rmsprop(
        net, 3, centered=cfg.get("centered", False), lr=cfg["lr"], alpha=cfg.get("alpha", 0.99),
        eps=cfg.get("eps", 1e-8), wd=cfg.get("weight_decay", 0.0), momentum=cfg.get("momentum", 0.0),
        maximize=cfg.get("maximize", False),
    )  # fmt: skip
    (expected,) = torch.autograd.grad(ref_outer, ref_meta)
    x, y, meta = net_data()
    opt = unrollopt.MetaRMSProp(net, **cfg, use_accelerated_op=fused)
    for _ in range(3):
        opt.step(net_inner_loss(net(x), y, meta))
    outer = net(x).pow(2).sum()
    (got,) = torch.autograd.grad(outer, meta)
    assert abs(outer.item() - ref_outer.item()) <= 1e-12 * abs(ref_outer.item())
    assert_rel([got], [expected], 1e-10, "meta-gradient")
    assert got.abs().max() > 0
    for name, p in net.named_parameters():
        assert max_rel_err(p, ref_params[name]) <= 1e-12, name


def test_meta_optimizer_with_rmsprop_equals_meta_rmsprop(fused):
    results = []
    kw = dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1, use_accelerated_op=fused)
    for make in (
        lambda net: unrollopt.MetaOptimizer(net, unrollopt.rmsprop(**kw)),
        lambda net: unrollopt.MetaRMSProp(net, **kw),
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
    ("alpha", dict(alpha=-0.1)),
    ("alpha", dict(alpha=1.5)),
    ("alpha", dict(alpha=torch.tensor(-0.5, dtype=F64))),
    ("eps", dict(eps=-1e-8)),
    ("momentum", dict(momentum=-0.5)),
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]

APIS = {
    "rmsprop": lambda **kw: unrollopt.rmsprop(**kw),
    "RMSprop": lambda **kw: unrollopt.RMSprop([torch.zeros(2, requires_grad=True)], **kw),
    "MetaRMSProp": lambda **kw: unrollopt.MetaRMSProp(nn.Linear(2, 1), **kw),
}


@pytest.mark.parametrize("name,kwargs", BAD_HYPERPARAMETERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HYPERPARAMETERS)])
@pytest.mark.parametrize("api", list(APIS))
def test_bad_hyperparameter_value(api, name, kwargs):
    with pytest.raises(ValueError, match=re.escape(name)):
        APIS[api](**kwargs)


@pytest.mark.parametrize("api", ["rmsprop", "MetaRMSProp"])
def test_bad_initial_scale(api):
    with pytest.raises(ValueError, match="initial_scale"):
        APIS[api](initial_scale=-1.0)
