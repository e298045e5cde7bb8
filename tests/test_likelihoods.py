"""Each family's log-density against scipy or a direct formula, and the identities of docs/study.md, section 3."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.special
import scipy.stats
import torch

from vaestudy.errors import UserError
from vaestudy.likelihoods import (
    REGISTRY,
    Calibrated,
    _bernoulli_log_prob_samples,
    build_likelihood,
    family_parameters,
)

D = 6


def _x_and_o(seed=0, outputs=1, n=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, D), generator=g, dtype=torch.float64)
    o = torch.randn((n, outputs * D), generator=g, dtype=torch.float64)
    return x, o


def test_every_family_of_the_study_is_registered():
    assert set(REGISTRY) == {
        "bernoulli",
        "continuous_bernoulli",
        "gaussian_fixed",
        "gaussian_shared",
        "gaussian_pixel",
        "gaussian_heteroscedastic",
        "gaussian_optimal",
        "mse",
        "laplace",
        "student_t",
        "beta",
        "discretised_logistic",
        "discretised_gaussian",
        "discretised_logistic_mixture",
    }


def test_bernoulli_log_prob_matches_scipy_on_binary_data():
    x, o = _x_and_o()
    x = (x > 0.5).double()
    lik = build_likelihood("bernoulli", D)
    p = torch.sigmoid(o).numpy()
    expected = scipy.stats.bernoulli.logpmf(x.numpy(), p).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).numpy(), expected, rtol=1e-10)
    assert lik.normalised("binary") and not lik.normalised("continuous")


def test_bernoulli_on_grey_levels_is_binary_cross_entropy():
    x, o = _x_and_o()
    p = torch.sigmoid(o)
    bce = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    lik = build_likelihood("bernoulli", D)
    torch.testing.assert_close(lik.log_prob(o, x), bce)


def _cb_log_normaliser_by_quadrature(lam: float) -> float:
    integral, _ = scipy.integrate.quad(lambda x: lam**x * (1 - lam) ** (1 - x), 0, 1, epsabs=1e-13)
    return -math.log(integral)


@pytest.mark.parametrize("lam", [1e-4, 0.01, 0.3, 0.4999, 0.5, 0.5001, 0.7, 0.99, 1 - 1e-4])
def test_continuous_bernoulli_log_normaliser_against_quadrature(lam):
    lik = build_likelihood("continuous_bernoulli", 1)
    o = torch.tensor([[math.log(lam / (1 - lam))]], dtype=torch.float64)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    log_c = float(lik.distribution(o).log_prob(x)) - (0.3 * math.log(lam) + 0.7 * math.log(1 - lam))
    assert log_c == pytest.approx(_cb_log_normaliser_by_quadrature(lam), abs=1e-6)


def test_continuous_bernoulli_density_integrates_to_one():
    lik = build_likelihood("continuous_bernoulli", 1)
    for logit in (-3.0, 0.0, 0.001, 2.5):
        dist = lik.distribution(torch.tensor([[logit]], dtype=torch.float64))

        def density(v, dist=dist):
            return math.exp(float(dist.log_prob(torch.tensor([[v]], dtype=torch.float64))))

        total, _ = scipy.integrate.quad(density, 0, 1)
        assert total == pytest.approx(1.0, abs=1e-6)


def test_gaussian_fixed_matches_scipy():
    x, o = _x_and_o()
    lik = build_likelihood("gaussian_fixed", D, {"sigma": 0.3})
    expected = scipy.stats.norm.logpdf(x.numpy(), o.numpy(), 0.3).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("family", ["gaussian_shared", "gaussian_pixel"])
def test_learned_sigma_starts_at_init_and_matches_scipy(family):
    x, o = _x_and_o()
    lik = build_likelihood(family, D, {"init": 0.4, "floor": 0.05}).double()
    assert lik.sigma() == pytest.approx(0.4)
    expected = scipy.stats.norm.logpdf(x.numpy(), o.numpy(), 0.4).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).detach().numpy(), expected, rtol=1e-6)
    with torch.no_grad():
        for p in lik.parameters():
            p.fill_(-50.0)  # sigma -> floor
    assert lik.sigma() == pytest.approx(0.05)


def test_gaussian_pixel_has_one_sigma_per_pixel():
    lik = build_likelihood("gaussian_pixel", D)
    assert sum(p.numel() for p in lik.parameters()) == D


@pytest.mark.parametrize("floor", [0.0, 0.02])
def test_heteroscedastic_uses_the_second_half_as_log_variance(floor):
    x, o = _x_and_o(outputs=2)
    lik = build_likelihood("gaussian_heteroscedastic", D, {"floor": floor})
    mean, log_var = o[:, :D].numpy(), o[:, D:].numpy()
    sigma = floor + np.exp(0.5 * log_var)
    expected = scipy.stats.norm.logpdf(x.numpy(), mean, sigma).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).numpy(), expected, rtol=1e-6)
    assert lik.outputs_per_pixel == 2


def test_mse_sum_is_gaussian_with_variance_one_half_up_to_its_constant():
    x, o = _x_and_o()
    mse = build_likelihood("mse", D, {"reduction": "sum"})
    gauss = build_likelihood("gaussian_fixed", D, {"sigma": math.sqrt(0.5)})
    loss, _ = mse.reconstruction(x, o)
    nll = -gauss.log_prob(o, x)
    torch.testing.assert_close(loss, ((x - o) ** 2).sum(-1))
    # sigma is stored in float32, hence the tolerance
    torch.testing.assert_close(
        nll - loss, torch.full_like(loss, D / 2 * math.log(math.pi)), atol=1e-5, rtol=0
    )


def test_mse_mean_is_gaussian_with_variance_d_over_two_up_to_its_constant():
    x, o = _x_and_o()
    o.requires_grad_(True)
    mse = build_likelihood("mse", D, {"reduction": "mean"})
    gauss = build_likelihood("gaussian_fixed", D, {"sigma": math.sqrt(D / 2)})
    loss, _ = mse.reconstruction(x, o)
    nll = -gauss.log_prob(o, x)
    torch.testing.assert_close(loss, ((x - o) ** 2).mean(-1))
    torch.testing.assert_close(
        nll - loss, torch.full_like(loss, D / 2 * math.log(math.pi * D)), atol=1e-5, rtol=0
    )
    (g_loss,) = torch.autograd.grad(loss.sum(), o, retain_graph=True)
    (g_nll,) = torch.autograd.grad(nll.sum(), o)
    torch.testing.assert_close(g_loss, g_nll)  # same training signal
    assert not mse.loss_is_nll and mse.sigma() == pytest.approx(math.sqrt(D / 2))


def test_gaussian_optimal_sigma_maximises_the_batch_log_likelihood():
    x, o = _x_and_o(n=50)
    lik = build_likelihood("gaussian_optimal", D, {"floor": 1e-6}).double().train()
    _, log_px = lik.reconstruction(x, o)

    def nll(sigma):
        return -scipy.stats.norm.logpdf(x.numpy(), o.numpy(), sigma).sum()

    best = scipy.optimize.minimize_scalar(nll, bounds=(1e-3, 10), method="bounded", options={"xatol": 1e-10})
    assert lik.sigma() == pytest.approx(best.x, rel=1e-5)
    assert float(log_px.sum()) == pytest.approx(-best.fun, rel=1e-8)


def test_gaussian_optimal_evaluates_with_its_fixed_sigma_not_the_test_batch():
    x, o = _x_and_o(n=50)
    lik = build_likelihood("gaussian_optimal", D).double()
    lik.set_scale(0.04)
    lik.eval()
    _, log_px = lik.reconstruction(x, o)
    expected = scipy.stats.norm.logpdf(x.numpy(), o.numpy(), 0.2).sum(-1)
    np.testing.assert_allclose(log_px.numpy(), expected, rtol=1e-6)


def test_family_parameters_have_defaults():
    assert family_parameters("gaussian_fixed") == {"sigma": 0.1}
    assert family_parameters("bernoulli") == {}


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("nope", {}, "unknown likelihood family 'nope'"),
        ("gaussian_fixed", {"sigma": 0}, "sigma must be > 0"),
        ("gaussian_fixed", {"sigma": -1.0}, "sigma must be > 0"),
        ("gaussian_fixed", {"sigma": "big"}, "sigma must be a finite number"),
        ("gaussian_fixed", {"sigma": float("inf")}, "sigma must be a finite number, got inf"),
        ("gaussian_shared", {"floor": "nan"}, "floor must be a finite number, got nan"),
        (  # a run config's list: not a sweep, which only a study config's arenas make
            "gaussian_fixed",
            {"sigma": [0.1, 0.3]},
            r"got \[0.1, 0.3\] \(a list sweeps only in a study config's arenas\)",
        ),
        ("gaussian_shared", {"floor": -0.1}, "floor must be >= 0"),
        ("gaussian_shared", {"init": 0.01, "floor": 0.1}, "init must be > floor"),
        ("gaussian_heteroscedastic", {"floor": -1.0}, "floor must be >= 0"),
        ("mse", {"reduction": "max"}, "reduction must be 'sum' or 'mean'"),
        ("bernoulli", {"sigma": 0.1}, "has no parameter 'sigma'"),
    ],
)
def test_bad_family_settings_are_user_errors(name, params, message):
    with pytest.raises(UserError, match=message):
        build_likelihood(name, D, params)


def _every_family():
    for name in sorted(REGISTRY):
        yield name, build_likelihood(name, D).double()
    yield "calibrated", Calibrated(build_likelihood("continuous_bernoulli", D), 0.3).double()


@pytest.mark.parametrize("name,lik", list(_every_family()), ids=lambda v: v if isinstance(v, str) else "")
def test_log_prob_equals_the_distributions_with_samples_broadcast(name, lik):
    """Likelihood.log_prob (the fast path of training and IWAE) against torch.distributions, for
    decoder outputs of S samples x B images and images of B: values and gradients."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lik.parameters():  # learned sigmas that differ between pixels
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.rand((4, D), generator=g, dtype=torch.float64)
    if name == "bernoulli":
        x = (x > 0.5).double()
    o = (
        2 * torch.randn((3, 4, lik.outputs_per_pixel * D), generator=g, dtype=torch.float64)
    ).requires_grad_()
    fast, reference = lik.log_prob(o, x), lik.distribution(o).log_prob(x)
    assert fast.shape == reference.shape == (3, 4)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    if name == "bernoulli":  # IWAE's formula, which runs without autograd
        samples = _bernoulli_log_prob_samples(o.detach(), x)
        torch.testing.assert_close(samples, reference.detach(), rtol=1e-12, atol=1e-12)
    (g_fast,) = torch.autograd.grad(fast.sum(), o)
    (g_ref,) = torch.autograd.grad(reference.sum(), o)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "grey"])
def test_bernoulli_log_prob_of_many_samples_is_as_accurate_as_softplus(binary):
    """IWAE's Bernoulli path (log sigmoid(|o|) summed as logs of products of 16) in float32 on
    784 pixels, with logits up to +-100 and exact zeros: against torch.distributions in float64,
    within twice the error of the float32 softplus formula, and at most 1e-6 of the value."""
    g = torch.Generator().manual_seed(2)
    lik = build_likelihood("bernoulli", 784)
    o = 25 * torch.randn((6, 3, 784), generator=g)
    o[0, 0, :50], o[1, 1, :50], o[2, 2, :50] = 0.0, 100.0, -100.0
    x = torch.rand((3, 784), generator=g)
    if binary:
        x = (x > 0.7).float()
    with torch.no_grad():
        fast = lik.log_prob(o, x).double()  # on CPU without autograd: the sigmoid products
    reference = lik.distribution(o.double()).log_prob(x.double())
    plain = ((o * x).sum(-1) - torch.nn.functional.softplus(o).sum(-1)).double()
    error, plain_error = (fast - reference).abs().max(), (plain - reference).abs().max()
    assert error <= 2 * plain_error + 1e-3
    assert (fast - reference).abs().div(reference.abs()).max() < 1e-6
    assert (plain - reference).abs().div(reference.abs()).max() < 1e-6


@pytest.mark.parametrize("shape", [(4, 12), (3, 4, 12)], ids=["images", "samples"])
def test_the_bernoulli_gradient_by_finite_differences(shape):
    """The Bernoulli's log_prob in float64: gradients in o and x against finite differences
    (torch.autograd.gradcheck), values with and without autograd against torch.distributions."""
    g = torch.Generator().manual_seed(3)
    lik = build_likelihood("bernoulli", 12).double()
    o = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    x = torch.rand((4, 12), generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lik.log_prob, (o, x))
    reference = lik.distribution(o).log_prob(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(lik.log_prob(o, x), reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lik.log_prob(o, x).detach(), reference, rtol=1e-12, atol=1e-12)


# ---- the families for 8-bit images: each against scipy, its masses summing to 1, its draws' moments


@pytest.mark.parametrize("scale", [0.0, 0.07])  # learned (from 1) and fixed
def test_laplace_matches_scipy(scale):
    x, o = _x_and_o(3)
    lik = build_likelihood("laplace", D, {"scale": scale}).double()
    b = lik.sigma()  # the scale it holds (a fixed one as float32 holds it)
    assert b == pytest.approx(1.0 if scale == 0 else scale, rel=1e-7)
    expected = scipy.stats.laplace.logpdf(x.numpy(), loc=o.numpy(), scale=b).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).detach().numpy(), expected, rtol=1e-12)
    assert [p.numel() for p in lik.parameters()] == ([1] if scale == 0 else [])


@pytest.mark.parametrize("df", [1.5, 3.0, 30.0])
def test_student_t_matches_scipy(df):
    x, o = _x_and_o(4)
    lik = build_likelihood("student_t", D, {"df": df, "scale": 0.2}).double()
    expected = scipy.stats.t.logpdf(x.numpy(), df, loc=o.numpy(), scale=lik.sigma()).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).numpy(), expected, rtol=1e-12)


def test_beta_takes_both_concentrations_from_the_decoder_through_softplus():
    x, o = _x_and_o(5, outputs=2)
    lik = build_likelihood("beta", D).double()
    a = torch.nn.functional.softplus(o[:, :D]).numpy() + 1e-4
    b = torch.nn.functional.softplus(o[:, D:]).numpy() + 1e-4
    expected = scipy.stats.beta.logpdf(x.numpy(), a, b).sum(-1)
    np.testing.assert_allclose(lik.log_prob(o, x).numpy(), expected, rtol=1e-10)
    edge = torch.zeros(5, D, dtype=torch.float64)  # a dequantised 0: finite, at the clamped edge
    assert torch.isfinite(lik.log_prob(o, edge)).all()


def _scipy_mass(kind, levels, loc, scale):
    """P(level k) for k = 0..L-1 of a binned logistic or Gaussian with open edge bins (scipy)."""
    return np.exp(_scipy_log_mass(kind, levels, loc, scale))


def _scipy_log_mass(kind, levels, loc, scale):
    """log P(level k), k = 0..L-1, from scipy's log-CDF and log-survival, each bin's difference taken
    in the tail where it does not round to 0."""
    frozen = (scipy.stats.logistic if kind == "logistic" else scipy.stats.norm)(loc=loc, scale=scale)
    edges = (np.arange(levels + 1) - 0.5) / (levels - 1)
    edges[0], edges[-1] = -np.inf, np.inf
    lower, upper = edges[:-1], edges[1:]
    with np.errstate(divide="ignore"):
        below = frozen.logcdf(upper) + np.log1p(-np.exp(frozen.logcdf(lower) - frozen.logcdf(upper)))
        above = frozen.logsf(lower) + np.log1p(-np.exp(frozen.logsf(upper) - frozen.logsf(lower)))
    return np.where(lower + upper > 2 * loc, above, below)


@pytest.mark.parametrize(
    "name,kind", [("discretised_logistic", "logistic"), ("discretised_gaussian", "gaussian")]
)
@pytest.mark.parametrize("levels", [17, 256])
def test_discretised_log_prob_matches_scipy(name, kind, levels):
    g = torch.Generator().manual_seed(7)
    o = torch.cat(
        [torch.rand(1, D, generator=g) * 1.4 - 0.2, torch.randn(1, D, generator=g) - 2.5], -1
    ).double()
    k = torch.randint(0, levels, (1, D), generator=g)
    k[0, :2] = torch.tensor([0, levels - 1])  # both edge bins
    lik = build_likelihood(name, D, levels=levels).double()
    got = lik.distribution(o).base_dist.log_prob(k.double() / (levels - 1))[0]
    for i in range(D):
        log_mass = _scipy_log_mass(kind, levels, float(o[0, i]), math.exp(float(o[0, D + i])))
        assert float(got[i]) == pytest.approx(log_mass[int(k[0, i])], rel=1e-9, abs=1e-12)


def test_discretised_mixture_is_the_weighted_sum_of_its_binned_logistics():
    n, levels = 3, 17
    g = torch.Generator().manual_seed(8)
    o = torch.randn(1, 3 * n * D, generator=g, dtype=torch.float64)
    lik = build_likelihood("discretised_logistic_mixture", D, {"mixtures": n}, levels=levels).double()
    loc, log_scale, logits = (t[0].numpy() for t in lik.components(o))  # each (D, n)
    weights = scipy.special.softmax(logits, -1)
    k = torch.randint(0, levels, (1, D), generator=g)
    got = lik.distribution(o).base_dist.log_prob(k.double() / (levels - 1))[0]
    for i in range(D):
        mass = sum(
            w * _scipy_mass("logistic", levels, m, math.exp(s))
            for w, m, s in zip(weights[i], loc[i], log_scale[i], strict=True)
        )
        assert float(got[i]) == pytest.approx(math.log(mass[int(k[0, i])]), rel=1e-9)


DISCRETISED = ["discretised_logistic", "discretised_gaussian", "discretised_logistic_mixture"]


@pytest.mark.parametrize("name", DISCRETISED)
@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_discretised_mass_sums_to_one_over_the_levels(name, levels, dtype):
    """For random parameters including extreme scales (log-scale from -30, clamped to -7, to 12) and
    means far outside [0, 1]: the L masses of every pixel sum to 1 to the dtype's rounding."""
    g = torch.Generator().manual_seed(levels)
    lik = build_likelihood(name, D, levels=levels).to(dtype)
    o = torch.randn(4, lik.outputs_per_pixel * D, generator=g, dtype=dtype) * 3
    o[0] = o[0] * 10  # means and log-scales far out
    o[1, D : 2 * D] = -30.0 if name != "discretised_logistic_mixture" else o[1, D : 2 * D]
    o[2, D : 2 * D] = 12.0 if name != "discretised_logistic_mixture" else o[2, D : 2 * D]
    dist = lik.distribution(o).base_dist
    grid = torch.arange(levels, dtype=dtype) / (levels - 1)
    total = torch.stack([dist.log_prob(v.expand(4, D)) for v in grid]).exp().sum(0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=tol)


@pytest.mark.parametrize("name", DISCRETISED)
def test_discretised_gradients_are_finite_at_the_edge_bins_and_at_tiny_scales(name):
    levels = 256
    lik = build_likelihood(name, D, levels=levels)
    g = torch.Generator().manual_seed(3)
    o = torch.randn(5, lik.outputs_per_pixel * D, generator=g)
    if name != "discretised_logistic_mixture":
        o[:, D:] = torch.linspace(-12, 3, 5).unsqueeze(1)  # log-scales down to far below the clamp
    o.requires_grad_()
    x = torch.tensor([0.0, 1.0, 0.5, 1 / 255, 254 / 255, 0.0]).expand(5, D)  # both edges, beside them
    log_p = lik.log_prob(o, x)
    (grad,) = torch.autograd.grad(log_p.sum(), o)
    assert torch.isfinite(log_p).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ["laplace", "student_t", "beta", *DISCRETISED])
def test_draws_have_the_moments_of_the_closed_forms(name):
    """Mean and variance of 200,000 draws per pixel against the family's closed form (scipy for the
    continuous ones, the binned masses for the discretised ones)."""
    params = {"laplace": {"scale": 0.1}, "student_t": {"df": 5.0, "scale": 0.1}}.get(name, {})
    levels = 17
    lik = build_likelihood(name, 2, params, levels=levels).double()
    g = torch.Generator().manual_seed(11)
    o = torch.randn(1, lik.outputs_per_pixel * 2, generator=g, dtype=torch.float64) * 0.5
    if name in ("laplace", "student_t"):
        o = torch.tensor([[0.3, 0.6]], dtype=torch.float64)
    dist = lik.distribution(o)
    torch.manual_seed(0)
    draws = dist.sample((200_000,))[:, 0].numpy()  # (N, 2)
    if name == "laplace":
        mean, var = o[0].numpy(), np.full(2, 2 * 0.1**2)
    elif name == "student_t":
        mean, var = o[0].numpy(), np.full(2, 0.1**2 * 5 / 3)
    elif name == "beta":
        frozen = scipy.stats.beta(
            torch.nn.functional.softplus(o[0, :2]).numpy() + 1e-4,
            torch.nn.functional.softplus(o[0, 2:]).numpy() + 1e-4,
        )
        mean, var = frozen.mean(), frozen.var()
    else:
        grid = np.arange(levels) / (levels - 1)
        mass = np.stack(
            [
                dist.base_dist.log_prob(torch.full((1, 2), v, dtype=torch.float64))[0].exp().numpy()
                for v in grid
            ]
        )  # (L, 2)
        mean, var = (grid[:, None] * mass).sum(0), (grid[:, None] ** 2 * mass).sum(0)
        var = var - mean**2
        np.testing.assert_allclose(dist.mean[0].numpy(), mean, rtol=1e-12)  # the exact mean
        assert set(np.unique(draws)) <= set(grid)  # draws are grey levels
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * np.sqrt(var / 200_000).max())
    np.testing.assert_allclose(draws.var(0), var, rtol=0.03)
