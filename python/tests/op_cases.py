"""The operator cases the operator tests share (test_ops.py, test_cuda.py): one
or more per rule, with its hyperparameter values, options and step number, and
the inputs they are checked at. The argument names come from the operators'
schemas (unrollopt._C.describe: each rule's own lists). The tests call the
operators with the arguments grouped (:class:`Grouped`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from references import (
    F64,
    gen,
    near_lion_tie,
    rand_pos,
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
)

import unrollopt

OPS = torch.ops.unrollopt
SHAPES = [(3,), (2, 2)]

# Each operator's argument names, from the operator (its rule's lists).
_DESCRIPTIONS = {op: unrollopt._C.describe(op) for op in unrollopt._C.operator_names()}
STATE_NAMES = {op: tuple(d[0]) for op, d in _DESCRIPTIONS.items()}
HYPER_NAMES = {op: tuple(d[1]) for op, d in _DESCRIPTIONS.items()}
OPTION_NAMES = {op: tuple(d[2]) for op, d in _DESCRIPTIONS.items()}
FLAG_NAMES = {op: frozenset(d[3]) for op, d in _DESCRIPTIONS.items()}


def _split(flat, k, n):
    return [list(flat[j * n : (j + 1) * n]) for j in range(k)]


class Grouped:
    """Calls ``torch.ops.unrollopt.<op><suffix>`` (suffix "", "_" or
    "_backward") with its arguments grouped: the state lists one after another
    in one list (and their cotangents), the hyperparameters in one list, the
    options in one (flags as numbers), the backward's output_mask as (grads,
    states, params, each hyperparameter); and returns its outputs grouped the
    same way. ``typed(*args)`` gives the operator's own arguments, ``default``
    its OpOverload."""

    def __init__(self, op: str, suffix: str):
        self.op, self.suffix = op, suffix
        self.packet = getattr(OPS, op + suffix)
        self.default = self.packet.default
        self.ns = len(STATE_NAMES[op])

    def _options(self, options):
        return [bool(v) if name in FLAG_NAMES[self.op] else float(v) for name, v in zip(OPTION_NAMES[self.op], options)]

    def typed(self, *args):
        ns = self.ns
        if self.suffix == "":
            grads, states, params, step, hyper, options = args
            return (grads, *_split(states, ns, len(grads)), params, step, *hyper, *self._options(options))
        if self.suffix == "_":
            params, grads, states, step, hyper, options, update_params = args
            return (
                params,
                grads,
                *_split(states, ns, len(grads)),
                step,
                *hyper,
                *self._options(options),
                update_params,
            )
        gu, gs, grads, states, params, step, hyper, options, mask = args
        n = len(grads)
        typed_mask = [mask[0], *[mask[1]] * ns, *mask[2:]]
        return (
            gu,
            *_split(gs, ns, n),
            grads,
            *_split(states, ns, n),
            params,
            step,
            *hyper,
            *self._options(options),
            typed_mask,
        )

    def __call__(self, *args):
        out = self.packet(*self.typed(*args))
        ns = self.ns
        if self.suffix == "":  # a single list where there are no states
            return (out, []) if ns == 0 else (out[0], [t for ts in out[1:] for t in ts])
        if self.suffix == "_":
            return out
        return out[0], [t for ts in out[1 : 1 + ns] for t in ts], out[1 + ns], list(out[2 + ns :])


@dataclass(frozen=True)
class Case:
    """One optimizer rule with its hyperparameter values, options and step number."""

    id: str
    op: str
    hyper: tuple[float, ...]  # in HYPER_NAMES[op] order; weight_decay last
    options: tuple[float, ...]
    step: int

    @property
    def ns(self) -> int:
        return len(STATE_NAMES[self.op])

    @property
    def nh(self) -> int:
        return len(HYPER_NAMES[self.op])

    @property
    def forward(self) -> Grouped:
        return Grouped(self.op, "")

    @property
    def inplace(self) -> Grouped:
        return Grouped(self.op, "_")

    @property
    def backward(self) -> Grouped:
        return Grouped(self.op, "_backward")

    def mask(self, value=True) -> list[bool]:
        return [value] * (3 + self.nh)

    def reference(self, grads, states, params, t, hyper):
        """The step by the conftest references: (updates, flat new states).
        ``hyper`` may hold numbers or tensors; ``params`` may be empty."""
        n = len(grads)
        lists = [states[k * n : (k + 1) * n] for k in range(self.ns)]
        opt = dict(zip(OPTION_NAMES[self.op], self.options))
        h = dict(zip(HYPER_NAMES[self.op], hyper))
        updates, new_states = [], [[] for _ in range(self.ns)]
        for i, g in enumerate(grads):
            p = params[i] if params else None
            if self.op.startswith("adam") and not self.op.startswith("adamax"):
                step_fn = ref_adamw_step if self.op.startswith("adamw") else ref_adam_step
                u, *new = step_fn(
                    g, lists[0][i], lists[1][i], p, t, lr=h["lr"], b1=h["beta1"], b2=h["beta2"],
                    eps=opt["eps"], eps_root=opt["eps_root"], wd=h["weight_decay"], maximize=bool(opt["maximize"]),
                    v_max=lists[2][i] if self.ns == 3 else None,
                )  # fmt: skip
            elif self.op == "adamax":
                u, m, v = ref_adamax_step(
                    g, lists[0][i], lists[1][i], p, t, lr=h["lr"], b1=h["beta1"], b2=h["beta2"], eps=opt["eps"],
                    wd=h["weight_decay"], maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [m, v]
            elif self.op == "adan":
                u, *new = ref_adan_step(
                    g, *(lists[k][i] for k in range(4)), p, t, lr=h["lr"], b1=h["beta1"], b2=h["beta2"],
                    b3=h["beta3"], eps=opt["eps"], wd=h["weight_decay"], maximize=bool(opt["maximize"]),
                )  # fmt: skip
            elif self.op == "lion":
                u, m = ref_lion_step(
                    g, lists[0][i], p, lr=h["lr"], b1=h["beta1"], b2=h["beta2"], wd=h["weight_decay"],
                    maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [m]
            elif self.op == "radam":
                u, m, v = ref_radam_step(
                    g, lists[0][i], lists[1][i], p, t, lr=h["lr"], b1=h["beta1"], b2=h["beta2"], eps=opt["eps"],
                    wd=h["weight_decay"], decoupled=bool(opt["decoupled_weight_decay"]), maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [m, v]
            elif self.op == "nadam":
                # The op takes the product with this step's coefficient; the
                # reference multiplies it in: pass the previous product.
                mu_t = h["beta1"] * (1 - 0.5 * 0.96 ** (t * opt["momentum_decay"]))
                u, m, v, _ = ref_nadam_step(
                    g, lists[0][i], lists[1][i], h["mu_product"] / mu_t, p, t, lr=h["lr"], b1=h["beta1"],
                    b2=h["beta2"], eps=opt["eps"], psi=opt["momentum_decay"], wd=h["weight_decay"],
                    decoupled=bool(opt["decoupled_weight_decay"]), maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [m, v]
            elif self.op == "adadelta":
                u, sq, acc = ref_adadelta_step(
                    g, lists[0][i], lists[1][i], p, lr=h["lr"], rho=h["rho"], eps=opt["eps"], wd=h["weight_decay"],
                    maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [sq, acc]
            elif self.op == "adagrad":
                u, sm = ref_adagrad_step(
                    g, lists[0][i], p, t, lr=h["lr"], lr_decay=h["lr_decay"], eps=opt["eps"], wd=h["weight_decay"],
                    maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [sm]
            elif self.op.startswith("rmsprop"):
                names = STATE_NAMES[self.op]
                st = {name: lists[k][i] for k, name in enumerate(names)}
                u, sq, ga, buf = ref_rmsprop_step(
                    g, st["square_avg"], st.get("grad_avg"), st.get("momentum_buffer"), p, lr=h["lr"],
                    alpha=h["alpha"], eps=opt["eps"], wd=h["weight_decay"], momentum=h.get("momentum"),
                    nesterov=bool(opt["nesterov"]), maximize=bool(opt["maximize"]),
                )  # fmt: skip
                out = {"square_avg": sq, "grad_avg": ga, "momentum_buffer": buf}
                new = [out[name] for name in names]
            else:
                u, buf = ref_sgd_step(
                    g, lists[0][i] if self.ns else None, p, t, lr=h["lr"], momentum=h.get("momentum", 0.0),
                    dampening=h.get("dampening", 0.0), wd=h["weight_decay"], nesterov=bool(opt["nesterov"]),
                    maximize=bool(opt["maximize"]),
                )  # fmt: skip
                new = [buf] if self.ns else []
            updates.append(u)
            for k in range(self.ns):
                new_states[k].append(new[k])
        return updates, [t for ts in new_states for t in ts]


CASES = [
    Case("adam-eps_root", "adam", (0.1, 0.8, 0.9, 0.05), (1e-3, 1e-6, 0.0), 3),
    Case("adam-eps_root-maximize", "adam", (0.1, 0.8, 0.9, 0.05), (1e-3, 1e-6, 1.0), 3),
    Case("adam-no_eps_root", "adam", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0, 0.0), 2),
    Case("adam-no_eps_root-maximize-step1", "adam", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0, 1.0), 1),
    Case("adamw-eps_root", "adamw", (0.1, 0.8, 0.9, 0.05), (1e-3, 1e-6, 0.0), 3),
    Case("adamw-no_eps_root-maximize", "adamw", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0, 1.0), 2),
    Case("adamw-maximize-step1", "adamw", (0.1, 0.8, 0.9, 0.05), (1e-3, 1e-6, 1.0), 1),
    # amsgrad: nu_max and nu' in the same range, so that each is the maximum somewhere.
    Case("adam_amsgrad", "adam_amsgrad", (0.1, 0.8, 0.9, 0.05), (1e-3, 1e-6, 0.0), 3),
    Case("adam_amsgrad-no_eps_root-maximize", "adam_amsgrad", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0, 1.0), 1),
    Case("adamw_amsgrad", "adamw_amsgrad", (0.1, 0.8, 0.9, 0.05), (1e-3, 1e-6, 0.0), 2),
    Case("adamw_amsgrad-maximize", "adamw_amsgrad", (0.1, 0.8, 0.95, 0.05), (1e-2, 0.0, 1.0), 4),
    # adamax: eps comparable to beta2 * nu (nu in [0.1, 1.1)) so that both
    # arguments of the maximum are selected somewhere.
    Case("adamax", "adamax", (0.1, 0.8, 0.9, 0.05), (0.5, 0.0), 3),
    Case("adamax-maximize-step1", "adamax", (0.1, 0.8, 0.9, 0.05), (0.3, 1.0), 1),
    Case("adamax-small_eps", "adamax", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0), 2),
    # adan: the first step (no gradient difference) and later ones.
    Case("adan", "adan", (0.1, 0.8, 0.7, 0.9, 0.05), (1e-3, 0.0), 3),
    Case("adan-maximize-step1", "adan", (0.1, 0.8, 0.7, 0.9, 0.05), (1e-2, 1.0), 1),
    Case("adan-step2", "adan", (0.1, 0.9, 0.8, 0.95, 0.05), (1e-3, 0.0), 2),
    # lion: the interpolation's sign is the step (its derivative is 0: the
    # gradients reach g, mu and beta2 only through mu').
    Case("lion", "lion", (0.1, 0.8, 0.9, 0.05), (0.0,), 3),
    Case("lion-maximize", "lion", (0.1, 0.7, 0.95, 0.05), (1.0,), 1),
    Case("rmsprop", "rmsprop", (0.1, 0.9, 0.05), (1e-3, 0.0, 0.0), 3),
    Case("rmsprop-maximize", "rmsprop", (0.1, 0.9, 0.05), (0.1, 0.0, 1.0), 1),
    Case("rmsprop_centered", "rmsprop_centered", (0.1, 0.9, 0.05), (1e-3, 0.0, 0.0), 2),
    Case("rmsprop_centered-maximize", "rmsprop_centered", (0.1, 0.8, 0.05), (0.1, 0.0, 1.0), 1),
    Case("rmsprop_momentum", "rmsprop_momentum", (0.1, 0.9, 0.7, 0.05), (1e-3, 0.0, 0.0), 2),
    Case("rmsprop_momentum-maximize", "rmsprop_momentum", (0.1, 0.8, 0.5, 0.05), (0.1, 0.0, 1.0), 1),
    Case("rmsprop_centered_momentum", "rmsprop_centered_momentum", (0.1, 0.9, 0.7, 0.05), (1e-3, 0.0, 0.0), 3),
    Case("rmsprop_centered_momentum-maximize", "rmsprop_centered_momentum", (0.1, 0.8, 0.5, 0.05), (0.1, 0.0, 1.0), 1),
    Case("rmsprop_momentum-nesterov", "rmsprop_momentum", (0.1, 0.9, 0.7, 0.05), (1e-3, 1.0, 0.0), 2),
    Case(
        "rmsprop_centered_momentum-nesterov-maximize",
        "rmsprop_centered_momentum",
        (0.1, 0.8, 0.5, 0.05),
        (0.1, 1.0, 1.0),
        3,
    ),
    # radam: the plain-momentum step (rho_t <= 5 for t <= 5) and the rectified one.
    Case("radam-step2", "radam", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0, 0.0), 2),
    Case("radam-rectified", "radam", (0.1, 0.8, 0.9, 0.05), (1e-3, 0.0, 0.0), 7),
    Case("radam-rectified-decoupled-maximize", "radam", (0.1, 0.8, 0.95, 0.05), (1e-2, 1.0, 1.0), 9),
    Case("radam-decoupled-step1", "radam", (0.1, 0.8, 0.9, 0.05), (1e-3, 1.0, 0.0), 1),
    # nadam: mu_product is mu_1 ... mu_t (with beta1 = 0.8, psi = 0.004: about 0.4^t).
    Case("nadam", "nadam", (0.1, 0.8, 0.9, 0.4**3, 0.05), (1e-3, 4e-3, 0.0, 0.0), 3),
    Case("nadam-decoupled-maximize", "nadam", (0.1, 0.8, 0.95, 0.4**2, 0.05), (1e-2, 0.1, 1.0, 1.0), 2),
    Case("nadam-step1", "nadam", (0.1, 0.9, 0.9, 0.45, 0.05), (1e-3, 4e-3, 0.0, 0.0), 1),
    Case("adagrad", "adagrad", (0.1, 0.3, 0.05), (1e-3, 0.0), 3),
    Case("adagrad-maximize-step1", "adagrad", (0.1, 0.3, 0.05), (0.1, 1.0), 1),
    Case("adadelta", "adadelta", (0.5, 0.9, 0.05), (1e-3, 0.0), 3),
    Case("adadelta-maximize", "adadelta", (0.5, 0.8, 0.05), (0.1, 1.0), 1),
    Case("sgd", "sgd", (0.1, 0.05), (0.0, 0.0), 3),
    Case("sgd-maximize-step1", "sgd", (0.1, 0.05), (1.0, 0.0), 1),
    Case("sgd_momentum-step1", "sgd_momentum", (0.1, 0.9, 0.3, 0.05), (0.0, 0.0), 1),
    Case("sgd_momentum-dampening", "sgd_momentum", (0.1, 0.9, 0.3, 0.05), (0.0, 0.0), 3),
    Case("sgd_momentum-maximize", "sgd_momentum", (0.1, 0.8, 0.0, 0.05), (1.0, 0.0), 2),
    Case("sgd_momentum-nesterov-step1", "sgd_momentum", (0.1, 0.8, 0.0, 0.05), (0.0, 1.0), 1),
    Case("sgd_momentum-nesterov", "sgd_momentum", (0.1, 0.8, 0.0, 0.05), (0.0, 1.0), 4),
    # The op itself allows Nesterov with dampening (torch.optim.SGD refuses it):
    # every coefficient of the rule is live here.
    Case("sgd_momentum-nesterov-dampening-maximize", "sgd_momentum", (0.1, 0.8, 0.3, 0.05), (1.0, 1.0), 2),
]
BY_ID = {c.id: c for c in CASES}
# One case per operator (and Nesterov), where one representative is enough.
OP_CASES = [
    BY_ID[i]
    for i in (
        "adam-eps_root",
        "sgd",
        "sgd_momentum-dampening",
        "sgd_momentum-nesterov",
        "adamw-eps_root",
        "adamax",
        "adan",
        "lion",
        "rmsprop",
        "rmsprop_centered",
        "rmsprop_momentum",
        "rmsprop_centered_momentum",
        "adagrad",
        "adadelta",
        "radam-rectified",
        "nadam",
        "adam_amsgrad",
        "adamw_amsgrad",
    )
]

# opcheck is slow: one case per operator.
OPCHECK_CASES = [c for c in OP_CASES if c.id != "sgd_momentum-nesterov"]


def cases(selection):
    return pytest.mark.parametrize("case", selection, ids=[c.id for c in selection])


def make_inputs(case, seed, *, dtype=F64, shapes=SHAPES, requires_grad=False, state_low=0.1, wd=None):
    """(grads, states, params, hyper): random, seeded, never zero; adam's nu
    positive; rmsprop's square_avg >= 1 and |grad_avg| < 0.9, so that the
    centered variance square_avg - grad_avg^2 stays positive; lion's away from
    its sign's ties."""
    g = gen(seed)
    grads = [randn(g, *s, dtype=dtype, requires_grad=requires_grad) for s in shapes]
    states = []
    for name in STATE_NAMES[case.op]:
        for s in shapes:
            if name in ("nu", "nu_max", "sum", "acc_delta"):
                t = rand_pos(g, *s, dtype=dtype, low=state_low)
            elif name == "square_avg":
                t = rand_pos(g, *s, dtype=dtype, low=1.0)
            elif name == "grad_avg":
                t = (0.3 * randn(g, *s, dtype=dtype)).clamp(-0.5, 0.5)  # keeps the variance positive
            else:
                t = randn(g, *s, dtype=dtype)
            states.append(t.requires_grad_(requires_grad))
    if case.op == "lion":  # the inputs keep away from the sign's discontinuity
        maximize = bool(case.options[OPTION_NAMES["lion"].index("maximize")])
        for i, (gr, m) in enumerate(zip(grads, states)):
            near = near_lion_tie(m, gr, b1=case.hyper[1], maximize=maximize)
            states[i] = torch.where(near, -m.detach(), m.detach()).requires_grad_(requires_grad)
    params = [randn(g, *s, dtype=dtype, requires_grad=requires_grad) for s in shapes]
    values = case.hyper if wd is None else (*case.hyper[:-1], wd)
    hyper = [torch.tensor(x, dtype=F64, requires_grad=requires_grad) for x in values]
    return grads, states, params, hyper


def split_outputs(case, n, xs):
    """Flat (grads, states, params, hyper) back into the four lists."""
    k = 0
    out = []
    for length in (n, case.ns * n, n):
        out.append(list(xs[k : k + length]))
        k += length
    out.append(list(xs[k:]))
    return out
