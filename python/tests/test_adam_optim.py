"""unrollopt.Adam (the torch.optim optimizer) against torch.optim.Adam."""

from __future__ import annotations

import copy

import pytest
import torch
from references import F64, OOP_STEPS, assert_params_rel, gen, loss_fn, make_model, max_rel_err, randn, train, unrollopt

STEPS = OOP_STEPS


OPTIONS = [
    dict(lr=1e-3),
    dict(lr=0.05),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, maximize=True),
    dict(lr=0.02, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.01, maximize=True),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_matches_torch_adam(fused, options):
    m = make_model(0)
    ref, ref_opt, ref_losses = train(lambda p: torch.optim.Adam(p, **options), m)
    got, opt, losses = train(lambda p: unrollopt.Adam(p, **options, use_accelerated_op=fused), m)
    assert_params_rel(got, ref)
    # The parameters moved (the comparison is not vacuous).
    assert max_rel_err(got[0], m["params"][0]) > 1e-4 or options.get("lr") == 1e-3
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        assert set(s) >= {"step", "exp_avg", "exp_avg_sq"}
        assert float(s["step"]) == float(t["step"]) == STEPS
        assert max_rel_err(s["exp_avg"], t["exp_avg"]) <= 1e-10
        assert max_rel_err(s["exp_avg_sq"], t["exp_avg_sq"]) <= 1e-10
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


def test_param_groups_with_different_hyperparameters(fused):
    m = make_model(1)
    groups = [
        dict(params=[0], lr=0.03, betas=(0.8, 0.99)),
        dict(params=[1], weight_decay=0.2, maximize=False, eps=1e-4),
        dict(params=[2], lr=0.005, maximize=True),
    ]
    ref, _, _ = train(lambda g: torch.optim.Adam(g, lr=0.01), m, groups=groups)
    got, opt, _ = train(lambda g: unrollopt.Adam(g, lr=0.01, use_accelerated_op=fused), m, groups=groups)
    assert_params_rel(got, ref)
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.01, 0.005]


def test_closure(fused):
    m = make_model(2)
    ref, _, ref_losses = train(lambda p: torch.optim.Adam(p, lr=0.01), m, steps=10, closure=True)
    got, _, losses = train(lambda p: unrollopt.Adam(p, lr=0.01, use_accelerated_op=fused), m, steps=10, closure=True)
    assert_params_rel(got, ref)
    assert losses == pytest.approx(ref_losses, rel=1e-12)
    # step() without closure returns None.
    p = torch.zeros(2, dtype=F64, requires_grad=True)
    p.grad = torch.ones(2, dtype=F64)
    assert unrollopt.Adam([p], use_accelerated_op=fused).step() is None


def test_zero_grad_and_params_without_grad_are_skipped(fused):
    g = gen(3)
    a = randn(g, 4, requires_grad=True)
    b = randn(g, 3, requires_grad=True)
    opt = unrollopt.Adam([a, b], lr=0.1, use_accelerated_op=fused)
    b_before = b.detach().clone()
    (a**2).sum().backward()
    assert b.grad is None
    opt.step()
    assert torch.equal(b.detach(), b_before)
    assert len(opt.state[b]) == 0 and float(opt.state[a]["step"]) == 1
    opt.zero_grad()
    assert a.grad is None  # set_to_none by default, as torch.optim
    a.grad = torch.ones(4, dtype=F64)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(a.grad, torch.zeros(4, dtype=F64))
    # Later b gets gradients: its step count starts from 1 while a's is at 2
    # (two step counts in one group), matching torch.optim.Adam.
    a2 = a.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    ref = torch.optim.Adam([a2, b2], lr=0.1)
    ref.state[a2] = copy.deepcopy(opt.state[a])
    for params, o in (([a, b], opt), ([a2, b2], ref)):
        o.zero_grad()
        ((params[0] ** 2).sum() * params[1][0] + (params[1] ** 3).sum()).backward()
        o.step()
    assert float(opt.state[a]["step"]) == 2 and float(opt.state[b]["step"]) == 1
    assert_params_rel([a, b], [a2, b2], 1e-14)


def test_mixed_dtypes_in_one_group(fused):
    g = gen(4)
    ps = [randn(g, 5, requires_grad=True), randn(g, 7, dtype=torch.float32, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    opt = unrollopt.Adam(ps, lr=0.01, use_accelerated_op=fused)
    ref = torch.optim.Adam(qs, lr=0.01)
    for _ in range(5):
        for params, o in ((ps, opt), (qs, ref)):
            o.zero_grad()
            ((params[0] ** 2).sum() + (params[1].double() ** 3).sum()).backward()
            o.step()
    assert max_rel_err(ps[0], qs[0]) <= 1e-12
    assert max_rel_err(ps[1], qs[1]) <= 1e-6
    assert ps[1].dtype == torch.float32 and opt.state[ps[1]]["exp_avg"].dtype == torch.float32


def test_state_dict_round_trip(fused):
    m = make_model(5)
    full, _, _ = train(lambda p: unrollopt.Adam(p, lr=0.02, weight_decay=0.01, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: unrollopt.Adam(p, lr=0.02, weight_decay=0.01, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert sd["param_groups"][0]["eps_root"] == 0.0
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = unrollopt.Adam(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.02
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, 1e-14)


@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
def test_state_dict_interop_with_torch_adam(fused, direction):
    m = make_model(6)
    hp = dict(lr=0.02, betas=(0.85, 0.995), weight_decay=0.01)
    ref, _, _ = train(lambda p: torch.optim.Adam(p, **hp), m, steps=30)
    if direction == "torch_to_unrollopt":
        first = lambda p: torch.optim.Adam(p, **hp)  # noqa: E731
        second = lambda p: unrollopt.Adam(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: unrollopt.Adam(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: torch.optim.Adam(p, lr=0.9)  # noqa: E731
    half, opt, _ = train(first, m, steps=15)
    sd = copy.deepcopy(opt.state_dict())
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = second(params)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.02 and tuple(opt2.param_groups[0]["betas"]) == (0.85, 0.995)
    if isinstance(opt2, unrollopt.Adam):
        assert opt2.param_groups[0]["use_accelerated_op"] == fused
        assert opt2.param_groups[0]["eps_root"] == 0.0
    for _ in range(15):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert float(opt2.state[params[0]]["step"]) == 30
    assert_params_rel(params, ref, 1e-10)


def test_tensor_lr_and_eps_root(fused):
    """A 0-d tensor lr (as torch.optim allows) and eps_root: against a reference."""
    g = gen(7)
    p = randn(g, 6, requires_grad=True)
    target = randn(g, 6)
    opt = unrollopt.Adam([p], lr=torch.tensor(0.05, dtype=F64), eps_root=1e-4, use_accelerated_op=fused)
    q = p.detach().clone()
    mu = torch.zeros(6, dtype=F64)
    nu = torch.zeros(6, dtype=F64)
    for t in range(1, 6):
        opt.zero_grad()
        ((p - target) ** 4).sum().backward()
        opt.step()
        gr = 4 * (q - target) ** 3
        mu = 0.9 * mu + 0.1 * gr
        nu = 0.999 * nu + 0.001 * gr**2
        q = q - 0.05 * (mu / (1 - 0.9**t)) / (torch.sqrt(nu / (1 - 0.999**t) + 1e-4) + 1e-8)
    assert max_rel_err(p, q) <= 1e-13


def test_sparse_gradients_rejected():
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    p.grad = torch.zeros(3, dtype=F64).to_sparse()
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match="sparse"):
        unrollopt.Adam([p]).step()
    assert torch.equal(p.detach(), before)
