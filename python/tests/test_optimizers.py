"""Every optimizer in its three forms, through one shared table of cases.

Each case names the functional alias (unrollopt.sgd, ...), the OOP class
(unrollopt.SGD, ...), its torch.optim counterpart, the Meta class, an
independent float64 reference step from references.py, the option grids
and the settings of the generic tests. The shared checks run over the whole
table:

* the OOP class against torch.optim over 50 float64 steps (plain and fused,
  each optimizer's option grid), defaults, param groups, state dicts (round
  trip and interop both ways with torch.optim); step(closure), zero_grad and
  parameters without gradients, mixed dtypes in a group, a tensor lr, sparse
  gradients refused;
* the functional alias's step, fused and plain, against the reference: over
  sizes, dtypes (half types against float32), strided views, pytrees with
  None leaves, in place and not; gradients with respect to the initial state
  (moment_requires_grad) and through the fused backward's second-order path;
* meta-gradients through 3 unrolled steps of the functional alias
  (inplace=False) against the float64 reference, float and tensor
  hyperparameters (requiring grad);
* the Meta class against the reference, and MetaOptimizer(net, alias(...))
  identical to the Meta class;
* bad hyperparameter values raise ValueError naming them (alias, class, Meta class).

The optimizer-specific tests that do not fit the table follow at the end.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import itertools
import pathlib
import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from references import (
    F64,
    OOP_STEPS,
    RefAdan,
    RefLion,
    assert_close,
    assert_params_rel,
    cuda_skip_reason,
    gen,
    inner_loss,
    is_finite,
    loss_fn,
    make_model,
    make_problem,
    max_rel_err,
    near_lion_tie,
    outer_loss,
    randn,
    ref_adadelta_step,
    ref_adagrad_step,
    ref_adam_step,
    ref_adamax_step,
    ref_adamw_step,
    ref_adan_step,
    ref_lion_step,
    ref_nadam_step,
    ref_radam_step,
    ref_rmsprop_step,
    ref_sgd_step,
    train,
    unrolled_unrollopt,
    unrollopt,
)
from torch import nn
from torch.func import functional_call

STEPS = OOP_STEPS


class L:
    """A hyperparameter learned in a test: becomes a 0-d float64 tensor that requires grad."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"L({self.value})"


def materialize(cfg, dtype=F64):
    """(kwargs with every L replaced by a fresh tensor of ``dtype``, the list of those tensors)."""
    learned = []

    def conv(v):
        if isinstance(v, L):
            t = torch.tensor(v.value, dtype=dtype, requires_grad=True)
            learned.append(t)
            return t
        if isinstance(v, tuple):
            return tuple(conv(x) for x in v)
        return v

    return {k: conv(v) for k, v in cfg.items()}, learned


def is_zero(v):
    return not isinstance(v, torch.Tensor) and v == 0


def options_id(o):
    return (
        ",".join(f"{k}={v}" for k, v in o.items() if v is not False and not (isinstance(v, float) and v == 0.0))
        or "plain"
    )


# --- reference steps in the alias's hyperparameter names ------------------------------
# Each: init(p, hp) -> state tuple; step(g, state, p, t, hp) -> (update, state tuple).


def sgd_init(p, hp):
    return (None if is_zero(hp["momentum"]) else torch.zeros_like(p),)


def sgd_step(g, st, p, t, hp):
    u, buf = ref_sgd_step(g, st[0], p, t, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                          wd=hp["weight_decay"], nesterov=hp["nesterov"], maximize=hp["maximize"])  # fmt: skip
    return u, (buf,)


def adam_like_init(p, hp):
    return (torch.zeros_like(p), torch.zeros_like(p))


def adam_family_init(p, hp):
    """(mu, nu, nu_max): nu_max None without AMSGrad."""
    return (torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p) if hp["amsgrad"] else None)


def adam_family_step(ref):
    def step(g, st, p, t, hp):
        b1, b2 = hp["betas"]
        u, *new = ref(g, st[0], st[1], p, t, lr=hp["lr"], b1=b1, b2=b2, eps=hp["eps"], eps_root=hp["eps_root"],
                      wd=hp["weight_decay"], maximize=hp["maximize"], v_max=st[2])  # fmt: skip
        return u, (*new, None) if st[2] is None else tuple(new)

    return step


def adamax_step(g, st, p, t, hp):
    b1, b2 = hp["betas"]
    u, m, v = ref_adamax_step(g, *st, p, t, lr=hp["lr"], b1=b1, b2=b2, eps=hp["eps"], wd=hp["weight_decay"],
                              maximize=hp["maximize"])  # fmt: skip
    return u, (m, v)


def lion_init(p, hp):
    return (torch.zeros_like(p),)


def lion_step(g, st, p, t, hp):
    b1, b2 = hp["betas"]
    u, m = ref_lion_step(g, st[0], p, lr=hp["lr"], b1=b1, b2=b2, wd=hp["weight_decay"], maximize=hp["maximize"])
    return u, (m,)


def adan_init(p, hp):
    return tuple(torch.zeros_like(p) for _ in range(4))


def adan_step(g, st, p, t, hp):
    b1, b2, b3 = hp["betas"]
    u, *st = ref_adan_step(g, *st, p, t, lr=hp["lr"], b1=b1, b2=b2, b3=b3, eps=hp["eps"], wd=hp["weight_decay"],
                           maximize=hp["maximize"])  # fmt: skip
    return u, tuple(st)


def rmsprop_init(p, hp):
    return (
        torch.full_like(p, hp["initial_scale"]),
        torch.zeros_like(p) if hp["centered"] else None,
        None if is_zero(hp["momentum"]) else torch.zeros_like(p),
    )


def rmsprop_step(g, st, p, t, hp):
    u, *st = ref_rmsprop_step(g, *st, p, lr=hp["lr"], alpha=hp["alpha"], eps=hp["eps"], wd=hp["weight_decay"],
                              momentum=hp["momentum"], nesterov=hp["nesterov"], maximize=hp["maximize"])  # fmt: skip
    return u, tuple(st)


def radam_step(g, st, p, t, hp):
    b1, b2 = hp["betas"]
    u, m, v = ref_radam_step(g, *st, p, t, lr=hp["lr"], b1=b1, b2=b2, eps=hp["eps"], wd=hp["weight_decay"],
                             decoupled=hp["decoupled_weight_decay"], maximize=hp["maximize"])  # fmt: skip
    return u, (m, v)


def nadam_init(p, hp):
    return (torch.zeros_like(p), torch.zeros_like(p), 1.0)


def nadam_step(g, st, p, t, hp):
    b1, b2 = hp["betas"]
    u, *st = ref_nadam_step(g, *st, p, t, lr=hp["lr"], b1=b1, b2=b2, eps=hp["eps"], psi=hp["momentum_decay"],
                            wd=hp["weight_decay"], decoupled=hp["decoupled_weight_decay"], maximize=hp["maximize"])  # fmt: skip
    return u, tuple(st)


def adagrad_init(p, hp):
    return (torch.full_like(p, hp["initial_accumulator_value"]),)


def adagrad_step(g, st, p, t, hp):
    u, s = ref_adagrad_step(g, st[0], p, t, lr=hp["lr"], lr_decay=hp["lr_decay"], eps=hp["eps"],
                            wd=hp["weight_decay"], maximize=hp["maximize"])  # fmt: skip
    return u, (s,)


def adadelta_init(p, hp):
    return (torch.zeros_like(p), torch.zeros_like(p))


def adadelta_step(g, st, p, t, hp):
    u, sq, acc = ref_adadelta_step(g, *st, p, lr=hp["lr"], rho=hp["rho"], eps=hp["eps"], wd=hp["weight_decay"],
                                   maximize=hp["maximize"])  # fmt: skip
    return u, (sq, acc)


# --- the table ---------------------------------------------------------------------


@dataclass
class Case:
    name: str
    alias: Callable
    cls: type
    torch_cls: type
    meta_cls: type
    defaults: dict  # the alias's (and Meta class's) defaults, by the alias's names
    ref_init: Callable
    ref_step: Callable
    state_type: type
    state_fields: tuple  # functional state attribute per entry of the reference state tuple
    # OOP against torch.optim
    oop_lr: float
    grid: list
    loss_ratio: float
    oop_keys: Callable  # options -> the OOP state keys
    all_keys: set
    torch_same_keys: bool
    defaults_keys: tuple
    defaults_expected: dict
    groups: list
    groups_lr: float
    groups_lrs: list
    groups_extra: Callable | None
    round_trip: dict
    interop: list  # (id, hp)
    sd_superset: bool
    # functional meta-gradients
    meta_lr: float
    meta_configs: list  # alias kwargs (without lr)
    tensor_configs: list  # (id, problem seed, alias kwargs with L markers)
    # Meta class
    meta_class_configs: list  # (id, net seed, kwargs possibly with L markers)
    meta_optimizer_configs: list  # (id, kwargs)
    bad: list  # (name, kwargs)
    # The settings of the generic tests (alias and torch.optim names, lr
    # included): every state of the optimizer in use, and a weight decay, so
    # that the step reads the parameters.
    generic: dict
    meta_steps: int = 3  # unrolled steps of the meta-gradient tests
    # Whether the unrolled loop is differentiable in the inner gradients: not
    # for Lion, whose step is their sign (derivative 0), so that whatever
    # reaches the loss only through them (the data) has a gradient of exactly 0.
    smooth_in_grads: bool = True
    round_trip_rtol: float = 1e-14


def sgd_groups_extra(opt, ref_opt, got, ref):
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.5, 0.0]
    assert max_rel_err(opt.state[got[1]]["momentum_buffer"], ref_opt.state[ref[1]]["momentum_buffer"]) <= 1e-10
    assert "momentum_buffer" not in opt.state[got[2]]


def rmsprop_groups_extra(opt, ref_opt, got, ref):
    assert set(opt.state[got[0]]) == {"step", "square_avg", "grad_avg", "momentum_buffer"}
    assert set(opt.state[got[1]]) == {"step", "square_avg"}


def _wd_list(values):
    def check(opt, ref_opt, got, ref):
        assert [g["weight_decay"] for g in opt.param_groups] == values

    return check


def _sgd_valid(o):
    return not o["nesterov"] or (o["momentum"] > 0 and o["dampening"] == 0)


ADAM_BAD = [
    ("lr", dict(lr=-0.1)),
    ("lr", dict(lr=float("nan"))),
    ("lr", dict(lr=torch.tensor(-1.0))),
    ("betas[0]", dict(betas=(1.0, 0.999))),
    ("betas[1]", dict(betas=(0.9, -0.1))),
    ("betas[1]", dict(betas=(0.9, torch.tensor(1.5, dtype=F64)))),
    ("eps", dict(eps=-1e-8)),
]
WD_BAD = [
    ("weight_decay", dict(weight_decay=-0.01)),
    ("weight_decay", dict(weight_decay=torch.tensor(-0.01))),
]
LR_BAD = ADAM_BAD[:3]
ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}


def adam_keys(o):
    return ADAM_KEYS if o.get("amsgrad") else ADAM_KEYS - {"max_exp_avg_sq"}


AMSGRAD_GRID = [dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, maximize=mx, amsgrad=True)
                for wd, mx in ((0.0, False), (0.1, True))]  # fmt: skip
ADAM_GROUPS = [
    dict(params=[0], lr=0.03, betas=(0.8, 0.9)),
    dict(params=[1], weight_decay=0.2, eps=1e-3),
    dict(params=[2], lr=0.005, maximize=True),
]


def adam_grid(small_betas):
    """AdamW's and Adamax's option grid: default or small betas, eps, weight decay, maximize."""
    return [
        dict(betas=be, eps=ep, weight_decay=wd, maximize=mx)
        for be, ep, wd, mx in itertools.product(((0.9, 0.999), small_betas), (1e-8, 1e-2), (0.0, 0.1), (False, True))
    ]


def rate_bad(name):
    """Bad values of a decay rate in [0, 1] (alpha, rho), and of eps."""
    return [
        (name, {name: -0.1}),
        (name, {name: 1.5}),
        (name, {name: torch.tensor(-0.5, dtype=F64)}),
        ("eps", dict(eps=-1e-8)),
    ]


SGD = Case(
    name="sgd", alias=unrollopt.sgd, cls=unrollopt.SGD, torch_cls=torch.optim.SGD, meta_cls=unrollopt.MetaSGD,
    defaults=dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    ref_init=sgd_init, ref_step=sgd_step, state_type=unrollopt.SgdState, state_fields=("momentum_buffer",),
    oop_lr=0.05,
    grid=[o for o in (
        dict(momentum=mo, dampening=da, nesterov=ne, weight_decay=wd, maximize=mx)
        for mo, da, ne, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.05), (False, True))
    ) if _sgd_valid(o)],
    loss_ratio=0.5, oop_keys=lambda o: {"momentum_buffer"} if o["momentum"] else set(), all_keys={"momentum_buffer"},
    torch_same_keys=False, defaults_keys=(), defaults_expected={},
    groups=[
        dict(params=[0], lr=0.03, momentum=0.9, nesterov=True),
        dict(params=[1], weight_decay=0.2, momentum=0.5, dampening=0.3),
        dict(params=[2], lr=0.005, maximize=True),
    ],
    groups_lr=0.01, groups_lrs=[0.03, 0.01, 0.005], groups_extra=sgd_groups_extra,
    round_trip=dict(lr=0.02, momentum=0.9, dampening=0.1, weight_decay=0.01),
    interop=[
        ("momentum", dict(lr=0.02, momentum=0.85, dampening=0.1, weight_decay=0.01, nesterov=False)),
        ("nesterov", dict(lr=0.02, momentum=0.85, dampening=0.0, weight_decay=0.01, nesterov=True)),
    ],
    sd_superset=False,
    meta_lr=0.05,
    meta_configs=[
        dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
        dict(momentum=0.0, dampening=0.3, nesterov=False, weight_decay=0.03, maximize=True),
        dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
        dict(momentum=0.9, dampening=0.3, nesterov=False, weight_decay=0.03, maximize=False),
        dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.03, maximize=True),
        dict(momentum=0.5, dampening=0.3, nesterov=False, weight_decay=0.0, maximize=True),
    ],
    tensor_configs=[
        ("lr-momentum-dampening-wd", 1, dict(lr=L(0.05), momentum=L(0.8), dampening=L(0.2), weight_decay=L(0.02))),
        ("lr-momentum-nesterov", 1, dict(lr=L(0.05), momentum=L(0.7), weight_decay=0.02, nesterov=True)),
        # A tensor momentum selects the momentum form even at 0, so that it can be learned.
        ("momentum-at-zero", 1, dict(lr=L(0.05), momentum=L(0.0), dampening=0.2)),
    ],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.1)),
        ("momentum-wd", 0, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
        ("nesterov-maximize", 0, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
        ("tensor-lr-momentum", 2, dict(lr=L(0.1), momentum=L(0.6), dampening=0.1)),
    ],
    meta_optimizer_configs=[
        ("plain", dict(lr=1.0)),
        ("nesterov-wd", dict(lr=1.0, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ],
    bad=LR_BAD + [
        ("momentum", dict(momentum=-0.5)),
        ("momentum", dict(momentum=torch.tensor(-0.1, dtype=F64))),
        ("dampening", dict(dampening=-0.1)),
        ("dampening", dict(dampening=float("nan"))),
    ] + WD_BAD,
    generic=dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
)  # fmt: skip


def adam_family_case(name, alias, cls, torch_cls, meta_cls, ref, weight_decay):
    """Adam's and AdamW's rows: the same grids (AMSGrad included); they differ
    in where the weight decay enters (the reference) and its default."""
    return Case(
        name=name, alias=alias, cls=cls, torch_cls=torch_cls, meta_cls=meta_cls,
        defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay, eps_root=0.0,
                      amsgrad=False, maximize=False),
        ref_init=adam_family_init, ref_step=adam_family_step(ref), state_type=unrollopt.ScaleByAdamState,
        state_fields=("mu", "nu", "nu_max"),
        oop_lr=0.02,
        grid=adam_grid((0.5, 0.8)) + AMSGRAD_GRID,
        loss_ratio=0.8, oop_keys=adam_keys, all_keys=ADAM_KEYS,
        torch_same_keys=False, defaults_keys=("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
        defaults_expected=dict(weight_decay=weight_decay),
        groups=ADAM_GROUPS,
        groups_lr=0.01, groups_lrs=[0.03, 0.01, 0.005],
        groups_extra=_wd_list([weight_decay, 0.2, weight_decay]),
        round_trip=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
        interop=[
            (name, dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6)),
            ("amsgrad", dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6, amsgrad=True)),
        ],
        sd_superset=True,
        meta_lr=0.05,
        meta_configs=[
            dict(betas=(0.8, 0.9), eps=1e-8, eps_root=0.0, weight_decay=0.0, maximize=False),
            dict(betas=(0.8, 0.9), eps=1e-8, eps_root=0.0, weight_decay=0.05, maximize=False),
            dict(betas=(0.8, 0.9), eps=1e-3, eps_root=1e-6, weight_decay=0.05, maximize=True),
            # A small eps with eps_root: where nu is small, sqrt(eps_root) = 1e-3 is the denominator's floor.
            dict(betas=(0.8, 0.9), eps=1e-8, eps_root=1e-6, weight_decay=0.0, maximize=True),
            dict(betas=(0.8, 0.9), eps=0.1, eps_root=0.0, weight_decay=0.2, maximize=False),
            dict(betas=(0.8, 0.9), eps=1e-8, eps_root=0.0, weight_decay=0.05, amsgrad=True),
        ],
        tensor_configs=[
            ("lr-betas-wd", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.95)), eps=1e-6, weight_decay=L(0.1))),
            ("lr-betas-wd-eps_root", 1,
             dict(lr=L(0.05), betas=(L(0.8), L(0.95)), eps=1e-3, eps_root=1e-6, weight_decay=L(0.02))),
            ("amsgrad", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.95)), eps=1e-6, weight_decay=L(0.1), amsgrad=True)),
        ],
        meta_class_configs=[
            ("lr", 0, dict(lr=0.05)),
            ("all", 0, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1, maximize=True)),
            ("amsgrad", 0, dict(lr=0.05, amsgrad=True)),
        ],
        meta_optimizer_configs=[("wd", dict(lr=0.1, weight_decay=0.1)), ("amsgrad", dict(lr=0.1, amsgrad=True))],
        bad=ADAM_BAD + [("eps_root", dict(eps_root=-1.0))] + WD_BAD,
        generic=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
    )  # fmt: skip


ADAM = adam_family_case("adam", unrollopt.adam, unrollopt.Adam, torch.optim.Adam, unrollopt.MetaAdam,
                        ref_adam_step, 0.0)  # fmt: skip
ADAMW = adam_family_case("adamw", unrollopt.adamw, unrollopt.AdamW, torch.optim.AdamW, unrollopt.MetaAdamW,
                         ref_adamw_step, 1e-2)  # fmt: skip

ADAMAX = Case(
    name="adamax", alias=unrollopt.adamax, cls=unrollopt.Adamax, torch_cls=torch.optim.Adamax,
    meta_cls=unrollopt.MetaAdamax,
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False),
    ref_init=adam_like_init, ref_step=adamax_step, state_type=unrollopt.ScaleByAdamState, state_fields=("mu", "nu"),
    oop_lr=0.02,
    # (Adamax with small betas and eps = 1e-8 is ill-conditioned on this problem: a
    # 1e-15 relative change of the initial parameters moves the result by 3e-10.)
    grid=adam_grid((0.8, 0.95)),
    loss_ratio=0.8, oop_keys=lambda o: {"step", "exp_avg", "exp_inf"}, all_keys={"step", "exp_avg", "exp_inf"},
    torch_same_keys=False, defaults_keys=("lr", "betas", "eps", "weight_decay", "maximize"),
    defaults_expected=dict(lr=2e-3, weight_decay=0.0),
    groups=ADAM_GROUPS,
    groups_lr=0.01, groups_lrs=[0.03, 0.01, 0.005], groups_extra=_wd_list([0.0, 0.2, 0.0]),
    round_trip=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
    interop=[("adamax", dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6))],
    sd_superset=True,
    meta_lr=0.05,
    meta_configs=[
        dict(betas=(0.8, 0.9), eps=1e-8, weight_decay=0.0, maximize=False),
        dict(betas=(0.8, 0.9), eps=1e-8, weight_decay=0.05, maximize=False),
        dict(betas=(0.8, 0.9), eps=1e-3, weight_decay=0.05, maximize=True),
        # eps large enough that |g'| + eps is selected at some steps and beta2 * nu at others.
        dict(betas=(0.8, 0.9), eps=0.5, weight_decay=0.2, maximize=False),
    ],
    tensor_configs=[
        ("lr-betas-wd", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.95)), eps=1e-6, weight_decay=L(0.1))),
        # Plain and fused agree away from ties: the maximum selects each argument
        # somewhere (eps comparable to |g|), so beta2's gradient is not 0.
        ("away-from-ties", 2, dict(lr=L(0.05), betas=(L(0.7), L(0.99)), eps=0.05)),
    ],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.05)),
        ("all", 0, dict(lr=0.05, betas=(0.8, 0.9), eps=0.2, weight_decay=0.1, maximize=True)),
    ],
    meta_optimizer_configs=[("wd", dict(lr=0.1, weight_decay=0.1))],
    bad=ADAM_BAD + WD_BAD,
    generic=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
)  # fmt: skip

LION = Case(
    name="lion", alias=unrollopt.lion, cls=unrollopt.Lion, torch_cls=RefLion, meta_cls=unrollopt.MetaLion,
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    ref_init=lion_init, ref_step=lion_step, state_type=unrollopt.ScaleByLionState, state_fields=("mu",),
    oop_lr=0.005,
    grid=[
        dict(betas=be, weight_decay=wd, maximize=mx)
        for be, wd, mx in itertools.product(((0.9, 0.99), (0.5, 0.8)), (0.0, 0.5), (False, True))
    ],
    loss_ratio=0.8, oop_keys=lambda o: {"step", "exp_avg"}, all_keys={"step", "exp_avg"},
    torch_same_keys=True, defaults_keys=("lr", "betas", "weight_decay", "maximize"),
    defaults_expected=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
    groups=[
        dict(params=[0], lr=0.03, betas=(0.8, 0.9)),
        dict(params=[1], weight_decay=0.2),
        dict(params=[2], lr=0.005, maximize=True),
    ],
    groups_lr=0.01, groups_lrs=[0.03, 0.01, 0.005], groups_extra=_wd_list([0.0, 0.2, 0.0]),
    round_trip=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
    interop=[("lion", dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05))],
    sd_superset=False,
    meta_lr=0.02,
    meta_configs=[
        dict(betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
        dict(betas=(0.8, 0.9), weight_decay=0.3, maximize=False),
        dict(betas=(0.5, 0.95), weight_decay=0.1, maximize=True),
    ],
    # The betas act on the loss only through the sign (their gradients are 0,
    # test_lion_sign_conventions): lr and the weight decay are learned.
    tensor_configs=[("lr-wd", 1, dict(lr=L(0.02), betas=(0.8, 0.95), weight_decay=L(0.1)))],
    meta_class_configs=[
        ("tensor-lr", 0, dict(lr=L(0.02))),
        ("tensor-lr-wd-maximize", 0, dict(lr=L(0.02), betas=(0.8, 0.9), weight_decay=L(0.1), maximize=True)),
    ],
    meta_optimizer_configs=[("wd", dict(lr=0.02, weight_decay=0.1))],
    bad=LR_BAD + [("betas[0]", dict(betas=(1.0, 0.99))), ("betas[1]", dict(betas=(0.9, -0.1)))] + WD_BAD,
    generic=dict(lr=0.005, betas=(0.8, 0.95), weight_decay=0.05),
    smooth_in_grads=False,
)  # fmt: skip

RMSPROP_KEYS = {"square_avg", "grad_avg", "momentum_buffer"}


def rmsprop_keys(o):
    return {"step", "square_avg"} | ({"grad_avg"} if o.get("centered") else set()) | (
        {"momentum_buffer"} if o.get("momentum") else set())  # fmt: skip


RMSPROP = Case(
    name="rmsprop", alias=unrollopt.rmsprop, cls=unrollopt.RMSprop, torch_cls=torch.optim.RMSprop,
    meta_cls=unrollopt.MetaRMSProp,
    defaults=dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, initial_scale=0.0,
                  nesterov=False, maximize=False),
    ref_init=rmsprop_init, ref_step=rmsprop_step, state_type=unrollopt.RMSPropState,
    state_fields=("square_avg", "grad_avg", "momentum_buffer"),
    oop_lr=0.003,
    grid=[
        dict(alpha=0.9, eps=1e-8, momentum=mo, centered=ce, weight_decay=wd, maximize=mx)
        for mo, ce, wd, mx in itertools.product((0.0, 0.8), (False, True), (0.0, 0.05), (False, True))
    ] + [
        dict(alpha=0.99, eps=1e-2, momentum=0.5, centered=True, weight_decay=0.05, maximize=False),
        dict(alpha=0.99, eps=1e-2, momentum=0.0, centered=False, weight_decay=0.0, maximize=True),
    ],
    loss_ratio=0.9, oop_keys=rmsprop_keys, all_keys={"step"} | RMSPROP_KEYS, torch_same_keys=True,
    defaults_keys=("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"), defaults_expected={},
    groups=[
        dict(params=[0], lr=0.003, momentum=0.9, centered=True),
        dict(params=[1], weight_decay=0.2, alpha=0.8),
        dict(params=[2], lr=0.001, maximize=True, momentum=0.5),
    ],
    groups_lr=0.002, groups_lrs=[0.003, 0.002, 0.001], groups_extra=rmsprop_groups_extra,
    round_trip=dict(lr=0.003, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.05),
    interop=[
        ("plain", dict(lr=0.003, alpha=0.95, momentum=0.6, centered=False, weight_decay=0.05, eps=1e-6)),
        ("centered", dict(lr=0.003, alpha=0.95, momentum=0.6, centered=True, weight_decay=0.05, eps=1e-6)),
    ],
    sd_superset=False,
    meta_lr=0.02,
    meta_configs=[
        dict(alpha=0.9, eps=1e-6, momentum=0.0, centered=False, weight_decay=0.0, maximize=False, initial_scale=0.0),
        dict(alpha=0.9, eps=1e-6, momentum=0.0, centered=True, weight_decay=0.05, maximize=True, initial_scale=0.0),
        dict(alpha=0.9, eps=1e-6, momentum=0.8, centered=False, weight_decay=0.05, maximize=False, initial_scale=1.0),
        dict(alpha=0.9, eps=1e-6, momentum=0.8, centered=True, weight_decay=0.0, maximize=False, initial_scale=0.5),
        dict(alpha=0.9, eps=1e-6, momentum=0.8, centered=False, weight_decay=0.05, maximize=True, nesterov=True),
        dict(alpha=0.9, eps=1e-6, momentum=0.6, centered=True, weight_decay=0.0, maximize=False, nesterov=True),
    ],
    tensor_configs=[
        (f"lr-alpha-momentum-wd-{c}", 1,
         dict(lr=L(0.02), alpha=L(0.9), eps=1e-6, weight_decay=L(0.1), momentum=L(0.6), centered=centered))
        for c, centered in (("plain", False), ("centered", True))
    ] + [
        ("lr-momentum-nesterov", 1, dict(lr=L(0.02), alpha=0.9, eps=1e-6, momentum=L(0.6), nesterov=True)),
    ],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.01)),
        ("all", 0, dict(lr=0.01, alpha=0.9, eps=1e-4, weight_decay=0.1, momentum=0.7, centered=True, maximize=True)),
    ],
    meta_optimizer_configs=[
        ("centered-momentum-wd", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
        ("nesterov", dict(lr=0.01, momentum=0.5, nesterov=True)),
    ],
    bad=LR_BAD + rate_bad("alpha") + [("momentum", dict(momentum=-0.5))] + WD_BAD,
    generic=dict(lr=0.003, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.05),
)  # fmt: skip

ADAGRAD = Case(
    name="adagrad", alias=unrollopt.adagrad, cls=unrollopt.Adagrad, torch_cls=torch.optim.Adagrad,
    meta_cls=unrollopt.MetaAdagrad,
    defaults=dict(lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False),
    ref_init=adagrad_init, ref_step=adagrad_step, state_type=unrollopt.AdagradState, state_fields=("sum",),
    oop_lr=0.05,
    grid=[
        dict(lr_decay=ld, weight_decay=wd, initial_accumulator_value=ia, eps=ep, maximize=mx)
        for ld, wd, ia, ep, mx in itertools.product((0.0, 0.05), (0.0, 0.05), (0.0, 0.5), (1e-10, 1e-3), (False, True))
    ],
    loss_ratio=0.9, oop_keys=lambda o: {"step", "sum"}, all_keys={"step", "sum"}, torch_same_keys=True,
    defaults_keys=("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    defaults_expected={},
    groups=[
        dict(params=[0], lr=0.03, lr_decay=0.1),
        # (No per-group initial_accumulator_value: torch.optim.Adagrad starts
        # every sum at the constructor's value; unrollopt.Adagrad uses the group's.)
        dict(params=[1], weight_decay=0.2),
        dict(params=[2], lr=0.01, maximize=True),
    ],
    groups_lr=0.02, groups_lrs=[0.03, 0.02, 0.01], groups_extra=None,
    round_trip=dict(lr=0.03, lr_decay=0.05, weight_decay=0.05, initial_accumulator_value=0.2),
    interop=[("adagrad", dict(lr=0.03, lr_decay=0.05, weight_decay=0.05, initial_accumulator_value=0.2, eps=1e-6))],
    sd_superset=False,
    meta_lr=0.05,
    meta_configs=[
        dict(lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-6, maximize=False),
        dict(lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.0, eps=1e-6, maximize=True),
        dict(lr_decay=0.1, weight_decay=0.0, initial_accumulator_value=0.5, eps=1e-6, maximize=False),
    ],
    tensor_configs=[("lr-lr_decay-wd", 1, dict(lr=L(0.05), lr_decay=L(0.2), weight_decay=L(0.1), eps=1e-6))],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.05)),
        ("all", 0, dict(lr=0.05, lr_decay=0.1, weight_decay=0.1, eps=1e-4, maximize=True)),
    ],
    meta_optimizer_configs=[("lr_decay-wd", dict(lr=0.05, lr_decay=0.1, weight_decay=0.1))],
    bad=LR_BAD + [
        ("lr_decay", dict(lr_decay=-0.1)),
        ("lr_decay", dict(lr_decay=torch.tensor(-0.5, dtype=F64))),
        ("eps", dict(eps=-1e-8)),
        ("initial_accumulator_value", dict(initial_accumulator_value=-1.0)),
    ] + WD_BAD,
    generic=dict(lr=0.05, lr_decay=0.05, weight_decay=0.05, initial_accumulator_value=0.2),
)  # fmt: skip

ADADELTA = Case(
    name="adadelta", alias=unrollopt.adadelta, cls=unrollopt.Adadelta, torch_cls=torch.optim.Adadelta,
    meta_cls=unrollopt.MetaAdadelta,
    defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    ref_init=adadelta_init, ref_step=adadelta_step, state_type=unrollopt.AdadeltaState,
    state_fields=("square_avg", "acc_delta"),
    oop_lr=5.0,
    grid=[
        dict(rho=rho, eps=ep, weight_decay=wd, maximize=mx)
        # (With rho = 0.5 and eps = 1e-6 this problem is ill-conditioned: a 1e-15
        # relative change of the initial parameters moves acc_delta by 2e-10.)
        for rho, ep, wd, mx in itertools.product((0.9, 0.8), (1e-6, 1e-3), (0.0, 0.05), (False, True))
    ],
    loss_ratio=0.9, oop_keys=lambda o: {"step", "square_avg", "acc_delta"},
    all_keys={"step", "square_avg", "acc_delta"}, torch_same_keys=True,
    defaults_keys=("lr", "rho", "eps", "weight_decay", "maximize"), defaults_expected={},
    groups=[
        dict(params=[0], lr=3.0, rho=0.8),
        dict(params=[1], weight_decay=0.2, eps=1e-4),
        dict(params=[2], lr=1.0, maximize=True),
    ],
    groups_lr=2.0, groups_lrs=[3.0, 2.0, 1.0], groups_extra=None,
    round_trip=dict(lr=3.0, rho=0.8, weight_decay=0.05),
    interop=[("adadelta", dict(lr=3.0, rho=0.85, weight_decay=0.05, eps=1e-5))],
    sd_superset=False,
    meta_lr=2.0,
    meta_configs=[
        dict(rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
        dict(rho=0.8, eps=1e-3, weight_decay=0.05, maximize=True),
        dict(rho=0.5, eps=1e-2, weight_decay=0.1, maximize=False),
    ],
    tensor_configs=[("lr-rho-wd", 1, dict(lr=L(2.0), rho=L(0.8), eps=1e-4, weight_decay=L(0.1)))],
    meta_class_configs=[
        ("lr", 0, dict(lr=1.0)),
        ("all", 0, dict(lr=2.0, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True)),
    ],
    meta_optimizer_configs=[("rho-wd", dict(lr=1.0, rho=0.8, weight_decay=0.1))],
    bad=LR_BAD + rate_bad("rho") + WD_BAD,
    generic=dict(lr=3.0, rho=0.8, weight_decay=0.05),
)  # fmt: skip


def radam_like_grid(small_betas, **extra):
    """RAdam's and NAdam's grid: Adam's, plus decoupled weight decay."""
    return [{**o, **extra} for o in adam_grid(small_betas)] + [
        dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, maximize=mx, decoupled_weight_decay=True, **extra)
        for mx in (False, True)
    ]


RADAM = Case(
    name="radam", alias=unrollopt.radam, cls=unrollopt.RAdam, torch_cls=torch.optim.RAdam, meta_cls=unrollopt.MetaRAdam,
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                  maximize=False),
    ref_init=adam_like_init, ref_step=radam_step, state_type=unrollopt.ScaleByAdamState, state_fields=("mu", "nu"),
    oop_lr=0.02,
    grid=radam_like_grid((0.8, 0.9)),
    loss_ratio=0.8, oop_keys=lambda o: {"step", "exp_avg", "exp_avg_sq"}, all_keys={"step", "exp_avg", "exp_avg_sq"},
    torch_same_keys=True,
    defaults_keys=("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "maximize"),
    defaults_expected=dict(lr=1e-3),
    groups=ADAM_GROUPS,
    groups_lr=0.01, groups_lrs=[0.03, 0.01, 0.005], groups_extra=_wd_list([0.0, 0.2, 0.0]),
    round_trip=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05, decoupled_weight_decay=True),
    interop=[("radam", dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6))],
    sd_superset=False,
    meta_lr=0.05,
    # 8 steps: the rectified step starts where rho_t > 5, at t = 6 for these betas.
    meta_steps=8,
    meta_configs=[
        dict(betas=(0.8, 0.9), eps=1e-8, weight_decay=0.0, maximize=False),
        dict(betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05, maximize=False),
        dict(betas=(0.8, 0.9), eps=1e-3, weight_decay=0.05, maximize=True),
        dict(betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1, decoupled_weight_decay=True),
    ],
    tensor_configs=[
        ("lr-betas-wd", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.95)), eps=1e-6, weight_decay=L(0.1))),
        ("decoupled", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.9)), weight_decay=L(0.1), decoupled_weight_decay=True)),
    ],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.05)),
        ("all", 0, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1, maximize=True)),
    ],
    meta_optimizer_configs=[("wd", dict(lr=0.1, weight_decay=0.1))],
    bad=ADAM_BAD + WD_BAD,
    generic=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
)  # fmt: skip

NADAM = Case(
    name="nadam", alias=unrollopt.nadam, cls=unrollopt.NAdam, torch_cls=torch.optim.NAdam, meta_cls=unrollopt.MetaNAdam,
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    ref_init=nadam_init, ref_step=nadam_step, state_type=unrollopt.NAdamState, state_fields=("mu", "nu"),
    oop_lr=0.02,
    grid=radam_like_grid((0.8, 0.9)) + [dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                                              momentum_decay=0.1)],
    loss_ratio=0.8, oop_keys=lambda o: {"step", "mu_product", "exp_avg", "exp_avg_sq"},
    all_keys={"step", "mu_product", "exp_avg", "exp_avg_sq"}, torch_same_keys=True,
    defaults_keys=("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize"),
    defaults_expected=dict(lr=2e-3),
    # (With lr = 0.03 and betas = (0.8, 0.9) this problem is ill-conditioned for
    # NAdam: torch.optim.NAdam's foreach and single-tensor paths differ by 1e-5.)
    groups=[dict(params=[0], lr=0.02, betas=(0.85, 0.95))] + ADAM_GROUPS[1:],
    groups_lr=0.01, groups_lrs=[0.02, 0.01, 0.005], groups_extra=_wd_list([0.0, 0.2, 0.0]),
    round_trip=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05, momentum_decay=0.01),
    interop=[("nadam", dict(lr=0.02, betas=(0.85, 0.99), weight_decay=0.05, eps=1e-6, momentum_decay=0.01))],
    sd_superset=False,
    meta_lr=0.05,
    meta_configs=[
        dict(betas=(0.8, 0.9), eps=1e-8, weight_decay=0.0, maximize=False),
        dict(betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05, momentum_decay=0.1, maximize=False),
        dict(betas=(0.8, 0.9), eps=1e-3, weight_decay=0.05, maximize=True),
        dict(betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1, decoupled_weight_decay=True),
    ],
    tensor_configs=[
        ("lr-betas-wd", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.95)), eps=1e-6, weight_decay=L(0.1))),
        ("decoupled", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.9)), weight_decay=L(0.1), decoupled_weight_decay=True,
                              momentum_decay=0.2)),
    ],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.05)),
        ("all", 0, dict(lr=0.05, betas=(L(0.8), 0.9), eps=1e-4, weight_decay=0.1, maximize=True)),
    ],
    meta_optimizer_configs=[("wd", dict(lr=0.1, weight_decay=0.1))],
    bad=ADAM_BAD + WD_BAD + [("momentum_decay", dict(momentum_decay=-1e-3))],
    generic=dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05, momentum_decay=0.01),
    # load_state_dict casts mu_product to the parameters' dtype (torch.optim's
    # rule for every state but step): a reloaded NAdam continues it in float64.
    round_trip_rtol=1e-13,
)  # fmt: skip

ADAN_KEYS = {"step", "exp_avg", "exp_avg_diff", "exp_avg_sq", "pre_grad"}

ADAN = Case(
    name="adan", alias=unrollopt.adan, cls=unrollopt.Adan, torch_cls=RefAdan, meta_cls=unrollopt.MetaAdan,
    defaults=dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, maximize=False),
    ref_init=adan_init, ref_step=adan_step, state_type=unrollopt.AdanState,
    state_fields=("mu", "delta", "nu", "prev_grad"),
    oop_lr=0.02,
    grid=[
        dict(betas=be, eps=ep, weight_decay=wd, maximize=mx)
        for be, ep, wd, mx in itertools.product(
            ((0.98, 0.92, 0.99), (0.8, 0.7, 0.9)), (1e-8, 1e-2), (0.0, 0.1), (False, True)
        )
    ],
    loss_ratio=0.8, oop_keys=lambda o: ADAN_KEYS, all_keys=ADAN_KEYS,
    torch_same_keys=True, defaults_keys=("lr", "betas", "eps", "weight_decay", "maximize"),
    defaults_expected=dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0),
    groups=[
        dict(params=[0], lr=0.03, betas=(0.8, 0.7, 0.9)),
        dict(params=[1], weight_decay=0.2, eps=1e-3),
        dict(params=[2], lr=0.005, maximize=True),
    ],
    groups_lr=0.01, groups_lrs=[0.03, 0.01, 0.005], groups_extra=_wd_list([0.0, 0.2, 0.0]),
    round_trip=dict(lr=0.02, betas=(0.8, 0.7, 0.95), weight_decay=0.05),
    interop=[("adan", dict(lr=0.02, betas=(0.85, 0.9, 0.99), weight_decay=0.05, eps=1e-6))],
    sd_superset=False,
    meta_lr=0.05,
    meta_configs=[
        dict(betas=(0.8, 0.7, 0.9), eps=1e-8, weight_decay=0.0, maximize=False),
        dict(betas=(0.8, 0.7, 0.9), eps=1e-3, weight_decay=0.05, maximize=True),
        dict(betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.2, maximize=False),
    ],
    tensor_configs=[
        ("lr-betas-wd", 1, dict(lr=L(0.05), betas=(L(0.8), L(0.7), L(0.9)), eps=1e-6, weight_decay=L(0.1))),
    ],
    meta_class_configs=[
        ("lr", 0, dict(lr=0.05)),
        ("all", 0, dict(lr=0.05, betas=(0.8, 0.7, 0.9), eps=1e-4, weight_decay=0.1, maximize=True)),
    ],
    meta_optimizer_configs=[("wd", dict(lr=0.1, weight_decay=0.1))],
    bad=LR_BAD + [
        ("betas[0]", dict(betas=(1.0, 0.92, 0.99))),
        ("betas[1]", dict(betas=(0.98, -0.1, 0.99))),
        ("betas[2]", dict(betas=(0.98, 0.92, torch.tensor(1.5, dtype=F64)))),
        ("betas must be a triple", dict(betas=(0.9, 0.99))),
        ("eps", dict(eps=-1.0)),
    ] + WD_BAD,
    generic=dict(lr=0.02, betas=(0.8, 0.7, 0.95), weight_decay=0.05),
)  # fmt: skip

CASES = {c.name: c for c in (SGD, ADAM, ADAMW, ADAMAX, LION, RMSPROP, ADAGRAD, ADADELTA, RADAM, NADAM, ADAN)}


def table(attr, ids=None):
    """pytest params (case, item) over every case's list ``attr``."""
    out = []
    for c in CASES.values():
        for i, item in enumerate(getattr(c, attr)):
            out.append(pytest.param(c, item, id=f"{c.name}-{ids(item) if ids else i}"))
    return out


def by_case():
    return [pytest.param(c, id=c.name) for c in CASES.values()]


# --- OOP classes against torch.optim -------------------------------------------------


def _norm(v):
    return tuple(v) if isinstance(v, list) else v


@pytest.mark.parametrize("case,options", table("grid", options_id))
def test_matches_torch(fused, case, options):
    m = make_model(0)
    sign = -1.0 if options["maximize"] else 1.0
    lr = case.oop_lr
    ref, ref_opt, ref_losses = train(lambda p: case.torch_cls(p, lr=lr, **options), m, sign=sign)
    got, opt, losses = train(lambda p: case.cls(p, lr=lr, **options, use_accelerated_op=fused), m, sign=sign)
    assert_params_rel(got, ref)
    # The parameters moved and the loss went down (the comparison is not vacuous;
    # with maximize the objective is -loss).
    assert max_rel_err(got[0], m["params"][0]) > 1e-2
    assert 0 < sign * losses[-1] < case.loss_ratio * sign * losses[0]
    keys = case.oop_keys(options)
    for p, q in zip(got, ref):
        s, t = opt.state[p], ref_opt.state[q]
        assert set(s) == keys
        if case.torch_same_keys:
            assert set(t) == keys
        for key in case.all_keys - keys:
            assert t.get(key) is None, key
        if "step" in keys:
            assert float(s["step"]) == float(t["step"]) == STEPS
        for key in keys - {"step"}:
            assert max_rel_err(s[key], t[key]) <= 1e-10, key
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-10 * max(map(abs, ref_losses))


@pytest.mark.parametrize("case", by_case())
def test_alias_class_and_meta_class_share_their_settings(case):
    """The three front ends of an optimizer take its settings with the same
    names and defaults (the Meta class's signature is the alias's, plus
    ``module`` and ``first_order``; the class's, after ``params``, the
    alias's settings in ``torch.optim``'s order)."""
    alias = inspect.signature(case.alias).parameters
    meta = inspect.signature(case.meta_cls).parameters
    cls = inspect.signature(case.cls).parameters
    assert list(meta) == ["module", *alias, "first_order"]
    for name, p in alias.items():
        assert (meta[name].kind, meta[name].default) == (p.kind, p.default), name
    assert list(cls)[0] == "params"
    for name in list(cls)[1:]:
        assert name in alias, name
        assert cls[name].default == alias[name].default, name
    assert set(alias) - set(cls) == {"moment_requires_grad"}  # the initial state's, which torch.optim creates itself
    # A misspelt setting: the error a plain function's would be, with the class's name.
    with pytest.raises(TypeError, match=rf"{case.meta_cls.__name__}\(\) got an unexpected keyword argument 'lrr'"):
        case.meta_cls(nn.Linear(2, 1), lrr=0.1)


def test_stubs_are_current():
    """python/unrollopt/alias.pyi and optim/__init__.pyi state, for static type
    checkers, what is made at import from unrollopt.optimizers (the aliases
    gathered, the classes' constructors): they are what the modules are now."""
    root = pathlib.Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("stubs", root / "tools" / "stubs.py")
    stubs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stubs)
    for path, stub in stubs.STUBS.items():
        assert path.read_text() == stub(), f"{path.name} is stale; regenerate it with python tools/stubs.py"
        ast.parse(path.read_text())  # valid Python


def test_users_subclass_the_classes():
    """A subclass of a class inherits it (signature included), or writes its own __init__."""

    class Mine(unrollopt.Adam):
        pass

    class Heavy(unrollopt.SGD):
        def __init__(self, params, lr=0.5):
            super().__init__(params, lr=lr, momentum=0.9)

    assert inspect.signature(Mine) == inspect.signature(unrollopt.Adam)
    p = torch.ones(2, dtype=F64, requires_grad=True)
    opt = Heavy([p])
    p.grad = torch.ones(2, dtype=F64)
    opt.step()
    assert opt.param_groups[0]["momentum"] == 0.9 and torch.equal(p.detach(), torch.full((2,), 0.5, dtype=F64))
    q = torch.ones(2, dtype=F64, requires_grad=True)
    Mine([q], lr=0.1).step()  # no gradient: nothing moves
    assert torch.equal(q.detach(), torch.ones(2, dtype=F64))


def test_aliases_take_the_cpp_declarations_defaults():
    """unrollopt.adam's arguments default to unrollopt::Adam's options (stated
    there only: the declaration writes ``...``), and so on for every C++
    optimizer (each has an alias of its name): ``betas`` gathered from
    ``beta1``, ``beta2``, ..., flags as bools."""
    cpp = dict(unrollopt._C.default_settings())
    assert {name.lower() for name in cpp} == set(CASES)
    for name, settings in cpp.items():
        alias = inspect.signature(getattr(unrollopt, name.lower())).parameters
        defaults = {n: p.default for n, p in alias.items()}
        if "betas" in defaults:
            betas = defaults.pop("betas")
            defaults.update({f"beta{i + 1}": beta for i, beta in enumerate(betas)})
        assert settings, name
        for setting, value in settings:
            assert defaults[setting] == value, (name, setting)
        flags = [p for p in alias.values() if p.annotation == "bool"]
        assert flags and all(type(p.default) is bool for p in flags), name


def test_the_cpp_declarations_state_the_choices_python_applies():
    """Which operator the settings select, the requirements across settings and
    the initial states are stated once, as data in the C++ declarations
    (rules/<name>.h); Python applies them to its own settings."""
    choices = unrollopt._optimizer.CHOICES
    assert set(choices) == {name.lower() for name, _ in unrollopt._C.default_settings()}
    rmsprop = choices["rmsprop"]
    assert (rmsprop.op, rmsprop.variants) == ("rmsprop", ("centered", "momentum"))
    assert rmsprop.requirements == (("nesterov", "momentum", True),)
    assert rmsprop.initial == {"square_avg": "initial_scale"}
    assert choices["sgd"].requirements == (("nesterov", "momentum", True), ("nesterov", "dampening", False))
    assert choices["adagrad"].initial == {"sum": "initial_accumulator_value"}
    assert (choices["adamw"].op, choices["adamw"].variants) == ("adamw", ("amsgrad",))
    assert (choices["adan"].op, choices["adan"].variants) == ("adan", ())

    def op(alias, **settings):
        definition = alias.definition
        return definition.config(definition.settings(**settings)).op

    assert op(unrollopt.rmsprop, centered=True, momentum=0.9) == "rmsprop_centered_momentum"
    assert op(unrollopt.rmsprop, momentum=torch.tensor(0.0)) == "rmsprop_momentum"  # a tensor may change
    assert op(unrollopt.sgd) == "sgd" and op(unrollopt.adamw, amsgrad=True) == "adamw_amsgrad"
    with pytest.raises(ValueError, match=re.escape("unrollopt.sgd: nesterov=True requires dampening = 0")):
        unrollopt.sgd(0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match=re.escape("unrollopt.rmsprop: nesterov=True requires momentum != 0")):
        unrollopt.RMSprop([torch.zeros(2, requires_grad=True)], nesterov=True)


@pytest.mark.parametrize("case", [c for c in by_case() if c.values[0].defaults_keys])
def test_defaults_match_torch(case):
    p = torch.zeros(2, requires_grad=True)
    ours = case.cls([p]).defaults
    theirs = case.torch_cls([p]).defaults
    for key in case.defaults_keys:
        assert ours[key] == theirs[key], key
    for key, value in case.defaults_expected.items():
        assert ours[key] == value, key


@pytest.mark.parametrize("case", by_case())
def test_param_groups_with_different_hyperparameters(fused, case):
    m = make_model(1)
    ref, ref_opt, _ = train(lambda g: case.torch_cls(g, lr=case.groups_lr), m, groups=case.groups)
    got, opt, _ = train(lambda g: case.cls(g, lr=case.groups_lr, use_accelerated_op=fused), m, groups=case.groups)
    assert_params_rel(got, ref)
    assert max_rel_err(got[2], m["params"][2]) > 1e-3  # the maximized group moved too
    assert [g["lr"] for g in opt.param_groups] == case.groups_lrs
    if case.groups_extra is not None:
        case.groups_extra(opt, ref_opt, got, ref)


@pytest.mark.parametrize("case", by_case())
def test_state_dict_round_trip(fused, case):
    m = make_model(5)
    hp = case.round_trip
    full, _, _ = train(lambda p: case.cls(p, **hp, use_accelerated_op=fused), m, steps=20)
    half, opt, _ = train(lambda p: case.cls(p, **hp, use_accelerated_op=fused), m, steps=10)
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == case.oop_keys(hp)
    params = [p.detach().clone().requires_grad_() for p in half]
    opt2 = case.cls(params, lr=0.5, use_accelerated_op=fused)  # overwritten by the load
    opt2.load_state_dict(sd)
    for key, value in hp.items():
        assert _norm(opt2.param_groups[0][key]) == value, key
    # Every setting is saved and restored, unrollopt's own too (use_accelerated_op, Adam's eps_root).
    for key in opt.defaults:
        assert _norm(opt2.param_groups[0][key]) == _norm(opt.param_groups[0][key]), key
    for _ in range(10):
        opt2.zero_grad()
        loss_fn(m, params).backward()
        opt2.step()
    assert_params_rel(params, full, case.round_trip_rtol)


@pytest.mark.parametrize("direction", ["torch_to_unrollopt", "unrollopt_to_torch"])
@pytest.mark.parametrize("case,item", table("interop", lambda it: it[0]))
def test_state_dict_interop_with_torch(fused, case, item, direction):
    _, hp = item
    m = make_model(6)

    def continued(opt, make_second):
        """15 more steps of a copy of opt's parameters by make_second(params) loading opt.state_dict()."""
        sd = copy.deepcopy(opt.state_dict())
        params = [p.detach().clone().requires_grad_() for group in opt.param_groups for p in group["params"]]
        opt2 = make_second(params)
        opt2.load_state_dict(sd)
        for _ in range(15):
            opt2.zero_grad()
            loss_fn(m, params).backward()
            opt2.step()
        return params, opt2, sd

    # The reference: torch.optim through the same checkpoint (load_state_dict
    # casts some states, e.g. NAdam's mu_product, to the parameters' dtype).
    _, ref_half, _ = train(lambda p: case.torch_cls(p, **hp), m, steps=15)
    ref, ref_opt, _ = continued(ref_half, lambda p: case.torch_cls(p, **hp))
    if direction == "torch_to_unrollopt":
        first = lambda p: case.torch_cls(p, **hp)  # noqa: E731
        second = lambda p: case.cls(p, lr=0.9, use_accelerated_op=fused)  # noqa: E731
    else:
        first = lambda p: case.cls(p, **hp, use_accelerated_op=fused)  # noqa: E731
        second = lambda p: case.torch_cls(p, lr=0.9)  # noqa: E731
    _, opt, _ = train(first, m, steps=15)
    params, opt2, sd = continued(opt, second)
    keys = case.oop_keys(hp)
    if case.sd_superset:
        assert set(sd["state"][0]) >= keys
    else:
        assert set(sd["state"][0]) == keys
    group = opt2.param_groups[0]
    for key, value in hp.items():
        assert _norm(group[key]) == value, key
    if isinstance(opt2, case.cls):
        # The settings a torch.optim checkpoint lacks (use_accelerated_op, Adam's eps_root) are the constructor's.
        missing = set(opt2.defaults) - set(sd["param_groups"][0])
        assert "use_accelerated_op" in missing and group["use_accelerated_op"] == fused
        for key in missing:
            assert _norm(group[key]) == _norm(opt2.defaults[key]), key
    assert_params_rel(params, ref, 1e-10)
    for p, q in zip(params, ref):
        for key in keys - {"step"}:
            assert max_rel_err(opt2.state[p][key], ref_opt.state[q][key]) <= 1e-10, key
        if "step" in keys:
            assert float(opt2.state[p]["step"]) == 30


# --- torch.optim behaviours of every class ----------------------------------------


@pytest.mark.parametrize("case", by_case())
def test_closure(fused, case):
    """step(closure) evaluates the closure before the step and returns its
    loss: the reference's trajectory and losses (the reference's loop records
    the same losses without a closure; RefLion takes none); step() returns None."""
    m = make_model(2)
    ref, _, ref_losses = train(lambda p: case.torch_cls(p, **case.generic), m, steps=10)
    got, _, losses = train(lambda p: case.cls(p, **case.generic, use_accelerated_op=fused), m, steps=10, closure=True)
    assert_params_rel(got, ref)
    assert losses == pytest.approx(ref_losses, rel=1e-12)
    assert max_rel_err(got[0], m["params"][0]) > 1e-3  # the parameters moved
    p = torch.zeros(2, dtype=F64, requires_grad=True)
    p.grad = torch.ones(2, dtype=F64)
    assert case.cls([p], **case.generic, use_accelerated_op=fused).step() is None
    assert not torch.equal(p.detach(), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("case", by_case())
def test_zero_grad_and_params_without_grad_are_skipped(fused, case):
    """A parameter without a gradient is not stepped and gets no state;
    zero_grad sets the gradients to None (or to 0); a parameter whose
    gradients start later starts its own state (its own step count, one group
    with two), as in the reference."""
    g = gen(3)
    a = randn(g, 4, requires_grad=True)
    b = randn(g, 3, requires_grad=True)
    a2 = a.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    opt = case.cls([a, b], **case.generic, use_accelerated_op=fused)
    ref = case.torch_cls([a2, b2], **case.generic)
    a_before, b_before = a.detach().clone(), b.detach().clone()
    for params, o in (([a, b], opt), ([a2, b2], ref)):
        (params[0] ** 2).sum().backward()
        o.step()
    assert b.grad is None
    assert torch.equal(b.detach(), b_before) and len(opt.state[b]) == 0
    assert not torch.equal(a.detach(), a_before)
    keys = case.oop_keys(case.generic)  # (SGD keeps no step count)
    assert set(opt.state[a]) == keys and keys - {"step"}
    opt.zero_grad()
    assert a.grad is None  # set_to_none by default, as torch.optim
    a.grad = torch.ones(4, dtype=F64)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(a.grad, torch.zeros(4, dtype=F64))
    for params, o in (([a, b], opt), ([a2, b2], ref)):
        o.zero_grad()
        ((params[0] ** 2).sum() * params[1][0] + (params[1] ** 3).sum()).backward()
        o.step()
    if "step" in keys:
        assert float(opt.state[a]["step"]) == 2 and float(opt.state[b]["step"]) == 1
    assert_params_rel([a, b], [a2, b2], 1e-14)
    for p, q in ((a, a2), (b, b2)):
        assert set(opt.state[p]) == keys
        for key in keys - {"step"}:
            assert max_rel_err(opt.state[p][key], ref.state[q][key]) <= 1e-14, key


def test_forward_mode_is_exact_where_the_second_moment_is_zero(fused):
    """jvp through Adam where g = 0 and the moments are 0: the update is
    -lr (1 - beta1) g / (bc1 (sqrt((1 - beta2) / bc2) |g| + eps)), whose
    derivative there is -lr (1 - beta1) / (bc1 eps) = -lr / eps at step 1
    (finite; plain sqrt'(0) would make it NaN), on both paths."""
    lr, eps = 0.1, 1e-8
    opt = unrollopt.adam(lr=lr, eps=eps, use_accelerated_op=fused)
    state = opt.init((torch.zeros(4, dtype=F64),))

    def step(g):
        return opt.update((g,), state, inplace=False)[0][0]

    g = torch.tensor([0.0, 1.0, 0.0, -2.0], dtype=F64)
    _, tangent = torch.func.jvp(step, (g,), (torch.ones(4, dtype=F64),))
    assert torch.isfinite(tangent).all()
    torch.testing.assert_close(tangent[[0, 2]], torch.full((2,), -lr / eps, dtype=F64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("case", by_case())
def test_plain_step_of_small_tensors_is_each_ones(case):
    """The plain path steps several small tensors of one dtype together (flattened
    and concatenated: one set of ATen operations instead of one per tensor):
    each tensor's updates, states and meta-gradients are those of the tensor
    stepped alone, bit for bit (the same element-wise operations), and the
    results are not views (stop_gradient detaches states in place)."""
    opt = case.alias(lr=case.meta_lr, use_accelerated_op=False)
    g = gen(11)
    params = [randn(g, 3, 4, requires_grad=True), randn(g, 5, requires_grad=True), randn(g, 2, 1, requires_grad=True)]

    def two_steps(ps):
        state = opt.init(tuple(p.detach() for p in ps))
        qs = tuple(ps)
        for _ in range(2):
            grads = tuple(q * q - 0.5 * q for q in qs)  # depend on the parameters: a meta-gradient
            updates, state = opt.update(grads, state, params=qs, inplace=False)
            qs = unrollopt.apply_updates(qs, updates, inplace=False)
        meta = torch.autograd.grad(sum((q**3).sum() for q in qs), ps)
        return updates, state, meta

    updates, state, meta = two_steps(params)
    leaves = torch.utils._pytree.tree_leaves(state)
    assert not any(t._is_view() for t in (*updates, *leaves))
    for i, p in enumerate(params):
        alone_updates, alone_state, alone_meta = two_steps([p])
        assert torch.equal(updates[i], alone_updates[0])
        assert torch.equal(meta[i], alone_meta[0])
        for name in state._fields:  # a pytree like the parameters, (), or the step count
            a, b = getattr(state, name), getattr(alone_state, name)
            assert (
                torch.equal(a[i], b[0])
                if isinstance(a, tuple) and a
                else torch.equal(torch.as_tensor(a), torch.as_tensor(b))
            ), name
    unrollopt.stop_gradient(state)


@pytest.mark.parametrize("case", by_case())
def test_mixed_dtypes_in_one_group(fused, case):
    """float64 and float32 parameters in one group: each stepped in its own
    dtype (its state too), as the reference steps them."""
    g = gen(4)
    ps = [randn(g, 5, requires_grad=True), randn(g, 7, dtype=torch.float32, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    initial = [p.detach().clone() for p in ps]
    opt = case.cls(ps, **case.generic, use_accelerated_op=fused)
    ref = case.torch_cls(qs, **case.generic)
    for _ in range(5):
        for params, o in ((ps, opt), (qs, ref)):
            o.zero_grad()
            ((params[0] ** 2).sum() + (params[1].double() ** 3).sum()).backward()
            o.step()
    # (float32: 5 steps, each rounding the update and the parameter, ~6e-8
    # relative each. Lion: the gradients and the momentum have the same signs
    # at every step here, so that no rounding flips the sign of its step.)
    assert max_rel_err(ps[0], qs[0]) <= 1e-12
    assert max_rel_err(ps[1], qs[1]) <= 1e-6
    assert all(max_rel_err(p, p0) > 1e-3 for p, p0 in zip(ps, initial))  # both moved
    per_parameter = [k for k, t in opt.state[ps[1]].items() if t.shape == ps[1].shape]
    assert per_parameter and all(opt.state[ps[1]][k].dtype == torch.float32 for k in per_parameter)
    assert all(opt.state[ps[0]][k].dtype == F64 for k in per_parameter)


@pytest.mark.parametrize("case", by_case())
def test_tensor_lr_equals_float_lr(fused, case):
    """A 0-d tensor lr (as torch.optim allows) takes the float lr's steps."""
    m = make_model(7)
    settings = dict(case.generic)
    lr = settings.pop("lr")
    floats, _, _ = train(lambda p: case.cls(p, lr=lr, **settings, use_accelerated_op=fused), m, steps=10)
    tensors, opt, _ = train(
        lambda p: case.cls(p, lr=torch.tensor(lr, dtype=F64), **settings, use_accelerated_op=fused), m, steps=10
    )
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    # The fused path: the same bits. The plain path divides a number by a
    # tensor (lr / the bias correction) as float * (1 / tensor), which may
    # round otherwise than the tensor lr's division: the last bit of some
    # steps (here 1e-16 after 10).
    assert_params_rel(tensors, floats, 0.0 if fused else 1e-15)
    assert max_rel_err(floats[0], m["params"][0]) > 1e-3  # the parameters moved


@pytest.mark.parametrize("case", by_case())
def test_sparse_gradients_rejected(fused, case):
    """A sparse gradient: a RuntimeError before anything of the group is
    stepped (the other parameter's dense gradient would move it)."""
    g = gen(5)
    a = randn(g, 3, requires_grad=True)
    b = randn(g, 3, requires_grad=True)
    opt = case.cls([a, b], **case.generic, use_accelerated_op=fused)
    a.grad = randn(g, 3)
    b.grad = randn(g, 3).to_sparse()
    before = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert len(opt.state[a]) == 0 and len(opt.state[b]) == 0
    b.grad = None
    opt.step()
    assert not torch.equal(a.detach(), before[0])


# --- meta-gradients through the unrolled functional alias -----------------------------
# The problem (make_problem, inner_loss, outer_loss, unrolled_unrollopt) is in conftest.py.


def unrolled_reference(case, pb, hp, steps=3):
    """The case's float64 reference step, unrolled: (outer loss, params, per-parameter states)."""
    hp = {**case.defaults, **hp}
    params = [pb["w0"], pb["b0"]]
    states = [case.ref_init(p, hp) for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(inner_loss(pb, *params), params, create_graph=True)
        new = [case.ref_step(g, st, p, t, hp) for g, st, p in zip(grads, states, params)]
        params = [p + u for p, (u, _) in zip(params, new)]
        states = [st for _, st in new]
    return outer_loss(pb, *params), params, states


def assert_live(case, *, direct=(), through_grads=()):
    """The comparison is not vacuous: the gradients ``direct`` are not all 0,
    nor are those reaching the loss only through the inner gradients, except
    for an optimizer not differentiable in them (Lion), where those are exactly 0."""
    for g in direct:
        assert g.abs().max() > 0
    for g in through_grads:
        assert g.abs().max() > 0 if case.smooth_in_grads else not g.any()


def assert_rel(actual, expected, rtol, what):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert is_finite(a), f"{what}[{i}] is not finite"
        err = max_rel_err(a, e)
        assert err <= rtol, f"{what}[{i}]: relative error {err:.3g} > {rtol:g}"


def assert_state_matches(case, state, ref_states):
    assert isinstance(state, case.state_type) and int(state.count) == case.meta_steps
    for i, name in enumerate(case.state_fields):
        expected = [st[i] for st in ref_states]
        if expected[0] is None:
            assert getattr(state, name) == (), name  # an absent state holds no tensor
        else:
            assert_rel(getattr(state, name), expected, 1e-12, name)


def uses_params(cfg):
    return not is_zero(cfg.get("weight_decay", 0.0))


@pytest.mark.parametrize("case,cfg", table("meta_configs", options_id))
def test_meta_gradient_matches_reference(fused, case, cfg):
    pb = make_problem(0)
    hp = dict(lr=case.meta_lr, **cfg)
    opt = case.alias(**hp, use_accelerated_op=fused)
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    loss, params, state = unrolled_unrollopt(pb, opt, steps=case.meta_steps, use_params=uses_params(cfg))
    got = torch.autograd.grad(loss, meta)
    ref_loss, ref_params, ref_states = unrolled_reference(case, pb, hp, steps=case.meta_steps)
    expected = torch.autograd.grad(ref_loss, meta)
    assert_state_matches(case, state, ref_states)
    assert_rel(params, ref_params, 1e-12, "params")
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert_live(case, through_grads=got[:1], direct=got[1:])  # (meta_w, w0, b0)


@pytest.mark.parametrize("case,item", table("tensor_configs", lambda it: it[0]))
def test_meta_gradient_tensor_hyperparameters(fused, case, item):
    """Meta-learned hyperparameters (0-d tensors that require grad): their
    gradients, and the data's and initial parameters', against the reference's."""
    _, seed, cfg = item
    pb = make_problem(seed)
    hp, learned = materialize(cfg)
    opt = case.alias(**hp, use_accelerated_op=fused)
    loss, _, state = unrolled_unrollopt(pb, opt, steps=case.meta_steps, use_params=uses_params(cfg))
    got = torch.autograd.grad(loss, [*learned, pb["meta_w"], pb["w0"]])
    rhp, rlearned = materialize(cfg)
    ref_loss, _, ref_states = unrolled_reference(case, pb, rhp, steps=case.meta_steps)
    expected = torch.autograd.grad(ref_loss, [*rlearned, pb["meta_w"], pb["w0"]])
    assert_state_matches(case, state, ref_states)
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert all(float(g) != 0.0 for g in got[: len(learned)])


# --- the functional alias's step: fused and plain paths, dtypes, layouts, pytrees ----
# Each case with its generic settings (every state in use, a weight decay),
# against the case's float64 reference step.

tree_map = torch.utils._pytree.tree_map


def is_absent(tree):
    """Whether a state field is absent (an empty tuple, e.g. nu_max without AMSGrad)."""
    return isinstance(tree, tuple) and len(tree) == 0


def state_trees(case, state):
    """The state's fields of per-parameter tensors (case.state_fields), by name, without the absent ones (())."""
    return {f: getattr(state, f) for f in case.state_fields if not is_absent(getattr(state, f))}


def ref_state_at(case, state, leaf):
    """One parameter's reference state tuple from a functional state: each
    field's ``leaf(tree)`` (None where absent), then NAdam's mu_product."""
    st = tuple(None if is_absent(getattr(state, f)) else leaf(getattr(state, f)) for f in case.state_fields)
    return (*st, state.mu_product) if isinstance(state, unrollopt.NAdamState) else st


def assert_ref_states(case, state, ref_states, rtol, atol, leaves=None):
    """The state's fields against the reference's state tuples, one per
    parameter (``leaves``: the parameters' accessors, default the list's items)."""
    leaves = leaves or [lambda tree, i=i: tree[i] for i in range(len(ref_states))]
    for k, f in enumerate(case.state_fields):
        tree = getattr(state, f)
        if is_absent(tree):
            assert all(st[k] is None for st in ref_states), f
        else:
            assert_close([leaf(tree) for leaf in leaves], [st[k] for st in ref_states], rtol, atol, f)


def away_from_ties(case, hp, grads, ref_states):
    """Lion's gradients flipped where its sign is near a tie
    (references.near_lion_tie); the other cases' as they are."""
    if case is not LION:
        return grads
    b1, maximize = hp["betas"][0], hp["maximize"]
    return [
        torch.where(near_lion_tie(st[0], gr, b1=b1, maximize=maximize), -gr, gr) for gr, st in zip(grads, ref_states)
    ]


def gradient_steps(case, settings, params, n, g):
    """n steps of random gradients like the list ``params``, each taken by the
    case's float64 reference too (on the upcast values): (the gradients per
    step, the reference's last updates, its states)."""
    hp = {**case.defaults, **settings}
    ps = [p.to(F64) for p in params]
    states = [case.ref_init(p, hp) for p in ps]
    seq = []
    for t in range(1, n + 1):
        grads = away_from_ties(case, hp, [randn(g, *p.shape, dtype=p.dtype) for p in params], states)
        new = [case.ref_step(gr.to(F64), st, p, t, hp) for gr, st, p in zip(grads, states, ps)]
        seq.append(grads)
        updates, states = [u for u, _ in new], [st for _, st in new]
    return seq, updates, states


def run_steps(opt, grads_seq, params, *, inplace):
    """(updates, state) after each step, copied (in place the next step
    overwrites them), and the last state."""
    state = opt.init(params)
    outs = []
    for grads in grads_seq:
        grads = tree_map(lambda t: t.clone(), grads)
        updates, state = opt.update(grads, state, params=params, inplace=inplace)
        outs.append(tree_map(lambda t: t.clone(), (updates, state)))
    return outs, state


@pytest.mark.parametrize("size", [0, 1, 3, 1025, 2049, 65537])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("case", by_case())
def test_fused_equals_plain_sizes(case, size, inplace):
    """The fused and plain paths at every step, over sizes about the kernels'
    blocks, in place and not; both the float64 reference's. (case.meta_steps
    steps: RAdam's rectified step starts at the 6th.)"""
    g = gen(size)
    params = [randn(g, size)]
    grads_seq, ref_updates, ref_states = gradient_steps(case, case.generic, params, case.meta_steps, g)
    a, sa = run_steps(case.alias(**case.generic), grads_seq, params, inplace=inplace)
    b, sb = run_steps(case.alias(**case.generic, use_accelerated_op=True), grads_seq, params, inplace=inplace)
    # (atol: mu' = b1 mu + (1 - b1) g' cancels at a few elements, where the
    # order of the floating-point operations shows in the relative error)
    assert_close(b, a, rtol=1e-13, atol=1e-15)
    assert int(sa.count) == int(sb.count) == case.meta_steps
    assert_close(b[-1][0], ref_updates, rtol=1e-12, atol=1e-15)
    assert_ref_states(case, sb, ref_states, 1e-12, 1e-15)
    assert size == 0 or ref_updates[0].abs().min() > 0


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("case", by_case())
def test_fused_equals_plain_dtypes_mixed_sizes(case, dtype, maximize):
    """The fused and plain paths over tensors of mixed sizes (an empty one
    included) in float32 and float64, each kept in its dtype."""
    g = gen(5)
    sizes = [(7,), (3, 5), (1,), (0,), (33, 31)]
    params = [randn(g, *s, dtype=dtype) for s in sizes]
    hp = dict(case.generic, maximize=maximize)
    grads_seq, _, _ = gradient_steps(case, hp, params, case.meta_steps, g)
    a, _ = run_steps(case.alias(**hp), grads_seq, params, inplace=False)
    b, sb = run_steps(case.alias(**hp, use_accelerated_op=True), grads_seq, params, inplace=False)
    rtol = 1e-13 if dtype == F64 else 2e-5
    # (atol where a sum cancels: an ulp of its terms, 1e-7 for terms about 1.
    # RMSprop's momentum buffer sums ratios g' / sqrt(v) that reach about 6
    # here: 1e-6 is 2 float32 ulps of those.)
    atol = 1e-15 if dtype == F64 else 1e-6 if case is RMSPROP else 1e-7
    assert_close(b, a, rtol=rtol, atol=atol)
    assert all(t.dtype == dtype for t in b[-1][0])
    assert all(t.dtype == dtype for tree in state_trees(case, sb).values() for t in tree)


def rounded(case, state, dtype):
    """The state with its per-parameter tensors rounded to ``dtype``."""
    return state._replace(**{f: [t.to(dtype) for t in tree] for f, tree in state_trees(case, state).items()})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", by_case())
def test_half_types_against_float32(case, dtype):
    """Half types are computed in float32 inside the fused kernel: a step
    (from a state some steps in, rounded to the half type) equals the float64
    reference on the upcast inputs, rounded once (up to an ulp)."""
    g = gen(6)
    shapes = [(1000,), (17, 3)]
    hp = {**case.defaults, **case.generic}
    params = [randn(g, *s) for s in shapes]
    warm = case.alias(**case.generic)
    state = warm.init(params)
    for _ in range(case.meta_steps - 1):  # (RAdam: the compared step is rectified)
        _, state = warm.update([randn(g, *s) for s in shapes], state, params=params, inplace=False)
    state = rounded(case, state, dtype)
    params = [p.to(dtype) for p in params]
    ref_states = [ref_state_at(case, state, lambda tree, i=i: tree[i].to(F64)) for i in range(len(shapes))]
    grads = away_from_ties(case, hp, [randn(g, *s, dtype=dtype) for s in shapes], ref_states)
    uf, sf = case.alias(**case.generic, use_accelerated_op=True).update(grads, state, params=params, inplace=False)
    up, sp = case.alias(**case.generic).update(grads, state, params=params, inplace=False)
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    expected = [case.ref_step(gr.to(F64), st, p.to(F64), case.meta_steps, hp)
                for gr, st, p in zip(grads, ref_states, params)]  # fmt: skip
    assert all(t.dtype == dtype for t in uf)
    assert all(t.dtype == dtype for tree in state_trees(case, sf).values() for t in tree)
    assert_close(list(uf), [u for u, _ in expected], rtol=ulp, atol=1e-6)
    assert_ref_states(case, sf, [st for _, st in expected], ulp, 1e-6)
    # The plain path computes in the half type itself: looser; where an update
    # cancels, its error is its terms' rounding, an ulp of the largest update.
    for a, b in zip(up, uf):
        assert_close(a.float(), b.float(), rtol=8 * ulp, atol=ulp * float(b.abs().max()))


@pytest.mark.parametrize("case", by_case())
def test_strided_views(fused, case):
    """Non-contiguous grads, state and params, out of place and in place (the
    views, and so their bases, are written; nothing else of the bases):
    the second step against the reference's."""
    g = gen(7)
    hp = {**case.defaults, **case.generic}
    base_p, base_p2, base_g, base_g2 = (randn(g, 40, 30) for _ in range(4))
    params = [base_p[:, ::3], base_p2.T[::2]]
    grads = [base_g[:, 1::3], base_g2.T[1::2]]
    assert not any(t.is_contiguous() for t in params + grads)
    (first, second), _, _ = gradient_steps(case, case.generic, params, 2, g)
    for view, value in zip(grads, second):
        view.copy_(value)
    opt = case.alias(**case.generic, use_accelerated_op=fused)
    _, state = opt.update(first, opt.init(params), params=params, inplace=False)
    # The state one step in, moved into views of larger tensors.
    bases = {}
    for f, tree in state_trees(case, state).items():
        base = randn(g, 80, 60)
        views = [base[::2, ::6], base[1::2, 1::4].T[:, :40][:15]]
        for view, value in zip(views, tree):
            view.copy_(value)
        bases[f] = base
        state = state._replace(**{f: views})
    assert bases and not any(t.is_contiguous() for tree in state_trees(case, state).values() for t in tree)
    expected = [case.ref_step(gr, ref_state_at(case, state, lambda tree, i=i: tree[i]), p, 2, hp)
                for i, (gr, p) in enumerate(zip(grads, params))]  # fmt: skip
    ref_updates, ref_states = [u for u, _ in expected], [st for _, st in expected]
    u, s2 = opt.update(grads, state, params=params, inplace=False)
    assert_close(list(u), ref_updates, rtol=1e-13, atol=1e-18)
    assert_ref_states(case, s2, ref_states, 1e-13, 1e-18)

    # In place: the views (and so their bases) are written.
    snaps = {f: base.clone() for f, base in bases.items()}
    grads_c = [base_g.clone()[:, 1::3], base_g2.clone().T[1::2]]  # non-contiguous, overwritten by the updates
    u2, s3 = opt.update(grads_c, state, params=params, inplace=True)
    assert_close(grads_c, ref_updates, rtol=1e-13, atol=1e-18)
    assert_close(list(u2), ref_updates, rtol=1e-13, atol=1e-18)
    assert_ref_states(case, s3, ref_states, 1e-13, 1e-18)
    assert_ref_states(case, state, ref_states, 1e-13, 1e-18)  # the state's own views
    # Elements of the bases outside the views are untouched.
    touched = torch.zeros(80, 60, dtype=torch.bool)
    touched[::2, ::6] = True
    touched[1::2, 1::4].T[:, :40][:15] = True
    for f, base in bases.items():
        assert torch.equal(base[~touched], snaps[f][~touched]), f
        assert not torch.equal(base[touched], snaps[f][touched]), f
    # apply_updates in place on strided params.
    before = [p.clone() for p in params]
    unrollopt.apply_updates(params, u2)
    assert_close(params, [b + du for b, du in zip(before, u2)], rtol=1e-15, atol=0)


@pytest.mark.parametrize("case", by_case())
def test_pytrees_dict_tuple_and_none_leaves(fused, case):
    """Parameters in dicts, tuples and lists with None leaves: the state has
    None there and the reference's initial values elsewhere; the first step's
    updates are None there and the reference's elsewhere."""
    g = gen(8)
    hp = {**case.defaults, **case.generic}
    params = {"w": randn(g, 3, 2), "frozen": None, "blocks": (randn(g, 4), [randn(g, 2, 2), None])}
    live = [lambda t: t["w"], lambda t: t["blocks"][0], lambda t: t["blocks"][1][0]]
    opt = case.alias(**case.generic, use_accelerated_op=fused)
    state = opt.init(params)
    assert state_trees(case, state)
    for f, tree in state_trees(case, state).items():
        assert tree["frozen"] is None and tree["blocks"][1][1] is None, f
    assert_ref_states(case, state, [case.ref_init(leaf(params), hp) for leaf in live], 0, 0, live)
    grads = {"w": randn(g, 3, 2), "frozen": None, "blocks": (randn(g, 4), [randn(g, 2, 2), None])}
    updates, state2 = opt.update(grads, state, params=params, inplace=False)
    assert updates["frozen"] is None and updates["blocks"][1][1] is None
    expected = [case.ref_step(leaf(grads), case.ref_init(leaf(params), hp), leaf(params), 1, hp) for leaf in live]
    assert_close([leaf(updates) for leaf in live], [u for u, _ in expected], rtol=1e-13)
    assert_ref_states(case, state2, [st for _, st in expected], 1e-13, 0, live)
    new_params = unrollopt.apply_updates(params, updates, inplace=False)
    assert new_params["frozen"] is None and new_params["blocks"][1][1] is None
    assert_close(new_params["w"], params["w"] + updates["w"], rtol=0, atol=0)


@pytest.mark.parametrize("case", by_case())
def test_none_grad_leaves_keep_their_state(fused, case):
    """A parameter without a gradient this step (None grad, tensor state) keeps
    its state and gets a None update; the others' state moves on."""
    g = gen(9)
    params = {"a": randn(g, 3), "b": randn(g, 4)}
    opt = case.alias(**case.generic, use_accelerated_op=fused)
    _, state = opt.update({"a": randn(g, 3), "b": randn(g, 4)}, opt.init(params), params=params, inplace=False)
    u, state2 = opt.update({"a": randn(g, 3), "b": None}, state, params=params, inplace=False)
    assert u["b"] is None and u["a"].abs().min() > 0
    assert state_trees(case, state)
    for f, tree in state_trees(case, state).items():
        new = getattr(state2, f)
        assert new["b"] is tree["b"], f
        assert not torch.equal(new["a"], tree["a"]), f
    assert int(state2.count) == 2


@pytest.mark.parametrize("case", by_case())
def test_inplace_equals_out_of_place(fused, case):
    """update(..., inplace=True) gives the updates and states of inplace=False, step by step."""
    g = gen(10)
    params = [randn(g, 50), randn(g, 3, 3)]
    grads_seq, _, _ = gradient_steps(case, case.generic, params, 4, g)
    opt = case.alias(**case.generic, use_accelerated_op=fused)
    a, sa = run_steps(opt, grads_seq, params, inplace=False)
    b, sb = run_steps(opt, grads_seq, params, inplace=True)
    assert_close(b, a, rtol=1e-15, atol=0)
    assert int(sb.count) == 4 and a[-1][0][0].abs().min() > 0


# Initial states the steps ignore: SGD's first step starts its buffer at the
# gradient (torch.optim.SGD's rule), Adamax's maximum at a 0 nu selects |g'| + eps,
# and Adan's first step has no gradient difference (the authors' rule).
IGNORED_INITIAL = {"sgd": {"momentum_buffer"}, "adamax": {"nu"}, "adan": {"prev_grad"}}


@pytest.mark.parametrize("case", by_case())
def test_moment_requires_grad(fused, case):
    """moment_requires_grad=True: the initial state requires grad; the
    gradients of the final parameters and state with respect to it are the
    float64 reference's (exactly 0 for what the steps ignore)."""
    g = gen(3)
    p0 = randn(g, 5, requires_grad=True)
    target = randn(g, 5)
    opt = case.alias(**case.generic, moment_requires_grad=True, use_accelerated_op=fused)
    state = opt.init((p0,))
    initial = {f: tree[0] for f, tree in state_trees(case, state).items()}
    assert initial and all(t.requires_grad for t in initial.values())
    assert state.count.dtype == torch.int64 and int(state.count) == 0
    params = (p0,)
    for _ in range(2):
        grads = torch.autograd.grad(((params[0] - target) ** 2).sum(), params, create_graph=True)
        updates, state = opt.update(grads, state, params=params, inplace=False)
        params = unrollopt.apply_updates(params, updates, inplace=False)
    assert int(state.count) == 2
    final = [tree[0] for tree in state_trees(case, state).values()]
    got = torch.autograd.grad((params[0] ** 2).sum() + sum(t.sum() for t in final), list(initial.values()),
                              allow_unused=True, materialize_grads=True)  # fmt: skip
    # The reference from the same initial values, as leaves that require grad.
    hp = {**case.defaults, **case.generic}
    st = ref_state_at(case, opt.init((p0,)), lambda tree: tree[0].detach().clone().requires_grad_())
    leaves = [st[case.state_fields.index(f)] for f in initial]
    p = p0
    for t in (1, 2):
        (gr,) = torch.autograd.grad(((p - target) ** 2).sum(), (p,), create_graph=True)
        u, st = case.ref_step(gr, st, p, t, hp)
        p = p + u
    ref_final = [st[case.state_fields.index(f)] for f in initial]
    expected = torch.autograd.grad((p**2).sum() + sum(t.sum() for t in ref_final), leaves,
                                   allow_unused=True, materialize_grads=True)  # fmt: skip
    assert_rel(got, expected, 1e-10, "gradient w.r.t. the initial state")
    for f, gr in zip(initial, got):
        assert (not gr.any()) if f in IGNORED_INITIAL.get(case.name, ()) else gr.abs().min() > 0, f


@pytest.mark.parametrize("hyper_dtype", [F64, torch.float32])
@pytest.mark.parametrize("case", by_case())
def test_second_order_path_agrees_with_first_order_path(case, hyper_dtype):
    """The fused op's backward runs the fused kernel normally and, when the
    backward itself must be differentiable (create_graph=True), the same math
    on tensors: both give the same first-order meta-gradient (the case's first
    tensor hyperparameters learned), to float64 rounding also with float32
    hyperparameters (the forward computes its coefficients in float64
    whatever their dtypes)."""
    _, _, cfg = case.tensor_configs[0]
    pb = make_problem(4)
    hp, learned = materialize(cfg, hyper_dtype)
    opt = case.alias(**hp, use_accelerated_op=True)
    wrt = (pb["w0"], pb["b0"], pb["meta_w"])
    loss, _, _ = unrolled_unrollopt(pb, opt, steps=case.meta_steps, use_params=uses_params(cfg))
    first = torch.autograd.grad(loss, wrt, retain_graph=True)
    second = torch.autograd.grad(loss, wrt, create_graph=True)
    assert_rel(second, first, 1e-13, "meta-gradient with create_graph=True")
    assert_live(case, direct=first[:2], through_grads=first[2:])
    assert learned and second[0].grad_fn is not None  # (that backward was differentiable)


def test_apply_updates():
    """apply_updates: params + updates leaf by leaf (None updates leave a leaf
    as it is), out of place or in place (also on leaves that require grad)."""
    g = gen(11)
    params = (randn(g, 3), {"x": randn(g, 2), "y": None})
    updates = (randn(g, 3), {"x": None, "y": None})
    out = unrollopt.apply_updates(params, updates, inplace=False)
    assert torch.equal(out[0], params[0] + updates[0])
    assert out[1]["x"] is params[1]["x"] and out[1]["y"] is None
    before = params[0].clone()
    res = unrollopt.apply_updates(params, updates)
    assert res is params
    assert torch.equal(params[0], before + updates[0])
    # In place on leaves that require grad (a plain optimizer step) is allowed.
    p = randn(g, 3, requires_grad=True)
    u = randn(g, 3)
    ref = p.detach() + u
    unrollopt.apply_updates([p], [u])
    assert torch.equal(p.detach(), ref) and p.is_leaf


# --- the Meta classes ----------------------------------------------------------------


class Net(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = gen(seed)
        self.fc1 = nn.Linear(3, 6).to(F64)
        self.fc2 = nn.Linear(6, 1).to(F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def net_data():
    g = gen(1)
    return randn(g, 10, 3), randn(g, 10, 1), randn(g, 10, 1, requires_grad=True)


def net_inner_loss(out, y, meta):
    return ((out - y) ** 2 * torch.sigmoid(meta)).mean()


def reference_meta(case, net, steps, hp):
    """The case's reference on a functional copy of the parameters:
    (outer loss, meta data, final parameters by name)."""
    hp = {**case.defaults, **hp}
    x, y, meta = net_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    states = {k: case.ref_init(v, hp) for k, v in params.items()}
    for t in range(1, steps + 1):
        loss = net_inner_loss(functional_call(net, params, (x,)), y, meta)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(params.items(), grads):
            u, states[k] = case.ref_step(g, states[k], p, t, hp)
            new[k] = p + u
        params = new
    return functional_call(net, params, (x,)).pow(2).sum(), meta, params


@pytest.mark.parametrize("case,item", table("meta_class_configs", lambda it: it[0]))
def test_meta_class_meta_gradient_matches_reference(fused, case, item):
    _, seed, cfg = item
    net = Net(seed)
    rhp, rlearned = materialize(cfg)
    ref_outer, ref_meta, ref_params = reference_meta(case, net, case.meta_steps, rhp)
    expected = torch.autograd.grad(ref_outer, [*rlearned, ref_meta])
    x, y, meta = net_data()
    hp, learned = materialize(cfg)
    opt = case.meta_cls(net, **hp, use_accelerated_op=fused)
    for _ in range(case.meta_steps):
        opt.step(net_inner_loss(net(x), y, meta))
    outer = net(x).pow(2).sum()
    got = torch.autograd.grad(outer, [*learned, meta])
    assert abs(outer.item() - ref_outer.item()) <= 1e-12 * abs(ref_outer.item())
    assert_rel(got, expected, 1e-10, "meta-gradient")
    assert_live(case, through_grads=got[-1:])
    assert all(float(g) != 0 for g in got[:-1])
    for name, p in net.named_parameters():
        assert max_rel_err(p, ref_params[name]) <= 1e-12, name


@pytest.mark.parametrize("case,item", table("meta_optimizer_configs", lambda it: it[0]))
def test_meta_optimizer_with_alias_equals_meta_class(fused, case, item):
    _, kwargs = item
    results = []
    for make in (
        lambda net: unrollopt.MetaOptimizer(net, case.alias(**kwargs, use_accelerated_op=fused)),
        lambda net: case.meta_cls(net, **kwargs, use_accelerated_op=fused),
    ):
        net = Net(3)
        x, y, meta = net_data()
        opt = make(net)
        for _ in range(3):
            opt.step(net_inner_loss(net(x), y, meta))
        outer = net(x).pow(2).sum()
        params = [p.detach() for p in net.parameters()]
        results.append((outer.detach(), params, torch.autograd.grad(outer, meta)[0]))
    (o1, p1, g1), (o2, p2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(g1, g2)
    assert_live(case, through_grads=[g1])
    for a, b in zip(p1, p2):
        assert torch.equal(a, b)
    assert not torch.equal(p1[0], Net(3).fc1.weight.detach())  # the steps moved the parameters


# --- torch.func transforms -------------------------------------------------------------
# The unrolled problem written the torch.func way: inner gradients by
# torch.func.grad, the meta-parameters (and learned hyperparameters) as
# arguments, against the float64 reference through plain autograd.

DATA = ("x", "y", "xv", "yv")


def substitute(cfg, values):
    """cfg with its L markers replaced, in order, by ``values``."""
    it = iter(values)

    def conv(v):
        if isinstance(v, L):
            return next(it)
        return tuple(conv(x) for x in v) if isinstance(v, tuple) else v

    return {k: conv(v) for k, v in cfg.items()}


def leaves_of(cfg, kind):
    """cfg's values of type ``kind``, in order (looking into tuples such as betas)."""
    found = []

    def walk(v):
        if isinstance(v, kind):
            found.append(v)
        elif isinstance(v, tuple):
            for x in v:
                walk(x)

    for v in cfg.values():
        walk(v)
    return found


def func_unrolled(case, cfg, fused, out="loss"):
    """f(learned, meta_w, w0, b0, x, y, xv, yv): the outer loss (or with
    out="params" the final parameters) after case.meta_steps steps of
    case.alias(**cfg), cfg's L markers taken from the tuple ``learned``."""
    decay = uses_params(cfg)

    def f(learned, meta_w, w0, b0, x, y, xv, yv):
        pb = dict(x=x, y=y, xv=xv, yv=yv, meta_w=meta_w)
        opt = case.alias(**substitute(cfg, learned), use_accelerated_op=fused)
        params = (w0, b0)
        state = opt.init(params)
        for _ in range(case.meta_steps):
            grads = torch.func.grad(lambda p: inner_loss(pb, *p))(params)
            updates, state = opt.update(grads, state, params=params if decay else None, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        return outer_loss(pb, *params) if out == "loss" else params

    return f


def reference_run(case, cfg, pb, learned=()):
    """The reference's (outer loss, final params) with cfg's L markers set to
    0-d tensors of ``learned`` that require grad (returned too)."""
    hp = substitute(cfg, [torch.tensor(float(v), dtype=F64, requires_grad=True) for v in learned])
    tensors = leaves_of(hp, torch.Tensor)
    loss, params, _ = unrolled_reference(case, pb, hp, steps=case.meta_steps)
    return loss, params, tensors


def func_args(pb, device="cpu"):
    return tuple(pb[k].detach().to(device) for k in ("meta_w", "w0", "b0", *DATA))


def on_cpu(tree):
    return torch.utils._pytree.tree_map(lambda t: t.cpu(), tree)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(bool(cuda_skip_reason()), reason=cuda_skip_reason() or "-")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,cfg", table("meta_configs", options_id))
def test_func_grad_vjp_jacrev_match_reference(fused, case, cfg, device):
    """grad, grad_and_value, vjp and jacrev of the unrolled loop, with respect
    to the data's weights and the initial parameters."""
    cfg = dict(lr=case.meta_lr, **cfg)
    pb = make_problem(0)
    args = func_args(pb, device)
    f = func_unrolled(case, cfg, fused)
    ref_loss, ref_params, _ = reference_run(case, cfg, pb)
    meta = (pb["meta_w"], pb["w0"], pb["b0"])
    expected = torch.autograd.grad(ref_loss, meta, retain_graph=True)

    got, loss = torch.func.grad_and_value(f, argnums=(1, 2, 3))((), *args)
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert_rel(on_cpu(got), expected, 1e-10, "grad")

    final = func_unrolled(case, cfg, fused, out="params")
    cotangents = (randn(gen(5), 3, 4), randn(gen(6), 3))
    params, pullback = torch.func.vjp(lambda mw: final((), mw, *args[1:]), args[0])
    assert_rel(on_cpu(params), ref_params, 1e-12, "params")
    (vjp_w,) = pullback(tuple(c.to(device) for c in cotangents))
    (expected_vjp,) = torch.autograd.grad(ref_params, pb["meta_w"], cotangents, retain_graph=True)
    assert_rel([vjp_w.cpu()], [expected_vjp], 1e-10, "vjp")

    jac = torch.func.jacrev(lambda mw: final((), mw, *args[1:])[1], argnums=0)(args[0]).cpu()
    rows = [torch.autograd.grad(ref_params[1][i], pb["meta_w"], retain_graph=True)[0] for i in range(3)]
    assert_rel([jac], [torch.stack(rows)], 1e-10, "jacrev")
    assert_live(case, through_grads=(got[0], vjp_w, jac), direct=got[1:])


def task_batch(n=3):
    """Data of n tasks (the shared problem with other seeds), stacked at dim 0."""
    problems = [make_problem(10 + k) for k in range(n)]
    return problems, tuple(torch.stack([p[k] for p in problems]) for k in DATA)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,cfg", table("meta_configs", options_id))
def test_func_vmap_over_tasks_matches_reference(fused, case, cfg, device):
    """vmap(grad(...)) over a meta-batch of tasks (x batched at dim 1, per-task
    initial weights), and grad(vmap(...)) of their summed loss."""
    cfg = dict(lr=case.meta_lr, **cfg)
    pb = make_problem(0)
    problems, data = task_batch()
    w0s = torch.stack([p["w0"].detach() for p in problems])
    x, y, xv, yv = (t.to(device) for t in data)
    meta_w, b0 = pb["meta_w"].detach().to(device), pb["b0"].detach().to(device)
    f = func_unrolled(case, cfg, fused)
    dims = (None, None, 0, None, 1, 0, 0, 0)
    got = torch.func.vmap(torch.func.grad(f, argnums=(1, 2, 3)), in_dims=dims)(
        (), meta_w, w0s.to(device), b0, x.transpose(0, 1), y, xv, yv
    )
    summed = torch.func.grad(lambda mw, bb: torch.func.vmap(f, in_dims=dims)(
        (), mw, w0s.to(device), bb, x.transpose(0, 1), y, xv, yv).sum(), argnums=(0, 1))(meta_w, b0)  # fmt: skip
    totals = [torch.zeros_like(pb["meta_w"]), torch.zeros_like(pb["b0"])]
    for k, task in enumerate(problems):
        task = dict(task, meta_w=pb["meta_w"], b0=pb["b0"], w0=task["w0"].detach().requires_grad_())
        ref_loss, _, _ = reference_run(case, cfg, task)
        expected = torch.autograd.grad(ref_loss, (task["meta_w"], task["w0"], task["b0"]))
        assert_rel([g[k].cpu() for g in got], expected, 1e-10, f"task {k}")
        totals = [a + e for a, e in zip(totals, (expected[0], expected[2]))]
    assert_rel(on_cpu(summed), totals, 1e-10, "grad of the summed loss")


@pytest.mark.parametrize("case,item", table("tensor_configs", lambda it: it[0]))
def test_func_vmap_batched_hyperparameters(fused, case, item):
    """Per-task hyperparameters batched by vmap: each task steps with its own
    values and gets its own exact hyperparameter gradients."""
    _, seed, cfg = item
    pb = make_problem(seed)
    base = [m.value for m in leaves_of(cfg, L)]
    # (Close enough that RAdam still rectifies within its steps: beta2 is learned.)
    tasks = [base, [0.95 * v + (0.05 if v == 0 else 0.0) for v in base]]
    learned = tuple(torch.tensor([t[i] for t in tasks], dtype=F64) for i in range(len(base)))
    f = func_unrolled(case, cfg, fused)
    args = func_args(pb)
    in_dims = (tuple(0 for _ in base),) + (None,) * len(args)
    losses = torch.func.vmap(f, in_dims=in_dims)(learned, *args)
    grads = torch.func.vmap(torch.func.grad(f, argnums=(0, 1)), in_dims=in_dims)(learned, *args)
    for k, values in enumerate(tasks):
        ref_loss, _, tensors = reference_run(case, cfg, pb, values)
        expected = torch.autograd.grad(ref_loss, [*tensors, pb["meta_w"]])
        assert abs(losses[k].item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
        assert_rel([g[k] for g in grads[0]] + [grads[1][k]], expected, 1e-10, f"task {k}")
    assert not torch.equal(losses[0], losses[1])


HESSIAN_CASES = {"sgd": dict(momentum=0.9), "adam": dict(eps=1e-3), "rmsprop": dict(momentum=0.5, centered=True)}


@pytest.mark.parametrize("name", list(HESSIAN_CASES))
def test_func_hessian_jvp_functionalize(fused, name):
    """Second order through the backward (hessian = jacfwd(jacrev)), forward
    mode (jvp) and functionalize, against plain autograd on the reference."""
    case = CASES[name]
    cfg = dict(lr=case.meta_lr, **HESSIAN_CASES[name])
    pb = make_problem(0)
    args = func_args(pb)
    f = func_unrolled(case, cfg, fused)
    ref_f = lambda mw: reference_run(case, cfg, dict(pb, meta_w=mw))[0]  # noqa: E731
    hess = torch.func.hessian(lambda mw: f((), mw, *args[1:]))(args[0])
    expected = torch.autograd.functional.hessian(ref_f, pb["meta_w"].detach())
    assert_rel([hess], [expected], 1e-10, "hessian")
    assert expected.abs().max() > 0

    tangent = randn(gen(9), 8)
    value, jvp = torch.func.jvp(lambda mw: f((), mw, *args[1:]), (args[0],), (tangent,))
    ref_loss = ref_f(pb["meta_w"])
    (grad,) = torch.autograd.grad(ref_loss, pb["meta_w"])
    assert abs(value.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    assert abs(jvp.item() - (grad * tangent).sum().item()) <= 1e-10 * (grad.abs() * tangent.abs()).sum().item()
    assert torch.equal(torch.func.functionalize(f)((), *args), f((), *args))


@pytest.mark.parametrize("case,cfg", table("meta_configs", options_id))
def test_vmap_init_and_update(fused, case, cfg):
    """vmap(opt.init) over stacked parameters (states hold only tensors), then
    vmap(opt.update) over the stacked states: per-sample init and update."""
    opt = case.alias(lr=case.meta_lr, **cfg, use_accelerated_op=fused)
    g = gen(4)
    params = {"w": randn(g, 3, 4, 2), "b": randn(g, 3, 2)}
    grads = {"w": randn(g, 3, 4, 2), "b": randn(g, 3, 2)}
    states = torch.func.vmap(opt.init)(params)
    decay = params if uses_params(cfg) else None
    step = lambda gr, st, p: opt.update(gr, st, params=p, inplace=False)  # noqa: E731
    updates, new_states = torch.func.vmap(step, in_dims=(0, 0, None if decay is None else 0))(grads, states, decay)
    for k in range(3):
        sample = lambda tree, k=k: torch.utils._pytree.tree_map(lambda t: t[k], tree)  # noqa: E731
        one = opt.init(sample(params))
        u, s = opt.update(sample(grads), one, params=None if decay is None else sample(decay), inplace=False)
        for a, b in zip(torch.utils._pytree.tree_leaves(sample(states)), torch.utils._pytree.tree_leaves(one)):
            assert torch.equal(a, b)
        for a, b in zip(torch.utils._pytree.tree_leaves((sample(updates), sample(new_states))),
                        torch.utils._pytree.tree_leaves((u, s))):  # fmt: skip
            torch.testing.assert_close(a, b, rtol=1e-14, atol=0)
    assert torch.utils._pytree.tree_structure(states) == torch.utils._pytree.tree_structure(opt.init(params))


@pytest.mark.parametrize("case", by_case())
def test_vmap_inplace_update(fused, case):
    """update(..., inplace=True) under vmap writes every sample's step into the
    batched gradients and states; writing into an unbatched tensor while the
    others are batched is a clear error."""
    opt = case.alias(lr=case.meta_lr, use_accelerated_op=fused)
    g = gen(8)
    params = randn(g, 3, 5)
    grads = randn(g, 3, 5)
    expected = [opt.update(grads[k], opt.init(params[k]), params=params[k], inplace=False) for k in range(3)]
    states = torch.func.vmap(opt.init)(params)
    written = grads.clone()
    with torch.no_grad():
        updates, new_states = torch.func.vmap(lambda gr, st, p: opt.update(gr, st, params=p, inplace=True))(
            written, states, params
        )
    assert torch.equal(updates, written)  # written in place
    for k, (u, s) in enumerate(expected):
        # The same element-wise arithmetic per sample.
        torch.testing.assert_close(written[k], u, rtol=1e-14, atol=0)
        for a, b in zip(torch.utils._pytree.tree_leaves(s), torch.utils._pytree.tree_leaves(new_states)):
            torch.testing.assert_close(b[k], a, rtol=1e-14, atol=0)
    one = opt.init(params[0])
    if fused and torch.utils._pytree.tree_leaves(one)[:-1]:  # a state to write
        with pytest.raises(ValueError, match="not batched"):
            torch.func.vmap(lambda gr, p: opt.update(gr, one, params=p, inplace=True))(grads.clone(), params)


# --- hyperparameter validation -------------------------------------------------------


def make_api(case, api, kw):
    if api == "alias":
        return case.alias(**kw)
    if api == "class":
        return case.cls([torch.zeros(2, requires_grad=True)], **kw)
    return case.meta_cls(nn.Linear(2, 1), **kw)


APIS = ["alias", "class", "meta_class"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case,item", table("bad", lambda it: it[0]))
def test_bad_hyperparameter_value(case, item, api):
    name, kwargs = item
    with pytest.raises(ValueError, match=re.escape(name)):
        make_api(case, api, kwargs)


# === optimizer-specific tests =========================================================

# --- SGD ---


def test_sgd_parameter_that_gets_gradients_later_starts_its_own_buffer(fused):
    """With momentum, a parameter's buffer starts as its first gradient, while
    others in the group continue theirs (two step numbers in one group), as in
    torch.optim.SGD."""
    g = gen(3)
    a = randn(g, 4, requires_grad=True)
    b = randn(g, 3, requires_grad=True)
    a2 = a.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_()
    hp = dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)
    opt = unrollopt.SGD([a, b], **hp, use_accelerated_op=fused)
    ref = torch.optim.SGD([a2, b2], **hp)
    for params, o in (([a, b], opt), ([a2, b2], ref)):
        (params[0] ** 2).sum().backward()
        o.step()
    assert set(opt.state[a]) == {"momentum_buffer"} and len(opt.state[b]) == 0
    for _ in range(3):
        for params, o in (([a, b], opt), ([a2, b2], ref)):
            o.zero_grad()
            ((params[0] ** 2).sum() * params[1][0] + (params[1] ** 3).sum()).backward()
            o.step()
    assert_params_rel([a, b], [a2, b2], 1e-13)
    for p, q in ((a, a2), (b, b2)):
        assert max_rel_err(opt.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"]) <= 1e-13


def test_sgd_step_errors_do_not_modify_anything(fused):
    """SGD.step validates every group before it updates any."""
    g = gen(7)
    a = randn(g, 3, requires_grad=True)
    b = randn(g, 2, requires_grad=True)
    opt = unrollopt.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9, use_accelerated_op=fused)
    a.grad = randn(g, 3)
    b.grad = randn(g, 2)
    opt.param_groups[1]["momentum"] = -0.5
    before = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(ValueError, match="momentum"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert len(opt.state[a]) == 0 and len(opt.state[b]) == 0


@pytest.mark.parametrize("api", APIS)
def test_sgd_nesterov_needs_momentum_and_no_dampening(api):
    with pytest.raises(ValueError, match="nesterov"):
        make_api(SGD, api, dict(nesterov=True))  # no momentum
    with pytest.raises(ValueError, match="nesterov"):
        make_api(SGD, api, dict(momentum=0.9, dampening=0.1, nesterov=True))
    # The valid combinations are accepted.
    make_api(SGD, api, dict(momentum=0.9, nesterov=True))
    make_api(SGD, api, dict(momentum=0.9, dampening=0.1))
    make_api(SGD, api, dict(lr=0.0, momentum=0.0, dampening=0.0, weight_decay=0.0))


def test_sgd_state():
    """unrollopt.sgd's state: a momentum buffer like the parameters (None without
    momentum) and the step count."""
    params = {"w": torch.ones(2, 3, dtype=F64), "b": torch.ones(3, dtype=F64)}
    plain = unrollopt.sgd(lr=0.1).init(params)
    assert isinstance(plain, unrollopt.SgdState) and plain.momentum_buffer == ()
    assert plain.count.dtype == torch.int64 and int(plain.count) == 0
    opt = unrollopt.sgd(lr=0.1, momentum=0.9, moment_requires_grad=True)
    state = opt.init(params)
    assert state.momentum_buffer.keys() == params.keys()
    assert all(b.requires_grad and b.shape == params[k].shape and not b.any() for k, b in state.momentum_buffer.items())
    g = gen(8)
    grads = {k: randn(g, *p.shape) for k, p in params.items()}
    updates, state = opt.update(grads, state, inplace=False)
    assert int(state.count) == 1
    assert_close(state.momentum_buffer, grads, rtol=0, atol=0)  # the first buffer is the gradient
    assert_close(updates, {k: -0.1 * v for k, v in grads.items()}, rtol=1e-15)


# --- weight decay needs params (AdamW, Adamax) ---


@pytest.mark.parametrize("case", [pytest.param(ADAMW, id="adamw"), pytest.param(ADAMAX, id="adamax")])
def test_needs_params_with_weight_decay(fused, case):
    params = {"w": torch.ones(3, dtype=F64)}
    opt = case.alias(weight_decay=0.1, use_accelerated_op=fused)
    state = opt.init(params)
    grads = {"w": randn(gen(2), 3)}
    with pytest.raises(ValueError, match="weight_decay"):
        opt.update(grads, state)
    opt0 = case.alias(lr=0.1, weight_decay=0.0, use_accelerated_op=fused)
    u, _ = opt0.update(grads, opt0.init(params), inplace=False)
    assert u["w"].abs().min() > 0
    if case is ADAMW:
        # Without weight decay no params are needed, and the step is Adam's.
        ua, _ = unrollopt.adam(lr=0.1, use_accelerated_op=fused).update(grads, unrollopt.adam().init(params),
                                                                        inplace=False)  # fmt: skip
        assert torch.equal(u["w"], ua["w"])
    else:
        # Without weight decay no params are needed; the first step is -lr * g / (|g| + eps).
        torch.testing.assert_close(u["w"], -0.1 * grads["w"] / (grads["w"].abs() + 1e-8), rtol=1e-14, atol=0)


# --- removable 0/0 where a second moment is exactly 0 ---


def _dead_element_problem():
    g = gen(4)
    x = randn(g, 6, 3)
    y = randn(g, 6)
    xv = randn(g, 5, 3)
    yv = randn(g, 5)
    w0 = randn(g, 3, requires_grad=True)
    return x, y, xv, yv, w0


ZERO_CASES = {
    # name: (alias kwargs, lr, use params, state field, whether the dead element only decays)
    "adamw": (dict(betas=(0.9, 0.99), weight_decay=0.1), 0.1, True, "nu", True),
    "rmsprop": (dict(alpha=0.9, momentum=0.5), 0.05, False, "square_avg", False),
    "adagrad": (dict(lr_decay=0.1), 0.05, False, "sum", False),
    "radam": (dict(betas=(0.8, 0.9)), 0.1, False, "nu", False),
    "nadam": (dict(betas=(0.8, 0.9), weight_decay=0.0), 0.1, False, "nu", False),
}


@pytest.mark.parametrize("name", list(ZERO_CASES))
def test_exact_backward_where_second_moment_is_zero(name):
    """A parameter element the inner loss ignores: its gradient and second
    moment (nu, square_avg, sum) stay exactly 0 and so does its update (only
    AdamW's decoupled decay moves it). Naive autograd gets NaN from sqrt'(0);
    the fused backward and the plain paths (which do not differentiate sqrt
    where the update ignores it) are exact and finite, and equal plain autograd
    on the problem without that element (where it is fixed, or only decays)."""
    case = CASES[name]
    kwargs, lr0, use_params, field_name, decays = ZERO_CASES[name]
    x, y, xv, yv, w0 = _dead_element_problem()
    lr = torch.tensor(lr0, dtype=F64, requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 0.0], dtype=F64)

    def run(fused):
        opt = case.alias(lr=lr, **kwargs, use_accelerated_op=fused)
        params = (w0,)
        state = opt.init(params)
        for _ in range(3):
            grads = torch.autograd.grad(((x @ (params[0] * mask) - y) ** 2).mean(), params, create_graph=True)
            updates, state = opt.update(grads, state, params=params if use_params else None, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        assert float(getattr(state, field_name)[0][2].detach()) == 0.0
        if not decays:
            assert float(params[0][2].detach()) == float(w0[2].detach())
        return torch.autograd.grad(((xv @ params[0] - yv) ** 2).mean(), (w0, lr))

    plain = run(False)
    fused = run(True)
    assert all(is_finite(t) for t in fused)
    assert_rel(list(plain), list(fused), 1e-10, "plain vs fused")
    # Reference: the live elements by plain autograd, the dead one fixed or only decaying.
    lr2 = lr.detach().clone().requires_grad_()
    live = w0.detach()[:2].clone().requires_grad_()
    dead = w0.detach()[2:].clone().requires_grad_()
    hp = {**case.defaults, **kwargs, "lr": lr2}
    p, q, st = live, dead, case.ref_init(live.detach(), hp)
    for t in (1, 2, 3):
        (gr,) = torch.autograd.grad(((x[:, :2] @ p - y) ** 2).mean(), (p,), create_graph=True)
        u, st = case.ref_step(gr, st, p if use_params else None, t, hp)
        p = p + u
        if decays:
            q = q - lr2 * hp["weight_decay"] * q
    expected = torch.autograd.grad(((xv @ torch.cat([p, q]) - yv) ** 2).mean(), (live, dead, lr2))
    assert_rel([fused[0], fused[1]], [torch.cat(expected[:2]), expected[2]], 1e-10, "meta-gradient")


# --- Adam: the exact backward where nu = 0, eps_root, float32 hyperparameters ---


@pytest.mark.parametrize("wrt_hyper", [False, True])
def test_adam_exact_backward_where_second_moment_is_zero(wrt_hyper):
    """eps_root=0 and a parameter element the inner loss does not depend on (it is
    multiplied by a 0 mask, as a pruned weight is): its gradient is exactly 0 at
    every step, so its second moment stays exactly 0 and its update is
    identically 0 (mu' = 0 in the numerator). Naive autograd differentiates sqrt
    at 0, gets 0 * inf = NaN, and the NaN reaches every meta-gradient through the
    mask's product (NaN * 0 = NaN) and beta2 through the bias correction. The
    fused operator's hand-written backward is exact there (d u / d nu' = 0 where
    mu' = 0), and so is the plain path; the meta-gradients are finite and equal
    to those of the problem with that element removed (whose own meta-gradient
    is analytical: w[2] stays w0[2], so d outer / d w0[2] = w0[2])."""
    g = gen(4)
    x = randn(g, 6, 3)
    y = randn(g, 6)
    xv = randn(g, 5, 2)
    yv = randn(g, 5)
    w0 = randn(g, 3, requires_grad=True)  # w0[2] never enters the inner loss
    h = [torch.tensor(v, dtype=F64, requires_grad=wrt_hyper) for v in (0.1, 0.9, 0.99)]

    mask = torch.tensor([1.0, 1.0, 0.0], dtype=F64)

    def inner(w):
        return ((x @ (w * mask) - y) ** 2).mean()

    def outer(w):
        return ((xv @ w[:2] - yv) ** 2).mean() + w[2] ** 2 * 0.5

    def run(fused):
        opt = unrollopt.adam(lr=h[0], betas=(h[1], h[2]), eps=1e-8, eps_root=0.0, use_accelerated_op=fused)
        params = (w0,)
        state = opt.init(params)
        for _ in range(3):
            grads = torch.autograd.grad(inner(params[0]), params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = unrollopt.apply_updates(params, updates, inplace=False)
        assert float(state.nu[0][2].detach()) == 0.0 and float(state.mu[0][2].detach()) == 0.0
        assert float(params[0][2].detach()) == float(w0[2].detach())  # the update there is exactly 0
        wrt = (w0, *h) if wrt_hyper else (w0,)
        return torch.autograd.grad(outer(params[0]), wrt)

    # Both paths are exact there: the fused backward by construction, the plain
    # path by not differentiating sqrt(nu') where mu' = 0.
    fused_grads = run(fused=True)
    assert all(is_finite(t) for t in fused_grads)
    plain = run(fused=False)
    assert_rel(plain, fused_grads, 1e-10, "plain vs fused")

    # Reference: the live elements alone, the dead element analytically
    # (d outer / d w0[2] = w0[2], since w[2] = w0[2] at every step).
    live0 = w0.detach()[:2].clone().requires_grad_()
    hr = [t.detach().clone().requires_grad_() for t in h]
    p, m, v = live0, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    for t in (1, 2, 3):
        (gr,) = torch.autograd.grad(((x[:, :2] @ p - y) ** 2).mean(), (p,), create_graph=True)
        u, m, v = ref_adam_step(gr, m, v, None, t, lr=hr[0], b1=hr[1], b2=hr[2], eps=1e-8)
        p = p + u
    ref_out = ((xv @ p - yv) ** 2).mean()
    wrt = (live0, *hr) if wrt_hyper else (live0,)
    ref = torch.autograd.grad(ref_out, wrt)
    expected_w = torch.cat([ref[0], w0.detach()[2:]])
    assert_rel([fused_grads[0]], [expected_w], 1e-10, "meta-gradient w.r.t. w0")
    if wrt_hyper:
        assert_rel(fused_grads[1:], ref[1:], 1e-10, "meta-gradient w.r.t. hyperparameters")
        assert all(float(t) != 0 for t in fused_grads[1:])


def test_adam_tensor_lr_and_eps_root(fused):
    """unrollopt.Adam with a 0-d tensor lr and eps_root (which torch.optim.Adam
    lacks): against the update written out by hand."""
    g = gen(7)
    p = randn(g, 6, requires_grad=True)
    target = randn(g, 6)
    opt = unrollopt.Adam([p], lr=torch.tensor(0.05, dtype=F64), eps_root=1e-4, use_accelerated_op=fused)
    q = p.detach().clone()
    mu = torch.zeros(6, dtype=F64)
    nu = torch.zeros(6, dtype=F64)
    for t in range(1, 6):
        opt.zero_grad()
        ((p - target) ** 4).sum().backward()
        opt.step()
        gr = 4 * (q - target) ** 3
        mu = 0.9 * mu + 0.1 * gr
        nu = 0.999 * nu + 0.001 * gr**2
        q = q - 0.05 * (mu / (1 - 0.9**t)) / (torch.sqrt(nu / (1 - 0.999**t) + 1e-4) + 1e-8)
    assert max_rel_err(p, q) <= 1e-13
    assert opt.param_groups[0]["eps_root"] == 1e-4


def test_adam_meta_gradient_float32_hyperparameter_tensors(fused):
    """float32 0-d hyperparameters with float64 parameters: the forward (bias
    corrections included) runs in float64 at the float32-rounded values, so the
    loss and the parameters' meta-gradient match the float64 reference to
    float64 precision; the hyperparameters' own gradients are float32 tensors,
    accumulated over their uses in float32, so they match to float32 precision
    relative to the largest of them."""
    pb = make_problem(2)
    vals = (0.05, 0.8, 0.95)
    lr, b1, b2 = (torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in vals)
    opt = unrollopt.adam(lr=lr, betas=(b1, b2), eps=1e-3, use_accelerated_op=fused)
    loss, _, _ = unrolled_unrollopt(pb, opt)
    got = torch.autograd.grad(loss, (lr, b1, b2, pb["w0"]))
    ref = [t.detach().to(F64).requires_grad_() for t in (lr, b1, b2)]
    ref_loss, _, _ = unrolled_reference(ADAM, pb, dict(lr=ref[0], betas=(ref[1], ref[2]), eps=1e-3))
    expected = torch.autograd.grad(ref_loss, (*ref, pb["w0"]))
    assert abs(loss.item() - ref_loss.item()) <= 1e-14 * abs(ref_loss.item())
    assert all(t.dtype == torch.float32 for t in got[:3])
    scale = max(abs(float(e)) for e in expected[:3])
    for g_, e_ in zip(got[:3], expected[:3]):
        assert abs(float(g_) - float(e_)) <= 4 * 2.0**-23 * scale, (float(g_), float(e_))
    assert_rel(got[3:], expected[3:], 1e-10, "meta-gradient")
    assert all(float(e) != 0 for e in expected[:3])


# --- Adamax: derivatives at the maximum's ties and at g' = 0 ---


def test_adamax_derivative_conventions_at_ties_and_zero_gradient():
    """Where the step is not differentiable the fused backward uses the
    documented one-sided derivatives: the maximum gives the whole cotangent to
    beta2 * nu at a tie, and d|g'|/dg' = 0 at g' = 0. Elements: a tie, g' = 0
    (beta2 * nu selected), a tie at g' = 0, and the two ordinary branches."""
    b2, eps = 0.5, 0.25
    g = torch.tensor([0.75, 0.0, 0.0, -2.0, 0.5], dtype=F64)  # |g| + eps: 1, .25, .25, 2.25, .75
    nu = torch.tensor([2.0, 1.0, 0.5, 1.0, 3.0], dtype=F64)  # beta2 * nu: 1, .5, .25, .5, 1.5
    mu = torch.tensor([0.5, -1.0, 2.0, 1.0, -0.5], dtype=F64)
    hyper = [torch.tensor(v, dtype=F64) for v in (0.1, 0.8, b2, 0.0)]
    cu = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0], dtype=F64)
    cs = [torch.tensor([0.3, 0.2, -0.1, 0.4, 0.6], dtype=F64), torch.tensor([0.7, -0.4, 0.9, 0.2, -0.3], dtype=F64)]
    step = torch.tensor(2)
    u, [m1], [v1] = torch.ops.unrollopt.adamax([g], [mu], [nu], [], step, *hyper, eps=eps, maximize=False)
    gg, [g_mu], [g_nu], _, *gh = torch.ops.unrollopt.adamax_backward(
        [cu],
        cs[:1],
        cs[1:],
        [g],
        [mu],
        [nu],
        [],
        step,
        *hyper,
        eps,
        False,
        [True, True, True, False, True, True, True, True],
    )
    gs = [g_mu, g_nu]
    # By hand: selection of beta2 * nu where beta2 * nu >= |g'| + eps.
    sel_a = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0], dtype=F64)
    sign = torch.tensor([1.0, 0.0, 0.0, -1.0, 1.0], dtype=F64)
    step_size = -0.1 / (1 - 0.8**2)
    assert torch.equal(v1, torch.tensor([1.0, 0.5, 0.25, 2.25, 1.5], dtype=F64))
    g_mu = cs[0] + cu * step_size / v1
    g_nu = cs[1] - cu * step_size * m1 / v1**2
    expected_g = 0.2 * g_mu + sign * (1 - sel_a) * g_nu
    torch.testing.assert_close(gg[0], expected_g, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gs[1], b2 * sel_a * g_nu, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gs[0], 0.8 * g_mu, rtol=1e-14, atol=1e-15)
    # d/d beta2: only where beta2 * nu was selected.
    torch.testing.assert_close(gh[2], (sel_a * g_nu * nu).sum(), rtol=1e-13, atol=0)
    assert all(is_finite(t) for t in (*gg, *gs, *gh)) and float(gh[2]) != 0
    # Away from those points the fused backward is autograd's of the reference (elements 3 and 4).
    leaves = [t[3:].clone().requires_grad_() for t in (g, mu, nu)]
    ru, rm, rv = ref_adamax_step(*leaves[:2], leaves[2], None, 2, lr=0.1, b1=0.8, b2=b2, eps=eps)
    ref = torch.autograd.grad((ru * cu[3:]).sum() + (rm * cs[0][3:]).sum() + (rv * cs[1][3:]).sum(), leaves)
    torch.testing.assert_close(gg[0][3:], ref[0], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(gs[1][3:], ref[2], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(u[0], step_size * m1 / v1, rtol=1e-15, atol=0)


# --- RMSprop ---


def test_rmsprop_aliases():
    assert unrollopt.RMSProp is unrollopt.RMSprop and unrollopt.MetaRMSprop is unrollopt.MetaRMSProp


def test_rmsprop_initial_scale_initializes_square_avg(fused):
    params = {"w": torch.ones(3, dtype=F64)}
    opt = unrollopt.rmsprop(lr=0.1, alpha=0.5, initial_scale=1.0, use_accelerated_op=fused)
    state = opt.init(params)
    assert torch.equal(state.square_avg["w"], torch.ones(3, dtype=F64))
    assert state.grad_avg == () and state.momentum_buffer == ()
    grads = {"w": randn(gen(3), 3)}
    u, state = opt.update(grads, state, inplace=False)
    sq = 0.5 + 0.5 * grads["w"] ** 2
    torch.testing.assert_close(state.square_avg["w"], sq, rtol=1e-15, atol=0)
    torch.testing.assert_close(u["w"], -0.1 * grads["w"] / (sq.sqrt() + 1e-8), rtol=1e-14, atol=0)


@pytest.mark.parametrize("api", ["alias", "meta_class"])
def test_rmsprop_bad_initial_scale(api):
    with pytest.raises(ValueError, match="initial_scale"):
        make_api(RMSPROP, api, dict(initial_scale=-1.0))


# --- Adagrad ---


def test_adagrad_initial_accumulator_value_per_group(fused):
    """Each group's sum starts at its own initial_accumulator_value."""
    a = torch.ones(2, dtype=F64, requires_grad=True)
    b = torch.ones(2, dtype=F64, requires_grad=True)
    opt = unrollopt.Adagrad([{"params": [a]}, {"params": [b], "initial_accumulator_value": 3.0}], lr=0.1,
                            use_accelerated_op=fused)  # fmt: skip
    a.grad = torch.full((2,), 2.0, dtype=F64)
    b.grad = torch.full((2,), 2.0, dtype=F64)
    opt.step()
    assert torch.equal(opt.state[a]["sum"], torch.full((2,), 4.0, dtype=F64))
    assert torch.equal(opt.state[b]["sum"], torch.full((2,), 7.0, dtype=F64))
    torch.testing.assert_close(
        b.detach(), 1 - 0.1 * 2 / (7**0.5 + 1e-10) * torch.ones(2, dtype=F64), rtol=1e-15, atol=0
    )


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_lion_sign_conventions(fused):
    """sign(0) = 0: where the interpolation is exactly 0 the parameter takes
    only its decay; the sign's derivative is 0, so beta1's gradient is exactly
    0 and the gradient reaches g only through the new momentum."""
    g = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=F64, requires_grad=True)
    mu = torch.tensor([-1.0, 0.5, 2.0, 0.0], dtype=F64)  # beta1 = 0.5: ties at 0 and 3
    p = torch.tensor([0.3, -0.7, 1.1, 2.0], dtype=F64)
    beta1 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    opt = unrollopt.lion(lr=0.1, betas=(beta1, 0.9), weight_decay=0.2, use_accelerated_op=fused)
    state = opt.init((p,))._replace(mu=(mu,))
    updates, new = opt.update((g,), state, params=(p,), inplace=False)
    direction = torch.tensor([0.0, -1.0, 1.0, 0.0], dtype=F64)
    assert_close(updates[0], -0.1 * (direction + 0.2 * p), rtol=1e-15, atol=1e-17)
    assert_close(new.mu[0], 0.9 * mu + 0.1 * g, rtol=1e-15, atol=0)
    d_beta1, d_g = torch.autograd.grad(updates[0].sum() + new.mu[0].sum(), (beta1, g))
    assert d_beta1.item() == 0.0
    assert_close(d_g, torch.full_like(g, 0.1), rtol=1e-15, atol=0)
