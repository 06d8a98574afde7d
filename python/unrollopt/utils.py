"""Saving, restoring and detaching the state of modules and optimizers inside
differentiable loops."""

from __future__ import annotations

import copy
from typing import Any, Literal, NamedTuple, Union

import torch
from torch import nn
from torch.utils._pytree import tree_map

from unrollopt.meta import MetaOptimizer

__all__ = ["ModuleState", "extract_state_dict", "recover_state_dict", "stop_gradient", "module_clone", "module_detach_"]

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
    raise TypeError(f"expected an nn.Module, a MetaOptimizer or a torch.optim.Optimizer, got {type(target).__name__}")


def _owner(module: nn.Module, qualified: str) -> tuple[nn.Module, str]:
    *path, name = qualified.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def _from_torchopt(module: nn.Module, state: Any) -> ModuleState:
    """A module state in TorchOpt's layout, as a :class:`ModuleState`.

    TorchOpt's ``params`` (and ``buffers``) is a tuple with one dict per
    submodule that has any, in ``module.modules()`` order, keyed by the
    submodule's own names: ``params[k][name]`` is the ``k``-th such
    submodule's ``name``. Here the same tensor is ``params[f"{prefix}.{name}"]``,
    the qualified name ``named_parameters()`` gives."""
    params, buffers = state[0], state[1]
    detach = bool(getattr(state, "detach_buffers", False))
    flat: list[dict[str, torch.Tensor]] = []
    for kind, dicts, attr in (("parameters", params, "_parameters"), ("buffers", buffers, "_buffers")):
        owners = [m for m in module.modules() if len(getattr(m, attr)) > 0]
        if kind == "buffers" and not dicts:  # extracted with_buffers=False
            flat.append({})
            continue
        if len(dicts) != len(owners):
            raise ValueError(
                f"the TorchOpt-layout state has {len(dicts)} dicts of {kind}, the module "
                f"{len(owners)} submodules with {kind}"
            )
        by_module = {id(m): d for m, d in zip(owners, dicts)}
        for m, d in zip(owners, dicts):
            extra = set(d) - {name for name, t in getattr(m, attr).items() if t is not None}
            if extra:
                raise ValueError(f"the TorchOpt-layout state has {kind} {sorted(extra)} that {type(m).__name__} lacks")
        out = {}
        for prefix, m in module.named_modules(remove_duplicate=False):
            for name, t in getattr(m, attr).items():
                if t is None:
                    continue
                d = by_module[id(m)]
                if name not in d:
                    raise ValueError(
                        f"the TorchOpt-layout state lacks {kind[:-1]} {name!r} of submodule {prefix or 'the module'!r}"
                    )
                value = d[name]
                if kind == "buffers" and detach:
                    value = _detached(value, None).requires_grad_(value.requires_grad)
                out[f"{prefix}.{name}" if prefix else name] = value
        flat.append(out)
    return ModuleState(params=flat[0], buffers=flat[1])


def _is_torchopt_layout(state: Any) -> bool:
    return (
        isinstance(state, tuple)
        and len(state) >= 2
        and all(isinstance(part, tuple) and all(isinstance(d, dict) for d in part) for part in state[:2])
    )


def recover_state_dict(target: Union[nn.Module, MetaOptimizer, torch.optim.Optimizer], state: Any) -> None:
    """Puts a state from :func:`extract_state_dict` back: into a module (the
    tensors themselves, by reference) or an optimizer (its state dict). A state
    that does not fit the module raises before anything is changed.

    For a module, a state in TorchOpt's layout (its ``ModuleState``: a tuple of
    per-submodule dicts, see the migration guide) is accepted too."""
    if isinstance(target, nn.Module):
        if not isinstance(state, ModuleState) and _is_torchopt_layout(state):
            state = _from_torchopt(target, state)
        if not isinstance(state, ModuleState):
            raise TypeError(f"expected a ModuleState for a module, got {type(state).__name__}")
        current = extract_state_dict(target, with_buffers=bool(state.buffers))
        for kind, have, want in (
            ("parameters", current.params, state.params),
            ("buffers", current.buffers, state.buffers),
        ):
            if have.keys() != want.keys():
                raise ValueError(f"the state's {kind} {sorted(want)} do not match the module's {sorted(have)}")
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
    raise TypeError(f"expected an nn.Module, a MetaOptimizer or a torch.optim.Optimizer, got {type(target).__name__}")


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


def module_detach_(target: Any) -> Any:
    """:func:`stop_gradient` that returns ``target`` (TorchOpt's name)."""
    stop_gradient(target)
    return target


def module_clone(
    target: Any,
    *,
    by: By = "reference",
    detach_buffers: bool = False,
    device: Device = None,
) -> Any:
    """A copy of a module, a :class:`MetaOptimizer`, a tensor or a pytree of
    tensors, whose tensors are taken ``by`` reference, copy or deepcopy (see
    :func:`extract_state_dict`) and moved to ``device`` if given.

    For a module the rest of it is deep-copied. A meta-optimizer's copy has its
    own state, taken ``by``, over the same modules' parameters (it steps them,
    as the original does; it does not own them: clone the module too for an
    independent pair). Anything else in a pytree is kept as it is.
    """
    if isinstance(target, nn.Module):
        state = extract_state_dict(target, by=by, device=device, detach_buffers=detach_buffers)
        # deepcopy would copy (or refuse, for non-leaf tensors) the tensors: hand it
        # the originals, then put the extracted ones in.
        memo = {id(t): t for t in list(target.parameters()) + list(target.buffers())}
        clone = copy.deepcopy(target, memo)
        recover_state_dict(clone, state)
        return clone
    if isinstance(target, MetaOptimizer):
        clone = copy.copy(target)
        clone.slot_groups = [list(group) for group in target.slot_groups]
        clone.load_state_dict(extract_state_dict(target, by=by, device=device))
        return clone
    if isinstance(target, torch.optim.Optimizer):
        raise TypeError(
            "module_clone does not copy a torch.optim optimizer: use extract_state_dict(optimizer) and load_state_dict"
        )
    return tree_map(_mapper(by, device), target)
