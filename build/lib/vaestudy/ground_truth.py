"""Exact answers for a linear Gaussian VAE: its marginal log-likelihood and the optimum it should
reach, probabilistic PCA (Tipping & Bishop 1999; Lucas et al. 2019, "Don't blame the ELBO").

A decoder x = W z + b + sigma eps with z ~ N(0, I) has p(x) = N(x; b, W W^T + sigma^2 I). Its maximum
likelihood W keeps the top eigenvectors u_i of the data covariance whose eigenvalues lambda_i exceed
sigma^2, scaled by sqrt(lambda_i - sigma^2): latent i is active exactly there.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vaestudy.likelihoods import GaussianFixed


def is_linear_gaussian(model) -> bool:
    """A VAE whose decoder is one affine map and whose likelihood is a Gaussian with a fixed sigma."""
    decoder = getattr(model, "decoder", None)
    return (
        isinstance(model.likelihood, GaussianFixed)
        and isinstance(decoder, torch.nn.Sequential)
        and len(decoder) == 1
        and isinstance(decoder[0], torch.nn.Linear)
    )


def decoder_affine(model) -> tuple[np.ndarray, np.ndarray, float]:
    """(W, b, sigma) of a linear Gaussian decoder, in float64."""
    layer = model.decoder[0]
    w = layer.weight.detach().double().cpu().numpy()
    b = layer.bias.detach().double().cpu().numpy()
    return w, b, float(model.likelihood.scale)


def exact_log_likelihood(w: np.ndarray, b: np.ndarray, sigma: float, x: np.ndarray) -> np.ndarray:
    """log N(x; b, W W^T + sigma^2 I) of each row of x (nats), through a Cholesky factor in float64."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    cov = w @ w.T + sigma**2 * np.eye(d)
    chol = np.linalg.cholesky(cov)
    diff = np.linalg.solve(chol, (x - b).T)  # L^-1 (x - b), one column per image
    log_det = 2 * np.log(np.diag(chol)).sum()
    return -0.5 * ((diff**2).sum(0) + log_det + d * math.log(2 * math.pi))


def covariance_eigen(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues largest first, eigenvectors as columns) of the maximum-likelihood covariance."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return mean, values[order], vectors[:, order]


def predicted_active(eigenvalues: np.ndarray, sigma: float, latent: int) -> int:
    """Latent directions active at the optimum: eigenvalues above sigma^2, at most `latent` of them."""
    return int(min(latent, int((np.asarray(eigenvalues) > sigma**2).sum())))


def ppca_optimum(x_train: np.ndarray, sigma: float, latent: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(W, b, active count) of the maximum-likelihood linear decoder with this fixed sigma: the top
    eigenvectors of the training covariance scaled by sqrt(lambda_i - sigma^2) (Tipping & Bishop 1999)."""
    mean, values, vectors = covariance_eigen(x_train)
    q = predicted_active(values, sigma, latent)
    w = np.zeros((x_train.shape[1], latent))
    w[:, :q] = vectors[:, :q] * np.sqrt(values[:q] - sigma**2)
    return w, mean, q


def ground_truth_metrics(model, x_test: torch.Tensor, x_train: torch.Tensor) -> dict[str, float]:
    """The exact test log-likelihood of the trained model and of the pPCA optimum (nats per image),
    and the optimum's active count; the IWAE and ELBO gaps are set beside them by evaluate."""
    w, b, sigma = decoder_affine(model)
    x = x_test.double().cpu().numpy()
    w_opt, b_opt, active = ppca_optimum(x_train.double().cpu().numpy(), sigma, w.shape[1])
    return {
        "ll_exact": float(exact_log_likelihood(w, b, sigma, x).mean()),
        "ll_exact_ppca": float(exact_log_likelihood(w_opt, b_opt, sigma, x).mean()),
        "active_units_exact": float(active),
    }
