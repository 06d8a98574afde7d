"""unrollopt.unroll (issue 27): the values of the plain unrolled loop bit for
bit, and meta-gradients equal to the full graph's (to float64 rounding) with
checkpointed segments of every length, with respect to the initial parameters
and state, closure tensors (leaves and non-leaves) and tensor hyperparameters;
random operations, module buffers, in-place changes and bad input; and a
short run of examples/hyper_cleaning.py."""

from __future__ import annotations

import functools
import gc
import math
import os
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from references import F64, gen, rand_pos, randn, ref_adam_step, ref_rmsprop_step, ref_sgd_step
from torch import nn
from torch.func import functional_call

import unrollopt

STEPS = 7
CHECKPOINTS = [None, 1, 2, 3, STEPS, "sqrt", 50]  # 2 and 3 do not divide 7; 50 > steps
ROOT = Path(__file__).resolve().parents[2]


# --- the problem: a small MLP on per-example weighted data, minibatches in turn


def make_problem(seed: int = 0) -> dict:
    g = gen(seed)
    return dict(
        x=randn(g, 24, 3),
        y=randn(g, 24),
        xv=randn(g, 10, 3),
        yv=randn(g, 10),
        logits=randn(g, 24, requires_grad=True),  # weights sigmoid(logits): a non-leaf closure tensor
        scale=rand_pos(g, 1, low=0.5).requires_grad_(),  # a leaf closure tensor
        log_lr=torch.tensor(math.log(0.05), dtype=F64, requires_grad=True),
        theta0=[randn(g, 3, 5, requires_grad=True), randn(g, 5, requires_grad=True), randn(g, 5, requires_grad=True)],
    )


def predict(params, x):
    w1, b1, w2 = params
    return torch.tanh(x @ w1 + b1) @ w2


def inner_loss_fn(pb: dict):
    weights = torch.sigmoid(pb["logits"])

    def loss_fn(params, t):
        rows = slice((t % 3) * 8, (t % 3) * 8 + 8)
        r = predict(params, pb["x"][rows]) - pb["y"][rows]
        return (weights[rows] * pb["scale"] * r**2).mean() + 1e-2 * (params[0] ** 2).sum()

    return loss_fn


def outer_loss(pb: dict, params) -> torch.Tensor:
    return ((predict(params, pb["xv"]) - pb["yv"]) ** 2).mean()


def meta_inputs(pb: dict) -> list:
    return [pb["logits"], pb["scale"], pb["log_lr"], *pb["theta0"]]


def make_optimizer(name: str, lr, fused: bool) -> unrollopt.GradientTransformation:
    acc = dict(use_accelerated_op=fused)
    return {
        "adam": lambda: unrollopt.adam(lr, **acc),
        "sgd": lambda: unrollopt.sgd(lr, momentum=0.9, **acc),
        "rmsprop": lambda: unrollopt.rmsprop(lr, alpha=0.9, momentum=0.5, **acc),
        "chain": lambda: unrollopt.chain(
            unrollopt.clip_grad_norm(0.5), unrollopt.scale_by_adam(**acc), unrollopt.scale(-lr)
        ),
        "adamw": lambda: unrollopt.adamw(lr, weight_decay=0.1, **acc),
        "adamax": lambda: unrollopt.adamax(lr, **acc),
        "radam": lambda: unrollopt.radam(lr, **acc),
        "nadam": lambda: unrollopt.nadam(lr, **acc),
        "adagrad": lambda: unrollopt.adagrad(lr, **acc),
        "adadelta": lambda: unrollopt.adadelta(lr * 20, **acc),
        "lion": lambda: unrollopt.lion(lr, **acc),
        "adan": lambda: unrollopt.adan(lr, weight_decay=0.1, **acc),
    }[name]()


def plain_loop(loss_fn, params, opt, steps: int, state=None):
    """The loop unroll stands for, as a user writes it."""
    state = opt.init(params) if state is None else state
    for t in range(steps):
        grads = torch.autograd.grad(loss_fn(params, t), params, create_graph=True)
        updates, state = opt.update(list(grads), state, params=params, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    return params, state


def reference_loop(name: str, pb: dict, steps: int):
    """The same unroll in plain float64 torch ops (references.py's textbook steps)."""
    lr = pb["log_lr"].exp()
    loss_fn = inner_loss_fn(pb)
    params = list(pb["theta0"])
    zeros = [torch.zeros_like(p) for p in params]
    s1, s2, s3 = list(zeros), list(zeros), list(zeros)
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(loss_fn(params, t - 1), params, create_graph=True)
        if name == "chain":
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            grads = [g * torch.clamp(0.5 / (norm + 1e-6), max=1.0) for g in grads]
        new = []
        for i, (g, p) in enumerate(zip(grads, params)):
            if name in ("adam", "chain"):
                u, s1[i], s2[i] = ref_adam_step(g, s1[i], s2[i], p, t, lr=lr, b1=0.9, b2=0.999, eps=1e-8)
            elif name == "sgd":
                u, s1[i] = ref_sgd_step(g, s1[i], p, t, lr=lr, momentum=0.9)
            else:
                u, s1[i], _, s3[i] = ref_rmsprop_step(
                    g, s1[i], None, s3[i], p, lr=lr, alpha=0.9, eps=1e-8, momentum=0.5
                )
            new.append(p + u)
        params = new
    return params


def unrolled(name: str, fused: bool, checkpoint, steps: int = STEPS, seed: int = 0):
    """(params, meta-gradients) of unroll on a fresh problem."""
    pb = make_problem(seed)
    opt = make_optimizer(name, pb["log_lr"].exp(), fused)
    params, _ = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], opt, steps, checkpoint=checkpoint)
    grads = torch.autograd.grad(outer_loss(pb, params), meta_inputs(pb))
    return params, grads


@functools.lru_cache(maxsize=None)
def plain_result(name: str, fused: bool, steps: int = STEPS, seed: int = 0):
    pb = make_problem(seed)
    opt = make_optimizer(name, pb["log_lr"].exp(), fused)
    params, _ = plain_loop(inner_loss_fn(pb), pb["theta0"], opt, steps)
    grads = torch.autograd.grad(outer_loss(pb, params), meta_inputs(pb))
    return [p.detach() for p in params], grads


def assert_bitwise(actual: list, expected: list) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert torch.equal(a.detach(), e.detach()), f"leaf {i} differs by {(a - e).abs().max().item():.3g}"


def assert_grads(actual, expected, rtol: float = 1e-12, allow_zero: bool = False) -> None:
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a is not None and torch.isfinite(a).all(), f"meta-gradient {i}: {a}"
        scale = e.abs().max().item()
        if allow_zero and scale == 0:
            assert torch.equal(a, e)
            continue
        assert scale > 0, f"meta-gradient {i} is zero: the test would not see a missing one"
        err = (a - e).abs().max().item() / scale
        assert err <= rtol, f"meta-gradient {i}: relative error {err:.3g}"


# --- exactness


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=str)
@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop", "chain"])
def test_values_bit_for_bit_and_meta_gradients_of_the_full_graph(name, fused, checkpoint):
    params, grads = unrolled(name, fused, checkpoint)
    expected_params, expected_grads = plain_result(name, fused)
    assert_bitwise(params, expected_params)
    assert_grads(grads, expected_grads)
    if checkpoint == 3:  # against the plain-torch reference, once a case
        pb = make_problem()
        ref = reference_loop(name, pb, STEPS)
        for a, e in zip(params, ref):
            torch.testing.assert_close(a.detach(), e.detach(), rtol=1e-10, atol=1e-12)
        assert_grads(grads, torch.autograd.grad(outer_loss(pb, ref), meta_inputs(pb)), rtol=1e-9)


@pytest.mark.parametrize("name", ["adamw", "adamax", "radam", "nadam", "adagrad", "adadelta", "lion", "adan"])
def test_every_other_optimizer(name, fused):
    params, grads = unrolled(name, fused, 3)
    expected_params, expected_grads = plain_result(name, fused)
    assert_bitwise(params, expected_params)
    # (Lion's update is a sign: no gradient reaches the loss's weights through it)
    assert_grads(grads, expected_grads, allow_zero=name == "lion")


@pytest.mark.parametrize("steps", [0, 1, 2, 10])
def test_step_counts(steps):
    for checkpoint in (1, 4, "sqrt"):
        if steps == 0:
            pb = make_problem()
            params, state = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], unrollopt.adam(0.1), 0)
            assert params is pb["theta0"] and int(state.count) == 0
            continue
        params, grads = unrolled("adam", True, checkpoint, steps=steps)
        expected_params, expected_grads = plain_result("adam", True, steps)
        assert_bitwise(params, expected_params)
        assert_grads(grads[2:], expected_grads[2:])  # (at 1 step the loss weights' gradient may be tiny)


def test_state_returned_and_initial_state_differentiated():
    """The state after the unroll is the loop's, and an initial state that requires grad gets its
    meta-gradient through every segment."""
    results = {}
    for checkpoint in (None, 2):
        pb = make_problem()
        opt = make_optimizer("adam", pb["log_lr"].exp(), True)
        state = opt.init(pb["theta0"])
        mu0 = [randn(gen(1), *p.shape, requires_grad=True) * 0.1 for p in pb["theta0"]]
        state = state._replace(mu=mu0)
        params, new_state = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], opt, STEPS, state=state,
                                             checkpoint=checkpoint)  # fmt: skip
        grads = torch.autograd.grad(outer_loss(pb, params), [*meta_inputs(pb), *mu0])
        results[checkpoint] = params, new_state, grads
    (p0, s0, g0), (p1, s1, g1) = results[None], results[2]
    assert_bitwise(p1, p0)
    assert_bitwise([*s1.mu, *s1.nu], [*s0.mu, *s0.nu])
    assert int(s1.count) == int(s0.count) == STEPS
    assert_grads(g1, g0)


def test_backward_and_autograd_grad_agree():
    pb = make_problem()
    opt = make_optimizer("adam", pb["log_lr"].exp(), True)
    params, _ = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], opt, STEPS, checkpoint=2)
    outer_loss(pb, params).backward()
    _, expected = plain_result("adam", True)
    assert_grads([t.grad for t in meta_inputs(pb)], expected)


def test_under_no_grad_the_values_of_the_loop_detached():
    pb = make_problem()
    opt = make_optimizer("sgd", pb["log_lr"].exp().detach(), True)
    with torch.no_grad():
        params, _ = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], opt, STEPS)
    assert not any(p.requires_grad for p in params)
    assert_bitwise(params, plain_result("sgd", True)[0])


def test_params_that_do_not_require_grad():
    """theta0 without requires_grad: the loss is still differentiated with respect to (copies of)
    them, and the meta-gradient reaches the closure tensors."""
    pb = make_problem()
    theta0 = [p.detach() for p in pb["theta0"]]
    opt = make_optimizer("adam", pb["log_lr"].exp(), False)
    params, _ = unrollopt.unroll(inner_loss_fn(pb), theta0, opt, STEPS, checkpoint=2)
    grads = torch.autograd.grad(outer_loss(pb, params), meta_inputs(pb)[:3])
    expected_params, expected_grads = plain_result("adam", False)
    assert_bitwise(params, expected_params)
    assert_grads(grads, expected_grads[:3])
    assert all(p.grad is None and not p.requires_grad for p in theta0)


# --- modules, buffers and random numbers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(6, 1)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x))))).squeeze(-1)


def module_run(checkpoint, generator: torch.Generator, train_at_backward: bool = True):
    torch.manual_seed(0)
    net = Net().double()
    pb = make_problem()
    theta0 = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    weights = torch.sigmoid(pb["logits"])
    torch.manual_seed(123)
    generator.manual_seed(7)

    def loss_fn(params, t):
        rows = slice((t % 3) * 8, (t % 3) * 8 + 8)
        out = functional_call(net, params, (pb["x"][rows],))  # BatchNorm in training mode, dropout
        keep = torch.bernoulli(torch.full_like(out, 0.8), generator=generator)  # an explicit generator
        return (weights[rows] * keep * (out - pb["y"][rows]) ** 2).mean()

    opt = unrollopt.adam(pb["log_lr"].exp(), use_accelerated_op=True)
    params, _ = unrollopt.unroll(loss_fn, theta0, opt, STEPS, checkpoint=checkpoint)
    rng_after_unroll = torch.get_rng_state()
    stats_after_unroll = [b.clone() for b in net.buffers()]
    net.eval()
    outer = ((functional_call(net, params, (pb["xv"],)) - pb["yv"]) ** 2).mean()
    net.train(train_at_backward)  # (the recomputation runs the module as it is at the backward)
    grads = torch.autograd.grad(outer, [pb["logits"], pb["log_lr"], *theta0.values()])
    return dict(
        params=list(params.values()),
        grads=grads,
        rng=torch.get_rng_state(),
        rng_after_unroll=rng_after_unroll,
        generator=generator.get_state(),
        buffers=[b.clone() for b in net.buffers()],
        buffers_after_unroll=stats_after_unroll,
    )


@functools.lru_cache(maxsize=None)
def module_full_graph() -> dict:
    return module_run(None, torch.Generator())


@pytest.mark.parametrize("checkpoint", [1, 3, "sqrt"], ids=str)
def test_functional_call_module_with_batchnorm_dropout_and_a_generator(checkpoint):
    """A dict of parameters through torch.func.functional_call: BatchNorm's running statistics
    (mutated by every step) are restored for each recomputation and end as the loop leaves them;
    dropout (the global generator) and torch.bernoulli(generator=) draw the same numbers when
    recomputed; the RNG states after the backward are the loop's."""
    expected = module_full_graph()
    actual = module_run(checkpoint, torch.Generator())
    assert_bitwise(actual["params"], expected["params"])
    assert_grads(actual["grads"], expected["grads"])
    assert torch.equal(actual["rng"], expected["rng"])
    assert torch.equal(actual["rng"], actual["rng_after_unroll"])
    assert torch.equal(actual["generator"], expected["generator"])
    assert_bitwise(actual["buffers"], expected["buffers"])
    assert_bitwise(actual["buffers_after_unroll"], expected["buffers_after_unroll"])
    assert int(actual["buffers"][-1]) == STEPS  # num_batches_tracked: each step counted once


# --- errors instead of wrong gradients


def test_a_module_left_in_eval_mode_at_the_backward_raises():
    """The recomputation sees the module as it is at the backward: in eval mode, BatchNorm and
    dropout compute something else, which the check of the recomputed values catches."""
    with pytest.raises(RuntimeError, match="gave other values than the forward pass"):
        module_run(2, torch.Generator(), train_at_backward=False)


def batches_problem():
    """A loss reading one closure tensor per step (batches[t]), so that the first steps' tensors
    are read only by the first segment."""
    pb = make_problem()
    batches = [pb["x"][i * 8 : (i + 1) * 8].clone() for i in range(3)]

    def loss_fn(params, t):
        r = predict(params, batches[t % 3]) - pb["y"][(t % 3) * 8 : (t % 3) * 8 + 8]
        return (pb["scale"] * r**2).mean()

    return pb, batches, loss_fn


def test_closure_tensor_modified_in_place_before_the_backward_raises():
    pb, batches, loss_fn = batches_problem()
    opt = unrollopt.sgd(0.1, momentum=0.9)
    params, _ = unrollopt.unroll(loss_fn, pb["theta0"], opt, 6, checkpoint=2)
    batches[0].add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place after the unroll"):
        outer_loss(pb, params).backward()


def test_closure_leaf_that_requires_grad_modified_in_place_raises():
    pb, _, loss_fn = batches_problem()
    params, _ = unrollopt.unroll(loss_fn, pb["theta0"], unrollopt.sgd(0.1), 6, checkpoint=2)
    with torch.no_grad():
        pb["scale"].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        outer_loss(pb, params).backward()


def test_initial_params_modified_in_place_raise():
    pb, _, loss_fn = batches_problem()
    params, _ = unrollopt.unroll(loss_fn, pb["theta0"], unrollopt.sgd(0.1), 6, checkpoint=2)
    with torch.no_grad():
        pb["theta0"][0].add_(1.0)
    with pytest.raises(RuntimeError, match="initial params or state"):
        torch.autograd.grad(outer_loss(pb, params), [pb["scale"]])


def test_loss_fn_writing_into_a_tensor_that_requires_grad_raises():
    pb = make_problem()
    tracked = torch.zeros(1, dtype=F64, requires_grad=True)

    def loss_fn(params, t):
        with torch.no_grad():
            tracked.add_(1.0)
        return inner_loss_fn(pb)(params, t)

    with pytest.raises(ValueError, match="requires grad in place"):
        unrollopt.unroll(loss_fn, pb["theta0"], unrollopt.sgd(0.1), 4, checkpoint=2)


def test_a_second_order_backward_through_segments_raises():
    """create_graph=True through a checkpointed segment: an error, not a silently wrong second
    derivative (the full graph gives it)."""
    pb = make_problem()
    opt = make_optimizer("adam", pb["log_lr"].exp(), True)
    params, _ = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], opt, 5, checkpoint=2)
    with pytest.raises(RuntimeError, match="is first order"):
        torch.autograd.grad(outer_loss(pb, params), [pb["log_lr"]], create_graph=True)
    params, _ = unrollopt.unroll(inner_loss_fn(pb), pb["theta0"], opt, 5, checkpoint=None)
    (g,) = torch.autograd.grad(outer_loss(pb, params), [pb["log_lr"]], create_graph=True)
    assert g.requires_grad


def test_a_read_the_recording_cannot_see_raises():
    """A tensor that requires grad read where no TorchFunctionMode sees it (standing in for an
    extension called outside the dispatcher): an error, not a missing meta-gradient."""
    pb = make_problem()

    def loss_fn(params, t):
        with torch._C.DisableTorchFunction():
            hidden = pb["scale"] * 2.0
        return inner_loss_fn(pb)(params, t) * hidden.sum()

    with pytest.raises(RuntimeError, match="could not record"):
        unrollopt.unroll(loss_fn, pb["theta0"], unrollopt.sgd(0.1), 4, checkpoint=2)


# --- bad input: clear errors before any work


class Recording:
    def __init__(self, loss_fn):
        self.loss_fn, self.calls = loss_fn, []

    def __call__(self, params, t):
        self.calls.append(t)
        return self.loss_fn(params, t)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(steps=-1), ValueError, "steps must be >= 0"),
        (dict(steps=2.0), TypeError, "steps must be an int"),
        (dict(checkpoint=0), ValueError, "checkpoint must be"),
        (dict(checkpoint=-3), ValueError, "checkpoint must be"),
        (dict(checkpoint="log"), ValueError, "checkpoint must be"),
        (dict(checkpoint=True), TypeError, "checkpoint must be"),
        (dict(checkpoint=2.5), TypeError, "checkpoint must be"),
        (dict(optimizer=torch.optim.SGD), TypeError, "optimizer must be a GradientTransformation"),
        (dict(loss_fn=3), TypeError, "loss_fn must be callable"),
        (dict(params=[torch.zeros(2, dtype=torch.int64)]), TypeError, "params must be a pytree of floating-point"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_arguments_raise_before_any_work(kwargs, error, pattern):
    pb = make_problem()
    loss_fn = Recording(inner_loss_fn(pb))
    args = dict(loss_fn=loss_fn, params=pb["theta0"], optimizer=unrollopt.sgd(0.1), steps=4)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        unrollopt.unroll(args.pop("loss_fn"), args.pop("params"), args.pop("optimizer"), args.pop("steps"), **args)
    assert loss_fn.calls == []


@pytest.mark.parametrize(
    "make_loss, error, pattern",
    [
        (lambda pb: lambda p, t: (predict(p, pb["x"]) - pb["y"]) ** 2, ValueError, "scalar tensor"),
        (lambda pb: lambda p, t: torch.tensor(1.0, dtype=F64), ValueError, "without a graph to params"),
        (lambda pb: lambda p, t: predict(p, pb["x"]).sum().detach(), ValueError, "without a graph to params"),
        (lambda pb: lambda p, t: (p[0] ** 2).sum() * pb["scale"].sum(), ValueError, "does not depend on params"),
        (lambda pb: lambda p, t: 1.0, TypeError, "must return a tensor"),
    ],
    ids=["non-scalar", "constant", "detached", "unused-leaves", "float"],
)
@pytest.mark.parametrize("checkpoint", [None, 2])
def test_bad_loss_raises_at_step_0_before_any_update(make_loss, error, pattern, checkpoint):
    pb = make_problem()
    loss_fn = Recording(make_loss(pb))
    before = [p.detach().clone() for p in pb["theta0"]]
    with pytest.raises(error, match=pattern) as info:
        unrollopt.unroll(loss_fn, pb["theta0"], unrollopt.adam(0.1), 4, checkpoint=checkpoint)
    assert "loss_fn" in str(info.value) and "t=0" in str(info.value)
    assert loss_fn.calls == [0]
    assert_bitwise(pb["theta0"], before)


# --- long unrolls


def saved_numel_alive_after_unroll(checkpoint, steps: int = 40) -> int:
    """The elements of the tensors autograd saved for backward during the unroll that are still held
    after it: the memory the graph keeps (the checkpoints are not saved tensors). The hook saves
    detached aliases (the tensor itself would make a cycle through its own node); the values and the
    memory are the same, and nothing is differentiated."""
    pb = make_problem()
    saved = []

    def pack(t):
        alias = t.detach()
        saved.append(weakref.ref(alias))
        return alias

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        params, _ = unrollopt.unroll(
            inner_loss_fn(pb), pb["theta0"], unrollopt.adam(0.01), steps, checkpoint=checkpoint
        )
    gc.collect()
    alive = [t for t in (r() for r in saved) if t is not None]
    del params
    return sum(t.numel() for t in alive)


def test_a_checkpointed_unroll_keeps_one_segment_of_graph():
    """40 steps: the full graph keeps every step's saved tensors; segments of 5 keep the last
    segment's only (a leak of the other segments' graphs would show here)."""
    full = saved_numel_alive_after_unroll(None)
    segments = saved_numel_alive_after_unroll(5)
    assert segments < full / 5, (segments, full)


def test_long_unroll_two_segment_lengths_agree():
    """2,000 steps of a small quadratic problem: segments of 45 ("sqrt") and 400 steps give the same
    parameters bit for bit and the same meta-gradient (the full graph's at this size too)."""
    steps = 2000
    g = gen(3)
    a = rand_pos(g, 4, low=0.5)
    target = randn(g, 4)

    def run(checkpoint):
        log_lr = torch.tensor(math.log(1e-3), dtype=F64, requires_grad=True)
        c = target.clone().requires_grad_()

        def loss_fn(params, t):
            return (a * (params[0] - c * (1 + 0.1 * math.sin(t / 50))) ** 2).sum()

        opt = unrollopt.adam(log_lr.exp(), use_accelerated_op=True)
        params, _ = unrollopt.unroll(loss_fn, [torch.zeros(4, dtype=F64)], opt, steps, checkpoint=checkpoint)
        outer = (params[0] ** 3).sum()
        return params, torch.autograd.grad(outer, [log_lr, c])

    p_sqrt, g_sqrt = run("sqrt")
    p_400, g_400 = run(400)
    assert_bitwise(p_sqrt, p_400)
    assert_grads(g_sqrt, g_400, rtol=1e-12)
    p_full, g_full = run(None)
    assert_bitwise(p_sqrt, p_full)
    assert_grads(g_sqrt, g_full, rtol=1e-12)


def test_long_unroll_bench_variants_agree():
    """bench/long_unroll.py's workload at a tiny K: its checkpointed variants give the full graph's
    meta-gradient (float32), and its report renders."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import long_unroll
    finally:
        sys.path.remove(str(ROOT / "bench"))
    results = {v: long_unroll.meta_gradient(6, v) for v in ("full graph", "sqrt")}
    for variant in ("sqrt",):
        for a, e in zip(results[variant], results["full graph"]):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-7)
    rows = [
        dict(variant=v, k=6, seconds=1.0, cpu_seconds=1.0, peak=1e6, grad_phi=g[0].tolist(), grad_log_lr=g[1].item())
        for v, g in results.items()
    ]
    long_unroll.agreement(rows)
    assert "| 6 | sqrt |" in long_unroll.table(rows)


# --- the example


AUC = re.compile(r"AUC ([0-9.]+)")


def test_hyper_cleaning_example_short_run(tmp_path):
    """examples/hyper_cleaning.py on its short setting finds the corrupted labels (AUC clearly above
    0.5; the script itself exits non-zero otherwise) and draws its figure."""
    # (scikit-learn is in the examples extra; an environment set up without it skips this one)
    pytest.importorskip("sklearn", reason="examples/hyper_cleaning.py needs scikit-learn (pip install scikit-learn)")
    output = tmp_path / "hyper_cleaning.png"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hyper_cleaning.py"), "--short", "--output", str(output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr[-5000:]}"
    match = AUC.search(proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) > 0.65, proc.stdout
    assert output.is_file() and output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
