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
# # Stopping gradients, saving and restoring state
#
# A differentiable optimizer step makes the new parameters *functions* of the old
# ones: `MetaAdam.step` puts non-leaf tensors into the module, whose `grad_fn`
# links back through every step taken. That is what the meta-gradient needs
# within an outer iteration, but across outer iterations the chain only grows.
# This tutorial shows the problem, how `unrollopt.stop_gradient` cuts it, and
# what `extract_state_dict` / `recover_state_dict` with `by='reference'`,
# `'copy'` and `'deepcopy'` (and `detach_buffers`) do to gradients.

# %%
import torch
from torch import nn

import unrollopt

F64 = torch.float64
torch.manual_seed(0)
x_train, x_val = torch.randn(32, 1, dtype=F64), torch.randn(32, 1, dtype=F64)
y_train, y_val = torch.sin(2 * x_train), torch.sin(2 * x_val)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).to(F64)


def mse(net, x, y):
    return ((net(x) - y) ** 2).mean()


def graph_size(tensors) -> int:
    """How many autograd nodes the tensors' histories hold (None entries, e.g.
    states an optimizer does not use, hold none)."""
    seen, stack = set(), [t.grad_fn for t in tensors if t is not None and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


# %% [markdown]
# ## Why the graph grows
#
# An online bilevel loop: each outer iteration takes one inner step on the
# training loss (weighted by a meta-parameter, the L2 strength $e^{\phi}$), then
# one outer step on $\phi$ down the validation loss. The module keeps its adapted
# parameters from one iteration to the next, and with them the whole history:

# %%
log_l2 = torch.tensor(-4.0, dtype=F64, requires_grad=True)


def inner_loss(net):
    return mse(net, x_train, y_train) + log_l2.exp() * sum((p**2).sum() for p in net.parameters())


net = make_net()
inner_opt = unrollopt.MetaAdam(net, lr=0.01)
sizes = []
for _ in range(5):
    inner_opt.step(inner_loss(net))
    sizes.append(graph_size(net.parameters()))
print("autograd nodes behind the parameters after each step:", sizes)
assert all(b > a for a, b in zip(sizes, sizes[1:]))  # one more step's worth each time

# %% [markdown]
# Memory grows with it (every step's saved tensors stay alive), and the first
# backward frees the saved tensors of the steps it goes through, so the next
# outer iteration's backward, which goes through them again, fails:

# %%
net = make_net()
inner_opt = unrollopt.MetaAdam(net, lr=0.01)
outer_opt = torch.optim.Adam([log_l2], lr=0.05)
try:
    for outer_step in range(2):  # noqa: B007 (read in the except clause)
        inner_opt.step(inner_loss(net))
        outer_opt.zero_grad()
        mse(net, x_val, y_val).backward()
        outer_opt.step()
except RuntimeError as error:
    print(f"outer step {outer_step}: RuntimeError: {str(error)[:80]}...")
    assert outer_step == 1 and "backward through the graph a second time" in str(error)
else:
    raise AssertionError("the second outer backward should fail")

# %% [markdown]
# ## `stop_gradient`
#
# `unrollopt.stop_gradient(target)` detaches, *in place*, the tensors of a module
# (parameters and buffers), of a `MetaOptimizer` (its state: Adam's moments
# depend on $\phi$ too), of an extracted state, or of any pytree of tensors. The
# tensors stay the same objects with the same values and keep `requires_grad`:
# they just become leaves, the start of a new graph. Called after each outer
# step, the graph stays the same size (truncated backpropagation: each
# meta-gradient sees the last inner step only).

# %%
net = make_net()
inner_opt = unrollopt.MetaAdam(net, lr=0.01)
outer_opt = torch.optim.Adam([log_l2], lr=0.05)
sizes, state_sizes = [], []
for _ in range(20):
    inner_opt.step(inner_loss(net))
    sizes.append(graph_size(net.parameters()))
    state_sizes.append(graph_size(torch.utils._pytree.tree_leaves(unrollopt.extract_state_dict(inner_opt))))
    outer_opt.zero_grad()
    mse(net, x_val, y_val).backward()
    outer_opt.step()
    before = [(p, p.detach().clone()) for p in net.parameters()]
    unrollopt.stop_gradient(net)
    unrollopt.stop_gradient(inner_opt)
    for p, _ in before:
        assert p.grad_fn is None and p.requires_grad and p.is_leaf
    # The same tensor objects, with the same values:
    assert all(p is q and torch.equal(q, value) for (p, value), q in zip(before, net.parameters()))
print("nodes behind the parameters:", sizes[:4], "...", sizes[-1])
print("nodes behind the optimizer state:", state_sizes[:4], "...", state_sizes[-1])
# The first step is a little smaller (Adam's moments start as zeros that do not
# require grad); from then on every outer iteration's graph is the same size.
assert len(set(sizes[1:])) == 1 and len(set(state_sizes[1:])) == 1
print(f"after 20 online outer steps: L2 strength {log_l2.exp().item():.2e}, "
      f"validation loss {mse(net, x_val, y_val).item():.4f}")  # fmt: skip

# %% [markdown]
# Detaching the module alone is not enough: the optimizer state holds the
# history too.

# %%
net = make_net()
inner_opt = unrollopt.MetaAdam(net, lr=0.01)
for _ in range(3):
    inner_opt.step(inner_loss(net))
    unrollopt.stop_gradient(net)
mu = unrollopt.extract_state_dict(inner_opt)[0].mu
print("Adam's first moment still has a grad_fn:", mu[0].grad_fn)
assert graph_size(mu) > 0
unrollopt.stop_gradient(inner_opt)
assert graph_size(mu) == 0

# %% [markdown]
# `stop_gradient` works on any pytree of tensors as well:

# %%
tree = {"a": log_l2 * 2, "b": [log_l2.exp()]}
unrollopt.stop_gradient(tree)
assert all(t.grad_fn is None and t.requires_grad for t in torch.utils._pytree.tree_leaves(tree))

# %% [markdown]
# ## `extract_state_dict` / `recover_state_dict`
#
# `extract_state_dict(target, by=...)` returns the parameters and buffers of a
# module (a `ModuleState`), or the state of a `MetaOptimizer` or `torch.optim`
# optimizer; `recover_state_dict(target, state)` puts them back. `by` says which
# tensors go into the state:
#
# | `by` | the state holds | gradients of a loss computed after `recover` |
# |---|---|---|
# | `'reference'` | the tensors themselves | reach the original parameters (they *are* the parameters) |
# | `'copy'` | `clone()`s, still in the graph | flow back through the clone into the original parameters |
# | `'deepcopy'` | detached clones (leaves, same `requires_grad`) | stop at the copies: the originals get none |
#
# ### `by='reference'`: the MAML pattern
#
# Extract the meta-parameters once, then for each task recover them (and a fresh
# inner optimizer), adapt, and backpropagate the task's query loss: the gradients
# of all the tasks add up in the meta-parameters' `.grad`.

# %%
net = make_net()
meta_params = list(net.parameters())
inner_opt = unrollopt.MetaAdam(net, lr=0.05)
net_state = unrollopt.extract_state_dict(net, by="reference")
inner_state = unrollopt.extract_state_dict(inner_opt, by="reference")
assert all(net_state.params[name] is p for name, p in net.named_parameters())

tasks = [(0.5, 1.0), (1.5, 2.0)]  # (frequency, amplitude) of two sine tasks
per_task = []
for frequency, amplitude in tasks:
    unrollopt.recover_state_dict(net, net_state)
    unrollopt.recover_state_dict(inner_opt, inner_state)
    assert all(p is q for p, q in zip(net.parameters(), meta_params))  # back to the meta-parameters
    for _ in range(3):
        inner_opt.step(mse(net, x_train, amplitude * torch.sin(frequency * x_train)))
    assert all(p.grad_fn is not None for p in net.parameters())  # adapted
    query_loss = mse(net, x_val, amplitude * torch.sin(frequency * x_val))
    per_task.append(torch.autograd.grad(query_loss, meta_params, retain_graph=True))
    query_loss.backward()  # accumulates into the meta-parameters' .grad
unrollopt.recover_state_dict(net, net_state)
unrollopt.recover_state_dict(inner_opt, inner_state)
for p, g0, g1 in zip(meta_params, *per_task):
    torch.testing.assert_close(p.grad, g0 + g1, rtol=1e-12, atol=1e-15)
print("the meta-parameters' .grad is the sum of the two tasks' meta-gradients")

# %% [markdown]
# ### `by='copy'`: separate tensors, still in the graph
#
# The copies have a `grad_fn` (`CloneBackward`): a loss computed from them sends
# its gradient back into the original parameters. But they are separate tensors:
# changing the originals in place (here an outer SGD step) does not change them.

# %%
net = make_net()
originals = dict(net.named_parameters())
copies = unrollopt.extract_state_dict(net, by="copy")
for name, c in copies.params.items():
    assert c is not originals[name] and c.grad_fn is not None and torch.equal(c, originals[name])

unrollopt.recover_state_dict(net, copies)  # the module now computes with the copies
mse(net, x_val, y_val).backward()
assert all(originals[name].grad is not None for name in originals)  # through the clones
saved = {name: c.detach().clone() for name, c in copies.params.items()}
torch.optim.SGD(originals.values(), lr=0.1).step()  # in place, on the originals
for name, c in copies.params.items():
    assert torch.equal(c, saved[name]) and not torch.equal(originals[name], saved[name])
print("copy: gradients reach the originals; the originals' later changes do not reach the copies")

# %% [markdown]
# ### `by='deepcopy'`: a detached snapshot
#
# Detached clones: a checkpoint to come back to. Gradients of a loss computed
# after recovering them stop at the copies (they are leaves that require grad,
# `nn.Parameter`s like the originals).

# %%
net = make_net()
originals = dict(net.named_parameters())
snapshot = unrollopt.extract_state_dict(net, by="deepcopy")
for name, c in snapshot.params.items():
    assert isinstance(c, nn.Parameter) and c.is_leaf and c.requires_grad and c is not originals[name]

inner_opt = unrollopt.MetaAdam(net, lr=0.05)
for _ in range(3):
    inner_opt.step(mse(net, x_train, y_train))  # the module moves away from the snapshot
unrollopt.recover_state_dict(net, snapshot)  # ...and comes back to it
assert all(torch.equal(p, snapshot.params[name]) for name, p in net.named_parameters())
mse(net, x_val, y_val).backward()
assert all(originals[name].grad is None for name in originals)  # none for the originals
assert all(c.grad is not None for c in snapshot.params.values())  # the copies got them
print("deepcopy: the gradients stop at the detached copies")

# %% [markdown]
# The same three modes apply to a meta-optimizer's state. A deep copy of
# `MetaAdam`'s state restores the moments and the step count exactly:

# %%
net = make_net()
inner_opt = unrollopt.MetaAdam(net, lr=0.05)
inner_opt.step(mse(net, x_train, y_train))
saved_state = unrollopt.extract_state_dict(inner_opt, by="deepcopy")
inner_opt.step(mse(net, x_train, y_train))
assert int(unrollopt.extract_state_dict(inner_opt)[0].count) == 2
unrollopt.recover_state_dict(inner_opt, saved_state)
restored = unrollopt.extract_state_dict(inner_opt)[0]
assert int(restored.count) == 1 and all(m.grad_fn is None for m in restored.mu)

# %% [markdown]
# ### `detach_buffers`
#
# Buffers (BatchNorm's running statistics, for instance) follow `by` as well;
# `detach_buffers=True` gives detached copies of them whatever `by` is. With
# `by='reference'` the extracted buffers are the module's own, which a forward
# in training mode updates in place; detached copies keep the values they had.

# %%
bn_net = nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4)).to(F64)
by_reference = unrollopt.extract_state_dict(bn_net, by="reference")
detached = unrollopt.extract_state_dict(bn_net, by="reference", detach_buffers=True)
assert by_reference.buffers["1.running_mean"] is bn_net[1].running_mean
assert detached.buffers["1.running_mean"] is not bn_net[1].running_mean
assert detached.params["0.weight"] is bn_net[0].weight  # parameters still by reference
bn_net(x_train)  # training mode: updates the running statistics in place
print("running mean seen by reference:", by_reference.buffers["1.running_mean"])
print("running mean, detached copy:   ", detached.buffers["1.running_mean"])
assert not torch.equal(by_reference.buffers["1.running_mean"], torch.zeros(4, dtype=F64))
assert torch.equal(detached.buffers["1.running_mean"], torch.zeros(4, dtype=F64))

# %% [markdown]
# A buffer that is the result of a differentiable computation keeps its history
# with `by='reference'` or `'copy'`; `detach_buffers=True` cuts it.

# %%
scale = torch.tensor(2.0, dtype=F64, requires_grad=True)
bn_net[1]._buffers["running_var"] = scale * torch.ones(4, dtype=F64)  # in the graph of `scale`
assert unrollopt.extract_state_dict(bn_net, by="copy").buffers["1.running_var"].grad_fn is not None
assert unrollopt.extract_state_dict(bn_net, by="copy", detach_buffers=True).buffers["1.running_var"].grad_fn is None

# %% [markdown]
# ## Summary
#
# - Across outer iterations, a module that keeps its adapted parameters (or a
#   meta-optimizer that keeps its state) keeps the whole graph: call
#   `stop_gradient(net)` and `stop_gradient(inner_opt)` after each outer step.
# - For MAML, `extract_state_dict(..., by='reference')` once per outer iteration
#   and `recover_state_dict` before each task (and once after the last) put the
#   meta-parameters themselves back: each task's gradient accumulates into them,
#   and the adapted parameters, with their graph, are dropped.
# - `'copy'` keeps the state in the graph; `'deepcopy'` (and `detach_buffers`)
#   makes a detached snapshot.
# `examples/maml_sinusoid.py` puts it all together.
