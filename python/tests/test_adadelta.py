"""Adadelta in its three forms: unrollopt.Adadelta against torch.optim.Adadelta
(steps, param groups, state dicts both ways), meta-gradients through unrolled
steps of unrollopt.adadelta and unrollopt.MetaAdadelta against an independent
float64 reference (tensor hyperparameters included), and hyperparameter
validation."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch
from conftest import F64, gen, is_finite, max_rel_err, rand_pos, randn, ref_adadelta_step, unrollopt
from torch import nn
from torch.func import functional_call

STEPS = 50
KEYS = {"square_avg", "acc_delta"}

# --- unrollopt.Adadelta against torch.optim.Adadelta -----------------------------------


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
    dict(rho=rho, eps=ep, weight_decay=wd, maximize=mx)
    # (With rho = 0.5 and eps = 1e-6 this problem is ill-conditioned: a 1e-15
    # relative change of the initial parameters moves acc_delta by 2e-10.)
    for rho, ep, wd, mx in itertools.product((0.9, 0.8), (1e-6, 1e-3), (0.0, 0.05), (False, True))
]


def options_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items() if v is not False and v != 0.0)


@pytest.mark.parametrize("options", GRID, ids=options_id)
def test_matches_torch_adadelta(fused, options):
    m = make_model(0)
    sign = -1.0 if options["maximize"] else 1.0
    ref, ref_opt, ref_losses = train(lambda p: torch.optim.Adadelta(p, lr=5.0, **options), m, sign=sign)
    got, opt, losses = train(lambda p: unrollopt.Adadelta(p, lr=5.0, **options, use_accelerated_op=fused), m, sign=sign)
    assert_params_rel(got, ref)
    assert max_rel_err(got[0], m["params"][0]) > 1e-2  # the parameters moved
    assert 0 < sign * losses[-1] < 0.9 * sign * losses[0]
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        assert set(s) == set(t) == {"step", "square_avg", "acc_delta"}
        assert float(s["step"]) == float(t["step"]) == STEPS
        for key in KEYS:
            assert max_rel_err(s[key], t[key]) <= 1e-10, key
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


def test_defaults_match_torch_adadelta():
    p = torch.zeros(2, requires_grad=True)
    ours = unrollopt.Adadelta([p]).defaults
    theirs = torch.optim.Adadelta([p]).defaults
    for key in ("lr", "rho", "eps", "weight_decay", "maximize"):
        assert ours[key] == theirs[key], key


def test_param_groups_with_different_hyperparameters(fused):
    m = make_model(1)
    groups = [
        dict(params=[0], lr=3.0, rho=0.8),
        dict(params=[1], weight_decay=0.2, eps=1e-4),
        dict(params=[2], lr=1.0, maximize=True),
    ]
    ref, _, _ = train(lambda g: torch.optim.Adadelta(g, lr=2.0), m, groups=groups)
    got, opt, _ = train(lambda g: unrollopt.Adadelta(g, lr=2.0, use_accelerated_op=fused), m, groups=groups)
    assert_params_rel(got, ref)
    assert max_rel_err(got[2], m["params"][2]) > 1e-3
    assert [g["lr"] for g in opt.param_groups] == [3.0, 2.0, 1.0]


def test_state_dict_round_trip(fused):
    m = make_model(5)
    hp = dict(lr=3.0, rho=0.8, weight_decay=0.05)
    full, _, _ = train(lambda p: unrollopt.Adadelta(p, **hp, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: unrollopt.Adadelta(p, **hp, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "square_avg", "acc_delta"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = unrollopt.Adadelta(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 3.0 and opt2.param_groups[0]["rho"] == 0.8
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, 1e-14)


@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
def test_state_dict_interop_with_torch_adadelta(fused, direction):
    m = make_model(6)
    hp = dict(lr=3.0, rho=0.85, weight_decay=0.05, eps=1e-5)
    ref, ref_opt, _ = train(lambda p: torch.optim.Adadelta(p, **hp), m, steps=30)
    if direction == "torch_to_unrollopt":
        first = lambda p: torch.optim.Adadelta(p, **hp)  # noqa: E731
        second = lambda p: unrollopt.Adadelta(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: unrollopt.Adadelta(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: torch.optim.Adadelta(p, lr=0.9)  # noqa: E731
    half, opt, _ = train(first, m, steps=15)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "square_avg", "acc_delta"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = second(params)
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert (group["lr"], group["rho"], group["eps"]) == (3.0, 0.85, 1e-5)
    if isinstance(opt2, unrollopt.Adadelta):
        assert group["use_accelerated_op"] == fused
    for _ in range(15):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, ref, 1e-10)
    for p, q in zip(params, ref):
        for key in KEYS:
            assert max_rel_err(opt2.state[p][key], ref_opt.state[q][key]) <= 1e-10, key
        assert float(opt2.state[p]["step"]) == 30


# --- meta-gradients through unrolled unrollopt.adadelta ---------------------------------


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
    sqs = [torch.zeros_like(p) for p in params]
    accs = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [ref_adadelta_step(g, sq, acc, p, **hp) for g, sq, acc, p in zip(grads, sqs, accs, params)]
        params = [p + n[0] for p, n in zip(params, new)]
        sqs = [n[1] for n in new]
        accs = [n[2] for n in new]
    return outer_loss(pb, *params), params, sqs, accs


def assert_rel(actual, expected, rtol, what):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert is_finite(a), f"{what}[{i}] is not finite"
        err = max_rel_err(a, e)
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


META_CONFIGS = [
    dict(rho=0.9, eps=1e-6, wd=0.0, maximize=False),
    dict(rho=0.8, eps=1e-3, wd=0.05, maximize=True),
    dict(rho=0.5, eps=1e-2, wd=0.1, maximize=False),
]


@pytest.mark.parametrize("cfg", META_CONFIGS, ids=options_id)
def test_meta_gradient_matches_reference(fused, cfg):
    pb = make_problem(0)
    opt = unrollopt.adadelta(2.0, cfg["rho"], cfg["eps"], cfg["wd"], maximize=cfg["maximize"], use_accelerated_op=fused)
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, state = unrolled_unrollopt(pb, opt, use_params=cfg["wd"] > 0)
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, sqs, accs = unrolled_reference(
        pb, lr=2.0, rho=cfg["rho"], eps=cfg["eps"], wd=cfg["wd"], maximize=cfg["maximize"]
    )
    expected = torch.autograd.grad(ref_loss, meta)
    assert isinstance(state, unrollopt.AdadeltaState) and int(state.count) == 3
    assert_rel(state.square_avg, sqs, 1e-12, "square_avg")
    assert_rel(state.acc_delta, accs, 1e-12, "acc_delta")
    assert_rel(params, ref_params, 1e-12, "params")
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(g.abs().max() > 0 for g in got)


def test_meta_gradient_tensor_hyperparameters(fused):
    """Meta-learned lr, rho and weight_decay (0-d tensors that require grad)."""
    pb = make_problem(1)
    values = dict(lr=2.0, rho=0.8, wd=0.1)

    def tensors():
        return {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in values.items()}

    h = tensors()
    opt = unrollopt.adadelta(h["lr"], h["rho"], 1e-4, h["wd"], use_accelerated_op=fused)
    loss, _, _ = unrolled_unrollopt(pb, opt)
    got = torch.autograd.grad(loss, [*h.values(), pb["meta_w"], pb["w0"]])
    r = tensors()
    ref_loss, _, _, _ = unrolled_reference(pb, lr=r["lr"], rho=r["rho"], eps=1e-4, wd=r["wd"])
    expected = torch.autograd.grad(ref_loss, [*r.values(), pb["meta_w"], pb["w0"]])
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[:3])


# --- MetaAdadelta -------------------------------------------------------------------


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


def reference_meta_adadelta(net, steps, **hp):
    x, y, meta = net_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    st = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
    for _ in range(steps):
        loss = net_inner_loss(functional_call(net, params, (x,)), y, meta)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            u, *st[k] = ref_adadelta_step(g, *st[k], p, **hp)
            new[k] = p + u
        params = new
    return functional_call(net, params, (x,)).pow(2).sum(), meta, params


META_ADADELTA_CONFIGS = [
    dict(lr=1.0),
    dict(lr=2.0, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True),
]


@pytest.mark.parametrize("cfg", META_ADADELTA_CONFIGS, ids=options_id)
def test_meta_adadelta_meta_gradient_matches_reference(fused, cfg):
    net = Net()
    ref_outer, ref_meta, ref_params = reference_meta_adadelta(
        net, 3, lr=cfg["lr"], rho=cfg.get("rho", 0.9), eps=cfg.get("eps", 1e-6), wd=cfg.get("weight_decay", 0.0),
        maximize=cfg.get("maximize", False),
    )  # fmt: skip
    (expected,) = torch.autograd.grad(ref_outer, ref_meta)
    x, y, meta = net_data()
    opt = unrollopt.MetaAdadelta(net, **cfg, use_accelerated_op=fused)
    for _ in range(3):
        opt.step(net_inner_loss(net(x), y, meta))
    outer = net(x).pow(2).sum()
    (got,) = torch.autograd.grad(outer, meta)
    assert abs(outer.item() - ref_outer.item()) <= 1e-12 * abs(ref_outer.item())
    assert_rel([got], [expected], 1e-10, "meta-gradient")
    assert got.abs().max() > 0
    for name, p in net.named_parameters():
        assert max_rel_err(p, ref_params[name]) <= 1e-12, name


# --- hyperparameter validation -------------------------------------------------------

BAD_HYPERPARAMETERS = [
    ("lr", dict(lr=-0.1)),
    ("lr", dict(lr=float("nan"))),
    ("lr", dict(lr=torch.tensor(-1.0))),
    ("rho", dict(rho=-0.1)),
    ("rho", dict(rho=1.5)),
    ("rho", dict(rho=torch.tensor(-0.5, dtype=F64))),
    ("eps", dict(eps=-1e-8)),
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]

APIS = {
    "adadelta": lambda **kw: unrollopt.adadelta(**kw),
    "Adadelta": lambda **kw: unrollopt.Adadelta([torch.zeros(2, requires_grad=True)], **kw),
    "MetaAdadelta": lambda **kw: unrollopt.MetaAdadelta(nn.Linear(2, 1), **kw),
}


@pytest.mark.parametrize("name,kwargs", BAD_HYPERPARAMETERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HYPERPARAMETERS)])
@pytest.mark.parametrize("api", list(APIS))
def test_bad_hyperparameter_value(api, name, kwargs):
    with pytest.raises(ValueError, match=re.escape(name)):
        APIS[api](**kwargs)
