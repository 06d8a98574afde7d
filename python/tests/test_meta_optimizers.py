"""MetaOptimizer / MetaAdam and the state utilities against plain float64 references."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import unrollopt

F64 = torch.float64


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1 = nn.Linear(3, 8).to(F64)
        self.fc2 = nn.Linear(8, 1).to(F64)
        self.unused = nn.Parameter(torch.randn(2, generator=g, dtype=F64))
        self.register_buffer("scale", torch.tensor(1.5, dtype=F64))
        with torch.no_grad():
            for p in (*self.fc1.parameters(), *self.fc2.parameters()):
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))) * self.scale


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, generator=g, dtype=F64)
    y = torch.randn(10, 1, generator=g, dtype=F64)
    meta = torch.randn(10, 1, generator=g, dtype=F64).requires_grad_()
    return x, y, meta


def inner_loss(out, y, meta):
    return ((out - y) ** 2 * torch.sigmoid(meta)).mean()


def reference_adam_meta_grad(net, steps, lr, betas, eps, weight_decay):
    """Textbook Adam on a functional copy of the parameters, float64."""
    x, y, meta = data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v_ = {k: torch.zeros_like(v) for k, v in params.items()}
    b1, b2 = betas
    for t in range(1, steps + 1):
        loss = inner_loss(functional_call(net, params, (x,)), y, meta)
        names = [k for k in params if k != "unused"]
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True)
        new = dict(params)
        for k, g in zip(names, grads):
            g = g + weight_decay * params[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v_[k] = b2 * v_[k] + (1 - b2) * g * g
            mhat = m[k] / (1 - b1**t)
            vhat = v_[k] / (1 - b2**t)
            new[k] = params[k] - lr * mhat / (vhat.sqrt() + eps)
        params = new
    outer = functional_call(net, params, (x,)).pow(2).sum()
    return torch.autograd.grad(outer, meta)[0], params


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("eps,weight_decay", [(1e-8, 0.0), (1e-3, 0.01)])
def test_meta_adam_meta_gradient_matches_reference(fused, eps, weight_decay):
    net = Net()
    expected, expected_params = reference_adam_meta_grad(net, 3, 0.05, (0.9, 0.99), eps, weight_decay)
    x, y, meta = data()
    opt = unrollopt.MetaAdam(
        net, lr=0.05, betas=(0.9, 0.99), eps=eps, weight_decay=weight_decay, use_accelerated_op=fused
    )
    for _ in range(3):
        opt.step(inner_loss(net(x), y, meta))
    net(x).pow(2).sum().backward()
    torch.testing.assert_close(meta.grad, expected, rtol=1e-10, atol=1e-14)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p, expected_params[name], rtol=1e-12, atol=1e-14)


def test_low_level_and_high_level_api_agree():
    x, y, meta = data()
    results = []
    for make in (lambda n: unrollopt.MetaOptimizer(n, unrollopt.adam(lr=0.1)), lambda n: unrollopt.MetaAdam(n, lr=0.1)):
        net = Net()
        opt = make(net)
        for _ in range(2):
            opt.step(inner_loss(net(x), y, meta))
        results.append((net(x).detach(), torch.autograd.grad(net(x).sum(), meta)[0]))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_step_leaves_buffers_and_unused_parameters():
    net = Net()
    x, y, meta = data()
    unused, scale = net.unused.detach().clone(), net.scale.clone()
    opt = unrollopt.MetaAdam(net, lr=0.1)
    opt.step(inner_loss(net(x), y, meta))
    assert torch.equal(net.unused, unused)
    assert torch.equal(net.scale, scale)
    assert net.fc1.weight.grad_fn is not None  # the new parameter is in the graph


def test_first_order_has_same_values_and_first_order_gradient():
    x, y, meta = data()
    second, first = Net(), Net()
    opt2 = unrollopt.MetaAdam(second, lr=0.1)
    opt1 = unrollopt.MetaAdam(first, lr=0.1, first_order=True)
    for _ in range(2):
        opt2.step(inner_loss(second(x), y, meta))
        opt1.step(inner_loss(first(x), y, meta))
    torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)
    # First order: the inner gradients are constants, so the meta-parameters
    # (which enter only through the inner loss) get no gradient at all.
    assert torch.autograd.grad(first(x).sum(), meta, allow_unused=True)[0] is None
    assert torch.autograd.grad(second(x).sum(), meta)[0].abs().sum() > 0


def test_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        unrollopt.MetaAdam("not a module")
    with pytest.raises(ValueError, match="no parameters"):
        unrollopt.MetaAdam(nn.ReLU())
    net = Net()
    x, y, meta = data()
    opt = unrollopt.MetaAdam(net, lr=0.1)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(net(x))
    with pytest.raises(ValueError, match="does not depend"):
        opt.step(meta.sum())
    with pytest.raises(TypeError, match="impl"):
        unrollopt.MetaOptimizer(net, "adam")


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, x):
        return self.a * x**2


def test_seed_extract_recover_example():
    """The reference document's example: recover and redo two steps, same `a`,
    and the meta-gradient through the second run equals the first."""
    net = Scalar()
    x = nn.Parameter(torch.tensor(2.0, dtype=F64), requires_grad=True)
    optim = unrollopt.MetaAdam(net, lr=1.0)
    init_net_state = unrollopt.extract_state_dict(net, by="reference")
    init_optim_state = unrollopt.extract_state_dict(optim, by="reference")
    assert unrollopt.extract_state_dict(net, by="reference", detach_buffers=True).params["a"] is net.a
    copies = unrollopt.extract_state_dict(net, by="copy"), unrollopt.extract_state_dict(optim, by="copy")
    deep = unrollopt.extract_state_dict(net, by="deepcopy"), unrollopt.extract_state_dict(optim, by="deepcopy")
    assert copies[0].params["a"] is not net.a and deep[0].params["a"] is not net.a

    runs = []
    for _ in range(2):
        for _ in range(2):
            optim.step(net(x))
        runs.append((net.a.detach().clone(), torch.autograd.grad(net.a, x)[0]))
        unrollopt.recover_state_dict(net, init_net_state)
        unrollopt.recover_state_dict(optim, init_optim_state)
    assert torch.equal(runs[0][0], runs[1][0])
    assert not torch.equal(runs[0][0], torch.tensor(1.0, dtype=F64))
    assert torch.equal(runs[0][1], runs[1][1])


def test_extract_modes():
    net = Net()
    ref = unrollopt.extract_state_dict(net, by="reference")
    copy = unrollopt.extract_state_dict(net, by="copy")
    deep = unrollopt.extract_state_dict(net, by="deepcopy")
    for name, p in net.named_parameters():
        assert ref.params[name] is p
        assert copy.params[name].grad_fn is not None and torch.equal(copy.params[name], p)
        assert isinstance(deep.params[name], nn.Parameter) and deep.params[name].grad_fn is None
        assert deep.params[name].requires_grad and deep.params[name].data_ptr() != p.data_ptr()
    assert ref.buffers["scale"] is net.scale
    detached = unrollopt.extract_state_dict(net, detach_buffers=True)
    assert detached.buffers["scale"] is not net.scale and detached.params["fc1.weight"] is net.fc1.weight
    assert unrollopt.extract_state_dict(net, with_buffers=False).buffers == {}
    with pytest.raises(ValueError, match="by"):
        unrollopt.extract_state_dict(net, by="shallow")
    with pytest.raises(TypeError):
        unrollopt.extract_state_dict(3)


def test_recover_from_other_architecture_raises_before_changing():
    net, other = Net(), nn.Linear(3, 1).to(F64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="do not match"):
        unrollopt.recover_state_dict(net, unrollopt.extract_state_dict(other))
    bad = unrollopt.extract_state_dict(Net(), by="deepcopy")
    bad.params["fc2.bias"] = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="shape"):
        unrollopt.recover_state_dict(net, bad)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_stop_gradient_detaches_in_place_keeping_requires_grad():
    net = Net()
    x, y, meta = data()
    opt = unrollopt.MetaAdam(net, lr=0.1)
    opt.step(inner_loss(net(x), y, meta))
    assert net.fc1.weight.grad_fn is not None
    state = unrollopt.extract_state_dict(opt)
    unrollopt.stop_gradient(net)
    unrollopt.stop_gradient(opt)
    for p in net.parameters():
        assert p.grad_fn is None and p.requires_grad
    for t in torch.utils._pytree.tree_leaves(state):
        if isinstance(t, torch.Tensor):
            assert t.grad_fn is None
    tree = {"a": (meta * 2,)}
    unrollopt.stop_gradient(tree)
    assert tree["a"][0].grad_fn is None and tree["a"][0].requires_grad


def test_extract_state_dict_takes_torchopt_spellings():
    net = Net()
    for ours, theirs in (("reference", "ref"), ("copy", "clone"), ("deepcopy", "deepclone")):
        a = unrollopt.extract_state_dict(net, by=ours).params
        b = unrollopt.extract_state_dict(net, by=theirs).params
        for name in a:
            assert torch.equal(a[name], b[name]) and (a[name] is b[name]) == (ours == "reference")
            assert (a[name].grad_fn is None) == (b[name].grad_fn is None)
    with pytest.raises(ValueError, match="'deepclone'"):
        unrollopt.extract_state_dict(net, by="shallow")


def test_module_clone():
    net = Net()
    for by in ("reference", "copy", "deepcopy"):
        clone = unrollopt.module_clone(net, by=by)
        assert clone is not net
        x, _, _ = data()
        torch.testing.assert_close(clone(x), net(x))
        same = clone.fc1.weight is net.fc1.weight
        assert same == (by == "reference")


def _devices_to_copy_to():
    cuda = pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU here (torch.cuda.is_available() is False)"
    )
    return ["meta", pytest.param("cuda", marks=cuda)]


@pytest.mark.parametrize("device", _devices_to_copy_to())
def test_deepcopy_to_a_device_gives_detached_leaves(device):
    net = Net()
    net.register_buffer("scale", torch.rand(3))
    net.fc1.weight.requires_grad_(False)
    state = unrollopt.extract_state_dict(net, by="deepcopy", device=device)
    for name, p in state.params.items():
        original = dict(net.named_parameters())[name]
        assert type(p) is nn.Parameter and p.is_leaf and p.grad_fn is None, name
        assert p.device.type == device and p.requires_grad == original.requires_grad, name
    assert state.buffers["scale"].is_leaf and state.buffers["scale"].device.type == device
    clone = unrollopt.module_clone(net, by="deepcopy", device=device)
    assert all(type(p) is nn.Parameter and p.is_leaf and p.device.type == device for p in clone.parameters())
    # What the bug broke: a torch.optim optimizer over the clone's parameters.
    torch.optim.SGD(clone.parameters(), lr=0.1)
    # "copy" stays in the graph; "reference" moves the tensors themselves.
    copied = unrollopt.extract_state_dict(net, by="copy", device=device)
    assert copied.params["fc2.weight"].grad_fn is not None


def test_optimizer_state_round_trip():
    net = Net()
    opt = unrollopt.Adam(net.parameters(), lr=0.1)
    x, y, meta = data()
    inner_loss(net(x), y, meta.detach()).backward()
    opt.step()
    saved = unrollopt.extract_state_dict(opt, by="deepcopy")
    opt.step()
    unrollopt.recover_state_dict(opt, saved)
    steps = [float(s["step"]) for s in opt.state_dict()["state"].values()]
    assert steps and all(math.isclose(s, 1.0) for s in steps)


def test_meta_adamw_mask_keeps_the_decay_off_masked_parameters(fused):
    """A mask (a function of the parameters, in the module's order): in one
    step the masked-off parameters move as with weight_decay=0, the others
    as with the decay (after one step the losses differ, so one step)."""
    x, y, meta = data()
    results = {}
    for name, kwargs in (("masked", dict(mask=lambda params: tuple(p.dim() > 1 for p in params))),
                         ("decayed", {}), ("none", dict(weight_decay=0.0))):  # fmt: skip
        net = Net()
        kwargs = {"weight_decay": 0.5, **kwargs}
        opt = unrollopt.MetaAdamW(net, lr=0.1, use_accelerated_op=fused, **kwargs)
        opt.step(inner_loss(net(x), y, meta.detach()))
        results[name] = [p.detach() for p in net.parameters()]
    for masked, decayed, none, p in zip(results["masked"], results["decayed"], results["none"], Net().parameters()):
        torch.testing.assert_close(masked, decayed if p.dim() > 1 else none, rtol=0, atol=0)


def test_slot_groups_and_the_deprecated_param_groups():
    """slot_groups: each group's parameters as (module, name); param_groups
    (its old name, which torch.optim uses for a list of dicts) warns."""
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    opt = unrollopt.MetaSGD(net, lr=0.1)
    assert [(type(m).__name__, name) for m, name in opt.slot_groups[0]] == [
        ("Linear", "weight"),
        ("Linear", "bias"),
    ] * 2
    assert [slot.get() for slot in opt.slot_groups[0]] == list(net.parameters())
    with pytest.warns(DeprecationWarning, match="slot_groups"):
        assert opt.param_groups is opt.slot_groups
