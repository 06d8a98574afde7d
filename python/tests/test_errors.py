"""Bad input: the right exception type and message, raised before anything is
modified; NaN and inf propagate without crashing."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from op_cases import Grouped
from references import F64, assert_unchanged, gen, is_finite, rand_pos, randn, snapshot, unrollopt

BAD_HYPERPARAMETERS = [
    ("lr", dict(lr=-0.1)),
    ("lr", dict(lr=float("nan"))),
    ("lr", dict(lr=torch.tensor(-1.0))),
    ("betas[0]", dict(betas=(1.0, 0.999))),
    ("betas[0]", dict(betas=(-0.1, 0.999))),
    ("betas[1]", dict(betas=(0.9, 1.0))),
    ("betas[1]", dict(betas=(0.9, torch.tensor(1.5, dtype=F64)))),
    ("eps", dict(eps=-1e-8)),
    ("eps_root", dict(eps_root=-1e-6)),
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]


@pytest.mark.parametrize(
    "name,kwargs", BAD_HYPERPARAMETERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HYPERPARAMETERS)]
)
@pytest.mark.parametrize("api", ["adam", "Adam"])
def test_bad_hyperparameter_value(api, name, kwargs):
    with pytest.raises(ValueError, match=re.escape(name)):
        if api == "adam":
            unrollopt.adam(**kwargs)
        else:
            unrollopt.Adam([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("api", ["adam", "Adam"])
def test_bad_hyperparameter_type(api):
    make = (
        (lambda **kw: unrollopt.adam(**kw))
        if api == "adam"
        else (lambda **kw: unrollopt.Adam([torch.zeros(2, requires_grad=True)], **kw))
    )
    with pytest.raises(TypeError, match="lr"):
        make(lr=torch.tensor(1))  # integer tensor
    with pytest.raises(TypeError, match="lr"):
        make(lr="0.1")
    with pytest.raises(TypeError, match="weight_decay"):
        make(weight_decay=True)
    if api == "Adam":
        with pytest.raises(ValueError, match="lr"):
            make(lr=torch.tensor([0.1]))  # not 0-d
    else:  # the alias takes it as a per-parameter rate, for a single-tensor pytree
        opt = make(lr=torch.tensor([0.1]))
        with pytest.raises(ValueError, match="lr does not have the structure"):
            opt.update([torch.ones(1)], opt.init([torch.ones(1)]))
    with pytest.raises(ValueError, match="betas"):
        make(betas=(0.9,))


def test_boundary_hyperparameters_are_accepted():
    unrollopt.adam(lr=0.0, betas=(0.0, 0.0), eps=0.0, eps_root=0.0, weight_decay=0.0)
    unrollopt.Adam([torch.zeros(1, requires_grad=True)], lr=0.0, betas=(0.0, 0.0), eps=0.0)


# --- bad tensors ------------------------------------------------------------------


def setup_state(fused, *, wd=0.0, n=2, dtype=F64):
    g = gen(0)
    params = [randn(g, 4, dtype=dtype), randn(g, 3, dtype=dtype)][:n]
    opt = unrollopt.adam(lr=0.1, weight_decay=wd, use_accelerated_op=fused)
    state = opt.init(params)
    # Non-trivial state.
    state = unrollopt.ScaleByAdamState(
        mu=[randn(g, *p.shape, dtype=dtype) for p in params],
        nu=[rand_pos(g, *p.shape, dtype=dtype) for p in params],
        count=torch.tensor(3),
    )
    return opt, params, state


@pytest.mark.parametrize("where", ["grads", "params"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64])
def test_non_floating_tensors_raise_type_error(fused, where, dtype):
    opt, params, state = setup_state(fused, wd=0.1)
    grads = [randn(gen(1), 4), randn(gen(2), 3)]
    if where == "grads":
        grads[1] = torch.ones(3, dtype=dtype)
    else:
        params = [params[0], torch.ones(3, dtype=dtype)]
    snap = snapshot((params, state, grads))
    for inplace in (False, True):
        with pytest.raises(TypeError, match=r"dtype"):
            opt.update(grads, state, params=params, inplace=inplace)
        assert_unchanged((params, state, grads), snap)


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_non_tensor_leaves_raise_type_error(fused, inplace):
    """A number where a tensor belongs: TypeError naming the leaf, on both paths
    and in both modes. (Currently only the plain out-of-place path does this: the
    fused out-of-place path raises the dispatcher's RuntimeError "Expected a
    value of type 'List[Tensor]'", and both in-place paths raise AttributeError
    "'float' object has no attribute 'requires_grad'" from the in-place check.)"""
    opt, params, state = setup_state(fused)
    grads = [randn(gen(1), 4), 1.5]
    snap = snapshot((params, state))
    with pytest.raises(TypeError, match=r"grads\[1\] must be a tensor"):
        opt.update(grads, state, inplace=inplace)
    assert_unchanged((params, state), snap)


# (A tuple where a list is expected is no mismatch: lists and tuples of the
# same leaves are one structure; test_torchopt_api.test_lists_and_tuples_mix.)
MISMATCHES = {
    "structure-length": (lambda gs: gs[:1], ValueError),
    "structure-dict": (lambda gs: {"a": gs[0], "b": gs[1]}, ValueError),
    "shape": (lambda gs: [gs[0], torch.ones(2, 2, dtype=F64)], ValueError),
    "shape-numel-equal": (lambda gs: [gs[0], torch.ones(3, 1, dtype=F64)], ValueError),
    "dtype": (lambda gs: [gs[0], gs[1].float()], TypeError),
    "device": (lambda gs: [gs[0], gs[1].to("meta")], ValueError),
}


@pytest.mark.parametrize("kind", list(MISMATCHES))
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_mismatched_grads_raise_before_modifying(fused, kind, inplace):
    opt, params, state = setup_state(fused, wd=0.1)
    grads = [randn(gen(1), 4), randn(gen(2), 3)]
    bad, exc = MISMATCHES[kind]
    bad_grads = bad(grads)
    snap = snapshot((params, state, grads))
    with pytest.raises(exc):
        opt.update(bad_grads, state, params=params, inplace=inplace)
    assert_unchanged((params, state, grads), snap)


@pytest.mark.parametrize("kind", ["shape", "dtype", "structure-length"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_mismatched_params_or_state_raise_before_modifying(fused, kind, inplace):
    opt, params, state = setup_state(fused, wd=0.1)
    grads = [randn(gen(1), 4), randn(gen(2), 3)]
    bad, exc = MISMATCHES[kind]
    snap = snapshot((params, state, grads))
    with pytest.raises(exc):
        opt.update(grads, state, params=bad(params), inplace=inplace)
    bad_state = state._replace(nu=bad(state.nu))
    with pytest.raises(exc):
        opt.update(grads, bad_state, params=params, inplace=inplace)
    assert_unchanged((params, state, grads), snap)
    assert int(state.count) == 3


def test_other_update_errors(fused):
    opt, params, state = setup_state(fused, wd=0.1)
    grads = [randn(gen(1), 4), randn(gen(2), 3)]
    snap = snapshot((params, state, grads))
    with pytest.raises(ValueError, match="params"):
        opt.update(grads, state)  # weight decay needs params
    with pytest.raises(TypeError, match="ScaleByAdamState"):
        opt.update(grads, (state.mu, state.nu, state.count), params=params)
    with pytest.raises(ValueError, match="None"):
        opt.update(grads, state._replace(mu=[state.mu[0], None]), params=params)
    with pytest.raises(ValueError, match="None"):
        opt.update(grads, state, params=[params[0], None])
    assert_unchanged((params, state, grads), snap)


def test_adam_step_errors_do_not_modify_anything(fused):
    """Adam.step validates every group before it updates any (e.g. after a user or
    a scheduler wrote a bad value into param_groups). Currently group 0 is
    stepped (parameters and state written) before group 1's lr is checked."""
    g = gen(3)
    a = randn(g, 3, requires_grad=True)
    b = randn(g, 2, requires_grad=True)
    opt = unrollopt.Adam([{"params": [a]}, {"params": [b]}], lr=0.1, use_accelerated_op=fused)
    a.grad = randn(g, 3)
    b.grad = randn(g, 2)
    opt.param_groups[1]["lr"] = -1.0
    snap = snapshot((a, b))
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    assert_unchanged((a, b), snap)
    assert len(opt.state[a]) == 0 and len(opt.state[b]) == 0


# --- in place inside a differentiable loop ---------------------------------------


def test_inplace_update_in_differentiable_context(fused):
    g = gen(4)
    w = randn(g, 5, requires_grad=True)
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    state = opt.init((w,))
    grads = torch.autograd.grad((w**3).sum(), (w,), create_graph=True)
    snap = snapshot((w, state))
    with pytest.raises(RuntimeError, match=re.escape("inplace=False")):
        opt.update(grads, state)
    assert_unchanged((w, state), snap)
    # moment_requires_grad: the state requires grad.
    opt2 = unrollopt.adam(lr=0.1, moment_requires_grad=True, use_accelerated_op=fused)
    with pytest.raises(RuntimeError, match=re.escape("inplace=False")):
        opt2.update((torch.ones(5, dtype=F64),), opt2.init((w,)))
    # A tensor hyperparameter that requires grad.
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    opt3 = unrollopt.adam(lr=lr, use_accelerated_op=fused)
    with pytest.raises(RuntimeError, match=re.escape("inplace=False")):
        opt3.update((torch.ones(5, dtype=F64),), opt3.init((w,)))
    # Under no_grad the in-place step is allowed.
    with torch.no_grad():
        u, s = opt3.update((torch.ones(5, dtype=F64),), opt3.init((w,)))
    assert torch.allclose(u[0], torch.full((5,), -0.1, dtype=F64))


def test_apply_updates_inplace_in_differentiable_context():
    g = gen(5)
    w = randn(g, 5, requires_grad=True)
    u = randn(g, 5, requires_grad=True) * 1.0  # requires grad, non-leaf
    snap = snapshot((w,))
    with pytest.raises(RuntimeError, match=re.escape("inplace=False")):
        unrollopt.apply_updates((w,), (u,))
    assert_unchanged((w,), snap)
    nonleaf = w * 2
    with pytest.raises(RuntimeError, match=re.escape("inplace=False")):
        unrollopt.apply_updates((nonleaf,), (torch.ones(5, dtype=F64),))
    with pytest.raises(ValueError, match="structure"):
        unrollopt.apply_updates((w,), {"w": u})
    with pytest.raises(TypeError):
        unrollopt.apply_updates((w,), (1.0,))


# Per operator: state lists, hyperparameters (names, values) and options.
OP_SETUPS = {
    "adam": (("mu", "nu"), ("lr", "beta1", "beta2", "weight_decay"), (0.1, 0.9, 0.999, 0.0), [1e-8, 0.0, 0.0]),
    "sgd": ((), ("lr", "weight_decay"), (0.1, 0.0), [0.0, 0.0]),
    "sgd_momentum": (
        ("momentum_buffer",),
        ("lr", "momentum", "dampening", "weight_decay"),
        (0.1, 0.9, 0.0, 0.0),
        [0.0, 1.0],
    ),
}


@pytest.mark.parametrize("op", list(OP_SETUPS))
def test_inplace_op_refuses_inputs_that_require_grad(op):
    state_names, _, values, options = OP_SETUPS[op]
    g = gen(6)
    h = [torch.tensor(x, dtype=F64) for x in values]
    inplace = Grouped(op, "_")
    for culprit in ("grads", "states", "params", "hyperparameters"):
        grads = [randn(g, 3, requires_grad=culprit == "grads")]
        states = [randn(g, 3, requires_grad=culprit == "states") for _ in state_names]
        params = [randn(g, 3, requires_grad=culprit == "params")]
        hyper = [t.clone().requires_grad_(culprit == "hyperparameters" and i == 0) for i, t in enumerate(h)]
        if culprit == "states" and not states:
            continue
        snap = snapshot((grads, states, params))
        # Leaf params that are only read (update_params=False) are a plain
        # training step's nn.Parameters: allowed (below); written, refused.
        for update_params in (False, True) if culprit != "params" else (True,):
            with pytest.raises(RuntimeError, match="inplace=False"):
                inplace(params, grads, states, torch.tensor(1), hyper, options, update_params)
        if culprit == "params":  # params that are results of a differentiable step: refused
            with pytest.raises(RuntimeError, match="inplace=False"):
                inplace([p * 1 for p in params], grads, states, torch.tensor(1), hyper, options, False)
        assert_unchanged((grads, states, params), snap)
        # Under no_grad the same call is allowed (and writes).
        with torch.no_grad():
            inplace(params, grads, states, torch.tensor(1), hyper, options, True)
        assert params[0]._version > snap[-1][1]


@pytest.mark.parametrize("op", list(OP_SETUPS))
def test_op_input_checks(op):
    state_names, hyper_names, values, options = OP_SETUPS[op]
    # Called with the arguments grouped (op_cases.Grouped), and as the schema has them.
    fwd, inplace, bwd = (Grouped(op, suffix) for suffix in ("", "_", "_backward"))
    g = [randn(gen(7), 3), randn(gen(8), 2)]
    ns, nh = len(state_names), len(hyper_names)
    states = [t.clone() for _ in state_names for t in g]
    h = [torch.tensor(x, dtype=F64) for x in values]
    step = torch.tensor(1)
    mask = [True] * (3 + nh)
    typed_options = fwd.typed(g, states, [], step, h, options)[3 + ns + nh :]
    # A well-formed call works (the checks below are not vacuous).
    u, s = fwd(g, states, g, step, h, options)
    assert len(u) == 2 and len(s) == 2 * ns
    for k, name in enumerate(state_names):  # each state list is named
        lists = [[t.clone() for t in g] for _ in state_names]
        lists[k].append(g[0].clone())
        with pytest.raises(ValueError, match=re.escape(f"unrollopt.{op}: {name} has 3 tensors but grads has 2")):
            fwd.default(g, *lists, [], step, *h, *typed_options)
        with pytest.raises(ValueError, match=re.escape(f"{name} has 3 tensors but grads has 2")):
            inplace.default([], g, *lists, step, *h, *typed_options, False)
    with pytest.raises(ValueError, match="params has 1 tensors"):
        fwd(g, states, g[:1], step, h, options)
    with pytest.raises(ValueError, match="shape"):
        fwd(g, states, g[::-1], step, h, options)
    with pytest.raises(TypeError, match="dtype"):
        fwd(g, states, [g[0].float(), g[1]], step, h, options)
    with pytest.raises(ValueError, match="lr must be a 0-d tensor"):
        fwd(g, states, [], step, [torch.ones(1, dtype=F64), *h[1:]], options)
    with pytest.raises(TypeError, match=f"{hyper_names[1]} must be a floating-point"):
        fwd(g, states, [], step, [h[0], torch.tensor(0), *h[2:]], options)
    with pytest.raises(ValueError, match="step must be a 0-d tensor"):
        fwd(g, states, [], torch.ones(1), h, options)
    # A missing argument: the schema names it.
    with pytest.raises(RuntimeError, match=f"missing value for argument '{hyper_names[-1]}'"):
        fwd.default(*fwd.typed(g, states, [], step, h, options)[: 3 + ns + nh - 1])
    with pytest.raises(ValueError, match="weight_decay is not 0, so params are needed"):
        fwd(g, states, [], step, [*h[:-1], torch.tensor(0.1, dtype=F64)], options)
    with pytest.raises(ValueError, match="update_params=True needs params"):
        inplace([], [t.clone() for t in g], [t.clone() for t in states], step, h, options, True)
    with pytest.raises(ValueError, match="grad_updates has 1 entries but grads has 2"):
        bwd([g[0]], [None] * (2 * ns), g, states, g, step, h, options, mask)
    for k, name in enumerate(state_names):
        cotangents = [[None, None] for _ in state_names]
        cotangents[k].append(None)
        args = bwd.typed(g, [None] * (2 * ns), g, states, g, step, h, options, mask)
        with pytest.raises(ValueError, match=re.escape(f"grad_{name}_out has 3 entries but grads has 2")):
            bwd.default(args[0], *cotangents, *args[1 + ns :])
        cotangents[k] = [None, torch.zeros(5, dtype=F64)]  # the second has the wrong shape
        with pytest.raises(ValueError, match=re.escape(f"grad_{name}_out[1] has shape [5] but grads[1] has shape [2]")):
            bwd.default(args[0], *cotangents, *args[1 + ns :])
    typed_mask = bwd.typed(g, [None] * (2 * ns), g, states, g, step, h, options, mask)[-1]
    assert len(typed_mask) == 2 + ns + nh  # one per output
    with pytest.raises(ValueError, match=f"output_mask must hold {2 + ns + nh} values, one per output"):
        bwd.default(*bwd.typed(g, [None] * (2 * ns), g, states, g, step, h, options, mask)[:-1], typed_mask[:-1])
    with pytest.raises(ValueError, match="the gradient of params needs params"):
        bwd(g, [None] * (2 * ns), g, states, [], step, h, options, mask)


# --- NaN and inf propagate ---------------------------------------------------------


def test_nan_and_inf_gradients_propagate(fused):
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    params = [torch.zeros(4, dtype=F64)]
    state = opt.init(params)
    grads = [torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0], dtype=F64)]
    u, s = opt.update(grads, state, inplace=False)
    assert torch.isnan(u[0][0]) and torch.isnan(s.mu[0][0]) and torch.isnan(s.nu[0][0])
    assert torch.isinf(s.mu[0][1]) and s.mu[0][2] < 0 and torch.isinf(s.nu[0][1])
    assert torch.isnan(u[0][1]) and torch.isnan(u[0][2])  # inf / inf
    assert torch.allclose(u[0][3], torch.tensor(-0.1, dtype=F64))  # other elements unaffected
    # In place too, and the next step keeps going.
    u2, s2 = opt.update([grads[0].clone()], state, inplace=True)
    assert torch.isnan(u2[0][:3]).all() and is_finite(u2[0][3])
    u3, _ = opt.update([torch.ones(4, dtype=F64)], s2, inplace=False)
    assert torch.isnan(u3[0][:3]).all() and is_finite(u3[0][3])


@pytest.mark.parametrize("name", sorted(n.lower() for n, _ in unrollopt._C.default_settings()))
def test_every_optimizer_propagates_nan_and_inf(fused, name):
    """A NaN gradient makes a NaN update (and state) there and nowhere else, at
    every optimizer's defaults; an infinite one does not make the others'
    updates NaN."""
    opt = getattr(unrollopt, name)(use_accelerated_op=fused)
    params = [torch.ones(4, dtype=F64)]
    grads = [torch.tensor([float("nan"), float("inf"), 1.0, -0.5], dtype=F64)]
    updates, state = opt.update(grads, opt.init(params), params=params, inplace=False)
    assert torch.isnan(updates[0][0]), name
    assert is_finite(updates[0][2:]), name
    moments = [leaf for leaf in state if isinstance(leaf, (tuple, list)) and leaf]
    assert moments or name == "sgd", name  # (sgd's defaults keep no momentum)
    for moment in moments:
        assert torch.isnan(moment[0][0]) and is_finite(moment[0][2:]), name


def test_nan_propagates_through_meta_gradient(fused):
    w0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = unrollopt.adam(lr=0.1, eps=1e-3, use_accelerated_op=fused)
    params = (w0,)
    state = opt.init(params)
    nan_scale = torch.tensor([float("nan"), 1.0], dtype=F64)
    grads = torch.autograd.grad((params[0] ** 2 * nan_scale).sum(), params, create_graph=True)
    updates, state = opt.update(grads, state, inplace=False)
    params = unrollopt.apply_updates(params, updates, inplace=False)
    (mg,) = torch.autograd.grad(params[0].sum(), (w0,))
    assert torch.isnan(mg[0]) and is_finite(mg[1])


def test_nan_gradient_in_torch_optimizer(fused):
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = unrollopt.Adam([p], lr=0.1, use_accelerated_op=fused)
    p.grad = torch.tensor([float("nan"), 1.0, float("inf")], dtype=F64)
    opt.step()
    assert torch.isnan(p[0]) and torch.isnan(p[2]) and p[1].item() == pytest.approx(-0.1)


# --- in-place steps with gradients that cannot hold the updates --------------------


def test_inplace_update_with_expanded_gradient(fused):
    """torch.autograd.grad of a sum returns an expanded gradient (stride 0, one
    memory location for every element), which the in-place step cannot write
    its updates into: update(inplace=True) must raise a ValueError saying so
    before it modifies anything."""
    x = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(x.sum(), x)
    assert g.stride() == (0,)  # what autograd returns for a sum
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    state = opt.init((x,))
    snap = snapshot(state)
    with torch.no_grad(), pytest.raises(ValueError, match="cannot be written in place"):
        opt.update((g,), state)
    assert_unchanged(state, snap)
    # Out of place the same gradient is fine.
    updates, new_state = opt.update((g,), state, inplace=False)
    expected, _ = opt.update((g.clone(),), opt.init((x,)), inplace=False)
    assert torch.equal(updates[0], expected[0]) and int(new_state.count) == 1


# --- the mistakes users make --------------------------------------------------------


def _inner_grads(params, create_graph):
    loss = sum((p * p).sum() for p in params)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def test_forgotten_create_graph_warns(fused):
    """Inner gradients taken without create_graph=True make the meta-gradient
    silently first-order: in an unrolled loop (parameters that are results of
    an earlier differentiable step) the update warns, with a FirstOrderWarning
    (a UserWarning) saying what to do and how to silence it."""
    opt = unrollopt.sgd(lr=0.1, use_accelerated_op=fused)
    leaves = (randn(gen(30), 4, requires_grad=True), randn(gen(31), 3, requires_grad=True))
    state = opt.init(leaves)
    updates, state = opt.update(_inner_grads(leaves, create_graph=True), state, params=leaves, inplace=False)
    params = unrollopt.apply_updates(leaves, updates, inplace=False)
    with pytest.warns(unrollopt.FirstOrderWarning, match=r"create_graph=True") as record:
        opt.update(_inner_grads(params, create_graph=False), state, params=params, inplace=False)
    assert issubclass(unrollopt.FirstOrderWarning, UserWarning)
    assert "FirstOrderWarning" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=unrollopt.FirstOrderWarning)
        opt.update(_inner_grads(params, create_graph=False), state, params=params, inplace=False)


def test_plain_training_with_inplace_false_does_not_warn(fused):
    """TorchOpt's plain training written with inplace=False (gradients
    without a graph, leaf parameters that require grad): no meta-gradient is
    wanted, so no FirstOrderWarning at any step (it fired at every step before
    the warning looked at where the parameters come from)."""
    net = torch.nn.Linear(3, 2)
    params = tuple(net.parameters())
    opt = unrollopt.adamw(1e-2, use_accelerated_op=fused)
    state = opt.init(params)
    x = randn(gen(36), 5, 3).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            grads = torch.autograd.grad(net(x).pow(2).mean(), params)
            updates, state = opt.update(grads, state, params=params, inplace=False)
            with torch.no_grad():
                unrollopt.apply_updates(params, updates, inplace=True)


def test_no_first_order_warning_in_the_correct_cases(fused):
    """None where nothing is wrong: gradients with a graph; parameters that do
    not require grad; an in-place step; MetaOptimizer(first_order=True)."""
    opt = unrollopt.sgd(lr=0.1, use_accelerated_op=fused)
    params = (randn(gen(32), 4, requires_grad=True), randn(gen(33), 3, requires_grad=True))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.update(_inner_grads(params, create_graph=True), opt.init(params), params=params, inplace=False)
        plain = [p.detach() for p in params]
        opt.update([torch.ones_like(p) for p in plain], opt.init(plain), params=plain, inplace=False)
        with torch.no_grad():
            opt.update([torch.ones_like(p) for p in plain], opt.init(plain), params=plain, inplace=True)
        net = torch.nn.Linear(3, 1)
        meta = unrollopt.MetaSGD(net, lr=0.1, first_order=True, use_accelerated_op=fused)
        meta.step(net(torch.ones(2, 3)).pow(2).mean())


def test_tuple_grads_for_dict_params_say_what_to_do(fused):
    params = {"w": randn(gen(34), 4), "b": randn(gen(35), 1)}
    opt = unrollopt.adam(lr=0.1, use_accelerated_op=fused)
    state = opt.init(params)
    grads = tuple(torch.ones_like(p) for p in params.values())
    with pytest.raises(ValueError, match=re.escape("dict(zip(params, grads))")) as error:
        opt.update(grads, state, params=params)
    assert "tuple" in str(error.value) and "dict" in str(error.value)


def test_meta_optimizer_step_under_no_grad_says_grad_mode_is_off(fused):
    net = torch.nn.Linear(3, 1)
    meta = unrollopt.MetaAdam(net, lr=0.1, use_accelerated_op=fused)
    x = torch.ones(2, 3)
    with torch.no_grad(), pytest.raises(RuntimeError, match="grad mode is off"):
        meta.step(net(x).pow(2).mean())
    loss = net(x).pow(2).mean()  # computed with grad, stepped without
    with torch.no_grad(), pytest.raises(RuntimeError, match="grad mode is off"):
        meta.step(loss)
    meta.step(loss)  # and with grad mode on it works


def test_inplace_update_refuses_aliased_state(fused):
    """One tensor as two states (or a state that is a gradient): refused by
    both paths before anything is written, naming both."""
    opt, params, state = setup_state(fused)
    grads = [randn(gen(36), 4), randn(gen(37), 3)]
    for bad, names in ((state._replace(nu=[state.mu[0], state.nu[1]]), ("mu[0]", "nu[0]")),
                       (state._replace(mu=[state.mu[0], grads[1]]), ("mu[1]", "grads[1]"))):  # fmt: skip
        snap = snapshot((params, bad, grads))
        with torch.no_grad(), pytest.raises(ValueError, match="share memory") as error:
            opt.update(grads, bad, params=params, inplace=True)
        assert all(name in str(error.value) for name in names), str(error.value)
        assert_unchanged((params, bad, grads), snap)


def test_inplace_update_in_a_plain_training_loop_reads_leaf_params(fused):
    """TorchOpt's functional training step: nn.Parameters (leaves requiring
    grad), gradients from .backward(), weight decay reading the params, an
    in-place update under grad mode: allowed, with torch.optim's numbers."""
    torch.manual_seed(0)
    net, ref = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    ref.load_state_dict(net.state_dict())
    params = tuple(net.parameters())
    opt = unrollopt.adamw(lr=0.1, weight_decay=0.1, use_accelerated_op=fused)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.1, weight_decay=0.1)
    state = opt.init(params)
    x = torch.randn(8, 4)
    for _ in range(3):
        net.zero_grad()
        net(x).pow(2).mean().backward()
        updates, state = opt.update(tuple(p.grad for p in params), state, params=params, inplace=True)
        unrollopt.apply_updates(params, updates, inplace=True)
        ref_opt.zero_grad()
        ref(x).pow(2).mean().backward()
        ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # The same chain of transforms, with a weight decay reading the params.
    chained = unrollopt.chain(unrollopt.add_decayed_weights(0.1), unrollopt.scale(-0.1))
    grads = tuple(torch.ones_like(p) for p in params)
    updates, _ = chained.update(grads, chained.init(params), params=params, inplace=True)
    assert all(not u.requires_grad for u in updates)
    # Still refused where it would lose a meta-gradient: a learned step size.
    lr = torch.tensor(0.1, requires_grad=True)
    with pytest.raises(RuntimeError, match="inplace=False"):
        unrollopt.scale(lr).update(tuple(torch.ones_like(p) for p in params), (), inplace=True)


def test_python_and_cpp_check_settings_alike():
    """One check behind both (C++'s): the same message for the same setting (the C++
    API's side: cpp/tests/test_optimizers.cpp, SettingsOutOfRangeAreRefusedByName)."""
    with pytest.raises(ValueError) as python:
        unrollopt.rmsprop(alpha=1.5)
    assert str(python.value) == "Invalid alpha: 1.5 (expected 0 <= alpha <= 1)"
    with pytest.raises(ValueError, match=re.escape("Invalid betas[0]: 1 (expected 0 <= betas[0] < 1)")):
        unrollopt.adam(betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=re.escape("Invalid lr: nan (expected 0 <= lr)")):
        unrollopt.sgd(lr=float("nan"))
