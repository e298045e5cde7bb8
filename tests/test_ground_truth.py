"""The ground truth of a linear Gaussian VAE against independent references: scipy's Gaussian density,
IWAE with the exact posterior, a numerically optimised likelihood, and a constructed covariance."""

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from test_evaluate import linear_gaussian_vae

from vaestudy.config import RunConfig
from vaestudy.evaluate import evaluate, iwae, rate_per_unit
from vaestudy.ground_truth import (
    covariance_eigen,
    decoder_affine,
    exact_log_likelihood,
    is_linear_gaussian,
    ppca_optimum,
    predicted_active,
)
from vaestudy.train import train


def test_the_exact_log_likelihood_is_scipys_multivariate_normal():
    rng = np.random.default_rng(0)
    w, b, x = rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=(50, 6))
    expected = scipy.stats.multivariate_normal(b, w @ w.T + 0.3**2 * np.eye(6)).logpdf(x)
    np.testing.assert_allclose(exact_log_likelihood(w, b, 0.3, x), expected, rtol=1e-10)


def test_iwae_with_the_exact_posterior_is_within_0_05_nats_of_the_exact_log_likelihood():
    model, x, reference, _ = linear_gaussian_vae(exact_posterior=True)
    assert is_linear_gaussian(model)
    w, b, sigma = decoder_affine(model)
    exact = exact_log_likelihood(w, b, sigma, x.double().numpy())
    np.testing.assert_allclose(exact, reference, rtol=1e-6)  # read off the model as built
    bounds = iwae(model, x, 1000, torch.Generator().manual_seed(0))
    assert abs(bounds[1000] - exact.mean()) < 0.05


def test_the_predicted_active_count_on_a_constructed_covariance():
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    eigen = np.array([4.0, 2.0, 1.0, 0.5, 0.1])
    x = rng.normal(size=(200_000, 5)) * np.sqrt(eigen) @ basis.T
    _, values, _ = covariance_eigen(x)
    np.testing.assert_allclose(values, eigen, rtol=0.02)
    assert [predicted_active(values, s, 5) for s in (0.2, 0.8, 1.2, 1.5, 3.0)] == [5, 3, 2, 1, 0]
    assert predicted_active(values, 0.2, 3) == 3  # no more than the latent dimensions


def test_the_ppca_optimum_is_the_numerically_optimised_likelihood():
    """The closed form's log-likelihood equals what a generic optimiser finds over W and b."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 4)) @ np.diag([2.0, 1.0, 0.6, 0.3]) @ np.linalg.qr(rng.normal(size=(4, 4)))[0]
    sigma, latent = 0.5, 2
    w, b, active = ppca_optimum(x, sigma, latent)
    closed = exact_log_likelihood(w, b, sigma, x).mean()

    def negative(theta):
        return -exact_log_likelihood(theta[:8].reshape(4, 2), theta[8:], sigma, x).mean()

    best = min(
        (scipy.optimize.minimize(negative, rng.normal(size=12), method="BFGS") for _ in range(3)),
        key=lambda r: r.fun,
    )
    assert closed == pytest.approx(-best.fun, abs=1e-5)
    assert active == predicted_active(covariance_eigen(x)[1], sigma, latent) == 2


def test_evaluate_reports_the_exact_metrics_of_a_linear_gaussian_model(tmp_path):
    config = RunConfig(
        family="gaussian_fixed", params={"sigma": 0.5}, hidden=[], latent=4, epochs=30, device="cpu", lr=0.003
    )
    train(config, tmp_path / "run", progress=False)
    metrics = evaluate(tmp_path / "run", tmp_path / "m.json", k=200, device="cpu")["metrics"]
    assert metrics["iwae_minus_exact"] == pytest.approx(metrics["ll_iwae"] - metrics["ll_exact"])
    assert metrics["elbo_minus_exact"] == pytest.approx(metrics["elbo"] - metrics["ll_exact"])
    assert metrics["elbo_minus_exact"] < 0 and abs(metrics["iwae_minus_exact"]) < 0.5  # the bounds below
    assert metrics["ll_exact"] <= metrics["ll_exact_ppca"] + 0.5  # the optimum, on test images
    assert metrics["active_units_exact"] == 4  # digits at sigma 0.5: four eigenvalues above 0.25
    rates = [metrics[f"rate_unit_{j}"] for j in range(1, 5)]
    assert rates == sorted(rates, reverse=True) and sum(rates) == pytest.approx(metrics["rate"], rel=1e-4)


def test_the_rate_per_unit_is_the_closed_form_kl_of_each_latent():
    model, x, _, _ = linear_gaussian_vae(exact_posterior=False)
    mu, log_var = (t.double() for t in model.encode(x))
    expected = (
        torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, (0.5 * log_var).exp()), torch.distributions.Normal(0.0, 1.0)
        )
        .mean(0)
        .detach()
    )
    torch.testing.assert_close(rate_per_unit(model, x), expected)
