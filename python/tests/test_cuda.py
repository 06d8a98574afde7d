"""The CUDA kernels of the fused operators (cpp/cuda/): parity with the CPU
kernels in float64 for every operator, forward and backward; gradcheck on the
GPU; odd sizes and strided inputs; float16/bfloat16 against float32; no host
synchronisation, so that a fused step can be captured in a CUDA graph; tensors
on a device that is not the current one.

Everything but the first test needs a GPU and a CUDA build of unrollopt, and
is skipped, with the reason, otherwise. The cases and inputs are test_ops.py's.
"""

from __future__ import annotations

import pytest
import torch
from op_cases import CASES, OP_CASES, cases, make_inputs, split_outputs
from references import F64, assert_close, cuda_skip_reason, gen, randn, unrollopt


def test_accelerated_op_available_never_raises():
    """True exactly on a CUDA build with a GPU; never an exception."""
    for device in ("cuda", "cuda:0", torch.device("cuda"), torch.device("cuda", 7), 0):
        result = unrollopt.accelerated_op_available(device)
        assert isinstance(result, bool)
        if not torch.cuda.is_available():
            assert result is False


needs_cuda = pytest.mark.skipif(bool(cuda_skip_reason()), reason=cuda_skip_reason() or "-")

# Sizes around the vector width (4), the block (512 threads x 4) and the chunk
# (65536 elements), and an empty tensor, in one call.
ODD_SHAPES = [(0,), (1,), (3,), (1025,), (2049,), (65537,)]
SMALL_SHAPES = [(3,), (2, 2)]


def cuda(ts):
    return [t.cuda() if t is not None else None for t in ts]


def cpu(ts):
    return [t.cpu() if t is not None else None for t in ts]


def cuda_all(lists):
    return tuple(cuda(ts) for ts in lists)


def cotangents(like, seed, dtype=F64):
    """Random cotangents, with every third one missing (None: zeros)."""
    g = gen(seed)
    return [None if i % 3 == 2 else randn(g, *t.shape, dtype=dtype) for i, t in enumerate(like)]


def run_forward(case, grads, states, params, step, hyper):
    return case.forward(grads, states, params, step, hyper, case.options)


def run_backward(case, gu, gs, grads, states, params, step, hyper, mask=None):
    return case.backward(gu, gs, grads, states, params, step, hyper, case.options, mask or case.mask())


def on_cpu(case, seed, shapes):
    """Inputs (grads, states, params, hyper, cotangents of the updates and of
    the states, step) on the CPU, and the CPU kernels' forward and backward."""
    grads, states, params, hyper = make_inputs(case, seed, shapes=shapes)
    gu, gs = cotangents(grads, seed + 1), cotangents(states, seed + 2)
    step = torch.tensor(case.step)
    forward = run_forward(case, grads, states, params, step, hyper)
    backward = run_backward(case, gu, gs, grads, states, params, step, hyper)
    return (grads, states, params, hyper, gu, gs), step, forward, backward


def assert_matches_cpu(forward, backward, expected_forward, expected_backward):
    """float64 parity; the hyperparameters' gradients are sums over every element."""
    for actual, expected in zip((*forward, *backward), (*expected_forward, *expected_backward)):
        assert all(t.device.type == "cuda" for t in actual)
        assert_close(cpu(actual), expected, rtol=1e-12, atol=1e-13)


# --- parity with the CPU kernels (float64) ----------------------------------------------


@needs_cuda
@cases(CASES)
@pytest.mark.parametrize("where", ["device", "host"], ids=["hyper_on_gpu", "hyper_on_cpu"])
def test_forward_matches_cpu(case, where):
    (grads, states, params, hyper, _, _), step, forward, _ = on_cpu(case, 40, ODD_SHAPES)
    dev = (lambda t: t.cuda()) if where == "device" else (lambda t: t)
    actual = run_forward(case, cuda(grads), cuda(states), cuda(params), dev(step), [dev(h) for h in hyper])
    assert_matches_cpu(actual, [], forward, [])


@needs_cuda
@cases(CASES)
def test_backward_matches_cpu(case):
    (grads, states, params, hyper, gu, gs), step, forward, backward = on_cpu(case, 41, ODD_SHAPES)
    actual = run_backward(case, cuda(gu), cuda(gs), cuda(grads), cuda(states), cuda(params), step.cuda(), cuda(hyper))
    assert_matches_cpu([], actual, [], backward)


@needs_cuda
@cases(OP_CASES)
def test_backward_output_mask_and_hyper_on_cpu(case):
    """Unselected outputs are empty (zeros for a hyperparameter); a
    hyperparameter on the CPU gets its gradient on the CPU."""
    grads, states, params, hyper = make_inputs(case, 44)
    gu, gs = cotangents(grads, 45), cotangents(states, 46)
    step = torch.tensor(case.step)
    mask = [False, True, True] + [i % 2 == 0 for i in range(case.nh)]
    expected = run_backward(case, gu, gs, grads, states, params, step, hyper, mask)
    actual = run_backward(case, cuda(gu), cuda(gs), cuda(grads), cuda(states), cuda(params), step, hyper, mask)
    assert actual[0] == [] and expected[0] == []
    assert all(h.device.type == "cpu" for h in actual[3])
    for a, e in zip(actual[1:], expected[1:]):
        assert_close(cpu(a), e, rtol=1e-12, atol=1e-15)


@needs_cuda
@cases(OP_CASES)
@pytest.mark.parametrize("update_params", [False, True])
def test_inplace_matches_out_of_place(case, update_params):
    grads, states, params, hyper = cuda_all(make_inputs(case, 47, shapes=ODD_SHAPES))
    step = torch.tensor(case.step, device="cuda")
    u, s = run_forward(case, grads, states, params, step, hyper)
    case.inplace(params, grads, states, step, hyper, case.options, update_params)
    n = len(grads)
    p_before = make_inputs(case, 47, shapes=ODD_SHAPES)[2]
    if update_params:
        assert_close(cpu(params), [p + x for p, x in zip(p_before, cpu(u))], rtol=0, atol=0)
    else:
        assert_close(cpu(grads), cpu(u), rtol=0, atol=0)
    assert_close(cpu(states), cpu(s), rtol=0, atol=0)
    assert len(states) == case.ns * n


# --- gradcheck on the GPU --------------------------------------------------------------


@needs_cuda
@cases(OP_CASES)
def test_gradcheck_on_cuda(case):
    grads, states, params, hyper = make_inputs(case, 48)
    inputs = [t.cuda().requires_grad_() for t in (*grads, *states, *params, *hyper)]
    step = torch.tensor(case.step, device="cuda")
    n = len(grads)

    def f(*xs):
        gs, st, ps, hs = split_outputs(case, n, xs)
        u, s = run_forward(case, gs, st, ps, step, hs)
        return (*u, *s)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# --- strided inputs ----------------------------------------------------------------------


def strided(t):
    """The same values in a non-contiguous tensor (every other element of a
    larger one)."""
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    big[..., ::2] = t
    return big[..., ::2]


@needs_cuda
@cases(OP_CASES)
def test_strided_inputs(case):
    (grads, states, params, hyper, gu, gs), step, (u, s), backward = on_cpu(case, 49, [(5, 7), (1025,)])

    def st(ts):
        return [strided(t.cuda()) if t is not None else None for t in ts]

    sg, ss, sp = st(grads), st(states), st(params)
    assert not sg[0].is_contiguous()
    forward = run_forward(case, sg, ss, sp, step, hyper)
    assert_matches_cpu(forward, run_backward(case, st(gu), st(gs), sg, ss, sp, step, hyper), (u, s), backward)
    # In place: written back into the strided tensors.
    case.inplace(sp, sg, ss, step, hyper, case.options, True)
    assert_close(cpu(sp), [p + x for p, x in zip(params, u)], rtol=1e-12, atol=1e-15)
    assert_close(cpu(ss), s, rtol=1e-12, atol=1e-15)


# --- float16 and bfloat16 ------------------------------------------------------------------


@needs_cuda
@cases(OP_CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_match_float32(case, dtype):
    """Computed in float32: the float32 result from the same (rounded) inputs,
    rounded once."""
    grads, states, params, hyper = make_inputs(case, 52, shapes=ODD_SHAPES)
    low = [[t.to(dtype).cuda() for t in ts] for ts in (grads, states, params)]
    ref = [[t.float() for t in ts] for ts in low]
    hyper = cuda(hyper)
    step = torch.tensor(case.step, device="cuda")
    u, s = run_forward(case, *low, step, hyper)
    ru, rs = run_forward(case, *ref, step, hyper)
    assert all(t.dtype == dtype for t in (*u, *s))
    ulp = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
    assert_close([t.float() for t in u], ru, rtol=ulp, atol=1e-6)
    assert_close([t.float() for t in s], rs, rtol=ulp, atol=1e-6)
    gu, gs = cotangents(low[0], 53, dtype), cotangents(low[1], 54, dtype)
    back = run_backward(case, cuda(gu), cuda(gs), *low, step, hyper)
    rback = run_backward(
        case,
        [t.float().cuda() if t is not None else None for t in gu],
        [t.float().cuda() if t is not None else None for t in gs],
        *ref,
        step,
        hyper,
    )
    for a, e in zip(back[:3], rback[:3]):
        assert_close([t.float() for t in a], e, rtol=ulp, atol=1e-5)
    # Sums over elements, accumulated in float32 per thread either way.
    assert_close(back[3], rback[3], rtol=1e-4, atol=1e-6)


# --- no synchronisation; CUDA graphs -----------------------------------------------------


@needs_cuda
@cases(OP_CASES)
def test_no_host_synchronisation(case):
    grads, states, params, hyper = cuda_all(make_inputs(case, 55, shapes=ODD_SHAPES))
    gu, gs = cuda(cotangents(grads, 56)), cuda(cotangents(states, 57))
    step = torch.tensor(case.step, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_forward(case, grads, states, params, step, hyper)
        run_backward(case, gu, gs, grads, states, params, step, hyper)
        case.inplace(params, grads, states, step, hyper, case.options, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
@pytest.mark.parametrize("lr_on", ["cpu", "cuda"])
def test_optimizer_matches_torch_without_synchronising(lr_on):
    """unrollopt.Adam(use_accelerated_op=True) on the GPU: torch.optim.Adam's
    steps, none of which waits for the GPU (a learning rate on the GPU too)."""
    g = gen(62)
    values = [randn(g, *s, dtype=torch.float32) for s in [(1025,), (3, 5)]]
    grads = [randn(g, *t.shape, dtype=torch.float32) for t in values]
    ours = [v.cuda() for v in values]
    theirs = [v.cuda() for v in values]
    lr = torch.tensor(0.01, device=lr_on)
    opt = unrollopt.Adam(ours, lr=lr, weight_decay=0.1, use_accelerated_op=True)
    ref = torch.optim.Adam(theirs, lr=0.01, weight_decay=0.1)
    for step in range(3):
        for p, q, gr in zip(ours, theirs, grads):
            p.grad, q.grad = gr.cuda(), gr.cuda()
        torch.cuda.synchronize()
        if step > 0:  # the first step creates the state
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ref.step()
    assert_close(cpu(ours), cpu(theirs), rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("op", ["adam", "sgd_momentum", "rmsprop_centered_momentum"])
def test_cuda_graph_capture_and_replay(op):
    """An in-place step with its step counter, captured once and replayed,
    equals the same steps run eagerly."""
    case = next(c for c in OP_CASES if c.op == op)
    grads, states, params, hyper = make_inputs(case, 58, shapes=[(1025,), (3, 5)])

    def setup():
        g, s, p, h = cuda_all((grads, states, params, hyper))
        return g, s, p, h, torch.zeros((), dtype=torch.int64, device="cuda")

    def one_step(g, s, p, h, count):
        count.add_(1)
        case.inplace(p, g, s, count, h, case.options, True)

    eager = setup()
    for _ in range(3):
        one_step(*eager)
    captured = setup()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the default stream, as capture requires
        one_step(*captured)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        one_step(*captured)
    for _ in range(2):
        graph.replay()
    torch.cuda.synchronize()
    assert int(captured[4]) == 3
    assert_close(cpu(captured[2]), cpu(eager[2]), rtol=0, atol=0)
    assert_close(cpu(captured[1]), cpu(eager[1]), rtol=0, atol=0)


# --- a device that is not the current one ---------------------------------------------------


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@needs_cuda
@cases(OP_CASES)
def test_tensors_on_a_non_current_device(case):
    (grads, states, params, hyper, gu, gs), step, forward, backward = on_cpu(case, 59, ODD_SHAPES)

    def on1(ts):
        return [t.to("cuda:1") if t is not None else None for t in ts]

    with torch.cuda.device(0):
        step1 = step.to("cuda:1")
        actual_forward = run_forward(case, on1(grads), on1(states), on1(params), step1, on1(hyper))
        actual_backward = run_backward(case, on1(gu), on1(gs), on1(grads), on1(states), on1(params), step1, on1(hyper))
        torch.cuda.synchronize(1)
    assert all(t.device == torch.device("cuda", 1) for t in (*actual_forward[0], *actual_backward[3]))
    assert_matches_cpu(actual_forward, actual_backward, forward, backward)
