# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Differentiating through optimizer steps
#
# In meta-learning and bilevel optimization the parameters $\theta$ of a model
# are the *result* of an optimization that depends on meta-parameters $\phi$ (an
# initialization, a regularizer, a learning rate, a loss weighting...). An inner
# loop takes $T$ optimizer steps on an inner loss,
#
# $$\theta_{t+1} = \theta_t + u\big(\nabla_\theta L_{in}(\theta_t, \phi),\ s_t\big),$$
#
# where $u$ is the optimizer's update and $s_t$ its state (Adam's moments), and the
# outer loop wants the **meta-gradient** $\mathrm{d} L_{out}(\theta_T) / \mathrm{d}\phi$.
# Autograd computes it if every step stays in the autograd graph:
#
# 1. the inner gradients are taken with `create_graph=True`: they are functions of
#    $\phi$ and of $\theta_t$, and the next steps (and the meta-gradient)
#    differentiate them again (second-order terms);
# 2. the update and the new parameters are new tensors (out of place), not
#    written into the old ones.
#
# unrollopt's optimizers are made for this: their update is differentiable, and
# the fused C++ operators (`use_accelerated_op=True`) have exact hand-written
# backward passes. This tutorial goes through the functional API, the
# object-oriented `MetaOptimizer`/`MetaAdam`, meta-learning a learning rate, and
# checks the meta-gradients against finite differences.

# %%
import math

import torch
from torch import nn
from torch.func import functional_call

import unrollopt

torch.manual_seed(0)
F64 = torch.float64  # float64 throughout, so that finite differences are accurate

# %% [markdown]
# ## One step by hand
#
# Adam's first step (zero moments, bias-corrected) is
# $\theta_1 = \theta_0 - \mathrm{lr}\, g / (|g| + \epsilon)$: with the learning rate
# as a tensor that requires grad, $\mathrm{d}\theta_1/\mathrm{d}\,\mathrm{lr} = -g/(|g| + \epsilon)$.

# %%
theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64, requires_grad=True)
lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
opt = unrollopt.adam(lr=lr, eps=1e-8)
state = opt.init((theta0,))
(g,) = torch.autograd.grad((theta0**2).sum(), (theta0,), create_graph=True)
updates, state = opt.update((g,), state, inplace=False)
(theta1,) = unrollopt.apply_updates((theta0,), updates, inplace=False)
print("theta1 =", theta1.detach())

(dtheta1_dlr,) = torch.autograd.grad(theta1.sum(), lr)
expected = -(g / (g.abs() + 1e-8)).sum()
print("d sum(theta1) / d lr:", dtheta1_dlr.item(), "expected:", expected.item())
assert torch.allclose(dtheta1_dlr, expected.detach(), rtol=1e-12, atol=0)

# %% [markdown]
# ## A small bilevel problem
#
# A regression model is trained on a small, noisy training set with an L2 penalty
# of strength $e^{\phi}$; the outer loss is its error on a validation set after
# five Adam steps. $\phi$ (`log_l2`) is the meta-parameter.

# %%
model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(F64)
x_train, x_val = torch.randn(16, 3, dtype=F64), torch.randn(64, 3, dtype=F64)
w_true = torch.randn(3, 1, dtype=F64)
y_train = x_train @ w_true + 0.5 * torch.randn(16, 1, dtype=F64)
y_val = x_val @ w_true
log_l2 = torch.tensor(-3.0, dtype=F64, requires_grad=True)


def inner_loss(params, log_l2):
    fit = ((functional_call(model, params, (x_train,)) - y_train) ** 2).mean()
    return fit + log_l2.exp() * sum((p**2).sum() for p in params.values())


def outer_loss(params):
    return ((functional_call(model, params, (x_val,)) - y_val) ** 2).mean()


# %% [markdown]
# ## The functional API
#
# `unrollopt.adam(...)` returns a pure `(init, update)` pair over pytrees (here a
# dict of parameters). Inside an unrolled loop pass `inplace=False` to both
# `update` and `apply_updates`.


# %%
def unroll(opt, log_l2, steps=5, create_graph=True):
    """The parameters after `steps` inner steps from the model's initial ones."""
    params = dict(model.named_parameters())  # theta_0: the model's (leaf) parameters
    state = opt.init(params)
    for _ in range(steps):
        loss = inner_loss(params, log_l2)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        updates, state = opt.update(dict(zip(params, grads)), state, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    return params


opt = unrollopt.adam(lr=0.05)
params = unroll(opt, log_l2)
loss = outer_loss(params)
(meta_grad,) = torch.autograd.grad(loss, log_l2)
print(f"outer loss {loss.item():.6f}, d outer / d log_l2 = {meta_grad.item():+.6e}")
assert meta_grad != 0 and torch.isfinite(meta_grad)

# %% [markdown]
# The adapted parameters are new tensors in the graph, not the model's parameters:

# %%
for name, p in params.items():
    assert p.grad_fn is not None and p is not dict(model.named_parameters())[name]

# %% [markdown]
# Without `create_graph=True` the inner gradients are constants: $\phi$, which
# enters only through them, gets no gradient at all. Nothing warns about it, so
# it is worth knowing:

# %%
first_order = outer_loss(unroll(opt, log_l2, create_graph=False))
assert torch.autograd.grad(first_order, log_l2, allow_unused=True)[0] is None

# %% [markdown]
# An in-place update (the default, `inplace=True`, for plain training steps) would
# overwrite tensors the graph needs. unrollopt refuses it, before changing
# anything, rather than silently drop part of the meta-gradient:

# %%
params0 = dict(model.named_parameters())
grads = torch.autograd.grad(inner_loss(params0, log_l2), list(params0.values()), create_graph=True)
state = opt.init(params0)
try:
    opt.update(dict(zip(params0, grads)), state)  # inplace=True
except RuntimeError as error:
    print("RuntimeError:", error)
    assert "inplace=False" in str(error)
else:
    raise AssertionError("an in-place update of tensors that require grad should raise")

# %% [markdown]
# ## The fused operator
#
# `use_accelerated_op=True` runs one fused C++ call per step for all the tensors
# (vectorised and multithreaded on the CPU), with a hand-written backward.
# `unrollopt.accelerated_op_available(device)` says whether it runs on a device.
# It computes the same function as the plain-PyTorch path, to rounding:

# %%
print("fused operators on the CPU:", unrollopt.accelerated_op_available("cpu"))
print("on a device that does not exist:", unrollopt.accelerated_op_available("cuda:99"))
assert unrollopt.accelerated_op_available("cpu")
assert not unrollopt.accelerated_op_available("cuda:99")

fused = unrollopt.adam(lr=0.05, use_accelerated_op=True)
fused_loss = outer_loss(unroll(fused, log_l2))
(fused_meta_grad,) = torch.autograd.grad(fused_loss, log_l2)
print(f"plain {meta_grad.item():+.15e}\nfused {fused_meta_grad.item():+.15e}")
assert abs(fused_loss.item() - loss.item()) <= 1e-12 * loss.item()
assert torch.allclose(fused_meta_grad, meta_grad, rtol=1e-10, atol=0)

# %% [markdown]
# ## The object-oriented API: `MetaOptimizer` and `MetaAdam`
#
# With a module, `MetaOptimizer(module, transformation)` does the bookkeeping:
# `step(loss)` takes the gradients with `create_graph=True`, updates out of place
# and puts the new (non-leaf) tensors into the module, so its next forward uses
# them. `MetaAdam(module, ...)` is `MetaOptimizer(module, unrollopt.adam(...))`.
# We work on deep copies of the model, whose parameters start equal to the
# model's but are separate leaves.


# %%
def unroll_module(make_optimizer, log_l2, steps=5):
    net = unrollopt.module_clone(model, by="deepcopy")
    inner_opt = make_optimizer(net)
    for _ in range(steps):
        inner_opt.step(inner_loss(dict(net.named_parameters()), log_l2))
    return net


results = {}
for name, make in {
    "MetaOptimizer(net, adam)": lambda net: unrollopt.MetaOptimizer(net, unrollopt.adam(lr=0.05)),
    "MetaAdam(net)": lambda net: unrollopt.MetaAdam(net, lr=0.05),
    "MetaAdam(net, fused)": lambda net: unrollopt.MetaAdam(net, lr=0.05, use_accelerated_op=True),
}.items():
    net = unroll_module(make, log_l2)
    assert all(p.grad_fn is not None for p in net.parameters())  # adapted, in the graph
    oop_loss = ((net(x_val) - y_val) ** 2).mean()
    results[name] = torch.autograd.grad(oop_loss, log_l2)[0]
    print(f"{name:26s} outer loss {oop_loss.item():.6f}, meta-gradient {results[name].item():+.12e}")
    assert abs(oop_loss.item() - loss.item()) <= 1e-12 * loss.item()
    assert torch.allclose(results[name], meta_grad, rtol=1e-10, atol=0)

# %% [markdown]
# ## Meta-learning a learning rate
#
# Hyperparameters (`lr`, `betas`, `weight_decay`) may be 0-d tensors that require
# grad. Here the inner learning rate is $e^{\psi}$ and an outer Adam on $\psi$
# lowers the validation loss reached after five inner steps, starting from a
# learning rate that is too small. A new (cheap) `unrollopt.adam` is made each
# outer step from the current $e^{\psi}$.

# %%
log_lr = torch.tensor(math.log(0.005), dtype=F64, requires_grad=True)
outer_opt = torch.optim.Adam([log_lr], lr=0.1)
history = []
for outer_step in range(30):
    inner = unrollopt.adam(lr=log_lr.exp(), use_accelerated_op=True)
    val = outer_loss(unroll(inner, log_l2.detach()))
    outer_opt.zero_grad()
    val.backward()
    outer_opt.step()
    history.append(val.item())
    if outer_step % 10 == 0 or outer_step == 29:
        print(f"outer step {outer_step:2d}: inner lr {log_lr.exp().item():.4f}, validation loss {val.item():.4f}")
assert log_lr.exp().item() > 0.005 and history[-1] < 0.8 * history[0]

# %% [markdown]
# ## Checking meta-gradients against finite differences
#
# A central difference $(L(\phi + h) - L(\phi - h)) / 2h$ in float64 is good to
# about $10^{-8}$ relative here: the meta-gradients, through five second-order
# Adam steps, agree with it on both paths, for the L2 strength and for the
# learning rate.


# %%
def validation_loss(log_l2, log_lr, use_accelerated_op):
    inner = unrollopt.adam(lr=log_lr.exp(), use_accelerated_op=use_accelerated_op)
    return outer_loss(unroll(inner, log_l2))


h = 1e-6
point = dict(log_l2=torch.tensor(-3.0, dtype=F64), log_lr=torch.tensor(math.log(0.05), dtype=F64))
for use_accelerated_op in (False, True):
    leaves = {k: v.clone().requires_grad_() for k, v in point.items()}
    grads = torch.autograd.grad(validation_loss(**leaves, use_accelerated_op=use_accelerated_op), list(leaves.values()))
    for (name, value), analytic in zip(point.items(), grads):
        shifted = lambda sign, name=name, value=value: {**point, name: value + sign * h}  # noqa: E731
        up = validation_loss(**shifted(+1), use_accelerated_op=use_accelerated_op).item()
        down = validation_loss(**shifted(-1), use_accelerated_op=use_accelerated_op).item()
        finite_difference = (up - down) / (2 * h)
        relative = abs(analytic.item() - finite_difference) / abs(finite_difference)
        print(f"fused={use_accelerated_op!s:5} d/d{name}: autograd {analytic.item():+.10e}, "
              f"finite difference {finite_difference:+.10e}, relative difference {relative:.1e}")  # fmt: skip
        assert relative < 1e-6, relative

# %% [markdown]
# Next: [stop_gradient.py](stop_gradient.py) shows how to keep the graph (and
# memory) from growing across outer iterations, and what `extract_state_dict` /
# `recover_state_dict` do to gradients.
