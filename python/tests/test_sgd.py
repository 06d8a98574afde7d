"""SGD in its three forms: unrollopt.SGD against torch.optim.SGD (steps, param
groups, state dicts both ways), meta-gradients through unrolled steps of
unrollopt.sgd and unrollopt.MetaSGD against an independent float64 reference
(tensor hyperparameters included), and hyperparameter validation."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch
from conftest import F64, assert_close, gen, is_finite, max_rel_err, rand_pos, randn, ref_sgd_step, unrollopt
from torch import nn
from torch.func import functional_call

STEPS = 50

# --- unrollopt.SGD against torch.optim.SGD -------------------------------------------


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
    """``steps`` optimizer steps on ``sign * loss`` (sign -1 with maximize, so
    that the run converges either way); returns (params, optimizer, losses)."""
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


def valid(o):
    return not o["nesterov"] or (o["momentum"] > 0 and o["dampening"] == 0)


GRID = [
    dict(momentum=mo, dampening=da, nesterov=ne, weight_decay=wd, maximize=mx)
    for mo, da, ne, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.05), (False, True))
]
GRID = [o for o in GRID if valid(o)]


def options_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items() if v) or "plain"


@pytest.mark.parametrize("options", GRID, ids=options_id)
def test_matches_torch_sgd(fused, options):
    m = make_model(0)
    sign = -1.0 if options["maximize"] else 1.0
    ref, ref_opt, ref_losses = train(lambda p: torch.optim.SGD(p, lr=0.05, **options), m, sign=sign)
    got, opt, losses = train(lambda p: unrollopt.SGD(p, lr=0.05, **options, use_accelerated_op=fused), m, sign=sign)
    assert_params_rel(got, ref)
    # The parameters moved and the loss went down (the comparison is not vacuous;
    # with maximize the objective is -loss).
    assert max_rel_err(got[0], m["params"][0]) > 1e-2
    assert 0 < sign * losses[-1] < 0.5 * sign * losses[0]
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        if options["momentum"]:
            assert set(s) == {"momentum_buffer"}
            assert max_rel_err(s["momentum_buffer"], t["momentum_buffer"]) <= 1e-10
        else:
            assert "momentum_buffer" not in s and t.get("momentum_buffer") is None
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


def test_param_groups_with_different_hyperparameters(fused):
    m = make_model(1)
    groups = [
        dict(params=[0], lr=0.03, momentum=0.9, nesterov=True),
        dict(params=[1], weight_decay=0.2, momentum=0.5, dampening=0.3),
        dict(params=[2], lr=0.005, maximize=True),
    ]
    ref, ref_opt, _ = train(lambda g: torch.optim.SGD(g, lr=0.01), m, groups=groups)
    got, opt, _ = train(lambda g: unrollopt.SGD(g, lr=0.01, use_accelerated_op=fused), m, groups=groups)
    assert_params_rel(got, ref)
    assert max_rel_err(got[2], m["params"][2]) > 1e-3  # the maximized group moved too
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.01, 0.005]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.5, 0.0]
    assert max_rel_err(opt.state[got[1]]["momentum_buffer"], ref_opt.state[ref[1]]["momentum_buffer"]) <= 1e-10
    assert "momentum_buffer" not in opt.state[got[2]]


def test_parameter_that_gets_gradients_later_starts_its_own_buffer(fused):
    """With momentum, a parameter's buffer starts as its first gradient, while
    others in the group continue theirs (two step numbers in one group), as in
    torch.optim.SGD."""
    g = gen(3)
    a = randn(g, 4, requires_grad=True)
    b = randn(g, 3, requires_grad=True)
    a2 = a.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    hp = dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)
    opt = unrollopt.SGD([a, b], **hp, use_accelerated_op=fused)
    ref = torch.optim.SGD([a2, b2], **hp)
    for params, o in (([a, b], opt), ([a2, b2], ref)):
        (params[0] ** 2).sum().backward()
        o.step()
    assert set(opt.state[a]) == {"momentum_buffer"} and len(opt.state[b]) == 0
    for _ in range(3):
        for params, o in (([a, b], opt), ([a2, b2], ref)):
            o.zero_grad()
            ((params[0] ** 2).sum() * params[1][0] + (params[1] ** 3).sum()).backward()
            o.step()
    assert_params_rel([a, b], [a2, b2], 1e-13)
    for p, q in ((a, a2), (b, b2)):
        assert max_rel_err(opt.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"]) <= 1e-13


def test_state_dict_round_trip(fused):
    m = make_model(5)
    hp = dict(lr=0.02, momentum=0.9, dampening=0.1, weight_decay=0.01)
    full, _, _ = train(lambda p: unrollopt.SGD(p, **hp, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: unrollopt.SGD(p, **hp, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"momentum_buffer"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = unrollopt.SGD(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.02 and opt2.param_groups[0]["momentum"] == 0.9
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, 1e-14)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
def test_state_dict_interop_with_torch_sgd(fused, direction, nesterov):
    m = make_model(6)
    hp = dict(lr=0.02, momentum=0.85, dampening=0.0 if nesterov else 0.1, weight_decay=0.01, nesterov=nesterov)
    ref, ref_opt, _ = train(lambda p: torch.optim.SGD(p, **hp), m, steps=30)
    if direction == "torch_to_unrollopt":
        first = lambda p: torch.optim.SGD(p, **hp)  # noqa: E731
        second = lambda p: unrollopt.SGD(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: unrollopt.SGD(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: torch.optim.SGD(p, lr=0.9)  # noqa: E731
    half, opt, _ = train(first, m, steps=15)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"momentum_buffer"}
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = second(params)
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert (group["lr"], group["momentum"], group["dampening"], group["nesterov"]) == (
        0.02, 0.85, hp["dampening"], nesterov)  # fmt: skip
    if isinstance(opt2, unrollopt.SGD):
        assert group["use_accelerated_op"] == fused
    for _ in range(15):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, ref, 1e-10)
    for p, q in zip(params, ref):
        assert max_rel_err(opt2.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"]) <= 1e-10


def test_step_errors_do_not_modify_anything(fused):
    """SGD.step validates every group before it updates any."""
    g = gen(7)
    a = randn(g, 3, requires_grad=True)
    b = randn(g, 2, requires_grad=True)
    opt = unrollopt.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9, use_accelerated_op=fused)
    a.grad = randn(g, 3)
    b.grad = randn(g, 2)
    opt.param_groups[1]["momentum"] = -0.5
    before = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(ValueError, match="momentum"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert len(opt.state[a]) == 0 and len(opt.state[b]) == 0


# --- meta-gradients through unrolled unrollopt.sgd ------------------------------------
# A linear regression whose per-example loss weights (meta_w) and initial
# parameters are meta-parameters; the outer loss is a validation loss.


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


def unrolled_unrollopt(pb, opt, steps=3, use_params=False):
    params = (pb["w0"], pb["b0"])
    state = opt.init(params)
    for _ in range(steps):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        updates, state = opt.update(grads, state, params=params if use_params else None, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    return outer_loss(pb, *params), params, state


def unrolled_reference(pb, steps=3, *, lr, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False, maximize=False,
                       with_buffer=None):  # fmt: skip
    params = [pb["w0"], pb["b0"]]
    if with_buffer is None:
        with_buffer = isinstance(momentum, torch.Tensor) or momentum != 0
    bufs = [torch.zeros_like(p) if with_buffer else None for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [
            ref_sgd_step(g, buf, p, t, lr=lr, momentum=momentum, dampening=dampening, wd=wd, nesterov=nesterov,
                         maximize=maximize)  # fmt: skip
            for g, buf, p in zip(grads, bufs, params)
        ]
        params = [p + u for p, (u, _) in zip(params, new)]
        bufs = [b for _, b in new]
    return outer_loss(pb, *params), params, bufs


def assert_rel(actual, expected, rtol, what):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert is_finite(a), f"{what}[{i}] is not finite"
        err = max_rel_err(a, e)
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


META_CONFIGS = [
    dict(momentum=0.0, dampening=0.0, nesterov=False, wd=0.0, maximize=False),
    dict(momentum=0.0, dampening=0.3, nesterov=False, wd=0.03, maximize=True),
    dict(momentum=0.9, dampening=0.0, nesterov=False, wd=0.0, maximize=False),
    dict(momentum=0.9, dampening=0.3, nesterov=False, wd=0.03, maximize=False),
    dict(momentum=0.9, dampening=0.0, nesterov=True, wd=0.03, maximize=True),
    dict(momentum=0.5, dampening=0.3, nesterov=False, wd=0.0, maximize=True),
]


@pytest.mark.parametrize("cfg", META_CONFIGS, ids=options_id)
def test_meta_gradient_matches_reference(fused, cfg):
    pb = make_problem(0)
    opt = unrollopt.sgd(
        0.05, cfg["momentum"], cfg["dampening"], cfg["wd"], cfg["nesterov"], maximize=cfg["maximize"],
        use_accelerated_op=fused,
    )  # fmt: skip
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, state = unrolled_unrollopt(pb, opt, use_params=cfg["wd"] > 0)
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, ref_bufs = unrolled_reference(pb, lr=0.05, **cfg)
    expected = torch.autograd.grad(ref_loss, meta)
    assert int(state.count) == 3
    if cfg["momentum"]:
        assert_rel(state.momentum_buffer, ref_bufs, 1e-12, "momentum_buffer")
    else:
        assert state.momentum_buffer is None
    assert_rel(params, ref_params, 1e-12, "params")
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(g.abs().max() > 0 for g in got)


TENSOR_HYPER = {
    # name: (kwargs of unrollopt.sgd, which of them are tensors requiring grad)
    "lr-momentum-dampening-wd": (dict(lr=0.05, momentum=0.8, dampening=0.2, weight_decay=0.02), ("lr", "momentum", "dampening", "weight_decay")),
    "lr-momentum-nesterov": (dict(lr=0.05, momentum=0.7, weight_decay=0.02, nesterov=True), ("lr", "momentum")),
    # A tensor momentum selects the momentum form even at 0, so that it can be learned.
    "momentum-at-zero": (dict(lr=0.05, momentum=0.0, dampening=0.2), ("lr", "momentum")),
}


@pytest.mark.parametrize("name", list(TENSOR_HYPER))
def test_meta_gradient_tensor_hyperparameters(fused, name):
    """Meta-learned lr, momentum, ... (0-d tensors that require grad): their
    gradients, and the initial parameters', against the reference's."""
    pb = make_problem(1)
    kwargs, learned = TENSOR_HYPER[name]

    def with_tensors():
        return {k: torch.tensor(v, dtype=F64, requires_grad=True) if k in learned else v for k, v in kwargs.items()}

    hp = with_tensors()
    opt = unrollopt.sgd(**hp, use_accelerated_op=fused)
    wrt = [hp[k] for k in learned] + [pb["meta_w"], pb["w0"]]
    loss, _, state = unrolled_unrollopt(pb, opt, use_params="weight_decay" in kwargs)
    got = torch.autograd.grad(loss, wrt)
    assert state.momentum_buffer is not None

    rp = with_tensors()
    ref_loss, _, _ = unrolled_reference(
        pb, lr=rp["lr"], momentum=rp["momentum"], dampening=rp.get("dampening", 0.0),
        wd=rp.get("weight_decay", 0.0), nesterov=rp.get("nesterov", False),
    )  # fmt: skip
    expected = torch.autograd.grad(ref_loss, [rp[k] for k in learned] + [pb["meta_w"], pb["w0"]])
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[: len(learned)])


# --- MetaSGD ------------------------------------------------------------------------


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
    x = randn(g, 10, 3)
    y = randn(g, 10, 1)
    meta = randn(g, 10, 1, requires_grad=True)
    return x, y, meta


def net_inner_loss(out, y, meta):
    return ((out - y) ** 2 * torch.sigmoid(meta)).mean()


def reference_meta_sgd(net, steps, *, lr, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False, maximize=False):
    """torch.optim.SGD's equations on a functional copy of the parameters:
    (outer loss, final parameters by name)."""
    x, y, meta = net_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    with_buffer = isinstance(momentum, torch.Tensor) or momentum != 0
    bufs = {k: torch.zeros_like(v) if with_buffer else None for k, v in params.items()}
    for t in range(1, steps + 1):
        loss = net_inner_loss(functional_call(net, params, (x,)), y, meta)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            u, bufs[k] = ref_sgd_step(
                g, bufs[k], p, t, lr=lr, momentum=momentum, dampening=dampening, wd=wd, nesterov=nesterov,
                maximize=maximize,
            )  # fmt: skip
            new[k] = p + u
        params = new
    return functional_call(net, params, (x,)).pow(2).sum(), meta, params


META_SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True),
]


@pytest.mark.parametrize("cfg", META_SGD_CONFIGS, ids=options_id)
def test_meta_sgd_meta_gradient_matches_reference(fused, cfg):
    net = Net()
    ref_outer, ref_meta, ref_params = reference_meta_sgd(
        net, 3, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0), dampening=cfg.get("dampening", 0.0),
        wd=cfg.get("weight_decay", 0.0), nesterov=cfg.get("nesterov", False), maximize=cfg.get("maximize", False),
    )  # fmt: skip
    (expected,) = torch.autograd.grad(ref_outer, ref_meta)
    x, y, meta = net_data()
    opt = unrollopt.MetaSGD(net, **cfg, use_accelerated_op=fused)
    for _ in range(3):
        opt.step(net_inner_loss(net(x), y, meta))
    outer = net(x).pow(2).sum()
    (got,) = torch.autograd.grad(outer, meta)
    assert abs(outer.item() - ref_outer.item()) <= 1e-12 * abs(ref_outer.item())
    assert_rel([got], [expected], 1e-10, "meta-gradient")
    assert got.abs().max() > 0
    for name, p in net.named_parameters():
        assert max_rel_err(p, ref_params[name]) <= 1e-12, name


def test_meta_sgd_tensor_lr_and_momentum(fused):
    """MetaSGD with a learned lr and momentum: their meta-gradients and the data's."""
    net = Net(2)
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    momentum = torch.tensor(0.6, dtype=F64, requires_grad=True)
    lr2, momentum2 = (t.detach().clone().requires_grad_() for t in (lr, momentum))
    ref_outer, ref_meta, _ = reference_meta_sgd(net, 3, lr=lr2, momentum=momentum2, dampening=0.1)
    expected = torch.autograd.grad(ref_outer, (lr2, momentum2, ref_meta))
    x, y, meta = net_data()
    opt = unrollopt.MetaSGD(net, lr, momentum, 0.1, use_accelerated_op=fused)
    for _ in range(3):
        opt.step(net_inner_loss(net(x), y, meta))
    got = torch.autograd.grad(net(x).pow(2).sum(), (lr, momentum, meta))
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert float(got[0]) != 0 and float(got[1]) != 0


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(momentum=0.9, nesterov=True, weight_decay=0.01)], ids=["plain", "nesterov-wd"]
)
def test_meta_optimizer_with_sgd_equals_meta_sgd(fused, kwargs):
    results = []
    for make in (
        lambda net: unrollopt.MetaOptimizer(net, unrollopt.sgd(lr=1.0, **kwargs, use_accelerated_op=fused)),
        lambda net: unrollopt.MetaSGD(net, lr=1.0, **kwargs, use_accelerated_op=fused),
    ):
        net = Net(3)
        x, y, meta = net_data()
        opt = make(net)
        for _ in range(3):
            opt.step(net_inner_loss(net(x), y, meta))
        outer = net(x).pow(2).sum()
        params = [p.detach() for p in net.parameters()]
        results.append((outer.detach(), params, torch.autograd.grad(outer, meta)[0]))
    (o1, p1, g1), (o2, p2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(g1, g2) and g1.abs().max() > 0
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)
    assert not torch.equal(p1[0], Net(3).fc1.weight.detach())  # the steps moved the parameters


# --- hyperparameter validation -------------------------------------------------------

BAD_HYPERPARAMETERS = [
    ("lr", dict(lr=-0.1)),
    ("lr", dict(lr=float("nan"))),
    ("lr", dict(lr=torch.tensor(-1.0))),
    ("momentum", dict(momentum=-0.5)),
    ("momentum", dict(momentum=torch.tensor(-0.1, dtype=F64))),
    ("dampening", dict(dampening=-0.1)),
    ("dampening", dict(dampening=float("nan"))),
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]

APIS = {
    "sgd": lambda **kw: unrollopt.sgd(**{"lr": 0.1, **kw}),
    "SGD": lambda **kw: unrollopt.SGD([torch.zeros(2, requires_grad=True)], **{"lr": 0.1, **kw}),
    "MetaSGD": lambda **kw: unrollopt.MetaSGD(nn.Linear(2, 1), **{"lr": 0.1, **kw}),
}


@pytest.mark.parametrize("name,kwargs", BAD_HYPERPARAMETERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HYPERPARAMETERS)])
@pytest.mark.parametrize("api", list(APIS))
def test_bad_hyperparameter_value(api, name, kwargs):
    with pytest.raises(ValueError, match=re.escape(name)):
        APIS[api](**kwargs)


@pytest.mark.parametrize("api", list(APIS))
def test_nesterov_needs_momentum_and_no_dampening(api):
    with pytest.raises(ValueError, match="nesterov"):
        APIS[api](nesterov=True)  # no momentum
    with pytest.raises(ValueError, match="nesterov"):
        APIS[api](momentum=0.9, dampening=0.1, nesterov=True)
    # The valid combinations are accepted.
    APIS[api](momentum=0.9, nesterov=True)
    APIS[api](momentum=0.9, dampening=0.1)
    APIS[api](lr=0.0, momentum=0.0, dampening=0.0, weight_decay=0.0)


def test_sgd_state():
    """unrollopt.sgd's state: a momentum buffer like the parameters (None without
    momentum) and the step count."""
    params = {"w": torch.ones(2, 3, dtype=F64), "b": torch.ones(3, dtype=F64)}
    plain = unrollopt.sgd(lr=0.1).init(params)
    assert isinstance(plain, unrollopt.SgdState) and plain.momentum_buffer is None
    assert plain.count.dtype == torch.int64 and int(plain.count) == 0
    opt = unrollopt.sgd(lr=0.1, momentum=0.9, moment_requires_grad=True)
    state = opt.init(params)
    assert state.momentum_buffer.keys() == params.keys()
    assert all(b.requires_grad and b.shape == params[k].shape and not b.any() for k, b in state.momentum_buffer.items())
    g = gen(8)
    grads = {k: randn(g, *p.shape) for k, p in params.items()}
    updates, state = opt.update(grads, state, inplace=False)
    assert int(state.count) == 1
    assert_close(state.momentum_buffer, grads, rtol=0, atol=0)  # the first buffer is the gradient
    assert_close(updates, {k: -0.1 * v for k, v in grads.items()}, rtol=1e-15)
