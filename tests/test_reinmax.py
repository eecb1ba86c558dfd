"""ReinMax against the exact gradient of E[f(D)], computed by enumeration."""

import itertools

import pytest
import torch

from admin_fairseq.core.reinmax import gumbel_straight_through, reinmax, straight_through


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws its logits from a fixed seed: the outcomes are deterministic."""
    torch.manual_seed(0)


def _jacobian(p):
    return torch.diag(p) - torch.outer(p, p)


def _exact_gradient(logits, f):
    """d/dlogits of E[f(D)] for independent categoricals (rows of ``logits``), by summing
    over every joint outcome."""
    logits = logits.detach().double().requires_grad_(True)
    probs = torch.softmax(logits, dim=-1)
    n, k = logits.shape
    expected = 0.0
    for outcome in itertools.product(range(k), repeat=n):
        one_hot = torch.zeros(n, k, dtype=torch.float64)
        one_hot[torch.arange(n), torch.tensor(outcome)] = 1.0
        weight = probs[torch.arange(n), torch.tensor(outcome)].prod()
        expected = expected + weight * f(one_hot)
    (grad,) = torch.autograd.grad(expected, logits)
    return grad


def _monte_carlo(estimator, logits, f, samples=40_000, seed=0):
    """Mean and standard error of the estimator's gradient over independent samples."""
    batch = logits.detach().expand(samples, *logits.shape).clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    y_hard, _ = estimator(batch, generator=gen)
    torch.vmap(f)(y_hard.double()).sum().backward()
    grads = batch.grad.double()
    return grads.mean(0), grads.std(0) / samples**0.5


def _quadratic(n, k, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n * k, n * k, generator=gen, dtype=torch.float64)
    b = torch.randn(n * k, generator=gen, dtype=torch.float64)
    return lambda d: d.reshape(-1) @ a @ d.reshape(-1) + b @ d.reshape(-1)


@pytest.mark.parametrize("n,k,seed", [(1, 5, 0), (3, 3, 1), (2, 4, 2)])
def test_reinmax_is_unbiased_for_quadratic_f_and_st_is_not(n, k, seed):
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed + 10))
    f = _quadratic(n, k, seed)
    exact = _exact_gradient(logits, f)
    mean, se = _monte_carlo(reinmax, logits, f)
    z = ((mean - exact) / se).abs()
    assert z.max() < 4.5, (mean, exact, se)  # within Monte Carlo noise, every component
    st_mean, st_se = _monte_carlo(straight_through, logits, f)
    st_z = ((st_mean - exact) / st_se).abs()
    assert st_z.max() > 10.0, (st_mean, exact)  # ST is biased far beyond its noise


def test_backward_matches_the_closed_form_on_fixed_samples():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    g = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    g_p = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    tau = 2.5
    y_hard, y_soft = reinmax(logits, tau=tau, generator=torch.Generator().manual_seed(1))
    ((y_hard * g).sum() + (y_soft * g_p).sum()).backward()
    for row in range(6):
        pi0 = torch.softmax(logits[row].detach(), -1)
        pi_tau = torch.softmax(logits[row].detach() / tau, -1)
        d = y_hard[row].detach()
        expected = (
            2 * _jacobian((pi_tau + d) / 2) @ g[row]
            - 0.5 * _jacobian(pi0) @ g[row]
            + _jacobian(pi0) @ g_p[row]
        )
        # float64 input is computed in float64: equal to the closed form to float64 rounding
        torch.testing.assert_close(logits.grad[row], expected, rtol=1e-12, atol=1e-14)


def test_forward_values():
    logits = torch.randn(50, 7)
    y_hard, y_soft = reinmax(logits, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y_soft, torch.softmax(logits, -1))
    assert torch.all(y_hard.sum(-1) == 1) and set(y_hard.unique().tolist()) == {0.0, 1.0}


def test_sampling_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]]).expand(100_000, 4)
    y_hard, y_soft = reinmax(logits, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y_hard.mean(0), y_soft[0], atol=0.006, rtol=0)


def test_generator_makes_samples_reproducible():
    logits = torch.randn(20, 5)
    first = reinmax(logits, generator=torch.Generator().manual_seed(3))[0]
    again = reinmax(logits, generator=torch.Generator().manual_seed(3))[0]
    other = reinmax(logits, generator=torch.Generator().manual_seed(4))[0]
    assert torch.equal(first, again) and not torch.equal(first, other)
    # ST draws the same sample for the same generator state
    assert torch.equal(straight_through(logits, generator=torch.Generator().manual_seed(3))[0], first)


def test_y_soft_path_gradcheck():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)

    def soft(x):
        return reinmax(x, tau=1.5, generator=torch.Generator().manual_seed(0))[1]

    # float64 input is computed in float64, so gradcheck's default tolerances hold
    assert torch.autograd.gradcheck(soft, (logits,))


def test_linear_f_every_sample_is_exact():
    """For a linear f, g does not depend on the sample: ST's gradient J(pi) g is then the
    exact gradient on every sample, and ReinMax's is exact in expectation."""
    logits = torch.randn(1, 6, generator=torch.Generator().manual_seed(2))
    w = torch.randn(6, dtype=torch.float64)
    f = lambda d: (d.reshape(-1) * w).sum()  # noqa: E731
    exact = _exact_gradient(logits, f)
    st_mean, st_se = _monte_carlo(straight_through, logits, f, samples=20_000)
    torch.testing.assert_close(st_mean, exact, atol=1e-6, rtol=1e-5)  # ST: no noise at all
    assert st_se.max() < 1e-6
    mean, se = _monte_carlo(reinmax, logits, f, samples=20_000)
    assert ((mean - exact).abs() < 4.5 * se + 1e-6).all()


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_any_shape_and_category_dim(dim):
    logits = torch.randn(3, 4, 5, requires_grad=True)
    y_hard, y_soft = reinmax(logits, dim=dim, generator=torch.Generator().manual_seed(0))
    assert y_hard.shape == y_soft.shape == logits.shape
    assert torch.all(y_hard.sum(dim) == 1)
    torch.testing.assert_close(y_soft, torch.softmax(logits, dim))
    (y_hard * torch.arange(60.0).reshape(3, 4, 5)).sum().backward()
    assert logits.grad.shape == logits.shape
    # each softmax Jacobian's columns sum to zero (up to fp32 rounding of weights up to 59)
    torch.testing.assert_close(logits.grad.sum(dim), torch.zeros_like(logits.grad.sum(dim)), atol=1e-4, rtol=0)


def test_non_contiguous_input_equals_contiguous():
    base = torch.randn(5, 4, dtype=torch.float32)
    strided = base.t()  # (4, 5), non-contiguous; categories along dim 0
    assert not strided.is_contiguous()
    a = strided.clone().requires_grad_(True)
    b = strided.contiguous().clone().requires_grad_(True)
    out_a = reinmax(a, dim=0, generator=torch.Generator().manual_seed(1))
    out_b = reinmax(b, dim=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out_a[0], out_b[0])
    w = torch.randn(4, 5)
    (out_a[0] * w).sum().backward()
    (out_b[0] * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input(dtype):
    logits32 = torch.randn(64, 10) * 4
    logits = logits32.to(dtype).requires_grad_(True)
    y_hard, y_soft = reinmax(logits, tau=2.0, generator=torch.Generator().manual_seed(0))
    assert y_hard.dtype == y_soft.dtype == dtype
    # sampled in fp32 from the same values: the same sample as the fp32 call
    ref = reinmax(logits.detach().float(), tau=2.0, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(y_hard.float(), ref)
    (y_hard.float() * torch.randn(64, 10)).sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()


@pytest.mark.parametrize("tau", [0.5, 0.999, 0.0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau must be"):
        reinmax(torch.randn(2, 3), tau=tau)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits(bad):
    logits = torch.randn(2, 3)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        reinmax(logits)
    with pytest.raises(ValueError, match="NaN or infinity"):
        straight_through(logits)


def test_bad_logits_type():
    with pytest.raises(ValueError, match="floating-point"):
        reinmax(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="at least one dimension"):
        reinmax(torch.tensor(1.0))


def test_gumbel_straight_through():
    logits = torch.randn(1000, 4)
    y_hard, relaxed = gumbel_straight_through(logits, tau=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.all(y_hard.sum(-1) == 1)
    torch.testing.assert_close(relaxed.sum(-1), torch.ones(1000))
    # the argmax of logits + Gumbel noise is a sample from softmax(logits)
    many = gumbel_straight_through(logits[:1].expand(100_000, 4), generator=torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(many.mean(0), torch.softmax(logits[0], -1), atol=0.006, rtol=0)
    with pytest.raises(ValueError, match="tau must be a positive"):
        gumbel_straight_through(logits, tau=0.0)
