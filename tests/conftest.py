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


@pytest.fixture(params=["off", "onednn"])
def fast_setting(request, monkeypatch):
    """Plain PyTorch (VAESTUDY_FAST=off) and oneDNN's products at every size (onednn), whatever this
    processor would pick: the tests of either path run on every machine."""
    from vaestudy.fast import FAST_ENV, has

    if request.param == "onednn" and not has("onednn_linear"):
        pytest.skip("this torch has no usable oneDNN linear layer")
    monkeypatch.setenv(FAST_ENV, request.param)
    return request.param
