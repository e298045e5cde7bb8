"""Evaluate one trained model on the test split (docs/study.md, section 5, all but sample quality).

elbo = -(rate + distortion) with rate = KL(q(z|x) || p(z)) and distortion = -E_q log p(x|z);
ll_iwae = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q (Burda et al. 2015), in chunks
with logsumexp under a memory bound; bpd from the log-likelihood of the discrete data;
active units (Burda et al. 2015); and the calibrated Gaussian evaluation.
All in float32 without TF32.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaestudy import fast
from vaestudy.config import RunConfig
from vaestudy.data import DEQUANTISED, ArenaData
from vaestudy.errors import require
from vaestudy.fast import SampleDecoder
from vaestudy.files import atomic_write_json, check_output_folder
from vaestudy.ground_truth import ground_truth_metrics, is_linear_gaussian
from vaestudy.likelihoods import Calibrated, Likelihood
from vaestudy.model import VAE, kl_standard_normal
from vaestudy.runtime import ProgressLines, device_name, exact_float32, generator, versions
from vaestudy.train import FACTS, Trained, load_trained, seeds_of


def default_max_elements(device: torch.device) -> int:
    """Decoder-output floats alive at once in the IWAE loop, when not set: 2^20 on CPU (4 MB
    tensors, which a CPU's cache holds), 2^24 on a GPU."""
    return 2**24 if device.type == "cuda" else 2**20


def _sample_z(mu: torch.Tensor, log_var: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    eps = torch.randn((n, *mu.shape), generator=g, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * log_var).exp() * eps


@torch.no_grad()
def elbo_terms(
    model: VAE,
    x: torch.Tensor,
    g: torch.Generator,
    likelihood: Likelihood | None = None,
    samples: int = 1,
    batch_size: int = 512,
) -> dict[str, float]:
    """Mean over images of rate, distortion (S-sample estimate), elbo, loss and per-pixel mse."""
    likelihood = likelihood or model.likelihood
    sums = dict.fromkeys(("rate", "distortion", "loss", "mse"), 0.0)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        mu, log_var = model.encode(xb)
        o = model.decode(_sample_z(mu, log_var, samples, g))  # (S, B, P*D)
        loss_rec, log_px = likelihood.reconstruction(xb, o)
        rate = kl_standard_normal(mu, log_var)
        mean = likelihood.distribution(o).mean
        sums["rate"] += float(rate.sum())
        sums["distortion"] += float(-log_px.mean(0).sum())
        sums["loss"] += float((loss_rec.mean(0) + rate).sum())
        sums["mse"] += float((xb - mean).pow(2).mean((0, 2)).sum())
    terms = {k: v / len(x) for k, v in sums.items()}
    terms["elbo"] = -(terms["rate"] + terms["distortion"])
    return terms


def logsumexp_fold(running: torch.Tensor | None, block: torch.Tensor) -> torch.Tensor:
    """log(exp(running) + sum over rows of exp(block)) per column: torch.logsumexp over the running
    value (None before the first block) and the block's rows, so that only one block is kept."""
    return torch.logsumexp(block if running is None else torch.cat((running.unsqueeze(0), block)), 0)


def _bound_sum(logsumexp: torch.Tensor, k: int) -> float:
    """sum over images of log (1/k) sum_i w_i, from the logsumexp of their k log-weights."""
    return float((logsumexp - math.log(k)).sum())


def iwae_ladder(k: int) -> list[int]:
    """1, 10, 100, ... below k, then k."""
    ladder = [10**i for i in range(int(math.log10(k)) + 1) if 10**i < k]
    return [*ladder, k]


@torch.no_grad()
def iwae(
    model: VAE,
    x: torch.Tensor,
    k: int,
    g: torch.Generator,
    likelihood: Likelihood | None = None,
    images_per_chunk: int = 100,
    max_elements: int | None = None,
    fold_samples: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[int, float]:
    """The importance-weighted bound L_k (Burda et al. 2015) averaged over images, for every k of
    iwae_ladder(K), from the first k of the same K samples. Memory stays bounded whatever len(x)
    and K: one chunk of about max_elements decoder outputs at a time, its log-weights folded into
    a running logsumexp per image every fold_samples samples (which changes only rounding).
    progress, where given, is called with the number of images done after each chunk."""
    require(k >= 1, f"K must be >= 1, got {k}")
    max_elements = max_elements or default_max_elements(x.device)
    likelihood = likelihood or model.likelihood
    ladder = iwae_ladder(k)
    sums = dict.fromkeys(ladder, 0.0)
    out_width = likelihood.outputs_per_pixel * likelihood.num_pixels
    for start in range(0, len(x), images_per_chunk):
        xb = x[start : start + images_per_chunk]
        mu, log_var = model.encode(xb)
        sigma, log_det = (0.5 * log_var).exp(), 0.5 * log_var.sum(-1)
        samples_per_chunk = max(1, max_elements // (len(xb) * out_width))
        decode = SampleDecoder(model, samples_per_chunk * len(xb))
        # the log-weights of up to max_elements / 16 samples and images are kept, then folded
        # into a running logsumexp per image: a few operations per fold instead of per chunk
        fold = fold_samples or max(1, max_elements // (16 * len(xb)))
        running, pending, folded = None, [], 0  # running: the logsumexp of the `folded` first samples
        for s in range(0, k, samples_per_chunk):
            n = min(samples_per_chunk, k - s)
            eps = torch.randn((n, *mu.shape), generator=g, device=mu.device, dtype=mu.dtype)
            z = torch.addcmul(mu, sigma, eps)  # (n, B, latent) ~ q(z|x)
            log_px = likelihood.log_prob(decode(z), xb)
            # log p(z) - log q(z|x) with z = mu + sigma eps: the normalising constants cancel,
            # leaving 0.5 sum(eps^2 - z^2) + sum log sigma (a few passes over n x B x latent
            # numbers instead of two Normal.log_prob)
            pending.append(torch.add(log_px, (eps - z).mul_(eps + z).sum(-1), alpha=0.5).add_(log_det))
            if s + n - folded < fold and s + n < k:
                continue
            log_w = torch.cat(pending) if len(pending) > 1 else pending[0]  # samples folded..s+n
            for kk in ladder:
                if folded < kk < s + n:  # L_kk ends inside: the first kk - folded of them
                    sums[kk] += _bound_sum(logsumexp_fold(running, log_w[: kk - folded]), kk)
            running, pending, folded = logsumexp_fold(running, log_w), [], s + n
            if folded in sums:
                sums[folded] += _bound_sum(running, folded)
        # freed before the next chunk of images makes its own (else both would be alive at once)
        del decode, log_w, log_px, eps, z
        if progress is not None:
            progress(start + len(xb))
    return {kk: v / len(x) for kk, v in sums.items()}


@torch.no_grad()
def active_units(model: VAE, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 1024) -> int:
    """Latent dimensions j with Cov_x(E_q[z_j]) > threshold (Burda et al. 2015)."""
    mu = torch.cat([model.encode(x[s : s + batch_size])[0] for s in range(0, len(x), batch_size)])
    return int((mu.double().var(0, unbiased=True) > threshold).sum())


@torch.no_grad()
def rate_per_unit(model: VAE, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Each latent's KL(q(z_j|x) || N(0, 1)), averaged over x (nats): the rate per dimension, a
    threshold-free reading of which latents carry information."""
    total = None
    for s in range(0, len(x), batch_size):
        mu, log_var = (t.double() for t in model.encode(x[s : s + batch_size]))
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var)
        total = kl.sum(0) if total is None else total + kl.sum(0)
    return total / len(x)


def bits_per_dim(ll: float, num_pixels: int, levels: int, arena: str) -> float:
    """bpd of the discrete data: from a density on dequantised data (continuous, linear) the bound
    -(ll - D ln L)/(D ln 2) (Theis et al. 2016); from a mass (binary, discrete) exactly -ll/(D ln 2)."""
    offset = num_pixels * math.log(levels) if arena in DEQUANTISED else 0.0
    return -(ll - offset) / (num_pixels * math.log(2))


def score(
    model: VAE,
    x: torch.Tensor,
    likelihood: Likelihood,
    k: int,
    g: torch.Generator,
    num_pixels: int,
    levels: int,
    arena: str,
    elbo_samples: int,
    max_elements: int | None,
    prefix: str = "",
    label: str | None = None,
) -> dict[str, float]:
    """ELBO terms, IWAE ladder, ll_iwae and bpd of one likelihood on x, with names prefixed.
    label: the run's name in progress lines of a long IWAE (None: no progress lines)."""
    metrics = elbo_terms(model, x, g, likelihood, samples=elbo_samples)
    progress = (
        None if label is None else ProgressLines(f"{label} {prefix}ll_iwae at K={k}", len(x), "test images")
    )
    bounds = iwae(model, x, k, g, likelihood, max_elements=max_elements, progress=progress)
    metrics.update({f"ll_iwae_k{kk}": v for kk, v in bounds.items()})
    metrics["ll_iwae"] = bounds[k]
    metrics["bpd"] = bits_per_dim(bounds[k], num_pixels, levels, arena)
    metrics["bpd_elbo"] = bits_per_dim(metrics["elbo"], num_pixels, levels, arena)
    return {prefix + name: value for name, value in metrics.items()}


def metrics_on_test(
    model: VAE,
    config: RunConfig,
    data: ArenaData,
    seed: int,
    k: int,
    elbo_samples: int,
    max_elements: int | None,
) -> dict[str, float]:
    """Every metric of a model on its test split (the calibrated Gaussian's too, where continuous),
    with the draws of the evaluation seed."""
    dev = data.device
    likelihood = model.likelihood
    shared = dict(
        label=f"{config.arena}/{config.family}",
        k=k,
        num_pixels=data.num_pixels,
        levels=data.levels,
        arena=data.arena,
        elbo_samples=elbo_samples,
        max_elements=max_elements,
    )
    metrics = score(model, data.test, likelihood, g=generator(dev, seed, "eval"), **shared)
    # the same number of training images under the arena's fixed draw: a model that memorises
    # its training split shows a large gap
    train_terms = elbo_terms(
        model,
        data.train_fixed(len(data.test)),
        generator(dev, seed, "eval-train"),
        likelihood,
        elbo_samples,
    )
    metrics["elbo_train"] = train_terms["elbo"]
    metrics["elbo_gap"] = train_terms["elbo"] - metrics["elbo"]
    metrics["active_units"] = active_units(model, data.test)
    rates = rate_per_unit(model, data.test).sort(descending=True).values
    metrics.update({f"rate_unit_{j}": float(r) for j, r in enumerate(rates, 1)})  # largest first
    if is_linear_gaussian(model):  # exact answers: the marginal likelihood and the pPCA optimum
        metrics.update(ground_truth_metrics(model, data.test, data.train_fixed()))
        metrics["iwae_minus_exact"] = metrics["ll_iwae"] - metrics["ll_exact"]
        metrics["elbo_minus_exact"] = metrics["elbo"] - metrics["ll_exact"]
    metrics["sigma"] = likelihood.sigma()
    if data.arena == "continuous":
        sigma = math.sqrt(model.mean_squared_residual(data.val, generator(dev, seed, "calibrate")))
        calibrated = Calibrated(likelihood, sigma).to(dev)
        metrics["calibrated_sigma"] = sigma
        metrics.update(
            score(
                model,
                data.test,
                calibrated,
                g=generator(dev, seed, "eval-cal"),
                prefix="calibrated_",
                **shared,
            )
        )
    return metrics


def evaluate(
    run_dir: str | Path,
    out: str | Path,
    k: int = 100,
    device: str = "auto",
    elbo_samples: int = 10,
    max_elements: int | None = None,
    seed: int | None = None,
    trained: Trained | None = None,
) -> dict[str, Any]:
    """Evaluate the model trained in run_dir on its test split; write the JSON to out.

    trained: load_trained(run_dir, device) where the caller has it already (vaestudy model)."""
    require(k >= 1, f"K must be >= 1, got {k}")
    require(elbo_samples >= 1, f"elbo samples must be >= 1, got {elbo_samples}")
    require(max_elements is None or max_elements >= 1, f"max elements must be >= 1, got {max_elements}")
    check_output_folder(Path(out).parent)
    model, config, data, saved = trained or load_trained(run_dir, device)
    run_dir, dev = Path(run_dir), data.device
    seed = config.seed if seed is None else seed
    started = time.perf_counter()
    fast.forget_paths()
    with exact_float32():
        metrics = metrics_on_test(model, config, data, seed, k, elbo_samples, max_elements)
    eval_seconds = time.perf_counter() - started
    train_facts = {}
    if (run_dir / FACTS).is_file():
        import json

        train_facts = json.loads((run_dir / FACTS).read_text())
    result = {
        "config": config.to_dict(),
        "status": saved["status"],
        "diverged_epoch": saved["diverged_epoch"],
        "epochs": saved["epochs"],
        "best_epoch": saved.get("best_epoch"),
        "normalised": model.likelihood.normalised(data.arena),
        "loss_is_nll": model.likelihood.loss_is_nll,
        "k": k,
        "num_pixels": data.num_pixels,
        "levels": data.levels,
        "test_images": len(data.test),
        "metrics": metrics,
        "train_seconds": train_facts.get("seconds"),
        "eval_seconds": eval_seconds,
        "device": device_name(dev),
        "paths": fast.paths(),
        "peak_memory_mb_train": train_facts.get("peak_memory_mb"),
        "seeds": seeds_of(config, seed),
        "versions": versions(),
    }
    atomic_write_json(out, result)
    print(
        f"{config.arena}/{config.family}: elbo {metrics['elbo']:.3f} ll_iwae {metrics['ll_iwae']:.3f} "
        f"bpd {metrics['bpd']:.4f} ({eval_seconds:.1f}s)",
        file=sys.stderr,
    )
    return result
