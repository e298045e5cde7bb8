"""Sample quality in the feature space of a classifier trained in the pipeline, one per arena.

FID (the Frechet distance of Gaussian fits, with scipy.linalg.sqrtm), precision and recall with
k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019, k = 3), and the classifier's mean
predictive entropy, for three kinds of image: decoder means of z ~ N(0, I), true draws from
p(x|z) for the same z, and reconstructions of the test set. Images are clipped to [0, 1] only for
the feature network's input. Nothing is downloaded: the feature network is trained on the data
set's own training split, as the arena presents it (binarised or dequantised): its features
are those of the images the arena's models are asked to produce, so a binary draw scored in the
continuous arena is out of distribution, as it should be.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn

from vaestudy.data import ArenaData
from vaestudy.errors import UserError, first_line, require
from vaestudy.fast import make_optimizer
from vaestudy.files import atomic_torch_save, atomic_write_json, torch_load
from vaestudy.runtime import derive_seed, generator


class FeatureNet(nn.Module):
    """A small classifier; its penultimate layer (128 units) is the feature space.

    An MLP for small images, two convolutions for 28x28 and larger.
    """

    def __init__(self, shape: tuple[int, int, int], classes: int):
        super().__init__()
        c, h, w = shape
        self.shape, self.classes = tuple(shape), classes
        if h >= 28:
            self.body = nn.Sequential(
                nn.Unflatten(1, shape),
                nn.Conv2d(c, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(64 * (h // 4) * (w // 4), 128),
                nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    correct = sum(
        int((net(x[s : s + batch]).argmax(1) == labels[s : s + batch]).sum()) for s in range(0, len(x), batch)
    )
    return correct / len(x)


def train_feature_net(
    data: ArenaData, epochs: int = 30, seed: int = 0, batch_size: int = 128, lr: float = 1e-3
) -> tuple[FeatureNet, dict[str, float]]:
    """Train the classifier on the training split in data's arena (a fresh draw every epoch);
    report its accuracy on the test split's fixed draw."""
    device = data.device
    classes = int(data.train_labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "feature-net-init"))
        net = FeatureNet(data.shape, classes)
    net.to(device)
    optimiser = make_optimizer(net, lr)
    n = len(data.train_levels)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        g = generator(device, seed, "feature-net", epoch)
        perm = torch.randperm(n, generator=g, device=device)
        total = torch.zeros((), device=device)  # the epoch's summed loss, read once at its end
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            x = data.transform(data.train_levels[idx], g)
            loss = nn.functional.cross_entropy(net(x), data.train_labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach() * len(idx)
        print(  # progress, as training prints its epochs (the pipeline's log keeps it)
            f"feature network epoch {epoch}/{epochs} loss {float(total) / n:.4f} "
            f"({time.perf_counter() - started:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    net.eval()
    facts = {
        "test_accuracy": accuracy(net, data.test, data.test_labels),
        "epochs": epochs,
        "classes": classes,
        "seconds": time.perf_counter() - started,
        "arena": data.arena,
    }
    return net, facts


def save_feature_net(net: FeatureNet, facts: dict[str, Any], path: str | Path) -> None:
    atomic_torch_save(
        path, {"state": net.state_dict(), "shape": list(net.shape), "classes": net.classes, "facts": facts}
    )


def load_feature_net(path: str | Path, device: torch.device, arena: str | None = None) -> FeatureNet:
    """A saved feature network; where arena is given, it must have been trained in that arena."""
    saved = torch_load(path, "feature network")
    require(isinstance(saved, dict) and "state" in saved, f"{path} is not a vaestudy feature network")
    trained_in = saved.get("facts", {}).get("arena")
    require(
        arena is None or trained_in == arena,
        f"feature network {path} was trained in the {trained_in} arena, not the {arena} arena: "
        f"train one with vaestudy feature-net --arena {arena}",
    )
    net = FeatureNet(tuple(saved["shape"]), saved["classes"])
    try:
        net.load_state_dict(saved["state"])
    except RuntimeError as exc:
        raise UserError(f"{path} does not fit a feature network: {first_line(exc)}") from None
    return net.to(device).eval()


# ----------------------------------------------------------------------------- metrics


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017), with scipy.linalg.sqrtm."""
    with warnings.catch_warnings():  # singular covariances (dead ReLU units) are expected here
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():  # regularise as the reference implementation does
            eps = 1e-6 * np.eye(len(cov1))
            covmean = scipy.linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def images_per_set(data: ArenaData, samples: int | None) -> int:
    """Images per kind of sample: `samples` (all where None), at most the test and training sets."""
    return min(samples or len(data.test), len(data.test), len(data.train_levels))


def check_neighbours(k: int, n: int | None) -> None:
    """Precision and recall take each image's k-th nearest other image of its set: k < n."""
    require(
        n is None or k < n,
        f"quality k ({k} nearest neighbours) must be below the images per set ({n}): lower k, or raise samples (at most the test set's size)",
    )


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    a, b = features_a.double().cpu().numpy(), features_b.double().cpu().numpy()
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = []
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s : s + chunk], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the point itself is at distance 0
    return torch.cat(radii)


def _inside_any_ball(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048
) -> torch.Tensor:
    inside = []
    for s in range(0, len(points), chunk):
        d = torch.cdist(points[s : s + chunk], centres)
        inside.append((d <= radii[None, :]).any(1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of fake points inside the
    real manifold (union of k-NN balls), and of real points inside the fake manifold."""
    real, fake = real.double(), fake.double()
    precision = _inside_any_ball(fake, real, _kth_neighbour_radii(real, k)).double().mean()
    recall = _inside_any_ball(real, fake, _kth_neighbour_radii(fake, k)).double().mean()
    return float(precision), float(recall)


@torch.no_grad()
def mean_entropy(net: FeatureNet, x: torch.Tensor) -> float:
    """Mean entropy (nats) of the classifier's predictive distribution over x."""
    log_p = torch.log_softmax(net(x), 1)
    return float(-(log_p.exp() * log_p).sum(1).mean())


@torch.no_grad()
def score_images(
    net: FeatureNet, images: torch.Tensor, reference: torch.Tensor, k: int = 3
) -> dict[str, float]:
    """FID, precision, recall against reference features, and entropy; images clipped to [0, 1]."""
    x = torch.nan_to_num(images, nan=0.5).clamp(0, 1)
    features = net.features(x)
    precision, recall = precision_recall(reference, features, k)
    return {
        "fid": fid(features, reference),
        "precision": precision,
        "recall": recall,
        "entropy": mean_entropy(net, x),
    }


def _reference(net: FeatureNet, data: ArenaData, n: int) -> torch.Tensor:
    """Features of n training images under the arena's fixed draw: the reference manifold."""
    return net.features(data.train_fixed(n))


@torch.no_grad()
def anchors(
    net: FeatureNet, data: ArenaData, n: int | None, seed: int, k: int = 3
) -> dict[str, dict[str, float]]:
    """Sanity anchors: test images against training images (near 0) and uniform noise (large)."""
    n = images_per_set(data, n)
    check_neighbours(k, n)
    ref = _reference(net, data, n)
    g = generator(data.device, seed, "anchor-noise")
    noise = torch.rand((n, data.num_pixels), generator=g, device=data.device)
    if data.arena == "binary":
        noise = (noise < 0.5).float()
    elif data.arena == "discrete":  # uniform over the grey levels themselves
        noise = torch.floor(noise * data.levels).clamp_max(data.levels - 1) / (data.levels - 1)
    return {"test": score_images(net, data.test[:n], ref, k), "noise": score_images(net, noise, ref, k)}


def draw(distribution, seed: int, device: torch.device) -> torch.Tensor:
    """A true sample from p(x|z), seeded without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return distribution.sample()


@torch.no_grad()
def sample_kinds(model, data: ArenaData, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Decoder means and true draws for the same z ~ N(0, I), and test reconstructions (z = E_q[z])."""
    g = generator(data.device, seed, "samples")
    z = torch.randn((n, model.config.latent), generator=g, device=data.device)
    dist = model.likelihood.distribution(model.decode(z))
    mu, _ = model.encode(data.test[:n])
    recon = model.likelihood.distribution(model.decode(mu)).mean
    return {"mean": dist.mean, "draw": draw(dist, derive_seed(seed, "draw"), data.device), "recon": recon}


@torch.no_grad()
def score_model(
    model, net: FeatureNet, data: ArenaData, n: int | None, seed: int, k: int = 3
) -> dict[str, Any]:
    """fid_mean, fid_draw, fid_recon, precision_*, recall_*, entropy_* of one trained model."""
    n = images_per_set(data, n)
    check_neighbours(k, n)
    ref = _reference(net, data, n)
    kinds = sample_kinds(model, data, n, seed)
    metrics: dict[str, Any] = {}
    for kind, images in kinds.items():
        for name, value in score_images(net, images, ref, k).items():
            metrics[f"{name}_{kind}"] = value
    return {"metrics": metrics, "samples": n, "k": k, "kinds": kinds}


def sample_figure(
    kinds: dict[str, torch.Tensor],
    test: torch.Tensor,
    shape: tuple[int, int, int],
    path: str | Path,
    title: str,
    count: int = 36,
) -> None:
    """One PNG: test images, their reconstructions, decoder means and true draws (same z) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("test images", test),
        ("reconstructions", kinds["recon"]),
        ("decoder means E[x|z]", kinds["mean"]),
        ("true draws x ~ p(x|z), same z", kinds["draw"]),
    ]
    side = int(math.ceil(math.sqrt(count)))
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    c, h, w = shape
    for ax, (label, images) in zip(axes, panels, strict=True):
        x = torch.nan_to_num(images[:count].float(), nan=0.5).clamp(0, 1).cpu().view(-1, c, h, w)
        grid = torch.ones(c, side * (h + 1) + 1, side * (w + 1) + 1)
        for i, img in enumerate(x):
            r, q = divmod(i, side)
            grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = img
        ax.imshow(
            grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
        )
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_quality(result: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(path, {k: v for k, v in result.items() if k != "kinds"})
    print(f"quality -> {path}", file=sys.stderr)
