"""docs/migrating-from-torchopt.md: its example runs on unrollopt (and gives
TorchOpt's numbers where TorchOpt is installed), and each row of its table of
differences behaves as documented (``test_row_<n>``)."""

from __future__ import annotations

import inspect
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import unrollopt

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-torchopt.md"
(EXAMPLE,) = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)
F64 = torch.float64


def torchopt_or_skip():
    return pytest.importorskip(
        "torchopt", reason="TorchOpt is not installed (pip install --no-deps torchopt==0.7.3 optree graphviz)"
    )


def run_example(library) -> list[torch.Tensor]:
    namespace = {"__name__": "migration_example"}
    code = EXAMPLE.replace("import unrollopt as torchopt", f"import {library.__name__} as torchopt")
    exec(compile(code, "docs/migrating-from-torchopt.md", "exec"), namespace)
    return namespace["result"]


def test_the_table_has_a_test_per_row():
    rows = re.findall(r"^\| (\d+) \|", PAGE.read_text(), flags=re.M)
    tests = {name for name in globals() if re.fullmatch(r"test_row_\d+", name)}
    assert rows == [str(i) for i in range(1, len(rows) + 1)]
    assert tests == {f"test_row_{n}" for n in rows}


def test_example_runs():
    result = run_example(unrollopt)
    assert all(torch.isfinite(t).all() for t in result)
    assert result[1].abs() > 0  # a meta-gradient flowed through the inner steps


def test_example_gives_torchopts_numbers():
    torchopt = torchopt_or_skip()
    ours, theirs = run_example(unrollopt), run_example(torchopt)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        # float32 throughout; a handful of steps of a few ops each.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_transformations_compare_and_pickle():
    opt = unrollopt.chain(unrollopt.clip_grad_norm(1.0), unrollopt.adam(lr=unrollopt.linear_schedule(0.1, 0.0, 5)))
    again = unrollopt.chain(
        unrollopt.clip_grad_norm(max_norm=1.0), unrollopt.adam(unrollopt.linear_schedule(0.1, 0.0, 5))
    )
    assert opt == again and hash(opt) == hash(again)
    assert opt != unrollopt.chain(unrollopt.clip_grad_norm(2.0), unrollopt.adam())
    assert unrollopt.chain(
        unrollopt.chain(unrollopt.scale(2.0)), unrollopt.identity(), unrollopt.adam()
    ) == unrollopt.chain(unrollopt.scale(2.0), unrollopt.adam())
    assert unrollopt.adam(lr=torch.tensor(0.1)) == unrollopt.adam(lr=torch.tensor(0.1))
    assert unrollopt.adam(lr=torch.tensor(0.1)) != unrollopt.adam(lr=torch.tensor(0.2))
    restored = pickle.loads(pickle.dumps(opt))
    assert restored == opt
    # The restored one computes the same steps.
    p = torch.randn(4, dtype=F64)
    g = torch.randn(4, dtype=F64)
    u1, _ = opt.update((g,), opt.init((p,)), inplace=False)
    u2, _ = restored.update((g,), restored.init((p,)), inplace=False)
    assert torch.equal(u1[0], u2[0])
    assert repr(unrollopt.adam(1e-2, amsgrad=True)) == "unrollopt.adam(lr=0.01, amsgrad=True)"
    assert unrollopt.clip_grad_norm(1.0).chain(unrollopt.adam()) == unrollopt.chain(
        unrollopt.clip_grad_norm(1.0), unrollopt.adam()
    )


def test_torch_optim_style_class_with_a_schedule_pickles():
    p = nn.Parameter(torch.randn(3))
    opt = unrollopt.Adam([p], lr=unrollopt.exponential_decay(0.1, decay_rate=0.5))
    p.grad = torch.randn(3)
    opt.step()
    state = pickle.loads(pickle.dumps(opt.state_dict()))
    assert state["param_groups"][0]["lr"] == opt.param_groups[0]["lr"]


def test_row_1():
    """Defaults are torch.optim's; TorchOpt's numbers by passing its defaults."""
    defaults = {name: {k: v.default for k, v in inspect.signature(getattr(unrollopt, name)).parameters.items()}
                for name in ("adamax", "adadelta", "radam")}  # fmt: skip
    assert (defaults["adamax"]["lr"], defaults["adamax"]["eps"]) == (2e-3, 1e-8)
    assert defaults["adadelta"]["lr"] == 1.0 and defaults["radam"]["eps"] == 1e-8
    for name in ("scale_by_adamax", "scale_by_radam"):
        assert inspect.signature(getattr(unrollopt, name)).parameters["eps"].default == 1e-8
    # The defaults take torch.optim.Adamax's steps.
    p = torch.randn(5, dtype=F64)
    q = p.clone().requires_grad_()
    ref = torch.optim.Adamax([q])
    opt = unrollopt.adamax()
    state = opt.init((p,))
    for _ in range(4):
        g = torch.randn(5, dtype=F64)
        q.grad = g.clone()
        ref.step()
        (u,), state = opt.update((g,), state, inplace=False)
        p = p + u
    torch.testing.assert_close(p, q.detach(), rtol=1e-12, atol=1e-14)


def test_row_1_gives_torchopts_numbers_with_its_defaults():
    torchopt = torchopt_or_skip()
    for mine, theirs in [
        (unrollopt.adamax(1e-3, eps=1e-6), torchopt.adamax()),
        (unrollopt.adadelta(1e-3), torchopt.adadelta()),
        (unrollopt.radam(eps=1e-6), torchopt.radam()),
    ]:
        x = torch.randn(6, dtype=F64)
        s1, s2 = mine.init((x,)), theirs.init((x,))
        for _ in range(3):
            g = torch.randn(6, dtype=F64)
            (u1,), s1 = mine.update((g,), s1, inplace=False)
            (u2,), s2 = theirs.update((g.clone(),), s2, inplace=False)
            # TorchOpt's float32 bias corrections (row 11) bound the agreement.
            torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-9)


def test_row_2():
    """SGD's positional order is torch.optim.SGD's: the fourth is weight_decay only by keyword."""
    for cls in (unrollopt.SGD, unrollopt.MetaSGD):
        names = list(inspect.signature(cls).parameters)
        assert names[1:5] == ["lr", "momentum", "dampening", "weight_decay"]
    a = nn.Parameter(torch.randn(4, dtype=F64))
    b = nn.Parameter(a.detach().clone())
    ours = unrollopt.SGD([a], 0.1, 0.9, weight_decay=1e-2)
    ref = torch.optim.SGD([b], 0.1, 0.9, 0.0, 1e-2)  # (lr, momentum, dampening, weight_decay)
    for _ in range(3):
        g = torch.randn(4, dtype=F64)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-13, atol=1e-15)


def test_row_3():
    with pytest.raises(TypeError, match="nesterov must be a bool.*dampening= by keyword"):
        unrollopt.trace(0.9, 0.1)
    g = torch.randn(3, dtype=F64)
    t = unrollopt.trace(0.9, dampening=0.1)
    state = t.init((g,))
    (u1,), state = t.update((g,), state, inplace=False)
    (u2,), state = t.update((g,), state, inplace=False)
    torch.testing.assert_close(u1, g)  # the first buffer is the gradient (torch.optim.SGD's rule)
    torch.testing.assert_close(u2, 0.9 * g + 0.9 * g)  # then decay * b + (1 - dampening) * g


def test_row_4():
    s = unrollopt.schedule.exponential_decay(0.1, decay_rate=0.5, transition_steps=10, transition_begin=2)
    for count in (0, 2, 7, 25):
        expected = 0.1 * 0.5 ** (max(count - 2, 0) / 10)
        assert float(s(torch.tensor(count))) == pytest.approx(expected, rel=1e-15)
    assert s(torch.tensor(3)).dtype == F64  # a tensor, differentiable where the values are tensors
    with pytest.raises(TypeError, match="transition_steps must be an int.*decay_rate= by keyword"):
        unrollopt.schedule.exponential_decay(0.1, 0.5)
    with pytest.raises(ValueError, match="decay_rate"):
        unrollopt.schedule.exponential_decay(0.1, decay_rate=0.0)
    with pytest.raises(ValueError, match="transition_steps"):
        unrollopt.schedule.exponential_decay(0.1, 0, 0.5)


def test_row_4_gives_torchopts_schedule_by_keyword():
    torchopt = torchopt_or_skip()
    s = unrollopt.schedule.exponential_decay(0.1, decay_rate=0.5, transition_steps=10, transition_begin=2)
    theirs = torchopt.schedule.exponential_decay(0.1, 0.5, transition_begin=2, transition_steps=10)
    for count in (0, 2, 7, 25):
        assert float(s(torch.tensor(count))) == pytest.approx(float(theirs(torch.tensor(count))), rel=1e-6)


def test_row_5():
    p = torch.randn(3)
    state = unrollopt.adam().init((p,))
    assert isinstance(state, unrollopt.ScaleByAdamState)
    assert state.mu[0].shape == (3,) and state.count.shape == () and state.nu_max == ()


def test_row_6():
    for name in ("MetaAdam", "MetaSGD", "MetaAdaDelta", "MetaAdaMax"):
        assert inspect.signature(getattr(unrollopt, name)).parameters["moment_requires_grad"].default is False

    def inner(moment_requires_grad):
        torch.manual_seed(0)
        net = nn.Linear(3, 1).double()
        x = torch.randn(8, 3, dtype=F64)
        opt = unrollopt.MetaAdam(net, lr=0.1, moment_requires_grad=moment_requires_grad)
        starts = [t for t in opt.state_dict()[0].mu if t.requires_grad]
        w0 = net.weight
        for _ in range(2):
            opt.step(net(x).pow(2).mean())
        return torch.autograd.grad(net(x).pow(2).mean(), [w0, *starts])

    without, with_moments = inner(False), inner(True)
    torch.testing.assert_close(without[0], with_moments[0], rtol=0, atol=0)  # same meta-gradient
    assert len(without) == 1 and len(with_moments) == 3  # only then the initial moments require grad
    assert all(torch.isfinite(t).all() for t in with_moments)


def test_row_7():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    state = unrollopt.extract_state_dict(net, by="deepcopy")
    assert list(state.params) == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    assert list(state.buffers) == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    # TorchOpt's layout, written out: one dict per submodule with parameters (buffers).
    layout = (
        tuple({k: v + 1 for k, v in m._parameters.items()} for m in net.modules() if m._parameters),
        tuple({k: v + 1 for k, v in m._buffers.items()} for m in net.modules() if m._buffers),
    )
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    unrollopt.recover_state_dict(target, layout)
    assert torch.equal(target[2].bias, net[2].bias.detach() + 1)
    assert torch.equal(target[1].running_var, net[1].running_var + 1)
    with pytest.raises(ValueError, match="2 dicts of parameters.*3 submodules"):
        unrollopt.recover_state_dict(target, (layout[0][:2], layout[1]))


def test_row_7_recovers_torchopts_own_module_state():
    torchopt = torchopt_or_skip()
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    theirs = torchopt.extract_state_dict(net, by="deepcopy")
    unrollopt.recover_state_dict(target, theirs)
    for (name, a), b in zip(target.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name


def test_row_8():
    with pytest.raises(TypeError, match="enable_visual"):
        unrollopt.extract_state_dict(nn.Linear(2, 2), enable_visual=True)


def test_row_9():
    net = nn.Linear(3, 2)
    opt = unrollopt.MetaAdam(net, lr=0.1)
    x = torch.randn(4, 3)
    opt.step(net(x).pow(2).sum())
    clone = unrollopt.module_clone(opt, by="deepcopy")
    assert type(clone) is unrollopt.MetaAdam
    mu = opt.state_dict()[0].mu[0]
    clone_mu = clone.state_dict()[0].mu[0]
    assert clone_mu is not mu and torch.equal(clone_mu, mu) and clone_mu.grad_fn is None
    before = net.weight
    clone.step(net(x).pow(2).sum())  # steps the same module...
    assert net.weight is not before
    assert opt.state_dict()[0].mu[0] is mu  # ...with its own state


def test_row_10():
    assert unrollopt.accelerated_op_available() == unrollopt.accelerated_op_available("cpu") is True
    assert unrollopt.accelerated_op_available("cuda") == (
        torch.cuda.is_available() and unrollopt.accelerated_op_available(["cuda"])
    )


def adam_reference(x0, A, steps, lr=0.1, b1=0.9, b2=0.999, eps=1e-8):
    """Three Adam steps on |A x|^2 in float64, the textbook equations."""
    x, m, v = x0, torch.zeros_like(x0), torch.zeros_like(x0)
    for t in range(1, steps + 1):
        (g,) = torch.autograd.grad((A @ x).pow(2).sum(), x, create_graph=True)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return x


def adam_unrolled(x0, A, steps, fused):
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    x, state = x0, opt.init((x0,))
    for _ in range(steps):
        (g,) = torch.autograd.grad((A @ x).pow(2).sum(), x, create_graph=True)
        (u,), state = opt.update((g,), state, inplace=False)
        x = x + u
    return x


@pytest.mark.parametrize("fused", [False, True])
def test_row_11(fused):
    """float64 bias corrections: float64 runs agree with float64 math to rounding
    (TorchOpt's float32 ones are ~1e-6 off; see the page)."""
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(5, generator=g, dtype=F64, requires_grad=True)
    A = torch.randn(5, 5, generator=g, dtype=F64)
    ours, ref = adam_unrolled(x0, A, 3, fused), adam_reference(x0, A, 3)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-14)
    # float32 parameters: the bias corrections are float64 numbers, so the
    # result is the float64 one rounded by float32 arithmetic (a few ulps).
    ours32 = adam_unrolled(x0.detach().float().requires_grad_(), A.float(), 3, fused)
    torch.testing.assert_close(ours32.double(), ref, rtol=1e-5, atol=1e-5)


def test_row_12():
    g = torch.Generator().manual_seed(12)
    x0 = torch.randn(5, generator=g, dtype=F64, requires_grad=True)
    A = torch.randn(5, 5, generator=g, dtype=F64)
    grads = []
    for x in (adam_unrolled(x0, A, 3, True), adam_unrolled(x0, A, 3, False), adam_reference(x0, A, 3)):
        (meta,) = torch.autograd.grad(x.pow(2).sum(), x0, create_graph=True)
        grads.append(meta)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-13, atol=1e-14)
    # The fused backward is itself differentiable: a second derivative exists and matches.
    hv = [torch.autograd.grad(m.sum(), x0, retain_graph=True)[0] for m in grads]
    torch.testing.assert_close(hv[0], hv[2], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_row_13(fused):
    """A gradient entry exactly 0 (its second moment 0): the true derivative,
    which here is 1 for that entry (the update there is 0 and stays so)."""
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    grad = x * torch.tensor([0.0, 1.0], dtype=F64)
    (u,), _ = opt.update((grad,), opt.init((x,)), inplace=False)
    (meta,) = torch.autograd.grad((x + u).sum(), x)
    assert torch.isfinite(meta).all()
    assert meta[0] == 1.0


def test_row_14():
    t = unrollopt.adam()
    assert unrollopt.chain(t) != t
    assert isinstance(unrollopt.chain(t).init((torch.ones(1),)), tuple)
    assert unrollopt.chain() == unrollopt.identity()


def test_row_15():
    p = torch.randn(4, dtype=F64)
    g = torch.randn(4, dtype=F64)
    inner = unrollopt.adam(0.1)
    (u1,), _ = unrollopt.masked(inner).update((g,), unrollopt.masked(inner).init((p,)), inplace=False)
    (u2,), _ = inner.update((g,), inner.init((p,)), inplace=False)
    assert torch.equal(u1, u2)


def test_row_16():
    import warnings

    opt = unrollopt.sgd(0.1)
    p0 = torch.randn(3, dtype=F64, requires_grad=True)
    state = opt.init((p0,))
    grads = torch.autograd.grad((p0**2).sum(), (p0,), create_graph=True)
    updates, state = opt.update(grads, state, inplace=False)
    p1 = unrollopt.apply_updates((p0,), updates, inplace=False)
    with pytest.warns(unrollopt.FirstOrderWarning):
        opt.update(torch.autograd.grad((p1[0] ** 2).sum(), p1), state, params=p1, inplace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=unrollopt.FirstOrderWarning)
        opt.update(torch.autograd.grad((p1[0] ** 2).sum(), p1), state, params=p1, inplace=False)
        # Plain training with inplace=False: leaf parameters, no warning.
        opt.update(torch.autograd.grad((p0**2).sum(), (p0,)), opt.init((p0,)), params=(p0,), inplace=False)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_row_17(fused):
    """Two Adam steps on a gradient of 1e-22 in float32: its square is 0."""
    c = torch.tensor([1.0, 1e-22])
    phi = torch.tensor([0.3, -0.7], requires_grad=True)
    theta = torch.tensor([1.0, 1.0], requires_grad=True)
    opt = unrollopt.adam(1e-2, use_accelerated_op=fused)
    state = opt.init(theta)
    for _ in range(2):
        (g,) = torch.autograd.grad(0.5 * (c * (theta - phi) ** 2).sum(), theta, create_graph=True)
        u, state = opt.update(g, state, inplace=False)
        theta = theta + u
    (meta,) = torch.autograd.grad((theta**2).sum(), phi)
    assert torch.isfinite(meta).all()
