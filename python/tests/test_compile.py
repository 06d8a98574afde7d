"""torch.compile of an unrolled differentiable loop that runs the fused operator.

Notes from getting this to work (torch 2.13):
* torch.autograd.grad inside the compiled function needs
  torch._dynamo.config.trace_autograd_ops = True.
* The compiled function must not return a tensor whose graph the inner
  torch.autograd.grad consumed (dynamo: "autograd.grad consumed returned
  tensor's grad_fn"); the outer loss is returned detached.
* unrollopt.adam(...) itself is built outside the compiled function when its lr
  is a tensor: the range check reads the tensor's value (float(.item())),
  a data-dependent guard that fullgraph=True refuses
  (test_adam_constructed_inside_with_tensor_lr_breaks_graph documents it).
"""

from __future__ import annotations

import pytest
import torch
from references import F64, gen, max_rel_err, randn, unrollopt
from torch._dynamo.testing import CompileCounterWithBackend


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
    counter = CompileCounterWithBackend("aot_eager")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(run, fullgraph=True, backend=counter)
        out, meta = compiled(x, y, w0)
    assert max_rel_err(out, eager_out) <= 1e-14
    for got, exp in zip(meta, eager_meta):
        assert got.abs().max() > 0
        assert max_rel_err(got, exp) <= 1e-12
    # The fused operator is in the captured graph (twice: one call per step).
    targets = [str(n.target) for gm in counter.graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert sum("unrollopt.adam" in t for t in targets) == 2, targets


def test_adam_constructed_inside_with_tensor_lr_breaks_graph():
    """Documents the limitation: building the optimizer inside the compiled
    function with a tensor lr reads the lr's value to range-check it."""
    torch._dynamo.reset()
    x, y, w0 = make_data()

    def build_and_step(lr, w):
        opt = unrollopt.adam(lr=lr, use_accelerated_op=True)
        state = opt.init((w,))
        u, _ = opt.update((w * 2,), state, inplace=False)
        return u[0]

    lr = torch.tensor(0.1, dtype=F64)
    eager = build_and_step(lr, w0.detach())
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        with pytest.raises(Exception, match="data-dependent|Data-dependent|item"):
            torch.compile(build_and_step, fullgraph=True, backend="aot_eager")(lr, w0.detach())
        # Without fullgraph it still works (graph break at the check).
        torch._dynamo.reset()
        out = torch.compile(build_and_step, backend="aot_eager")(lr, w0.detach())
    assert torch.allclose(out, eager, rtol=1e-14, atol=0)


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
