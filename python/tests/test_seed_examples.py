"""The functional example from the project's seed, filled in with a small model
through torch.func.functional_call."""

from __future__ import annotations

import re

import pytest
import torch
from references import F64, gen, max_rel_err, randn, ref_adam_step, unrollopt

ITER_TIMES = 3


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.fc2 = torch.nn.Linear(6, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def make_functional(model):
    """(fmodel, params) as functorch.make_functional did, via torch.func."""
    names = [n for n, _ in model.named_parameters()]

    def fmodel(params, x):
        return torch.func.functional_call(model, dict(zip(names, params)), (x,))

    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    return fmodel, params


def setup():
    torch.manual_seed(0)
    model = Net().double()
    g = gen(1)
    data = dict(x=randn(g, 10, 4), y=randn(g, 10, 1), xv=randn(g, 7, 4), yv=randn(g, 7, 1))
    # meta-parameters: per-example weights of the inner loss and an L2 coefficient.
    meta_params = (
        torch.full((10,), 1.0, dtype=F64, requires_grad=True),
        torch.tensor(0.01, dtype=F64, requires_grad=True),
    )
    return model, data, meta_params


def inner_loss(fmodel, params, meta_params, data):
    weights, l2 = meta_params
    r = (fmodel(params, data["x"]) - data["y"]).squeeze(1)
    return (weights * r**2).mean() + l2 * sum((p**2).sum() for p in params)


def outer_loss(fmodel, params, meta_params, data):
    return ((fmodel(params, data["xv"]) - data["yv"]) ** 2).mean()


def seed_example(inplace_apply: bool | None):
    model, data, meta_params = setup()
    # --- the seed's example (grads with create_graph=True) ---
    opt = unrollopt.adam(lr=0.05)
    fmodel, params = make_functional(model)
    state = opt.init(params)
    for _ in range(ITER_TIMES):
        loss = inner_loss(fmodel, params, meta_params, data)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        updates, state = opt.update(grads, state, inplace=False)
        if inplace_apply is None:
            params = unrollopt.apply_updates(params, updates)  # exactly as written
        else:
            params = unrollopt.apply_updates(params, updates, inplace=inplace_apply)
    loss = outer_loss(fmodel, params, meta_params, data)
    meta_grads = torch.autograd.grad(loss, meta_params)
    return loss, meta_grads


def reference():
    model, data, meta_params = setup()
    fmodel, params = make_functional(model)
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    for t in range(1, ITER_TIMES + 1):
        grads = torch.autograd.grad(inner_loss(fmodel, params, meta_params, data), params, create_graph=True)
        steps = [ref_adam_step(g, m, v, None, t, lr=0.05, b1=0.9, b2=0.999, eps=1e-8) for g, m, v in zip(grads, ms, vs)]
        params = tuple(p + u for p, (u, _, _) in zip(params, steps))
        ms = [m for _, m, _ in steps]
        vs = [v for _, _, v in steps]
    loss = outer_loss(fmodel, params, meta_params, data)
    return loss, torch.autograd.grad(loss, meta_params)


def test_seed_example_with_inplace_false_matches_reference():
    loss, meta_grads = seed_example(inplace_apply=False)
    ref_loss, ref_grads = reference()
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    for got, exp in zip(meta_grads, ref_grads):
        assert torch.isfinite(got).all() and got.abs().max() > 0
        assert max_rel_err(got, exp) <= 1e-10


def test_seed_example_as_written_raises_pointing_to_inplace_false():
    with pytest.raises(RuntimeError, match=re.escape("inplace=False")):
        seed_example(inplace_apply=None)
