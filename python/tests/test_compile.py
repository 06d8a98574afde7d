"""torch.compile of an unrolled differentiable loop that runs the fused operator.

Notes from getting this to work (torch 2.13):
* torch.autograd.grad inside the compiled function needs
  torch._dynamo.config.trace_autograd_ops = True.
* The compiled function must not return a tensor whose graph the inner
  torch.autograd.grad consumed (dynamo: "autograd.grad consumed returned
  tensor's grad_fn"); the outer loss is returned detached.
* Under compile an optimizer built inside the compiled function with a tensor
  lr checks its range with torch._assert_async (reading the value would break
  the graph). AOTAutograd decomposes the operators into ATen operations for
  Inductor: a differentiable fused step (unrollopt.NAME) into the rule's step,
  its Autograd kernel's backward (unrollopt.NAME_backward) into the rule's
  vjp; the plain step (unrollopt.NAME_plain) into the rule's step, which
  autograd differentiates.
"""

from __future__ import annotations

import pytest
import torch
from references import F64, gen, max_rel_err, randn, unrollopt
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.testing import CompileCounterWithBackend
from torch._functorch.aot_autograd import make_boxed_func
from torch._inductor.decomposition import select_decomp_table


def make_data():
    g = gen(0)
    return randn(g, 6, 3), randn(g, 6), randn(g, 3, requires_grad=True)


def make_run(opt, lr):
    def run(x, y, w0):
        params = (w0,)
        state = opt.init(params)
        for _ in range(2):
            loss = ((x @ params[0] - y) ** 2).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            updates, state = opt.update(grads, state, params=params, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        outer = (params[0] ** 2).sum() + (x @ params[0]).sum()
        meta = torch.autograd.grad(outer, (w0, lr))
        return outer.detach(), meta

    return run


def test_compiled_unrolled_loop_matches_eager():
    torch._dynamo.reset()
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    opt = unrollopt.adam(lr=lr, eps=1e-3, weight_decay=0.01, use_accelerated_op=True)
    run = make_run(opt, lr)
    x, y, w0 = make_data()
    eager_out, eager_meta = run(x, y, w0)
    captured, compiled_graphs = [], []

    def capture(gm, example_inputs):  # what AOTAutograd hands to Inductor
        compiled_graphs.append(gm)
        return make_boxed_func(gm.forward)

    aot = aot_autograd(fw_compiler=capture, bw_compiler=capture, decompositions=select_decomp_table())

    def backend(gm, example_inputs):
        captured.append(gm)
        return aot(gm, example_inputs)

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(run, fullgraph=True, backend=backend)
        out, meta = compiled(x, y, w0)
    assert max_rel_err(out, eager_out) <= 1e-14
    for got, exp in zip(meta, eager_meta):
        assert got.abs().max() > 0
        assert max_rel_err(got, exp) <= 1e-12

    # Dynamo's graph calls the fused operator; AOTAutograd decomposes it, and
    # its backward, into the rule's ATen operations: the compiler gets those,
    # to fuse with the gradient around them, and no unrollopt operator; the
    # values are eager's.
    def targets(graphs):
        calls = ("call_function", "call_method")
        return [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op in calls]

    assert any(t in ("unrollopt.adam", "unrollopt.adam.default") for t in targets(captured)), targets(captured)
    assert compiled_graphs and not any("unrollopt" in t for t in targets(compiled_graphs)), targets(compiled_graphs)
    assert any("sqrt" in t for t in targets(compiled_graphs)), targets(compiled_graphs)


@pytest.mark.parametrize("first", ["unrollopt", "torch._inductor.decomposition"])
def test_inductor_decomposes_the_operators_whichever_is_imported_first(first):
    """Inductor's decomposition table, which torch builds once, has every
    differentiable fused operator and its backward, also where torch built it
    before unrollopt was imported (a fresh process for each order)."""
    import subprocess
    import sys

    second = "unrollopt" if first != "unrollopt" else "torch._inductor.decomposition"
    code = (
        f"import {first}, {second}, torch\n"
        "from torch._inductor.decomposition import select_decomp_table\n"
        "table = select_decomp_table()\n"
        "ops = unrollopt._inductor.operators()\n"
        "assert len(ops) >= 20 and torch.ops.unrollopt.adam_backward.default in ops\n"
        "missing = [str(op) for op in ops if op not in table]\n"
        "assert not missing, missing\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_adam_constructed_inside_with_tensor_lr_compiles_and_checks_its_range():
    """Built inside the compiled function with a tensor lr: no graph break (the
    range check runs in the compiled code), and a negative lr still raises."""
    torch._dynamo.reset()
    x, y, w0 = make_data()

    def build_and_step(lr, w):
        opt = unrollopt.adam(lr=lr, use_accelerated_op=True)
        state = opt.init((w,))
        u, _ = opt.update((w * 2,), state, inplace=False)
        return u[0]

    lr = torch.tensor(0.1, dtype=F64)
    eager = build_and_step(lr, w0.detach())
    compiled = torch.compile(build_and_step, fullgraph=True, backend="aot_eager")
    assert max_rel_err(compiled(lr, w0.detach()), eager) <= 1e-15
    with pytest.raises(RuntimeError, match="Invalid lr"):
        compiled(-lr, w0.detach())


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_plain_path_compiles_without_graph_breaks(name):
    """use_accelerated_op=False under torch.compile(fullgraph=True), composed
    with torch.func.grad (MAML's torch.func way): no graph break (the plain
    path's checks in C++ are left to the tensor operations there), and the
    meta-gradient is eager's."""
    torch._dynamo.reset()
    x, y, w0 = make_data()
    opt = getattr(unrollopt, name)(0.1, use_accelerated_op=False)

    def inner(w):
        return ((x @ w - y) ** 2).mean()

    def adapt(w):
        params, state = (w,), opt.init((w,))
        for _ in range(2):
            grads = (torch.func.grad(inner)(params[0]),)
            updates, state = opt.update(grads, state, params=params, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        return inner(params[0])

    eager = torch.func.grad(adapt)(w0.detach())
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(torch.func.grad(adapt), fullgraph=True, backend=counter)(w0.detach())
    assert counter.frame_count == 1
    assert max_rel_err(compiled, eager) <= 1e-13


# --- MAML's meta-gradient under torch.compile(fullgraph=True), table-driven ------------
#
# One meta-batch of 2 tasks: vmap over the tasks of grad (with respect to the
# initial parameters and to the tensor learning rate) of the query loss after 2
# inner steps whose gradients come from torch.func.grad, on a module called by
# functional_call. The optimizer is built inside from the tensor lr (its range
# check runs in the compiled code). Compared with the same function run eagerly
# (the fused kernels there): compiled, the same rule's step and vjp (fused)
# or its step differentiated by autograd (plain) in ATen operations, so the
# two differ by rounding only.
#
# Tolerances (relative to the largest entry, max_rel_err): a step's update is a
# few dozen floating-point operations either way, each correctly rounded, and
# the meta-gradient is a sum of products of those through 2 steps and their
# derivatives, on values of order 1 (tanh network, lr <= 0.1): a relative
# difference of ~1e3 ulps bounds it with room: 1e-12 for float64 (ulp 2.2e-16),
# 2e-4 for float32 (ulp 1.2e-7; Adam's 1/sqrt(v) and Lion's sign amplify near
# small v, hence more than 1e3 ulps' 1.2e-4).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-4}


def builders():
    """name -> build(lr, fused): an optimizer from a 0-d tensor lr."""
    u = unrollopt
    return {
        "sgd": lambda lr, f: u.sgd(lr, momentum=0.9, nesterov=True, weight_decay=0.01, use_accelerated_op=f),
        "adam": lambda lr, f: u.adam(lr, weight_decay=0.01, use_accelerated_op=f),
        "adamw_amsgrad": lambda lr, f: u.adamw(lr, amsgrad=True, eps_root=1e-8, use_accelerated_op=f),
        "adamax": lambda lr, f: u.adamax(lr, weight_decay=0.01, use_accelerated_op=f),
        "adadelta": lambda lr, f: u.adadelta(lr, use_accelerated_op=f),
        "adagrad": lambda lr, f: u.adagrad(lr, lr_decay=0.01, use_accelerated_op=f),
        "rmsprop": lambda lr, f: u.rmsprop(lr, momentum=0.5, centered=True, use_accelerated_op=f),
        "radam": lambda lr, f: u.radam(lr, use_accelerated_op=f),
        "nadam": lambda lr, f: u.nadam(lr, use_accelerated_op=f),
        "lion": lambda lr, f: u.lion(lr, use_accelerated_op=f),
        "adan": lambda lr, f: u.adan(lr, weight_decay=0.01, use_accelerated_op=f),
        "chain": lambda lr, f: u.chain(u.clip_grad_norm(1.0), u.scale_by_adam(use_accelerated_op=f), u.scale(-lr)),
        "schedule": lambda lr, f: u.adam(u.linear_schedule(lr, lr / 10, 2), use_accelerated_op=f),
        # Meta-SGD's per-parameter rates: lr times a fixed positive tree.
        "per_parameter_lr": lambda lr, f: u.sgd(
            {"0.weight": lr * RATES, "0.bias": lr, "2.weight": lr / 2, "2.bias": lr}, use_accelerated_op=f
        ),
    }


RATES = torch.tensor([[1.0], [0.5], [2.0], [1.5]])  # the first layer's rates, per output unit


def make_net(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).to(dtype)


def make_meta_gradient(build, fused: bool, net):
    """The meta-gradient function (vmap over tasks of grad over an unrolled
    inner loop with torch.func.grad) for one optimizer."""

    def loss(params, x, y):
        return ((torch.func.functional_call(net, params, (x,)) - y) ** 2).mean()

    def task(params, lr, xs, ys, xq, yq):
        opt = build(lr, fused)
        state = opt.init(params)
        for _ in range(2):
            grads = torch.func.grad(loss)(params, xs, ys)
            updates, state = opt.update(grads, state, params=params, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        return loss(params, xq, yq)

    return torch.func.vmap(torch.func.grad(task, argnums=(0, 1)), in_dims=(None, None, 0, 0, 0, 0))


def meta_inputs(dtype, seed=1):
    g = gen(seed)
    net = make_net(dtype)
    params = {k: v.detach() for k, v in net.named_parameters()}
    data = [randn(g, 2, 5, n, dtype=dtype) for n in (3, 1, 3, 1)]  # (tasks, shots, features)
    return net, params, data


def compiled_and_eager(name, dtype, plain_backend="aot_eager"):
    """The compiled meta-gradients and the eager ones, fused and plain. The
    fused step compiles as Inductor gets it (backend
    "aot_eager_decomp_partition": AOTAutograd with Inductor's decompositions,
    which decompose the operators into the rule's ATen operations), the plain
    one through ``plain_backend``."""
    torch._dynamo.reset()
    net, params, data = meta_inputs(dtype)
    lr = torch.tensor(0.1, dtype=dtype)
    eager, compiled = {}, {}
    for fused, backend in ((True, "aot_eager_decomp_partition"), (False, plain_backend)):
        eager[fused] = make_meta_gradient(builders()[name], fused, net)(params, lr, *data)
        counter = CompileCounterWithBackend(backend)
        fn = make_meta_gradient(builders()[name], fused, net)
        compiled[fused] = torch.compile(fn, fullgraph=True, backend=counter)(params, lr, *data)
        # One graph: fullgraph=True raises on a break; dynamo may restart its
        # analysis once (tensorifying Python scalars), which counts an empty frame.
        assert sum(len(gm.graph.nodes) > 0 for gm in counter.graphs) == 1
    return compiled, eager


def assert_close(compiled, eager, tol):
    (c_params, c_lr), (e_params, e_lr) = compiled, eager
    for k in e_params:
        assert torch.isfinite(c_params[k]).all()
        assert e_params[k].abs().max() > 0, k  # a meta-gradient that means something
        assert max_rel_err(c_params[k], e_params[k]) <= tol, (k, max_rel_err(c_params[k], e_params[k]))
    assert e_lr.abs().max() > 0
    assert max_rel_err(c_lr, e_lr) <= tol, max_rel_err(c_lr, e_lr)


# Every row compiles the fused step as Inductor gets it (each rule's
# decomposition, with Inductor's other decompositions) and the plain one through
# dynamo (backend "eager": the captured graph as is, no graph break, values);
# the rows in AOT lower the plain one to ATen too (a few seconds more each, so
# not every row on a 2-core CI machine: the others run the same plain tensor
# operations).
AOT = {"sgd", "adamw_amsgrad", "rmsprop", "radam", "chain", "per_parameter_lr"}


@pytest.mark.parametrize("name", list(builders()))
def test_meta_gradient_compiles_and_matches_eager_float64(name):
    compiled, eager = compiled_and_eager(name, torch.float64, "aot_eager" if name in AOT else "eager")
    for path in compiled.values():
        for reference in eager.values():  # the fused operator's and the plain math's
            assert_close(path, reference, TOLERANCE[torch.float64])


@pytest.mark.parametrize("name", ["lion", "per_parameter_lr"])
def test_meta_gradient_compiles_and_matches_eager_float32(name):
    compiled, eager = compiled_and_eager(name, torch.float32)
    for path in compiled.values():
        for reference in eager.values():
            assert_close(path, reference, TOLERANCE[torch.float32])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("scale", [0.0, 1e-21], ids=["zero", "underflow"])
def test_inductor_adam_float32_exact_where_a_second_moment_is_zero_or_underflows(scale, fused):
    """Inductor, float32: the meta-gradient equals eager's and stays finite
    for the first layer's weights on an input feature scaled by ``scale`` in
    every support shot. At 0 their gradient is exactly 0 at every step (a
    second moment of 0, where d sqrt(nu) / d nu is infinite); at 1e-21 it is
    about 1e-21, whose square underflows (nu' below the smallest normal
    number, or 0). The rule's vjp (fused) and the plain math's differentiable
    root (plain) give the exact derivative in both, as the operator's backward
    does eagerly."""
    torch._dynamo.reset()
    net, params, data = meta_inputs(torch.float32)
    data[0][..., 0] *= scale
    if scale == 0:
        data[2][..., 0] = 0.0  # the query loss does not depend on those weights either
    lr = torch.tensor(0.1)
    fn = make_meta_gradient(builders()["adam"], fused, net)
    eager = fn(params, lr, *data)
    compiled = torch.compile(fn, fullgraph=True, backend="inductor")(params, lr, *data)
    assert torch.isfinite(eager[0]["0.weight"]).all()  # the reference itself is finite
    assert_close(compiled, eager, TOLERANCE[torch.float32])
    column = compiled[0]["0.weight"][..., 0]
    if scale == 0:
        assert (column == 0).all()  # exactly 0, not 0 * inf
    else:
        reference = eager[0]["0.weight"][..., 0]
        assert reference.abs().max() > 0
        assert max_rel_err(column, reference) <= TOLERANCE[torch.float32]


def test_third_order_compiles_and_matches_eager():
    """d^2 (meta-loss) / d lr^2 through the unrolled Adam steps: the inner
    gradient, the meta-gradient and one more derivative (higher derivatives of
    the decomposed operators under compile, against the operator's double
    backward)."""
    torch._dynamo.reset()
    net, params, data = meta_inputs(torch.float64)
    meta = make_meta_gradient(builders()["adam"], True, net)

    def lr_curvature(lr):
        return torch.func.grad(lambda r: meta(params, r, *data)[1].sum())(lr)

    lr = torch.tensor(0.1, dtype=torch.float64)
    eager = lr_curvature(lr)
    compiled = torch.compile(lr_curvature, fullgraph=True, backend="aot_eager_decomp_partition")(lr)
    assert eager.abs() > 0
    assert max_rel_err(compiled, eager) <= TOLERANCE[torch.float64]


@pytest.mark.parametrize("meta", ["MetaSGD", "MetaAdam"])
def test_meta_optimizer_on_a_module_compiles_in_one_graph(meta):
    """The module API (examples/maml_sinusoid.py --compile without --vmap):
    a task's inner steps with a MetaOptimizer on the module and its query
    loss in one graph (fullgraph=True), the backward outside; the
    meta-gradient is eager's."""
    torch._dynamo.reset()
    _, params, (xs, ys, xq, yq) = meta_inputs(torch.float64)

    def meta_gradient(fn):
        net = make_net(torch.float64)
        leaves = list(net.parameters())  # the steps put their results into the module
        opt = getattr(unrollopt, meta)(net, lr=0.1, use_accelerated_op=True)
        fn(net, opt).backward()
        return [p.grad for p in leaves]

    def adapted_query_loss(net, opt):
        for _ in range(2):
            opt.step(((net(xs[0]) - ys[0]) ** 2).mean())
        return ((net(xq[0]) - yq[0]) ** 2).mean()

    eager = meta_gradient(adapted_query_loss)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        counter = CompileCounterWithBackend("aot_eager_decomp_partition")
        compiled = meta_gradient(torch.compile(adapted_query_loss, fullgraph=True, backend=counter))
    assert sum(len(gm.graph.nodes) > 0 for gm in counter.graphs) == 1
    for got, exp in zip(compiled, eager):
        assert exp.abs().max() > 0
        assert max_rel_err(got, exp) <= TOLERANCE[torch.float64]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_meta_gradient_compiles_once_for_dynamic_shapes(fused):
    """torch.compile(dynamic=True): one graph for parameters of every size
    (the step does not specialize on a size, nor guard on one), and the
    meta-gradient is eager's at each."""
    torch._dynamo.reset()
    opt = unrollopt.adam(0.1, weight_decay=0.01, use_accelerated_op=fused)

    def loss(params, x):
        return (torch.tanh(x @ params["w"]).sum(-1) + params["b"].sum()).pow(2).mean()

    def adapted_loss(params, x):
        state = opt.init(params)
        for _ in range(2):
            updates, state = opt.update(torch.func.grad(loss)(params, x), state, params=params, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        return loss(params, x)

    meta = torch.func.grad(adapted_loss)
    counter = CompileCounterWithBackend("aot_eager_decomp_partition")
    compiled = torch.compile(meta, fullgraph=True, dynamic=True, backend=counter)
    g = gen(2)
    for n in (4, 7):
        params = {"w": randn(g, n, 3), "b": randn(g, n)}
        x = randn(g, 5, n)
        eager = meta(params, x)
        got = compiled(params, x)
        for k in eager:
            assert eager[k].abs().max() > 0
            assert max_rel_err(got[k], eager[k]) <= TOLERANCE[torch.float64], k
    assert counter.frame_count == 1


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_traced_step_runs_per_tensor(name):
    """Under compile, the decomposed step of several small tensors runs on
    each tensor (eagerly it runs on their concatenation): Inductor fuses each
    tensor's step with the computations around it, which the copies into and
    out of a concatenation would stop (measured: MAML Adam's compiled
    iteration 1.3x slower, docs/benchmarks.md section 15)."""
    torch._dynamo.reset()
    _, params, (xs, ys, _, _) = meta_inputs(torch.float64)
    opt = getattr(unrollopt, name)(0.1, use_accelerated_op=True)
    net = make_net(torch.float64)

    def loss(params):
        return ((torch.func.functional_call(net, params, (xs[0],)) - ys[0]) ** 2).mean()

    def adapted_loss(params):
        state = opt.init(params)
        updates, state = opt.update(torch.func.grad(loss)(params), state, inplace=False)
        return loss(unrollopt.apply_updates(params, updates, inplace=False))

    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    table = select_decomp_table()
    backend = aot_autograd(fw_compiler=capture, decompositions=table)
    torch.compile(torch.func.grad(adapted_loss), fullgraph=True, backend=backend)(params)
    targets = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert targets and not any("unrollopt" in t for t in targets)  # the step decomposed
    assert "aten.cat.default" not in targets, targets
