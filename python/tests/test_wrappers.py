"""unrollopt.Optimizer (a torch.optim-style optimizer over any transformation)
and unrollopt.FuncOptimizer (a differentiable step on a pytree), against
torch.optim trajectories and a hand-written unrolled loop, in float64."""

from __future__ import annotations

import pytest
import torch
from references import F64, unrollopt


def make_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(F64)


def batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 4, generator=g, dtype=F64), torch.randn(16, 1, generator=g, dtype=F64)


def loss_of(net, step):
    x, y = batch(step)
    return ((net(x) - y) ** 2).mean()


def test_optimizer_over_a_chain_matches_torch_optim(fused):
    """chain(clip_grad_norm, sgd with momentum) against torch.nn.utils.clip_grad_norm_ + torch.optim.SGD."""
    net, ref = make_net(0), make_net(0)
    opt = unrollopt.Optimizer(net.parameters(), unrollopt.chain(
        unrollopt.clip_grad_norm(0.5), unrollopt.sgd(0.1, momentum=0.9, use_accelerated_op=fused)))  # fmt: skip
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(10):
        opt.zero_grad()
        loss_of(net, step).backward()
        opt.step()
        ref_opt.zero_grad()
        loss_of(ref, step).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_optimizer_groups_closure_and_state_dict(fused):
    net, ref = make_net(1), make_net(1)
    first, second = list(net[0].parameters()), list(net[2].parameters())
    opt = unrollopt.Optimizer(first, unrollopt.adam(0.01, use_accelerated_op=fused))
    opt.add_param_group(second)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)

    def closure():
        opt.zero_grad()
        loss = loss_of(net, 0)
        loss.backward()
        return loss

    first_loss = loss_of(make_net(1), 0)
    for step in range(5):
        loss = opt.step(closure)  # the closure's loss, before the step
        if step == 0:
            assert torch.equal(loss, first_loss)
        ref_opt.zero_grad()
        loss_of(ref, 0).backward()
        ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    saved = list(opt.state_dict())
    assert len(saved) == 2 and all(int(s.count) == 5 for s in saved)
    opt.load_state_dict(tuple(saved))
    with pytest.raises(ValueError, match="has 1 groups but the optimizer has 2"):
        opt.load_state_dict(tuple(saved[:1]))
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_optimizer_bad_arguments():
    net = make_net(2)
    with pytest.raises(TypeError, match="GradientTransformation"):
        unrollopt.Optimizer(net.parameters(), torch.optim.SGD)
    with pytest.raises(TypeError, match="iterable of tensors"):
        unrollopt.Optimizer(next(net.parameters()), unrollopt.sgd(0.1))
    opt = unrollopt.Optimizer(net.parameters(), unrollopt.sgd(0.1))
    with pytest.raises(ValueError, match="already in a parameter group"):
        opt.add_param_group(net[0].parameters())
    with pytest.raises(ValueError, match="empty"):
        opt.add_param_group([])


def test_func_optimizer_meta_gradient_matches_hand_written(fused):
    """Three differentiable SGD-momentum steps through FuncOptimizer, and the
    same steps written out: the same parameters and meta-gradients (with
    respect to the initial parameters and a learned learning rate)."""
    net = make_net(3)
    init = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    lr = torch.tensor(0.05, dtype=F64, requires_grad=True)

    def loss(params, step):
        x, y = batch(step)
        return ((torch.func.functional_call(net, params, (x,)) - y) ** 2).mean()

    fopt = unrollopt.FuncOptimizer(unrollopt.sgd(lr, momentum=0.5, use_accelerated_op=fused))
    params = init
    for step in range(3):
        params = fopt.step(loss(params, step), params)
    meta = torch.autograd.grad(loss(params, 9), [*init.values(), lr])

    ref, buf = init, None
    for step in range(3):
        grads = dict(zip(ref, torch.autograd.grad(loss(ref, step), list(ref.values()), create_graph=True)))
        buf = grads if buf is None else {k: 0.5 * buf[k] + grads[k] for k in grads}
        ref = {k: ref[k] - lr * buf[k] for k in ref}
    expected = torch.autograd.grad(loss(ref, 9), [*init.values(), lr])
    for k in params:
        torch.testing.assert_close(params[k], ref[k], rtol=1e-13, atol=1e-15)
    for a, b in zip(meta, expected):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-14)
    assert int(fopt.state_dict().count) == 3
