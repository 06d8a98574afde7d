"""The fused operators torch.ops.unrollopt.{NAME, NAME_, NAME_backward} for every
optimizer rule (every operator of unrollopt._C.operator_names()): gradcheck / gradgradcheck of the
hand-written backward with respect to every input (hyperparameters included),
values against independent float64 references, the in-place op against the
out-of-place one, output_mask semantics, Meta kernels and torch.library.opcheck.

Each has a typed schema with its rule's names (cpp/src/fused/schema.h), e.g.
``adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor step,
Tensor lr, ..., float eps, float eps_root, bool maximize)``. Most tests call them
with the arguments grouped (op_cases.Grouped):

    NAME(grads, states, params, step, hyperparameters, options) -> (updates, new_states)
    NAME_(params, grads, states, step, hyperparameters, options, update_params) -> ()
    NAME_backward(grad_updates, grad_states, grads, states, params, step,
                  hyperparameters, options, output_mask)
        -> (grad_grads, grad_states, grad_params, grad_hyperparameters)

with ``states`` all first states, then all second states, ..., and
output_mask (grads, states, params, each hyperparameter).
"""

from __future__ import annotations

import pytest
import torch
from op_cases import (
    CASES,
    FLAG_NAMES,
    HYPER_NAMES,
    OP_CASES,
    OPCHECK_CASES,
    OPS,
    OPTION_NAMES,
    STATE_NAMES,
    cases,
    make_inputs,
    split_outputs,
)
from references import (
    F64,
    assert_close,
    gen,
    rand_pos,
    randn,
)


def test_cases_cover_every_operator():
    assert {c.op for c in CASES} == set(STATE_NAMES)
    for op in STATE_NAMES:
        assert hasattr(OPS, op) and hasattr(OPS, op + "_") and hasattr(OPS, op + "_backward")


def test_operators_describe_themselves():
    """The schemas carry each rule's names: the arguments by name and type, so
    that keywords work and a missing argument is named."""
    assert str(OPS.adam.default._schema) == (
        "unrollopt::adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor step, Tensor lr, "
        "Tensor beta1, Tensor beta2, Tensor weight_decay, float eps, float eps_root, bool maximize) -> "
        "(Tensor[] updates, Tensor[] mu_out, Tensor[] nu_out)"
    )
    for op, states in STATE_NAMES.items():
        hyper, options = HYPER_NAMES[op], OPTION_NAMES[op]
        args = [(a.name, str(a.type)) for a in getattr(OPS, op).default._schema.arguments]
        assert args == [
            ("grads", "List[Tensor]"),
            *((s, "List[Tensor]") for s in states),
            ("params", "List[Tensor]"),
            ("step", "Tensor"),
            *((h, "Tensor") for h in hyper),
            *((o, "bool" if o in FLAG_NAMES[op] else "float") for o in options),
        ], op
        backward = [r.name for r in getattr(OPS, op + "_backward").default._schema.returns]
        assert backward == ["grad_grads", *(f"grad_{s}" for s in states), "grad_params", *(f"grad_{h}" for h in hyper)]
    # Called by keyword, the same step.
    g, mu, nu = randn(gen(1), 3), randn(gen(2), 3), randn(gen(3), 3).abs()
    hyper = dict(
        lr=torch.tensor(0.1), beta1=torch.tensor(0.9), beta2=torch.tensor(0.99), weight_decay=torch.tensor(0.0)
    )
    positional = OPS.adam([g], [mu], [nu], [], torch.tensor(2), *hyper.values(), 1e-8, 0.0, False)
    keywords = OPS.adam(
        grads=[g], mu=[mu], nu=[nu], params=[], step=torch.tensor(2), **hyper, eps=1e-8, eps_root=0.0, maximize=False
    )
    assert all(torch.equal(a[0], b[0]) for a, b in zip(positional, keywords))
    with pytest.raises(RuntimeError, match="missing value for argument 'beta2'"):
        OPS.adam([g], [mu], [nu], [], torch.tensor(2), lr=hyper["lr"], beta1=hyper["beta1"])


@cases([c for c in CASES if c.ns >= 2])
def test_backward_output_mask_selects_each_state_list(case):
    """The operator's output_mask has one entry per output: one state list alone
    is computed as with every output selected, and the others are empty."""
    grads, states, params, hyper = make_inputs(case, 17, shapes=[(4,), (3,)])
    c = gen(18)
    cu = [randn(c, 4), randn(c, 3)]
    cs = [randn(c, *t.shape) for t in states]
    args = case.backward.typed(cu, cs, grads, states, params, torch.tensor(case.step), hyper, case.options, case.mask())
    n_out = 2 + case.ns + case.nh
    full = case.backward.default(*args)
    for k in range(case.ns):
        mask = [j == 1 + k for j in range(n_out)]
        part = case.backward.default(*args[:-1], mask)
        for j in range(1 + case.ns + 1):
            if j == 1 + k:
                assert_close(part[j], full[j], rtol=0, atol=0)
            else:
                assert part[j] == [], (k, j)


# --- gradcheck / gradgradcheck --------------------------------------------------


@cases(CASES)
@pytest.mark.parametrize("step_dtype", [torch.int64, F64], ids=["int_step", "float_step"])
def test_gradcheck_and_gradgradcheck(case, step_dtype):
    """With respect to every input: grads, states, params and each hyperparameter."""
    grads, states, params, hyper = make_inputs(case, 1, requires_grad=True)
    step_t = torch.tensor(case.step, dtype=step_dtype)
    n = len(grads)

    def f(*xs):
        gs, st, ps, hs = split_outputs(case, n, xs)
        u, s = case.forward(gs, st, ps, step_t, hs, case.options)
        assert len(u) == n and len(s) == case.ns * n
        return (*u, *s)

    inputs = (*grads, *states, *params, *hyper)
    # nus stay positive under gradcheck's perturbations (>= 0.1 - 1e-6).
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@cases(OP_CASES)
def test_gradcheck_empty_params_without_weight_decay(case):
    grads, states, _, hyper = make_inputs(case, 2, requires_grad=True, wd=0.0)
    wd = hyper[-1].detach()
    step = torch.tensor(4)
    n = len(grads)

    def f(*xs):
        gs, st, hs = list(xs[:n]), list(xs[n : (1 + case.ns) * n]), list(xs[(1 + case.ns) * n :])
        u, s = case.forward(gs, st, [], step, [*hs, wd], case.options)
        return (*u, *s)

    inputs = (*grads, *states, *hyper[:-1])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# --- forward values against the reference ------------------------------------------


@cases(CASES)
@pytest.mark.parametrize("step_dtype", [torch.int64, torch.float32, F64])
def test_op_matches_reference(case, step_dtype):
    grads, states, params, hyper = make_inputs(case, 3, shapes=[(5,), (3, 7), (1,)])
    step = torch.tensor(case.step, dtype=step_dtype)
    u, s = case.forward(grads, states, params, step, hyper, case.options)
    ru, rs = case.reference(grads, states, params, case.step, case.hyper)
    assert len(u) == 3 and len(s) == len(rs) == 3 * case.ns
    assert_close(u, ru, rtol=1e-13, atol=1e-16)
    assert_close(s, rs, rtol=1e-14, atol=1e-16)
    # Not vacuous: the updates move the parameters.
    assert all(t.abs().min() > 0 for t in u)


@cases(OP_CASES)
def test_higher_order_through_inputs_computed_from_one_another(case):
    """As in an unrolled loop, the gradient and the states are computed from the
    parameters: the derivatives of the op's backward (third and fourth order
    of the outer loss) are the reference's, partial derivatives along each path
    once (a regression: the backward's backward took total derivatives, through
    graph the outer backward had freed)."""
    grads0, states0, params0, hyper = make_inputs(case, 21, shapes=[(4,), (2, 3)])
    step = torch.tensor(case.step)
    weights = [randn(gen(22), *t.shape) for t in states0]

    def derivatives(step_fn):
        x = [p.clone().requires_grad_() for p in params0]
        gs = [g * (1 + 0.3 * p.sin()) for g, p in zip(grads0, x)]
        st = [s * (1 + 0.1 * p.cos()) for s, p in zip(states0, x * case.ns)]
        u, new = step_fn(gs, st, x)
        loss = sum(((p + v) ** 2).sum() for p, v in zip(x, u)) + sum((w * t).sum() for w, t in zip(weights, new))
        meta = torch.autograd.grad(loss, x, create_graph=True)
        third = torch.autograd.grad(sum((m**2).sum() for m in meta), x, create_graph=True)
        fourth = torch.autograd.grad(sum((t**2).sum() for t in third), x)
        return [*meta, *third, *fourth]

    fused = derivatives(lambda gs, st, ps: case.forward(gs, st, ps, step, hyper, case.options))
    reference = derivatives(lambda gs, st, ps: case.reference(gs, st, ps, case.step, [h.detach() for h in hyper]))
    assert_close(fused, reference, rtol=1e-10, atol=1e-12)


@cases(OP_CASES)
def test_op_without_params_matches_reference(case):
    grads, states, _, hyper = make_inputs(case, 30, wd=0.0)
    u, s = case.forward(grads, states, [], torch.tensor(case.step), hyper, case.options)
    ru, rs = case.reference(grads, states, [], case.step, (*case.hyper[:-1], 0.0))
    assert_close(u, ru, rtol=1e-13, atol=1e-16)
    # atol: a momentum buffer momentum * b + g / d may cancel to a small value
    # (the fused kernel rounds its terms differently: 1 ulp of the terms).
    assert_close(s, rs, rtol=1e-14, atol=1e-15)


@cases(CASES)
@pytest.mark.parametrize("update_params", [False, True])
def test_inplace_op_matches_out_of_place(case, update_params):
    grads, states, params, hyper = make_inputs(case, 4, shapes=[(5,), (3, 7)])
    step = torch.tensor(case.step)
    u, s = case.forward(grads, states, params, step, hyper, case.options)
    g2, s2, p2 = ([t.clone() for t in ts] for ts in (grads, states, params))
    assert case.inplace(p2, g2, s2, step, hyper, case.options, update_params) is None
    assert_close(s2, s, rtol=0, atol=0)
    if update_params:
        assert_close(p2, [p + du for p, du in zip(params, u)], rtol=1e-15, atol=1e-16)
        assert_close(g2, grads, rtol=0, atol=0)  # grads untouched
    else:
        assert_close(g2, u, rtol=0, atol=0)  # the updates are written into grads
        assert_close(p2, params, rtol=0, atol=0)


@cases(OP_CASES)
@pytest.mark.parametrize("step", [0, -1])
def test_step_below_one_is_refused(case, step):
    """Steps count from 1 (step 0 would divide by a zero bias correction):
    every operator refuses a smaller step number, before writing anything."""
    grads, states, params, hyper = make_inputs(case, 21)
    t = torch.tensor(step)
    with pytest.raises(ValueError, match="step must be >= 1"):
        case.forward(grads, states, params, t, hyper, case.options)
    copies = [[x.clone() for x in ts] for ts in (grads, states, params)]
    with pytest.raises(ValueError, match="step must be >= 1"):
        case.inplace(params, grads, states, t, hyper, case.options, True)
    for ts, before in zip((grads, states, params), copies):
        assert all(torch.equal(a, b) for a, b in zip(ts, before))
    with pytest.raises(ValueError, match="step must be >= 1"):
        case.backward(grads, [None] * len(states), grads, states, params, t, hyper, case.options, case.mask())


@cases(OP_CASES)
@pytest.mark.parametrize("update_params", [False, True])
def test_inplace_op_refuses_arguments_that_share_memory(case, update_params):
    """An in-place step whose arguments alias each other would give a result
    that depends on the order of its writes: refused, naming both, before
    anything is written."""
    grads, states, params, hyper = make_inputs(case, 22, shapes=[(4,), (4,)])
    step = torch.tensor(case.step)
    written, read = ("params", "grads") if update_params else ("grads", "params")

    def call(p, g, st):
        case.inplace(p, g, st, step, hyper, case.options, update_params)

    def refused(p, g, st, *names):
        before = [t.clone() for t in (*p, *g, *st)]
        with pytest.raises(ValueError, match="share memory") as error:
            call(p, g, st)
        assert all(name in str(error.value) for name in names), str(error.value)
        assert all(torch.equal(a, b) for a, b in zip((*p, *g, *st), before))

    def fresh():
        return [[t.clone() for t in ts] for ts in (params, grads, states)]

    lists = dict(zip(("params", "grads", "states"), fresh()))
    lists[read][1] = lists[written][0]  # a tensor read that the step writes
    refused(lists["params"], lists["grads"], lists["states"], f"{written}[0]", f"{read}[1]")
    buffer = torch.randn(8, dtype=F64)
    lists = dict(zip(("params", "grads", "states"), fresh()))
    lists[written][0], lists[written][1] = buffer[:4], buffer[2:6]  # overlapping views
    refused(lists["params"], lists["grads"], lists["states"], f"{written}[0]", f"{written}[1]")
    if states:
        lists = dict(zip(("params", "grads", "states"), fresh()))
        lists["states"][0] = lists[read][0]  # a written state that is a read tensor
        refused(lists["params"], lists["grads"], lists["states"], f"{STATE_NAMES[case.op][0]}[0]", f"{read}[0]")
    # Disjoint views of one buffer are fine.
    lists = dict(zip(("params", "grads", "states"), fresh()))
    lists[written][0], lists[written][1] = buffer[:4], buffer[4:]
    call(lists["params"], lists["grads"], lists["states"])


SIZES = [0, 1, 3, 1025, 2049, 65537]


def vjp_of(step_fn, case, inputs, cotangents):
    """The VJP of ``step_fn(grads, states, params, hyper) -> (updates, states)``."""
    n = len(inputs[0])
    leaves = [t.detach().clone().requires_grad_() for t in (*inputs[0], *inputs[1], *inputs[2], *inputs[3])]
    u, s = step_fn(*split_outputs(case, n, leaves))
    total = sum((a * b).sum() for a, b in zip((*u, *s), cotangents))
    return torch.autograd.grad(total, leaves, allow_unused=True, materialize_grads=True)


@cases(OP_CASES)
@pytest.mark.parametrize("size", SIZES)
def test_sizes_forward_and_backward_match_reference(case, size):
    """Every size the vector loops and their tails see, next to a small tensor."""
    inputs = make_inputs(case, 40 + size, shapes=[(size,), (5,)])
    step = torch.tensor(case.step)
    u, s = case.forward(*inputs[:3], step, inputs[3], case.options)
    ru, rs = case.reference(*inputs[:3], case.step, case.hyper)
    assert [t.shape for t in u] == [(size,), (5,)]
    assert_close(u, ru, rtol=1e-12, atol=1e-15)
    assert_close(s, rs, rtol=1e-13, atol=1e-15)
    c = gen(7)
    cotangents = [randn(c, *t.shape) for t in (*u, *s)]
    got = vjp_of(lambda g, st, p, h: case.forward(g, st, p, step, h, case.options), case, inputs, cotangents)
    expected = vjp_of(lambda g, st, p, h: case.reference(g, st, p, case.step, h), case, inputs, cotangents)
    assert_close(list(got), list(expected), rtol=1e-10, atol=1e-13)


# float32 within a few ulps of the float64 reference; the half types are
# computed in float32 and rounded once (atol: where a result cancels).
DTYPE_TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (2.0**-7, 2e-3), torch.float16: (2.0**-10, 2e-4)}


@cases(OP_CASES)
@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCE), ids=lambda d: str(d).split(".")[1])
def test_dtypes_match_float64_reference(case, dtype):
    grads, states, params, hyper = make_inputs(case, 50, shapes=[(1000,), (17, 3)], dtype=dtype)
    step = torch.tensor(case.step)
    u, s = case.forward(grads, states, params, step, hyper, case.options)
    assert all(t.dtype == dtype for t in (*u, *s))
    up = lambda ts: [t.to(F64) for t in ts]  # noqa: E731
    ru, rs = case.reference(up(grads), up(states), up(params), case.step, case.hyper)
    rtol, atol = DTYPE_TOLERANCE[dtype]
    assert_close(up(u), ru, rtol=rtol, atol=atol)
    assert_close(up(s), rs, rtol=rtol, atol=atol)
    # The backward too (computed in float32 for every dtype but float64).
    cu = [randn(gen(8), *t.shape, dtype=dtype) for t in u]
    res = case.backward(cu, [None] * len(states), grads, states, params, step, hyper, case.options, case.mask())
    n = len(grads)
    expected = vjp_of(lambda g, st, p, h: case.reference(g, st, p, case.step, h), case,
                      (up(grads), up(states), up(params), hyper), [*up(cu), *[torch.zeros_like(t, dtype=F64) for t in s]])  # fmt: skip
    got = [*res[0], *res[1], *res[2]]
    assert all(t.dtype == dtype for t in got)
    assert_close(up(got), list(expected[: len(got)]), rtol=10 * rtol, atol=10 * atol)
    assert len(res[1]) == case.ns * n


@cases(OP_CASES)
def test_strided_inputs(case):
    """Non-contiguous views in, out of place and in place: the same numbers as
    contiguous copies, and in place only the views' elements are written."""
    shapes = [(6, 5), (4,)]
    grads, states, params, hyper = make_inputs(case, 60, shapes=shapes)

    def strided(t):
        base = torch.full((2 * t.numel() + 3,), float("nan"), dtype=t.dtype)
        view = base[3::2].view(t.shape) if t.dim() == 1 else base[3::2].view(t.shape[::-1]).T
        view.copy_(t)
        assert not view.is_contiguous() or t.numel() <= 1
        return view, base

    views = [[strided(t) for t in ts] for ts in (grads, states, params)]
    vg, vs, vp = ([v for v, _ in ts] for ts in views)
    step = torch.tensor(case.step)
    u, s = case.forward(grads, states, params, step, hyper, case.options)
    vu, vs_new = case.forward(vg, vs, vp, step, hyper, case.options)
    assert_close(vu + vs_new, u + s, rtol=0, atol=0)
    case.inplace(vp, vg, vs, step, hyper, case.options, True)
    assert_close(vs, s, rtol=0, atol=0)
    assert_close(vp, [p + du for p, du in zip(params, u)], rtol=1e-15, atol=1e-16)
    for ts in views:
        for _, base in ts:
            assert base[:3].isnan().all() and base[4::2].isnan().all()  # outside the views


@cases(CASES)
def test_backward_op_matches_autograd_of_reference(case):
    """NAME_backward called directly equals the VJP of the reference step."""
    grads, states, params, hyper = make_inputs(case, 5, shapes=[(4,), (2, 3)])
    n = len(grads)
    c = gen(6)
    cu = [randn(c, *t.shape) for t in grads]
    cs = [randn(c, *t.shape) for t in states]
    res = case.backward(cu, cs, grads, states, params, torch.tensor(case.step), hyper, case.options, case.mask())
    assert [len(r) for r in res] == [n, case.ns * n, n, case.nh]
    leaves = [t.clone().requires_grad_() for t in (*grads, *states, *params, *hyper)]
    lg, ls, lp, lh = split_outputs(case, n, leaves)
    u, s = case.reference(lg, ls, lp, case.step, lh)
    total = sum((a * b).sum() for a, b in zip((*u, *s), (*cu, *cs)))
    expected = torch.autograd.grad(total, leaves, allow_unused=True, materialize_grads=True)
    got = [*res[0], *res[1], *res[2], *res[3]]
    assert_close(got, list(expected), rtol=1e-11, atol=1e-14)
    # Every hyperparameter that the step reads gets a gradient (at step 1 the
    # momentum buffer is reset: without Nesterov it does not depend on
    # momentum and dampening).
    assert all(float(h) != 0 for h in res[3][:1] + res[3][-1:])


@cases(CASES)
@pytest.mark.parametrize("path", ["kernel", "differentiable"])
def test_backward_op_output_mask_and_missing_cotangents(case, path):
    """Each output_mask entry alone gives that output as the full mask does;
    unselected lists are empty and unselected hyperparameter gradients are 0-d
    zeros. Missing (None) cotangents count as zeros. ``differentiable``: inputs
    that require grad, so the op runs its differentiable tensor form."""
    grads, states, params, hyper = make_inputs(case, 7, shapes=[(4,), (3,)], requires_grad=path == "differentiable")
    step = torch.tensor(case.step)
    cu = [randn(gen(8), 4), None]  # no cotangent for the second update
    cs = [randn(gen(9), 4) if i % 2 == 0 else None for i in range(case.ns * 2)]
    args = (cu, cs, grads, states, params, step, hyper, case.options)
    full = case.backward(*args, case.mask())
    assert [len(r) for r in full] == [2, 2 * case.ns, 2, case.nh]
    assert full[0][0].abs().min() > 0 and float(full[3][0].detach()) != 0  # not vacuous
    # The second tensor has no cotangent at all: its gradients are zero.
    assert torch.equal(full[0][1], torch.zeros(3, dtype=F64))
    assert torch.equal(full[2][1], torch.zeros(3, dtype=F64))
    for k in range(case.ns):
        assert torch.equal(full[1][2 * k + 1], torch.zeros(3, dtype=F64))
    masks = [[j == i for j in range(3 + case.nh)] for i in range(3 + case.nh)]
    masks += [case.mask(False), [True, False, False, True] + [False] * (case.nh - 1)]
    for mask in masks:
        part = case.backward(*args, mask)
        for k in range(3):
            if mask[k]:
                assert_close(part[k], full[k], rtol=0, atol=0, msg=f"mask {mask} list {k}")
            else:
                assert part[k] == [], f"mask {mask}: list {k} should be empty"
        assert len(part[3]) == case.nh
        for i in range(case.nh):
            h = part[3][i]
            assert h.shape == () and h.dtype == hyper[i].dtype
            if mask[3 + i]:
                assert torch.equal(h.detach(), full[3][i].detach()), (mask, i)
            else:
                assert float(h.detach()) == 0.0, f"mask {mask}: hyperparameter {i} should be 0"


# --- Meta kernels -----------------------------------------------------------------


def to_meta(ts):
    return [t.to("meta") for t in ts]


@cases(OP_CASES)
def test_meta_kernels(case):
    grads, states, params, hyper = make_inputs(case, 9)
    hm = to_meta(hyper)
    step = torch.tensor(1, device="meta")
    n = len(grads)
    u, s = case.forward(to_meta(grads), to_meta(states), to_meta(params), step, hm, case.options)
    assert [t.shape for t in u] == [t.shape for t in grads]
    assert [t.shape for t in s] == [t.shape for t in states] and len(s) == case.ns * n
    assert all(t.device.type == "meta" and t.dtype == F64 for t in (*u, *s))
    # In place: nothing to compute, but the same checks.
    assert case.inplace(to_meta(params), to_meta(grads), to_meta(states), step, hm, case.options, True) is None
    # Backward: shapes, masked lists empty, 0-d hyperparameter gradients.
    cot = to_meta(grads)
    mask = [True, False, True] + [True] * case.nh
    gg, gs, gp, gh = case.backward(
        cot, [None] * len(states), to_meta(grads), to_meta(states), to_meta(params), step, hm, case.options, mask
    )
    assert [t.shape for t in gg] == [t.shape for t in gp] == [t.shape for t in grads]
    assert gs == [] and len(gh) == case.nh
    assert all(t.device.type == "meta" for t in (*gg, *gp, *gh)) and all(t.shape == () for t in gh)
    # The Meta kernels check shapes as the CPU ones do.
    swapped = to_meta(params[::-1])
    with pytest.raises(ValueError, match="shape"):
        case.forward(to_meta(grads), to_meta(states), swapped, step, hm, case.options)
    with pytest.raises(ValueError, match="shape"):
        case.inplace(swapped, to_meta(grads), to_meta(states), step, hm, case.options, True)
    with pytest.raises(ValueError, match="shape"):
        case.backward(cot, [None] * len(states), to_meta(grads), to_meta(states), swapped, step, hm, case.options, mask)
    if case.ns:
        with pytest.raises(ValueError, match="shape"):
            case.forward(to_meta(grads), to_meta(states[::-1]), [], step, hm, case.options)


# --- opcheck ----------------------------------------------------------------------


def opcheck_samples(case):
    samples = []
    for requires_grad in (False, True):
        for with_params in (True, False):
            grads, states, params, hyper = make_inputs(
                case, 10, requires_grad=requires_grad, wd=None if with_params else 0.0
            )
            options = list(case.options)
            if not with_params:
                params = []
                options[OPTION_NAMES[case.op].index("maximize")] = 1.0
            samples.append((grads, states, params, torch.tensor(2), hyper, options))
    # float32 tensors with float32 hyperparameters and a float step.
    grads, states, params, hyper = make_inputs(case, 11, dtype=torch.float32)
    hyper = [h.float() for h in hyper]
    samples.append((grads, states, params, torch.tensor(3.0), hyper, list(case.options)))
    return samples


@cases(OPCHECK_CASES)
@pytest.mark.parametrize("index", range(5))
def test_opcheck(case, index):
    args = opcheck_samples(case)[index]
    torch.library.opcheck(case.forward.default, case.forward.typed(*args))


@cases(OPCHECK_CASES)
@pytest.mark.parametrize("update_params", [False, True])
def test_opcheck_inplace(case, update_params):
    grads, states, params, hyper = make_inputs(case, 12)
    args = (params, grads, states, torch.tensor(2), hyper, list(case.options), update_params)
    torch.library.opcheck(case.inplace.default, case.inplace.typed(*args))


@cases(OPCHECK_CASES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_backward(case, requires_grad):
    grads, states, params, hyper = make_inputs(case, 13, requires_grad=requires_grad)
    c = gen(14)
    cu = [randn(c, *t.shape, requires_grad=requires_grad) for t in grads]
    cs = [randn(c, *t.shape) if i == 0 else None for i, t in enumerate(states)]
    # Skip the states' gradient and the second hyperparameter's.
    mask = [True, False, True, True, False] + [True] * (case.nh - 2)
    args = (cu, cs, grads, states, params, torch.tensor(2), hyper, list(case.options), mask)
    torch.library.opcheck(case.backward.default, case.backward.typed(*args))


@cases(CASES)
@pytest.mark.parametrize("hyper_dtype", [F64, torch.float32])
def test_backward_differentiable_form_equals_kernel(case, hyper_dtype):
    """NAME_backward with inputs that require grad (grad mode on) runs the
    differentiable tensor form of the VJP; without, the fused kernel. For float64
    tensors both agree to float64 rounding, whatever the hyperparameters' dtype
    (both compute the coefficients in float64); the hyperparameters' gradients
    are returned in their own dtype."""
    grads, states, params, hyper = make_inputs(case, 15, shapes=[(6,), (2, 3)])
    hyper = [h.to(hyper_dtype) for h in hyper]
    step = torch.tensor(case.step)
    c = gen(16)
    cu = [randn(c, *t.shape) for t in grads]
    cs = [randn(c, *t.shape) for t in states]
    kernel = case.backward(cu, cs, grads, states, params, step, hyper, case.options, case.mask())
    rg = [h.clone().requires_grad_() for h in hyper]
    tensor_form = case.backward(cu, cs, grads, states, params, step, rg, case.options, case.mask())
    assert tensor_form[3][0].requires_grad  # the differentiable form ran
    for a, b in zip(tensor_form[:3], kernel[:3]):
        assert_close(list(a), list(b), rtol=1e-13, atol=1e-15)
    for a, b in zip(tensor_form[3], kernel[3]):
        assert a.dtype == b.dtype == hyper_dtype
        assert_close(a, b, rtol=1e-13 if hyper_dtype == F64 else 2e-7, atol=0)


# --- a rule's scalar state: NAME_next_S -------------------------------------------


def test_nadam_next_mu_product():
    """NAdam's running product P_t = P_{t-1} mu_t, mu_t = beta1 (1 - 0.96^(t psi) / 2),
    is the operator nadam_next_mu_product, the rule's (every engine and both
    languages call it): against the formula in Python floats; in the previous
    product's dtype, multiplied as torch.optim.NAdam does (in float32 by the
    rounded factor); differentiable with respect to beta1 and the previous
    product (gradcheck, gradgradcheck); batched under vmap; opcheck."""
    op = OPS.nadam_next_mu_product
    assert [a.name for a in op.default._schema.arguments] == ["step", *HYPER_NAMES["nadam"], *OPTION_NAMES["nadam"]]
    lr, beta2, wd = (torch.tensor(v, dtype=F64) for v in (0.01, 0.999, 0.1))
    options = (1e-8, 4e-3, False, False)

    def call(previous, beta1, step):
        return op(step, lr, beta1, beta2, previous, wd, *options)

    previous, beta1 = 0.4321, 0.87
    for t in (1, 2, 7, 1000):
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * 4e-3))
        got = call(torch.tensor(previous, dtype=F64), torch.tensor(beta1, dtype=F64), torch.tensor(t))
        assert got.dtype == F64
        assert_close(got, torch.tensor(previous * mu, dtype=F64), rtol=4 * torch.finfo(F64).eps)
        got32 = call(torch.tensor(previous), torch.tensor(beta1, dtype=F64), torch.tensor(float(t)))
        assert got32.dtype == torch.float32
        # (the factor in float64 rounds to float32: the same as Python's to within a rounding)
        assert_close(got32, torch.tensor(previous) * torch.tensor(mu), rtol=torch.finfo(torch.float32).eps)
    c = gen(31)
    inputs = tuple(rand_pos(c, 2) * 0.5 + 0.25)  # (two 0-d values in (0.3, 0.8))
    inputs = tuple(x.requires_grad_() for x in inputs)
    assert torch.autograd.gradcheck(lambda p, b: call(p, b, torch.tensor(3)), inputs)
    assert torch.autograd.gradgradcheck(lambda p, b: call(p, b, torch.tensor(3)), inputs)
    betas = torch.tensor([0.5, 0.9, 0.99], dtype=F64)
    batched = torch.func.vmap(lambda b: call(torch.tensor(0.3, dtype=F64), b, torch.tensor(4)))(betas)
    assert torch.equal(batched, torch.stack([call(torch.tensor(0.3, dtype=F64), b, torch.tensor(4)) for b in betas]))
    torch.library.opcheck(
        op.default, (torch.tensor(2), lr, inputs[1].detach(), beta2, inputs[0].detach(), wd, *options)
    )
