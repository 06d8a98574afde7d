"""Float32 meta-gradients where squares underflow: finite wherever float64's are.

A gradient below about 1e-19 has a float32 square of 0 (or a subnormal), so a
second-moment estimate nu' = beta2 nu + (1 - beta2) g'^2 is 0 where its true
value is 1e-47, and the derivative of the step through sqrt(nu'),
1 / (2 sqrt(nu')), is infinite where the true one is large but finite. The
backward passes, fused and plain, take that root again from inputs scaled by
a power of two where the mean of squares is below the smallest normal number
(cpp/include/unrollopt/rules/rule.h's root_of_mean_square), and
must give a finite meta-gradient wherever the float64 run does.

The synthetic problem: loss 1/2 sum c_i (theta_i - phi_i)^2 with
c = [1, s, 10 s, 1000 s], so that three of the four gradients are tiny; K inner
steps from theta_0, meta-gradient of |theta_K|^2 with respect to phi, for
s = 1e-18 ... 1e-25 and K = 1, 2, 5.
"""

from __future__ import annotations

import pytest
import torch
from references import gen, randn, unrollopt
from torch import nn

F32, F64 = torch.float32, torch.float64

SCALES = [1e-18, 1e-19, 1e-20, 1e-21, 1e-22, 1e-23, 1e-24, 1e-25]
STEPS = [1, 2, 5]

# Every optimizer (each variant whose state has a mean of squares), with its
# defaults but lr. The guarantee is stated for eps >= 1e-8 (or eps_root > 0);
# Adagrad's default eps, 1e-10, meets it too.
OPTIMIZERS = {
    "adam": ("adam", {}),
    "adam_amsgrad": ("adam", dict(amsgrad=True)),
    "adamw": ("adamw", {}),
    "nadam": ("nadam", {}),
    "radam": ("radam", {}),
    "rmsprop": ("rmsprop", {}),
    "rmsprop_centered": ("rmsprop", dict(centered=True)),
    "rmsprop_momentum": ("rmsprop", dict(momentum=0.9)),
    "adagrad": ("adagrad", {}),
    "adamax": ("adamax", {}),
    "adadelta": ("adadelta", {}),
    "sgd_momentum": ("sgd", dict(momentum=0.9)),
    "lion": ("lion", {}),
    "adan": ("adan", {}),
}


def make_optimizer(name: str, fused: bool, lr=1e-2):
    alias, options = OPTIMIZERS[name]
    return getattr(unrollopt, alias)(lr, **options, use_accelerated_op=fused)


def synthetic_meta_gradient(name: str, fused: bool, dtype, scale: float, steps: int) -> torch.Tensor:
    g = gen(7)
    theta = randn(g, 4).to(dtype).requires_grad_()
    phi = randn(g, 4).to(dtype).requires_grad_()
    c = torch.tensor([1.0, scale, 10 * scale, 1000 * scale], dtype=dtype)
    opt = make_optimizer(name, fused)
    state = opt.init(theta)
    for _ in range(steps):
        loss = 0.5 * (c * (theta - phi) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
        updates, state = opt.update(grad, state, params=theta, inplace=False)
        theta = unrollopt.apply_updates(theta, updates, inplace=False)
    (meta,) = torch.autograd.grad((theta**2).sum(), phi)
    return meta


U32 = 2.0**-24  # float32's unit roundoff


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_float32_meta_gradient_finite_where_float64_is(name, fused):
    """Over the whole table: where float64's meta-gradient is finite (and in
    float32's range), float32's is finite too. The elements with tiny
    gradients (|g| < 1e-15, far below eps) are in the linear regime of every
    step (u ~ -lr g / eps): no cancellation, so float32 matches float64 to a
    few roundings per operation and step (32 K u32 allows 30 roundings of each
    step's backward, K steps)."""
    failures = []
    for scale in SCALES:
        for steps in STEPS:
            exact = synthetic_meta_gradient(name, fused, F64, scale, steps)
            got = synthetic_meta_gradient(name, fused, F32, scale, steps).to(F64)
            in_range = torch.isfinite(exact) & (exact.abs() < 1e30)
            if not bool(torch.isfinite(got[in_range]).all()):
                failures.append(f"s={scale:g}, {steps} steps: float32 {got.tolist()}, float64 {exact.tolist()}")
                continue
            torch.testing.assert_close(got[1:], exact[1:], rtol=32 * steps * U32, atol=0.0)
    assert not failures, "non-finite float32 meta-gradients:\n" + "\n".join(failures)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_adam_underflow_two_steps_matches_float64(fused):
    """The case the issue traced (s = 1e-22, two Adam steps): float32's nu_1
    is 0 where float64's is 1e-47, and the meta-gradient was NaN. The element
    with c = 1 (|g| ~ 1 >> eps) has a meta-gradient set by cancellation: an
    Adam step hardly depends on the gradient's size, and its derivative,
    lr eps / (|g| + eps)^2, is the difference of backward terms of size lr / |g|.
    Its float32 error is bounded by a few roundings of those terms: 2 |theta|
    lr K / |g| times 32 u32."""
    exact = synthetic_meta_gradient("adam", fused, F64, 1e-22, 2)
    got = synthetic_meta_gradient("adam", fused, F32, 1e-22, 2).to(F64)
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got[1:], exact[1:], rtol=64 * U32, atol=0.0)
    g = gen(7)
    theta, phi = randn(g, 4), randn(g, 4)
    bound = 2 * (theta[0].abs() + 1) * 1e-2 * 2 / (theta[0] - phi[0]).abs() * 32 * U32
    assert abs(got[0] - exact[0]) <= bound


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_singular_case_is_documented(fused):
    """The one case float32 cannot recover: a stored nu of exactly 0 (a square
    that underflowed at an earlier step, or a gradient that was 0), a gradient
    of exactly 0 now and mu' != 0. Then the root of the mean of squares is
    exactly 0 whatever the scaling, and the step depends on nu through
    sqrt(nu) at 0: the nu cotangent is infinite (+inf here, its sign that of
    the step's dependence), and the gradient's is 0 * inf = NaN (u depends on
    |g| there, which has no derivative at 0). The mu cotangent stays exact."""
    opt = unrollopt.adam(1e-2, use_accelerated_op=fused)
    p = torch.zeros(3)
    state = opt.init(p)
    mu = torch.tensor([1e-3, 2e-3, -1e-3], requires_grad=True)
    nu = torch.tensor([0.0, 1e-6, 0.0], requires_grad=True)
    g = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    updates, _ = opt.update(g, state._replace(mu=mu, nu=nu), inplace=False)
    d_g, d_mu, d_nu = torch.autograd.grad(updates.sum(), (g, mu, nu))
    assert bool(torch.isfinite(d_mu).all())
    assert d_nu[0].item() == float("inf") and d_nu[2].item() == float("-inf")
    assert bool(torch.isnan(d_g[[0, 2]]).all())
    # The element whose nu is not 0 is ordinary.
    assert bool(torch.isfinite(d_nu[1])) and bool(torch.isfinite(d_g[1]))


class SmallConvNet(nn.Module):
    """The regression case: conv, BatchNorm, ReLU, linear, as a user's MAML net."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 26 * 26, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_conv_batchnorm_maml_meta_gradient_is_finite(fused):
    """MetaAdam (lr 1e-2) through 8 inner steps of a conv + BatchNorm net whose
    inner cross-entropy saturates: 1.7, 5e-4, ..., 1e-8, then exactly 0.0 in
    float32 (float64: 1e-9, 3e-10). The last gradients are tiny, their squares
    underflow, and every element of the meta-gradient (27,141) used to be NaN,
    as the float64 run never is. Both are finite now."""
    for dtype in (F32, F64):
        torch.manual_seed(0)
        net = SmallConvNet().to(dtype)
        x = randn(gen(3), 10, 1, 28, 28).to(dtype)
        y = torch.arange(10) % 5
        meta = list(net.parameters())
        opt = unrollopt.MetaAdam(net, lr=1e-2, use_accelerated_op=fused)
        losses = []
        for _ in range(8):
            loss = nn.functional.cross_entropy(net(x), y)
            losses.append(loss.item())
            opt.step(loss)
        if dtype == F32:
            assert losses[-1] == 0.0  # the saturation this test is about
        grads = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), meta)
        assert all(bool(torch.isfinite(g).all()) for g in grads), dtype
