"""Shared helpers and references of the unrollopt test suite (a module the
tests import; conftest.py holds only the fixtures).

Every reference here is written independently of the library, in plain float64
PyTorch, following the textbook statement of Adam (Kingma and Ba, 2015) with
torch.optim.Adam's L2 weight decay and ``maximize`` and optax's ``eps_root``,
and torch.optim.SGD's documented equations (momentum, dampening, Nesterov),
AdamW's decoupled weight decay (Loshchilov and Hutter, 2019; torch.optim.AdamW)
Adamax (Kingma and Ba, 2015, section 7.1, with torch.optim.Adamax's eps) and
RMSprop, Adagrad and Adadelta as torch.optim.RMSprop, Adagrad and Adadelta
document them.
"""

from __future__ import annotations

import math

import torch

import unrollopt

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape, dtype=F64, requires_grad=False) -> torch.Tensor:
    t = torch.randn(*shape, generator=g, dtype=F64).to(dtype)
    return t.requires_grad_(requires_grad)


def rand_pos(g: torch.Generator, *shape, dtype=F64, low=0.1) -> torch.Tensor:
    """Strictly positive values (for second moments)."""
    return (torch.rand(*shape, generator=g, dtype=F64) + low).to(dtype)


def ref_adam_step(g, m, v, p, t, *, lr, b1, b2, eps, eps_root=0.0, wd=0.0, maximize=False, v_max=None):
    """Textbook Adam step (out of place, differentiable): returns (update, m, v),
    and with AMSGrad's ``v_max`` (the running maximum of v) (update, m, v, v_max).

    ``t`` is the step number, counting from 1. ``p`` may be None when wd is 0.
    """
    if maximize:
        g = -g
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        g = g + wd * p
    return _adam_direction(g, m, v, t, lr=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, v_max=v_max)


def _adam_direction(g, m, v, t, *, lr, b1, b2, eps, eps_root, v_max):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat = m / (1 - b1**t)
    w = v if v_max is None else torch.maximum(v_max, v)
    u = -lr * m_hat / (torch.sqrt(w / (1 - b2**t) + eps_root) + eps)
    return (u, m, v) if v_max is None else (u, m, v, w)


def ref_adamw_step(g, m, v, p, t, *, lr, b1, b2, eps, eps_root=0.0, wd=0.0, maximize=False, v_max=None):
    """AdamW as torch.optim.AdamW states it: p <- p - lr * wd * p, then Adam's
    step without L2. Returns (update, m, v) (and v_max, as ref_adam_step) with
    update = new p - p."""
    if maximize:
        g = -g
    u, *states = _adam_direction(g, m, v, t, lr=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, v_max=v_max)
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        u = u - lr * wd * p
    return (u, *states)


def ref_adamax_step(g, m, v, p, t, *, lr, b1, b2, eps, wd=0.0, maximize=False):
    """Adamax, with L2 weight decay and eps as torch.optim.Adamax: returns (update, m, u)."""
    if maximize:
        g = -g
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = torch.maximum(b2 * v, torch.abs(g) + eps)
    return -lr / (1 - b1**t) * m / v, m, v


def ref_lion_step(g, m, p, *, lr, b1, b2, wd=0.0, maximize=False):
    """Lion as Algorithm 2 of Chen et al. (2023) states it, with its decoupled
    weight decay: p <- p - lr (sign(b1 m + (1 - b1) g) + wd p), m <- b2 m + (1 - b2) g.
    Returns (update, m)."""
    if maximize:
        g = -g
    u = -lr * torch.sign(b1 * m + (1 - b1) * g)
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        u = u - lr * wd * p
    return u, b2 * m + (1 - b2) * g


def near_lion_tie(m, g, *, b1, maximize=False):
    """Where Lion's beta1 m + (1 - beta1) g' is within 10% of its terms' size
    of 0, the sign's discontinuity: where finite differences, or the rounding
    of one path and not another (a float32 or half one), would flip a sign.
    Tests flip m or g there to keep away from it (the ties themselves are
    test_optimizers.py's test_lion_sign_conventions)."""
    a, b = b1 * m.detach().double(), (1 - b1) * (-1.0 if maximize else 1.0) * g.detach().double()
    return (a + b).abs() < 0.1 * (a.abs() + b.abs())


class RefLion(torch.optim.Optimizer):
    """Lion as a plain ``torch.optim`` optimizer written from the paper's
    Algorithm 2 (torch.optim has none): the reference for unrollopt.Lion's
    trajectories, parameter groups and state dicts (keys ``step``, ``exp_avg``)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                state["step"] += 1
                u, state["exp_avg"] = ref_lion_step(
                    p.grad, state["exp_avg"], p, lr=group["lr"], b1=b1, b2=b2, wd=group["weight_decay"],
                    maximize=group["maximize"],
                )  # fmt: skip
                p.add_(u)


def ref_adan_step(g, m, v, n, prev, p, t, *, lr, b1, b2, b3, eps, wd=0.0, maximize=False):
    """Adan as the authors' implementation (sail-sg/Adan, Xie et al. 2022)
    computes a step: the gradient difference (0 at the first step, t = 1,
    whatever prev is), the three averages, the bias-corrected Nesterov direction, and
    the proximal decay p' = (p - lr * direction) / (1 + lr * wd). Returns
    (the update p' - p, m, v, n, g); p None: no weight decay."""
    if maximize:
        g = -g
    diff = torch.zeros_like(g) if t == 1 else g - prev
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * diff
    z = g + b2 * diff
    n = b3 * n + (1 - b3) * z * z
    denom = n.sqrt() / (1 - b3**t) ** 0.5 + eps
    direction = (m / (1 - b1**t) + b2 * v / (1 - b2**t)) / denom
    # p' - p for p' = (p - lr * direction) / (1 + lr * wd), without the
    # cancellation of computing p' first (the updates are compared to 1e-13).
    decay = 0.0 if p is None else lr * wd * p
    return -(lr * direction + decay) / (1 + lr * wd), m, v, n, g


class RefAdan(torch.optim.Optimizer):
    """Adan as a plain ``torch.optim`` optimizer written from the authors'
    implementation (torch.optim has none): the reference for unrollopt.Adan's
    trajectories, parameter groups and state dicts (the authors' keys ``step``,
    ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq``, ``pre_grad``)."""

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq"):
                        state[key] = torch.zeros_like(p)
                state["step"] += 1
                u, *moments, state["pre_grad"] = ref_adan_step(
                    p.grad, state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"], state.get("pre_grad"), p,
                    float(state["step"]), lr=group["lr"], b1=b1, b2=b2, b3=b3, eps=group["eps"],
                    wd=group["weight_decay"], maximize=group["maximize"],
                )  # fmt: skip
                state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"] = moments
                p.add_(u)


def ref_rmsprop_step(g, sq, ga, buf, p, *, lr, alpha, eps, wd=0.0, momentum=None, nesterov=False, maximize=False):
    """torch.optim.RMSprop's step: returns (update, square_avg, grad_avg,
    momentum_buffer); grad_avg None selects the uncentered form (and stays
    None), buf None the form without momentum. ``nesterov``: optax's
    rmsprop(nesterov=True), update -lr (g / avg + momentum buf)."""
    if maximize:
        g = -g
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        g = g + wd * p
    sq = alpha * sq + (1 - alpha) * g**2
    if ga is not None:
        ga = alpha * ga + (1 - alpha) * g
        avg = torch.sqrt(sq - ga**2) + eps
    else:
        avg = torch.sqrt(sq) + eps
    if buf is not None:
        buf = momentum * buf + g / avg
        if nesterov:
            return -lr * (g / avg + momentum * buf), sq, ga, buf
        return -lr * buf, sq, ga, buf
    return -lr * g / avg, sq, ga, None


def _decay(g, p, wd, decoupled, lr):
    """(g + wd p for L2 decay, the decoupled decay's update term or 0)."""
    if p is None or (isinstance(wd, float) and wd == 0.0):
        return g, 0.0
    return (g, -lr * wd * p) if decoupled else (g + wd * p, 0.0)


def ref_radam_step(g, m, v, p, t, *, lr, b1, b2, eps, wd=0.0, decoupled=False, maximize=False):
    """torch.optim.RAdam's step, as its documentation states it: returns (update, m, v)."""
    g, decay = _decay(-g if maximize else g, p, wd, decoupled, lr)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat = m / (1 - b1**t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho_t > 5:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        adaptive = (1 - b2**t) ** 0.5 / (torch.sqrt(v) + eps)
        return -lr * m_hat * rect * adaptive + decay, m, v
    return -lr * m_hat + decay, m, v


def ref_nadam_step(g, m, v, prod, p, t, *, lr, b1, b2, eps, psi, wd=0.0, decoupled=False, maximize=False):
    """torch.optim.NAdam's step, as its documentation states it: returns
    (update, m, v, product of the momentum coefficients)."""
    g, decay = _decay(-g if maximize else g, p, wd, decoupled, lr)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
    prod = prod * mu
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    v_hat = v / (1 - b2**t)
    u = -lr * ((1 - mu) / (1 - prod) * g + mu_next / (1 - prod * mu_next) * m) / (torch.sqrt(v_hat) + eps)
    return u + decay, m, v, prod


def ref_adagrad_step(g, s, p, t, *, lr, lr_decay=0.0, eps=1e-10, wd=0.0, maximize=False):
    """torch.optim.Adagrad's step: returns (update, sum)."""
    if maximize:
        g = -g
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        g = g + wd * p
    s = s + g * g
    return -lr / (1 + (t - 1) * lr_decay) * g / (torch.sqrt(s) + eps), s


def ref_adadelta_step(g, sq, acc, p, *, lr, rho, eps, wd=0.0, maximize=False):
    """torch.optim.Adadelta's step: returns (update, square_avg, acc_delta)."""
    if maximize:
        g = -g
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        g = g + wd * p
    sq = rho * sq + (1 - rho) * g * g
    delta = torch.sqrt(acc + eps) / torch.sqrt(sq + eps) * g
    acc = rho * acc + (1 - rho) * delta * delta
    return -lr * delta, sq, acc


def ref_sgd_step(g, buf, p, t, *, lr, momentum=0.0, dampening=0.0, wd=0.0, nesterov=False, maximize=False):
    """torch.optim.SGD's step (out of place, differentiable): returns (update, buf).

    ``buf`` is None for SGD without momentum (then the returned buf is None too);
    otherwise it is the previous momentum buffer (ignored at t = 1, where the
    buffer starts as the gradient). ``t`` counts from 1; ``p`` may be None when
    wd is 0.
    """
    if maximize:
        g = -g
    if p is not None and not (isinstance(wd, float) and wd == 0.0):
        g = g + wd * p
    if buf is None:
        return -lr * g, None
    buf = g if t == 1 else momentum * buf + (1 - dampening) * g
    d = g + momentum * buf if nesterov else buf
    return -lr * d, buf


def assert_close(actual, expected, rtol, atol=0.0, msg=""):
    """allclose on every leaf, with a readable error."""
    if isinstance(actual, (list, tuple)):
        assert isinstance(expected, (list, tuple)) and len(actual) == len(expected), msg
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rtol, atol, f"{msg}[{i}]")
        return
    if isinstance(actual, dict):
        assert isinstance(expected, dict) and actual.keys() == expected.keys(), msg
        for k in actual:
            assert_close(actual[k], expected[k], rtol, atol, f"{msg}[{k!r}]")
        return
    if actual is None or expected is None:
        assert actual is None and expected is None, msg
        return
    torch.testing.assert_close(
        actual.detach(),
        expected.detach().to(actual.dtype),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"{msg}: {m}",
        equal_nan=False,
    )


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(F64), b.detach().to(F64)
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def snapshot(tree):
    """Deep copy of every tensor leaf of a pytree (with the version counters)."""
    leaves, spec = torch.utils._pytree.tree_flatten(tree)
    return [None if t is None else (t.detach().clone(), t._version) for t in leaves]


def assert_unchanged(tree, snap):
    leaves, _ = torch.utils._pytree.tree_flatten(tree)
    assert len(leaves) == len(snap)
    for t, s in zip(leaves, snap):
        if t is None:
            assert s is None
            continue
        clone, version = s
        assert torch.equal(t.detach(), clone) or (
            torch.isnan(clone).any() and torch.equal(t.detach().nan_to_num(), clone.nan_to_num())
        ), "a tensor was modified by a call that raised"
        assert t._version == version, "a tensor was written to by a call that raised"


def cuda_skip_reason() -> str:
    """Why the CUDA tests cannot run here ("" where they can)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU here (torch.cuda.is_available() is False)"
    if not unrollopt.accelerated_op_available("cuda"):
        return "this build of unrollopt has no CUDA kernels (built without CUDA)"
    return ""


def is_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


# --- the inner problem of the unrolled meta-gradient tests --------------------------
# A linear regression whose per-example loss weights (meta_w) and initial
# parameters are meta-parameters; the outer loss is a validation loss.


def make_problem(seed):
    g = gen(seed)
    return dict(
        x=randn(g, 8, 4),
        y=randn(g, 8, 3),
        xv=randn(g, 6, 4),
        yv=randn(g, 6, 3),
        meta_w=rand_pos(g, 8, low=0.5).requires_grad_(),
        w0=randn(g, 3, 4, requires_grad=True),
        b0=randn(g, 3, requires_grad=True),
    )


def inner_loss(pb, w, b):
    r = pb["x"] @ w.T + b - pb["y"]
    return (pb["meta_w"][:, None] * r**2).mean() + 0.1 * (w**3).sum()


def outer_loss(pb, w, b):
    return ((pb["xv"] @ w.T + b - pb["yv"]) ** 2).mean()


def unrolled_unrollopt(pb, opt, steps=3, use_params=False):
    params = (pb["w0"], pb["b0"])
    state = opt.init(params)
    for _ in range(steps):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        updates, state = opt.update(grads, state, params=params if use_params else None, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    return outer_loss(pb, *params), params, state


# --- the problem the torch.optim-style classes are compared on ---------------------

OOP_STEPS = 50


def make_model(seed, dtype=F64):
    g = gen(seed)
    return dict(
        x=randn(g, 16, 5, dtype=dtype),
        y=randn(g, 16, 2, dtype=dtype),
        params=[randn(g, 2, 5, dtype=dtype), randn(g, 2, dtype=dtype), randn(g, 5, dtype=dtype)],
    )


def loss_fn(m, params):
    w, b, s = params
    return ((m["x"] * (1 + 0.1 * s) @ w.T + b - m["y"]) ** 2).mean() + 0.01 * (w**4).sum()


def train(opt_factory, m, steps=OOP_STEPS, groups=None, sign=1.0, closure=False):
    """``steps`` optimizer steps on ``sign * loss`` (sign -1 with maximize, so
    that the run converges either way), through ``step(closure)`` if asked;
    returns (params, optimizer, losses)."""
    params = [p.detach().clone().requires_grad_() for p in m["params"]]
    if groups is None:
        opt = opt_factory(params)
    else:
        opt = opt_factory([{**g, "params": [params[i] for i in g["params"]]} for g in groups])

    def loss_and_grad():
        opt.zero_grad()
        loss = sign * loss_fn(m, params)
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        if closure:
            losses.append(float(opt.step(loss_and_grad).detach()))
        else:
            losses.append(float(loss_and_grad().detach()))
            opt.step()
    return params, opt, losses


def assert_params_rel(a, b, rtol=1e-10):
    for i, (x, y) in enumerate(zip(a, b)):
        assert is_finite(x), f"param {i} is not finite"
        err = max_rel_err(x, y)
        assert err <= rtol, f"param {i}: relative error {err:.3g}"


__all__ = [
    "OOP_STEPS",
    "assert_params_rel",
    "loss_fn",
    "make_model",
    "train",
    "make_problem",
    "inner_loss",
    "outer_loss",
    "unrolled_unrollopt",
    "F64",
    "assert_close",
    "assert_unchanged",
    "gen",
    "is_finite",
    "math",
    "max_rel_err",
    "rand_pos",
    "randn",
    "ref_adadelta_step",
    "ref_adagrad_step",
    "ref_adam_step",
    "ref_adamax_step",
    "ref_adan_step",
    "RefAdan",
    "RefLion",
    "ref_adamw_step",
    "near_lion_tie",
    "ref_lion_step",
    "ref_nadam_step",
    "ref_radam_step",
    "ref_rmsprop_step",
    "ref_sgd_step",
    "snapshot",
    "unrollopt",
]
