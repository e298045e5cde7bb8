import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vaestudy.train import HISTORY, MODEL


def run_weights(folder: Path) -> dict:
    """The final weights of the run trained into folder, on the CPU."""
    return torch.load(folder / MODEL, weights_only=True, map_location="cpu")["model"]


def run_history(folder: Path) -> pd.DataFrame:
    """The run's history without its timing column."""
    return pd.read_csv(folder / HISTORY).drop(columns="seconds")


def assert_runs_close(actual: Path, expected: Path, rtol: float, atol: float) -> None:
    """The final weights and every history value of two runs agree within the tolerance."""
    wa, we = run_weights(actual), run_weights(expected)
    assert wa.keys() == we.keys()
    for key in we:
        torch.testing.assert_close(wa[key], we[key], rtol=rtol, atol=atol)
    pd.testing.assert_frame_equal(run_history(actual), run_history(expected), rtol=rtol, atol=atol)


def has_cxx_compiler() -> bool:
    """torch.compile on the CPU builds C++: is there a compiler?"""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (the MNIST on-disk format: magic 0x08 0xNDIM, big-endian dims)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, seed: int = 0):
    """A tiny MNIST-shaped data set in torchvision's raw layout: ROOT/MNIST/raw/*-ubyte."""
    rng = np.random.default_rng(seed)
    images = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", imgs)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
        images[prefix] = imgs
    return images


@pytest.fixture
def mnist_root(tmp_path):
    root = tmp_path / "data"
    images = write_mnist(root)
    return root, images


@pytest.fixture(params=["mkl", "onednn"])
def cpu_matmul(request, monkeypatch):
    """Each library of the CPU's float32 products (utils.onednn_products), whatever this processor
    would pick: the tests of either path run on every machine. With onednn the MLPs multiply
    through oneDNN at every size, the tests' small ones too."""
    from vaestudy.utils import CPU_MATMUL_ENV, onednn_available, onednn_products

    if request.param == "onednn" and not onednn_available():
        pytest.skip("this torch has no oneDNN linear layer")
    monkeypatch.setenv(CPU_MATMUL_ENV, request.param)
    onednn_products.cache_clear()
    yield request.param
    onednn_products.cache_clear()
