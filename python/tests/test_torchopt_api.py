"""The last of TorchOpt 0.7.3's public API under unrollopt's names, and
checkpoints that load with torch.load(..., weights_only=True): the pytree
helpers (against TorchOpt's own where it is installed), TorchOpt's module
paths, lists and tuples mixed, empty trees, what a checkpoint holds."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from references import gen, randn

import unrollopt

F64 = torch.float64


def torchopt_or_skip():
    return pytest.importorskip(
        "torchopt", reason="TorchOpt is not installed (pip install --no-deps torchopt==0.7.3 optree graphviz)"
    )


def tree(seed):
    g = gen(seed)
    return {"w": randn(g, 3, 2), "b": (randn(g, 2), randn(g, 2, 2))}


def leaves(t):
    return [t["w"], t["b"][0], t["b"][1]]


# --- unrollopt.pytree ----------------------------------------------------------------


def test_pytree_scalar_mul_helpers():
    from unrollopt import pytree

    x, y = tree(1), tree(2)
    for alpha in (None, 0.5, torch.tensor(-2.0, dtype=F64)):
        a = 1.0 if alpha is None else alpha
        for got, want in (
            (pytree.tree_add_scalar_mul(x, y, alpha), [p + a * q for p, q in zip(leaves(x), leaves(y))]),
            (pytree.tree_sub_scalar_mul(x, y, alpha), [p - a * q for p, q in zip(leaves(x), leaves(y))]),
        ):
            for p, q in zip(leaves(got), want):
                torch.testing.assert_close(p, q, rtol=1e-15, atol=0)


def test_pytree_matmul_flatten_and_wait():
    from unrollopt import pytree

    g = gen(3)
    a = [randn(g, 2, 3), randn(g, 4, 4)]
    b = [randn(g, 3, 5), randn(g, 4, 1)]
    assert all(torch.equal(p, q) for p, q in zip(pytree.tree_matmul(a, b), [a[0] @ b[0], a[1] @ b[1]]))
    flat, spec = pytree.tree_flatten_as_tuple(tree(4))
    assert type(flat) is tuple and len(flat) == 3 and spec.num_leaves == 3
    futures = {"a": torch.futures.Future(), "b": [torch.futures.Future()]}
    futures["a"].set_result(1.0)
    futures["b"][0].set_result(torch.ones(2))
    done = pytree.tree_wait(futures)
    assert done["a"] == 1.0 and torch.equal(done["b"][0], torch.ones(2))


def test_pytree_vdot_real_is_a_float():
    from unrollopt import pytree

    x, y = tree(5), tree(6)
    got = pytree.tree_vdot_real(x, y)
    assert type(got) is float
    assert got == pytest.approx(sum((p * q).sum().item() for p, q in zip(leaves(x), leaves(y))), rel=1e-14)


def test_pytree_helpers_match_torchopts():
    torchopt = torchopt_or_skip()
    from unrollopt import pytree

    x, y = tree(7), tree(8)
    for name, args in (
        ("tree_add_scalar_mul", (x, y, 0.3)),
        ("tree_sub_scalar_mul", (x, y, 0.3)),
        ("tree_add_scalar_mul", (x, y)),
        ("tree_matmul", ([x["w"].T], [x["w"]])),
    ):
        ours, theirs = getattr(pytree, name)(*args), getattr(torchopt.pytree, name)(*args)
        flat_ours, flat_theirs = torch.utils._pytree.tree_leaves(ours), torch.utils._pytree.tree_leaves(theirs)
        assert all(torch.equal(p, q) for p, q in zip(flat_ours, flat_theirs)), name
    assert type(torchopt.pytree.tree_vdot_real(x, y)) is type(pytree.tree_vdot_real(x, y))
    assert pytree.tree_vdot_real(x, y) == pytest.approx(torchopt.pytree.tree_vdot_real(x, y), rel=1e-14)
    # The same leaves (optree orders a dict's by key, torch's pytree by insertion).
    ours, theirs = pytree.tree_flatten_as_tuple(x)[0], torchopt.pytree.tree_flatten_as_tuple(x)[0]
    assert type(ours) is type(theirs) is tuple and {id(t) for t in ours} == {id(t) for t in theirs}


# --- TorchOpt's module paths -----------------------------------------------------------


def test_torchopt_module_paths():
    import unrollopt.accelerated_op
    import unrollopt.hook
    import unrollopt.typing
    from unrollopt.optim.func import FuncOptimizer

    assert FuncOptimizer is unrollopt.FuncOptimizer
    assert unrollopt.hook.zero_nan_hook is unrollopt.zero_nan_hook
    assert unrollopt.hook.register_hook is unrollopt.register_hook
    assert unrollopt.hook.nan_to_num_hook is unrollopt.nan_to_num_hook
    assert unrollopt.accelerated_op.is_available() is unrollopt.accelerated_op_available()
    assert unrollopt.accelerated_op.adam_op.AdamOp is unrollopt.accelerated_op.AdamOp
    assert unrollopt.typing.GradientTransformation is unrollopt.GradientTransformation
    assert unrollopt.chain.flat is unrollopt.chain_flat


def test_chained_and_identity_classes():
    from unrollopt.base import ChainedGradientTransformation, IdentityGradientTransformation

    a, b = unrollopt.clip_grad_norm(1.0), unrollopt.sgd(0.1)
    chained = ChainedGradientTransformation(a, b)
    assert chained == unrollopt.chain(a, b)
    assert isinstance(unrollopt.chain(a, b), ChainedGradientTransformation)
    assert not isinstance(a, ChainedGradientTransformation)
    assert IdentityGradientTransformation() == unrollopt.identity()
    assert isinstance(unrollopt.identity(), IdentityGradientTransformation)
    assert not isinstance(b, IdentityGradientTransformation)


def test_chain_flat_sees_a_list_and_keeps_the_structure():
    def hook(g):
        return g * 2

    inner = unrollopt.chain(unrollopt.register_hook(hook), unrollopt.sgd(0.1))
    flat = unrollopt.chain.flat(unrollopt.register_hook(hook), unrollopt.sgd(0.1))
    params = {"w": torch.ones(2, dtype=F64), "b": (torch.ones(1, dtype=F64), None)}
    grads = {"w": torch.full((2,), 3.0, dtype=F64), "b": (torch.full((1,), 4.0, dtype=F64), None)}
    state = flat.init(params)
    updates, _ = flat.update(grads, state, params=params, inplace=False)
    assert set(updates) == {"w", "b"} and updates["b"][1] is None
    expected, _ = inner.update(grads, inner.init(params), params=params, inplace=False)
    assert torch.equal(updates["w"], expected["w"]) and torch.equal(updates["b"][0], expected["b"][0])


def test_adam_op_matches_torchopts():
    torchopt = torchopt_or_skip()
    from torchopt.accelerated_op.adam_op import AdamOp as TheirAdamOp

    from unrollopt.accelerated_op.adam_op import AdamOp

    g = gen(9)
    mu, nu, updates = randn(g, 6).float(), randn(g, 6).float().abs(), randn(g, 6).float()
    for inplace in (False, True):
        ours = AdamOp(0.9, 0.99, 1e-8, eps_root=1e-10, inplace=inplace)(mu.clone(), nu.clone(), updates.clone(), 3)
        theirs = TheirAdamOp(0.9, 0.99, 1e-8, eps_root=1e-10, inplace=inplace)(
            mu.clone(), nu.clone(), updates.clone(), 3
        )
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-7)
    assert torchopt.accelerated_op_available(torch.device("cpu"))


# --- lists and tuples, empty trees ---------------------------------------------------


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_lists_and_tuples_mix(fused):
    """Parameters in a list, gradients from autograd.grad (a tuple), states
    made from either, updates applied to either: the same leaves."""
    g = gen(10)
    params = [randn(g, 3, requires_grad=True), randn(g, 2, requires_grad=True)]
    opt = unrollopt.adam(0.1, use_accelerated_op=fused)
    results = []
    for p_kind, s_kind in ((list, tuple), (tuple, list), (list, list)):
        ps = p_kind(params)
        state = opt.init(s_kind(params))
        grads = torch.autograd.grad(sum((p**2).sum() for p in ps), ps, create_graph=True)
        assert type(grads) is tuple
        updates, state = opt.update(grads, state, params=ps, inplace=False)
        new = unrollopt.apply_updates(ps, updates, inplace=False)
        assert type(new) is p_kind
        results.append([t.detach() for t in new])
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
    with pytest.raises(ValueError, match="structure"):
        opt.update(tuple(grads[:1]), opt.init(params), inplace=False)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_weight_decay_on_an_empty_tree_needs_no_params(fused):
    opt = unrollopt.adamw(1e-2, use_accelerated_op=fused)
    for empty in ((), [], {}):
        updates, state = opt.update(empty, opt.init(empty), inplace=False)
        assert updates == empty and int(state.count) == 1
    with pytest.raises(ValueError, match="params"):
        opt.update((torch.ones(2),), opt.init((torch.ones(2),)), inplace=False)


# --- checkpoints with weights_only=True ----------------------------------------------


def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_meta_training_checkpoint_loads_with_weights_only():
    """What a meta-training run saves: the module's and the meta-optimizer's
    extracted states, optimizer states of every kind, transformations and
    schedules made by unrollopt's calls."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    inner = unrollopt.MetaAdam(net, lr=0.1)
    inner.step(net(torch.randn(5, 3)).pow(2).mean())
    checkpoint = {
        "net": unrollopt.extract_state_dict(net, by="deepcopy"),
        "inner": unrollopt.extract_state_dict(inner, by="deepcopy"),
        "states": [
            t.init((torch.ones(2),))
            for t in (
                unrollopt.sgd(0.1, momentum=0.9),
                unrollopt.adam(amsgrad=True),
                unrollopt.nadam(),
                unrollopt.rmsprop(centered=True, momentum=0.5),
                unrollopt.adagrad(),
                unrollopt.adadelta(),
                unrollopt.lion(),
                unrollopt.chain(unrollopt.clip_grad_norm(1.0), unrollopt.scale_by_schedule(lambda c: c)),
            )
        ],
        "optimizer": unrollopt.chain(
            unrollopt.clip_grad_norm(1.0),
            unrollopt.register_hook(unrollopt.zero_nan_hook),
            unrollopt.adamw(lr=unrollopt.linear_schedule(0.1, 0.0, 10), weight_decay=1e-3, mask={"w": True}),
        ),
        "schedule": unrollopt.exponential_decay(0.1, 10, 0.5),
    }
    loaded = roundtrip(checkpoint)
    assert loaded["optimizer"] == checkpoint["optimizer"]
    assert loaded["schedule"] == checkpoint["schedule"]
    assert type(loaded["inner"]) is type(checkpoint["inner"])
    for a, b in zip(torch.utils._pytree.tree_leaves(loaded), torch.utils._pytree.tree_leaves(checkpoint)):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
    unrollopt.recover_state_dict(net, loaded["net"])
    unrollopt.recover_state_dict(inner, loaded["inner"])
    inner.step(net(torch.randn(5, 3)).pow(2).mean())


def test_a_checkpoint_from_before_the_optimizers_moved_loads():
    """States and aliases were unrollopt.alias's before they moved to
    unrollopt.optimizers: a checkpoint that names them so still loads with
    weights_only=True (saved here with the old names, as such a checkpoint holds them)."""
    state = unrollopt.adam().init((torch.randn(3),))
    opt = unrollopt.adam(lr=0.1, betas=(0.8, 0.9))
    moved = [type(state), unrollopt.adam]
    homes = [obj.__module__ for obj in moved]
    try:
        for obj in moved:
            obj.__module__ = "unrollopt.alias"
        buffer = io.BytesIO()
        torch.save({"state": state, "optimizer": opt}, buffer)
    finally:
        for obj, home in zip(moved, homes):
            obj.__module__ = home
    assert b"unrollopt.alias" in buffer.getvalue() and b"unrollopt.optimizers" not in buffer.getvalue()
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert type(loaded["state"]) is type(state) and loaded["optimizer"] == opt
    assert all(torch.equal(a, b) for a, b in zip(loaded["state"].mu, state.mu))


def my_hook(g):
    return g


def test_a_users_function_is_refused_by_name():
    """A transformation holding a function of the user's own pickles with it;
    weights_only=True refuses to load that function, naming it and how to
    allow it."""
    opt = unrollopt.chain(unrollopt.register_hook(my_hook), unrollopt.sgd(0.1))
    with pytest.raises(pickle.UnpicklingError, match="my_hook") as error:
        roundtrip(opt)
    assert "add_safe_globals" in str(error.value)
    with torch.serialization.safe_globals([my_hook]):
        buffer = io.BytesIO()
        torch.save(opt, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True) == opt


def test_only_unrollopts_own_types_are_allowlisted():
    """Each allowlisted global is unrollopt's own, under its name (or, for the
    states and aliases that moved to unrollopt.optimizers, the name earlier
    checkpoints hold, unrollopt.alias's)."""
    from unrollopt import _serialization

    names = set()
    for entry in _serialization.safe_globals():
        obj, earlier = entry if isinstance(entry, tuple) else (entry, None)
        names.add(f"{obj.__module__}.{obj.__qualname__}")
        if earlier is not None:
            names.add(earlier)
    assert all(name.startswith("unrollopt.") for name in names), sorted(names)


def test_register_hook_in_place_on_a_tensor_that_requires_grad():
    """TorchOpt's pattern: register_hook(hook).update(t, None) with the default
    inplace=True on a tensor that requires grad. Nothing is overwritten, so
    nothing is refused; the hook sees the gradient through t."""
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    fn = unrollopt.register_hook(unrollopt.zero_nan_hook)
    out, _ = fn.update(t, None)
    assert out is t
    (g,) = torch.autograd.grad((t * torch.tensor([float("nan"), 3.0])).sum(), t)
    assert torch.equal(g, torch.tensor([0.0, 3.0]))
    same, _ = unrollopt.identity().update(t, None)
    assert same is t
