"""Sample quality: FID against closed forms, precision/recall on sets with known answers, the feature
network's accuracy, and true draws with the moments their family states."""

import math

import numpy as np
import pytest
import scipy.integrate
import torch

from vaestudy.config import RunConfig
from vaestudy.data import arena_data
from vaestudy.errors import UserError
from vaestudy.likelihoods import build_likelihood
from vaestudy.quality import (
    anchors,
    draw,
    fid,
    frechet_distance,
    precision_recall,
    score_model,
    train_feature_net,
)
from vaestudy.train import load_trained, train

CPU = torch.device("cpu")


def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_grows_with_a_shift_by_its_squared_length():
    x = torch.randn(2000, 5, generator=torch.Generator().manual_seed(1)) @ torch.randn(5, 5)
    shift = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.25])
    # same sample covariance, means apart by `shift`: FID = |shift|^2 exactly
    assert fid(x, x + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-6)


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.1, 3, size=4), rng.uniform(0.1, 3, size=4)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def _points(xs):
    return torch.tensor([[float(x), 0.0] for x in xs])


def test_precision_and_recall_on_sets_with_known_answers():
    real = _points(range(10))  # 3rd-neighbour radii: 3 at the ends, 2 inside
    fake = _points([0, 1, 2, 3, 4, 100, 101, 102, 103, 104])
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == pytest.approx(0.5)  # the five fakes near 100 lie outside every real ball
    assert recall == pytest.approx(0.8)  # fake balls reach 7 (around 4, radius 3): reals 0..7
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


@pytest.fixture(scope="module")
def digits_net():
    data = arena_data("digits", "continuous", CPU)
    net, facts = train_feature_net(data, epochs=30, seed=0)
    return net, facts, data


def test_the_feature_network_reaches_95_percent_on_digits(digits_net):
    _, facts, _ = digits_net
    assert facts["test_accuracy"] >= 0.95


def test_the_feature_network_prints_each_epoch(capsys):
    """Its progress, as training prints its epochs: on MNIST on a CPU it takes minutes."""
    train_feature_net(arena_data("digits", "continuous", CPU, max_train=300), epochs=2, seed=0)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" loss ")[0] for line in lines] == [
        "feature network epoch 1/2",
        "feature network epoch 2/2",
    ]
    assert all(math.isfinite(float(line.split(" loss ")[1].split()[0])) for line in lines)


def test_anchors_test_images_near_zero_and_noise_far(digits_net):
    net, _, data = digits_net
    result = anchors(net, data, None, seed=0)
    assert result["test"]["fid"] < 5 < 50 < result["noise"]["fid"]
    assert result["test"]["precision"] > 0.8 and result["noise"]["precision"] < 0.1


@pytest.mark.parametrize(
    "family,params,outputs",
    [
        ("bernoulli", {}, 1),
        ("continuous_bernoulli", {}, 1),
        ("gaussian_fixed", {"sigma": 0.2}, 1),
        ("gaussian_heteroscedastic", {"floor": 0.01}, 2),
        ("mse", {"reduction": "sum"}, 1),
        ("gaussian_optimal", {}, 1),
    ],
)
def test_a_draw_has_the_mean_and_variance_of_its_family(family, params, outputs):
    d, n = 4, 40_000
    lik = build_likelihood(family, d, params).eval()
    o = torch.tensor([-2.0, -0.3, 0.0, 1.5] + ([-3.0, -1.0, 0.0, 0.5] if outputs == 2 else []))
    dist = lik.distribution(o.expand(n, -1))
    x = draw(dist, seed=3, device=CPU)
    one = lik.distribution(o)
    mean, var = one.mean, one.variance
    # independent references for the stated moments
    if family == "bernoulli":
        p = torch.sigmoid(o)
        torch.testing.assert_close(var, p * (1 - p))
    elif family == "continuous_bernoulli":
        for i, lam in enumerate(torch.sigmoid(o).double().tolist()):  # mean of lam^x (1-lam)^(1-x) on [0,1]
            mass, _ = scipy.integrate.quad(lambda v, lam=lam: lam**v * (1 - lam) ** (1 - v), 0, 1)
            first, _ = scipy.integrate.quad(lambda v, lam=lam: v * lam**v * (1 - lam) ** (1 - v), 0, 1)
            assert float(mean[i]) == pytest.approx(first / mass, abs=1e-5)
    else:
        sigma = {"gaussian_fixed": 0.2, "mse": math.sqrt(0.5), "gaussian_optimal": 1.0}.get(family)
        if sigma is None:  # heteroscedastic: floor + exp(log var / 2)
            sigma = 0.01 + torch.exp(0.5 * o[d:])
        torch.testing.assert_close(var, torch.as_tensor(sigma, dtype=torch.float32).pow(2).expand(d))
    torch.testing.assert_close(x.mean(0), mean, atol=5 * float(var.max().sqrt()) / math.sqrt(n), rtol=0)
    torch.testing.assert_close(x.var(0), var, rtol=0.05, atol=1e-4)
    # seeded: the same draw again
    assert torch.equal(draw(dist, seed=3, device=CPU), x)


def test_more_neighbours_than_images_per_set_is_a_user_error(tmp_path, digits_net):
    """precision and recall take each image's k-th nearest other image of its set (of n)."""
    net, _, data = digits_net
    n = len(data.test)
    with pytest.raises(
        UserError, match=rf"quality k \({n} nearest neighbours\) must be below the images per set \({n}\)"
    ):
        anchors(net, data, None, seed=0, k=n)
    with pytest.raises(
        UserError, match=r"quality k \(5 nearest neighbours\) must be below the images per set \(5\)"
    ):
        anchors(net, data, 5, seed=0, k=5)
    assert anchors(net, data, 5, seed=0, k=4)["test"]["precision"] >= 0  # k = n - 1 is the largest


def test_every_model_gets_both_kinds_of_score(tmp_path, digits_net):
    net, _, _ = digits_net
    config = RunConfig(
        family="gaussian_fixed", params={"sigma": 0.1}, epochs=3, hidden=[32], latent=4, device="cpu"
    )
    train(config, tmp_path / "run", progress=False)
    model, _, data, _ = load_trained(tmp_path / "run", "cpu")
    result = score_model(model, net, data, 100, seed=1)
    for kind in ("mean", "draw", "recon"):
        for name in ("fid", "precision", "recall", "entropy"):
            assert math.isfinite(result["metrics"][f"{name}_{kind}"])
    assert result["samples"] == 100
    assert result["kinds"]["draw"].shape == result["kinds"]["mean"].shape == (100, 64)


@pytest.mark.parametrize("arena", ["binary", "continuous"])
def test_each_arenas_feature_network_learns_from_that_arenas_images(arena, monkeypatch):
    """Binary images for the binary arena's network, dequantised grey levels for the continuous one's:
    its features are those of the images the arena's models are asked to produce."""
    from vaestudy.quality import FeatureNet

    seen, forward = [], FeatureNet.forward

    def recording(self, x):
        seen.append(x.detach().clone())
        return forward(self, x)

    monkeypatch.setattr(FeatureNet, "forward", recording)
    net, facts = train_feature_net(arena_data("digits", arena, CPU, max_train=200), epochs=1, seed=0)
    assert facts["arena"] == arena
    training = torch.cat(seen[:-1])  # the last call is the test accuracy's
    binary = ((training == 0) | (training == 1)).all()
    assert bool(binary) == (arena == "binary")
    if arena == "continuous":  # (k + u) / L: never a whole multiple of 1/L
        assert bool(((training * 17) != (training * 17).round()).all())


def test_a_feature_network_of_the_other_arena_is_refused(tmp_path):
    from vaestudy.quality import load_feature_net, save_feature_net

    net, facts = train_feature_net(arena_data("digits", "binary", CPU, max_train=100), epochs=1, seed=0)
    save_feature_net(net, facts, tmp_path / "binary.pt")
    assert load_feature_net(tmp_path / "binary.pt", CPU, "binary").shape == (1, 8, 8)
    with pytest.raises(UserError, match="trained in the binary arena, not the continuous arena"):
        load_feature_net(tmp_path / "binary.pt", CPU, "continuous")


@pytest.mark.parametrize(
    "family", ["discretised_logistic", "discretised_gaussian", "discretised_logistic_mixture"]
)
def test_the_discrete_families_samples_are_grey_levels_scored_in_the_discrete_arenas_features(
    tmp_path, family
):
    """The discrete arena end to end: its feature network learns from the levels themselves
    (k / (L-1)), its anchors' noise lies on the levels, and a binned family's means, draws and
    reconstructions are scored there (the draws on the 17 levels of the digits)."""
    data = arena_data("digits", "discrete", CPU, max_train=300)
    net, facts = train_feature_net(data, epochs=2, seed=0)
    assert facts["arena"] == "discrete"
    grid = torch.arange(17) / 16
    assert bool(torch.isin(data.test, grid).all())
    noise = anchors(net, data, 60, seed=0)["noise"]
    assert math.isfinite(noise["fid"])
    train(
        RunConfig(
            family=family, arena="discrete", epochs=2, hidden=[32], latent=4, device="cpu", max_train=300
        ),
        tmp_path / "run",
        progress=False,
    )
    model, _, data, _ = load_trained(tmp_path / "run", "cpu")
    result = score_model(model, net, data, 60, seed=1)
    assert all(math.isfinite(v) for v in result["metrics"].values())
    assert bool(torch.isin(result["kinds"]["draw"], grid).all())
