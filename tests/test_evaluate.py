"""Evaluation against closed forms: a linear Gaussian VAE has an exact marginal likelihood."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from torch.distributions import Normal, kl_divergence

from vaestudy import fast
from vaestudy.evaluate import active_units, bits_per_dim, elbo_terms, iwae, iwae_ladder, logsumexp_fold
from vaestudy.fast import SampleDecoder
from vaestudy.likelihoods import build_likelihood
from vaestudy.model import VAE, ModelConfig, kl_standard_normal
from vaestudy.runtime import ProgressLines

D, LATENT, SIGMA = 5, 2, 0.5


def linear_gaussian_vae(exact_posterior: bool) -> tuple[VAE, torch.Tensor, np.ndarray, np.ndarray]:
    """p(z)=N(0,I), p(x|z)=N(Wz+b, s^2 I) with orthogonal columns of W, so the posterior is diagonal.

    The encoder is the exact posterior, or a deliberately wrong one.
    """
    g = torch.Generator().manual_seed(3)
    q_mat, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=g, dtype=torch.float64))
    w = q_mat * torch.tensor([1.5, 0.8], dtype=torch.float64)  # orthogonal columns
    b = torch.randn(D, generator=g, dtype=torch.float64)
    post_var = 1.0 / (1.0 + (w * w).sum(0) / SIGMA**2)  # diag of (I + W^T W / s^2)^-1
    enc_w = post_var[:, None] * w.T / SIGMA**2
    enc_b = -enc_w @ b
    log_var = post_var.log()
    if not exact_posterior:
        enc_w, log_var = 0.6 * enc_w, log_var + 0.7
    model = VAE(
        ModelConfig(shape=(1, 1, D), latent=LATENT, hidden=[]),
        build_likelihood("gaussian_fixed", D, {"sigma": SIGMA}),
    )
    with torch.no_grad():
        enc, dec = model.encoder[0], model.decoder[0]
        enc.weight.copy_(torch.cat([enc_w, torch.zeros(LATENT, D, dtype=torch.float64)]))
        enc.bias.copy_(torch.cat([enc_b, log_var]))
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    z = torch.randn(200, LATENT, generator=g, dtype=torch.float64)
    x = (z @ w.T + b + SIGMA * torch.randn(200, D, generator=g, dtype=torch.float64)).float()
    cov = (w @ w.T).numpy() + SIGMA**2 * np.eye(D)
    exact = scipy.stats.multivariate_normal(b.numpy(), cov).logpdf(x.double().numpy())
    return model.eval(), x, exact, cov


def test_iwae_with_the_exact_posterior_is_exact_at_every_k():
    model, x, exact, _ = linear_gaussian_vae(exact_posterior=True)
    bounds = iwae(model, x, 100, torch.Generator().manual_seed(0))
    for value in bounds.values():
        assert value == pytest.approx(exact.mean(), abs=1e-3)


def test_iwae_converges_to_the_exact_log_likelihood_and_grows_with_k():
    model, x, exact, _ = linear_gaussian_vae(exact_posterior=False)
    bounds = iwae(model, x, 5000, torch.Generator().manual_seed(0), max_elements=20_000)
    values = [bounds[k] for k in iwae_ladder(5000)]
    assert values[0] < exact.mean() - 0.3  # a wrong encoder: a loose ELBO
    # grows with K up to Monte Carlo noise (L_100 is already within 0.01 of the limit here)
    assert all(a < b + 0.01 for a, b in zip(values, values[1:], strict=False))
    assert values[1] > values[0] + 0.5
    assert bounds[5000] == pytest.approx(exact.mean(), abs=0.02)
    assert bounds[5000] <= exact.mean() + 0.005  # a lower bound in expectation


def test_iwae_does_not_depend_on_the_memory_bound():
    model, x, _, _ = linear_gaussian_vae(exact_posterior=False)
    small = iwae(model, x, 300, torch.Generator().manual_seed(5), max_elements=7 * D)
    large = iwae(model, x, 300, torch.Generator().manual_seed(5), images_per_chunk=1000)
    # the same samples are drawn in another order, so only the Monte Carlo error may differ
    assert small[300] == pytest.approx(large[300], abs=0.05)


def test_iwae_ladder_does_not_depend_on_how_its_log_weights_are_folded():
    """The same samples (the same chunks), their log-weights folded into the running logsumexp
    after every chunk, after 7 (the ladder's 10 and 100 inside a fold), or all at the end."""
    model, x, _, _ = linear_gaussian_vae(exact_posterior=False)
    runs = [
        iwae(model, x, 300, torch.Generator().manual_seed(5), max_elements=3 * 100 * D, fold_samples=fold)
        for fold in (1, 7, 10**6)
    ]
    for other in runs[1:]:
        assert other.keys() == runs[0].keys() == set(iwae_ladder(300))
        for k, value in other.items():
            assert value == pytest.approx(runs[0][k], rel=1e-6)


def _running(blocks):
    running = None
    for block in blocks:
        running = logsumexp_fold(running, block)
    return running


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_logsumexp_over_blocks_of_rows_equals_torchs_over_all_of_them(rows):
    """IWAE's running logsumexp (blocks of `rows` log-weights, as its chunks of samples) against
    torch.logsumexp of every prefix at once in float64: columns of very different scales, from
    about -3000 to 200, and one whose first 150 rows are -inf."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn((300, 5), generator=g) * torch.tensor([1.0, 30.0, 300.0, 3.0, 1.0]) - 40
    w[:, 1] += 120  # up to about 80 + 120: exp would overflow float32 without a shift
    w[:, 4] -= 3000  # where exp underflows without a shift
    w[:150, 4] = -math.inf
    for k in (1, 10, 100, 150, 151, 299, 300):
        blocks = list(w[:k].split(rows))
        expected = torch.logsumexp(w[:k].double(), 0)
        torch.testing.assert_close(_running(blocks).double(), expected, rtol=2e-6, atol=0)


def test_logsumexp_over_blocks_keeps_torchs_infinities_and_nans():
    inf, nan = math.inf, math.nan
    w = torch.tensor(
        [[-inf, -inf, 1.0, 2.0, -inf], [-inf, 5.0, inf, nan, -inf], [-inf, -1e4, 3.0, 4.0, -1e4]]
    )
    expected = torch.logsumexp(w, 0)  # -inf, about 5, inf, nan, -1e4
    for rows in (1, 2, 3):
        torch.testing.assert_close(_running(w.split(rows)), expected, equal_nan=True)


def test_elbo_with_the_exact_posterior_equals_the_log_likelihood():
    model, x, exact, _ = linear_gaussian_vae(exact_posterior=True)
    terms = elbo_terms(model, x, torch.Generator().manual_seed(0), samples=4000)
    assert terms["elbo"] == pytest.approx(exact.mean(), abs=0.02)
    assert terms["elbo"] == pytest.approx(-(terms["rate"] + terms["distortion"]))


def test_analytic_kl_matches_torch_distributions_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    log_var = torch.randn(4, 3, generator=g, dtype=torch.float64)
    q, p = Normal(mu, (0.5 * log_var).exp()), Normal(torch.zeros(()), torch.ones(()))
    analytic = kl_standard_normal(mu, log_var)
    torch.testing.assert_close(analytic, kl_divergence(q, p).sum(-1))
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    torch.testing.assert_close(mc.mean(0), analytic, atol=4 * float(mc.std(0).max()) / math.sqrt(2e5), rtol=0)


def test_active_units_counts_the_dimensions_with_posterior_mean_variance():
    model = VAE(ModelConfig(shape=(1, 1, 10), latent=8, hidden=[]), build_likelihood("mse", 10))
    with torch.no_grad():
        enc = model.encoder[0]
        enc.weight.zero_()
        enc.weight[0, 0], enc.weight[1, 1], enc.weight[2, 2] = 1.0, 0.5, 0.2  # var 1, .25, .04
        enc.weight[3, 3] = 0.05  # var 0.0025: below the threshold
    x = torch.randn(20_000, 10, generator=torch.Generator().manual_seed(0))
    assert active_units(model, x) == 3
    assert active_units(model, x, threshold=0.001) == 4


def test_bits_per_dim_of_uniform_models():
    # the uniform density on [0,1]^D has ll = 0: it spends exactly log2 L bits per dimension
    assert bits_per_dim(0.0, 64, 17, "continuous") == pytest.approx(math.log2(17))
    # Bernoulli(1/2) on binary pixels: ll = -D ln 2, one bit per dimension
    assert bits_per_dim(-784 * math.log(2), 784, 256, "binary") == pytest.approx(1.0)


def test_iwae_ladder():
    assert iwae_ladder(5000) == [1, 10, 100, 1000, 5000]
    assert iwae_ladder(100) == [1, 10, 100]
    assert iwae_ladder(1) == [1]


def test_evaluation_runs_with_tf32_off_even_when_the_caller_switched_it_on(tmp_path, monkeypatch):
    """docs/study.md: evaluation stays float32 without TF32. Every decoder call of `evaluate` sees TF32
    off, and the caller's setting is restored afterwards (the flag is the same on CPU and CUDA)."""
    from vaestudy.config import RunConfig
    from vaestudy.evaluate import evaluate
    from vaestudy.train import load_trained, train

    config = RunConfig(family="gaussian_fixed", epochs=1, hidden=[16], latent=2, device="cpu", max_test=40)
    train(config, tmp_path / "run", progress=False)
    trained = load_trained(tmp_path / "run", "cpu")
    model = trained[0]
    seen, decode = [], model.decode

    def recording_decode(z):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return decode(z)

    model.decode = recording_decode
    sample_decode = SampleDecoder.__call__

    def recording_sample_decode(self, z):  # IWAE's decoder
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, "iwae"))
        return sample_decode(self, z)

    monkeypatch.setattr(SampleDecoder, "__call__", recording_sample_decode)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        evaluate(tmp_path / "run", tmp_path / "m.json", k=20, device="cpu", trained=trained)
        after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert set(seen) == {(False, False), (False, False, "iwae")}
    assert after == (True, True)
    # metrics.json says which decoder the IWAE loop ran
    paths = json.loads((tmp_path / "m.json").read_text())["paths"]
    assert paths["iwae_decoder"] == ("oneDNN, packed weights" if fast.has("onednn_linear") else "torch")


@pytest.mark.parametrize(
    "activation,architecture",
    [("tanh", "mlp"), ("relu", "mlp"), ("elu", "mlp"), ("gelu", "mlp"), ("tanh", "conv")],
)
def test_sample_decoder_equals_the_models_decoder(activation, architecture):
    """IWAE's decoder (on CPU oneDNN's linear with packed weights and the bias and activation
    fused) gives model.decode's outputs to float32 rounding, for the rows it was packed for and
    for others; the decoders it does not fuse are model.decode itself."""
    torch.manual_seed(0)
    config = ModelConfig(shape=(1, 28, 28), latent=3, hidden=[32, 16], activation=activation)
    config.architecture = architecture
    model = VAE(config, build_likelihood("gaussian_heteroscedastic", 784)).eval()
    decode = SampleDecoder(model, rows=20)
    fused = activation in ("tanh", "relu") and architecture == "mlp" and fast.has("onednn_linear")
    assert bool(decode.layers) == fused
    with torch.no_grad():
        for z in (torch.randn(5, 4, 3), torch.randn(2, 4, 3), torch.randn(9, 4, 3)):
            if fused:
                torch.testing.assert_close(decode(z), model.decode(z), rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(decode(z), model.decode(z), rtol=0, atol=0)


def test_sample_decoder_is_the_models_decoder_with_the_fast_paths_off(monkeypatch):
    monkeypatch.setenv(fast.FAST_ENV, "off")
    model = VAE(ModelConfig(shape=(1, 1, 6), latent=2, hidden=[8]), build_likelihood("bernoulli", 6)).eval()
    decode = SampleDecoder(model, rows=10)
    assert not decode.layers
    z = torch.randn(5, 2)
    with torch.no_grad():
        torch.testing.assert_close(decode(z), model.decode(z), rtol=0, atol=0)


def test_sample_decoder_is_the_models_decoder_in_float64():
    model = VAE(ModelConfig(shape=(1, 1, 6), latent=2, hidden=[8]), build_likelihood("bernoulli", 6))
    model = model.double().eval()
    decode = SampleDecoder(model, rows=10)
    z = torch.randn(5, 2, dtype=torch.float64)
    assert not decode.layers
    with torch.no_grad():
        torch.testing.assert_close(decode(z), model.decode(z), rtol=0, atol=0)


def test_the_calibrated_sigma_is_the_maximum_likelihood_sigma_of_the_residuals():
    """The calibrated Gaussian's sigma^2 (the mean squared residual over images and pixels, summed
    over batches) is the sigma that maximises the Gaussian log-likelihood of the residuals, found
    here numerically with scipy. The encoder's variance is made negligible, so that z = E_q[z]."""
    model, x, _, _ = linear_gaussian_vae(exact_posterior=True)
    with torch.no_grad():
        model.encoder[0].bias[LATENT:] = -60.0  # log variance: z is the posterior mean
    residual = (x - model.decode(model.encode(x)[0])).detach().double().numpy()
    fitted = scipy.optimize.minimize_scalar(
        lambda s: -scipy.stats.norm(0, s).logpdf(residual).sum(), bounds=(1e-3, 10), method="bounded"
    ).x
    msr = model.mean_squared_residual(x, torch.Generator().manual_seed(0), batch_size=64)
    assert math.sqrt(msr) == pytest.approx(fitted, rel=1e-4)


def test_iwae_reports_its_progress_after_each_chunk_of_images():
    model, x, _, _ = linear_gaussian_vae(exact_posterior=True)  # 200 images
    done = []
    iwae(model, x, 10, torch.Generator().manual_seed(0), images_per_chunk=64, progress=done.append)
    assert done == [64, 128, 192, 200]


def test_progress_lines_are_at_most_one_per_interval_and_none_at_the_end(capsys, monkeypatch):
    clock = iter([0.0, 5.0, 12.0, 13.0, 30.0])  # made at 0 s, then called at 5, 12, 13 and 30 s
    monkeypatch.setattr("vaestudy.runtime.time", SimpleNamespace(perf_counter=lambda: next(clock)))
    progress = ProgressLines("run ll_iwae", 100, "test images", every=10)
    for done in (10, 30, 40, 100):
        progress(done)
    assert capsys.readouterr().err == "run ll_iwae: 30/100 test images (12s, about 28s left)\n"


def test_the_train_test_elbo_gap_shows_a_model_that_memorised_its_training_split(tmp_path):
    """Trained long on 40 images, a model's ELBO on them is far above its test ELBO; trained on
    the whole split, the two are close. The gap is the training-split ELBO minus the test ELBO."""
    from vaestudy.config import RunConfig
    from vaestudy.evaluate import evaluate
    from vaestudy.train import train

    base = dict(family="gaussian_fixed", params={"sigma": 0.1}, hidden=[64], latent=4, device="cpu", lr=0.01)
    gaps = {}
    for name, extra in (
        ("memorised", dict(max_train=40, batch_size=20, epochs=80)),
        ("whole", dict(epochs=8)),
    ):
        train(RunConfig(**base, **extra), tmp_path / name, progress=False)
        metrics = evaluate(tmp_path / name, tmp_path / f"{name}.json", k=5, device="cpu")["metrics"]
        assert metrics["elbo_gap"] == pytest.approx(metrics["elbo_train"] - metrics["elbo"], rel=1e-12)
        gaps[name] = metrics["elbo_gap"]
    assert gaps["memorised"] > 10 * max(abs(gaps["whole"]), 1.0)
