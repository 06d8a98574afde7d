"""Saving, restoring and detaching the state of modules and optimizers inside
differentiable loops."""

from __future__ import annotations

import copy
from typing import Any, Literal, NamedTuple, Union

import torch
from torch import nn
from torch.utils._pytree import tree_map

from unrollopt.meta import MetaOptimizer

__all__ = ["ModuleState", "extract_state_dict", "recover_state_dict", "stop_gradient", "module_clone"]

By = Literal["reference", "copy", "deepcopy", "ref", "clone", "deepclone"]
Device = Union[torch.device, str, None]


class ModuleState(NamedTuple):
    """A module's parameters and buffers by qualified name (``"0.weight"``)."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]


#: TorchOpt's spellings of ``by``.
_TORCHOPT_BY = {"ref": "reference", "clone": "copy", "deepclone": "deepcopy"}


def _mapper(by: str, device: Device):
    by = _TORCHOPT_BY.get(by, by)
    if by not in ("reference", "copy", "deepcopy"):
        raise ValueError(
            f"by must be 'reference', 'copy' or 'deepcopy' (or TorchOpt's 'ref', 'clone', 'deepclone'), got {by!r}"
        )

    def convert(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if by == "reference":
            return t if device is None else t.to(device)
        if by == "copy":  # stays in the autograd graph
            return t.clone() if device is None else t.to(device, copy=True)
        # A detached leaf made on the target device (a copy then a move would
        # be a non-leaf), a Parameter for a Parameter.
        out = t.detach().clone() if device is None else t.detach().to(device, copy=True)
        if isinstance(t, nn.Parameter):
            return nn.Parameter(out, requires_grad=t.requires_grad)
        return out.requires_grad_(t.requires_grad)

    return convert


def _detached(t: torch.Tensor, device: Device) -> torch.Tensor:
    return t.detach().clone() if device is None else t.detach().to(device, copy=True)


def extract_state_dict(
    target: Union[nn.Module, MetaOptimizer, torch.optim.Optimizer],
    *,
    by: By = "reference",
    device: Device = None,
    with_buffers: bool = True,
    detach_buffers: bool = False,
) -> Any:
    """The state of a module, a :class:`MetaOptimizer` or a ``torch.optim`` optimizer.

    ``by='reference'`` returns the tensors themselves (so gradients accumulate
    into them, as multi-task MAML needs); ``'copy'`` returns ``clone()``s, which
    stay in the autograd graph; ``'deepcopy'`` returns detached clones
    (``nn.Parameter``s stay parameters, ``requires_grad`` is kept). TorchOpt's
    ``'ref'``, ``'clone'`` and ``'deepclone'`` mean the same three. With
    ``device`` the tensors are moved there (a deepcopy is made there: detached
    leaves).
    ``detach_buffers=True`` gives detached buffer copies whatever ``by`` is.
    For a module the result is a :class:`ModuleState`; for an optimizer, its
    state dict with tensors converted the same way.
    """
    convert = _mapper(by, device)
    if isinstance(target, nn.Module):
        params = {name: convert(p) for name, p in target.named_parameters(remove_duplicate=False)}
        buffers = {}
        if with_buffers:
            for name, b in target.named_buffers(remove_duplicate=False):
                buffers[name] = _detached(b, device) if detach_buffers else convert(b)
        return ModuleState(params=params, buffers=buffers)
    if isinstance(target, MetaOptimizer):
        return tree_map(convert, target.state_dict())
    if isinstance(target, torch.optim.Optimizer):
        return tree_map(convert, target.state_dict())
    raise TypeError(
        f"expected an nn.Module, a MetaOptimizer or a torch.optim.Optimizer, got {type(target).__name__}"
    )


def _owner(module: nn.Module, qualified: str) -> tuple[nn.Module, str]:
    *path, name = qualified.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def recover_state_dict(target: Union[nn.Module, MetaOptimizer, torch.optim.Optimizer], state: Any) -> None:
    """Puts a state from :func:`extract_state_dict` back: into a module (the
    tensors themselves, by reference) or an optimizer (its state dict). A state
    that does not fit the module raises before anything is changed."""
    if isinstance(target, nn.Module):
        if not isinstance(state, ModuleState):
            raise TypeError(f"expected a ModuleState for a module, got {type(state).__name__}")
        current = extract_state_dict(target, with_buffers=bool(state.buffers))
        for kind, have, want in (("parameters", current.params, state.params), ("buffers", current.buffers, state.buffers)):
            if have.keys() != want.keys():
                raise ValueError(
                    f"the state's {kind} {sorted(want)} do not match the module's {sorted(have)}"
                )
            for name, t in want.items():
                if t is not None and have[name] is not None and t.shape != have[name].shape:
                    raise ValueError(
                        f"{kind[:-1]} {name!r}: the state has shape {tuple(t.shape)}, "
                        f"the module {tuple(have[name].shape)}"
                    )
        for name, t in state.params.items():
            owner, leaf = _owner(target, name)
            owner._parameters[leaf] = t
        for name, t in state.buffers.items():
            owner, leaf = _owner(target, name)
            owner._buffers[leaf] = t
        return
    if isinstance(target, (MetaOptimizer, torch.optim.Optimizer)):
        target.load_state_dict(state)
        return
    raise TypeError(
        f"expected an nn.Module, a MetaOptimizer or a torch.optim.Optimizer, got {type(target).__name__}"
    )


def stop_gradient(target: Any) -> None:
    """Cuts the autograd history of ``target``'s tensors in place (a module's
    parameters and buffers, a :class:`MetaOptimizer`'s state, an extracted
    state or any pytree of tensors), keeping their ``requires_grad``. Use it
    between outer iterations so the graph of earlier steps can be freed."""

    def detach_(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            requires_grad = t.requires_grad
            t.detach_().requires_grad_(requires_grad)
        return t

    if isinstance(target, nn.Module):
        for t in list(target.parameters()) + list(target.buffers()):
            detach_(t)
    elif isinstance(target, MetaOptimizer):
        tree_map(detach_, target.state_dict())
    else:
        tree_map(detach_, target)


def module_clone(
    target: nn.Module,
    *,
    by: By = "reference",
    detach_buffers: bool = False,
    device: Device = None,
) -> nn.Module:
    """A copy of a module whose tensors are taken ``by`` reference, copy or deepcopy
    (see :func:`extract_state_dict`); the rest of the module is deep-copied."""
    if not isinstance(target, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(target).__name__}")
    state = extract_state_dict(target, by=by, device=device, detach_buffers=detach_buffers)
    # deepcopy would copy (or refuse, for non-leaf tensors) the tensors: hand it
    # the originals, then put the extracted ones in.
    memo = {id(t): t for t in list(target.parameters()) + list(target.buffers())}
    clone = copy.deepcopy(target, memo)
    recover_state_dict(clone, state)
    return clone

