"""Datasets: IDX reading, missing data, splits, slice, folders, augmentation."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aep_core.data import FASHION_MNIST_DIR, augment_shift_flip, load_dataset, make_loader, read_idx, split_indices
from aep_core.errors import DataError


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fashion_dir(d: Path, n_train: int = 120, n_test: int = 30) -> None:
    rng = np.random.default_rng(0)
    _write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n_train, 28, 28)))
    _write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))


def test_fashion_mnist_from_a_directory(tmp_path):
    _fake_fashion_dir(tmp_path)
    b = load_dataset("fashion-mnist", tmp_path, val_size=20, seed=1)
    assert (len(b.train), len(b.val), len(b.test)) == (100, 20, 30)
    x, y = b.train[[0, 1, 2]]
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_missing_data_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "empty")


def test_truncated_idx_is_clear(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


def test_validation_split_is_seeded_and_disjoint():
    a_tr, a_va = split_indices(100, 10, seed=3)
    _, b_va = split_indices(100, 10, seed=3)
    _, c_va = split_indices(100, 10, seed=4)
    assert (a_va == b_va).all() and not (a_va == c_va).all()
    assert set(a_tr).isdisjoint(a_va) and len(a_tr) + len(a_va) == 100


def test_shipped_slice_loads():
    b = load_dataset("fashion-mnist-slice")
    assert len(b.test) == 1000 and len(b.class_names) == 10
    batches = list(make_loader(b.val, 64, shuffle=False))
    assert sum(len(y) for _, y in batches) == len(b.val)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    b = load_dataset("fashion-mnist")
    assert (len(b.train), len(b.val), len(b.test)) == (55000, 5000, 10000)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    b = load_dataset("folder", tmp_path, image_size=16, in_channels=1)
    assert b.class_names == ["cat", "dog"] and not b.in_memory
    assert len(b.train) + len(b.val) + len(b.test) == 20
    x, _ = next(iter(make_loader(b.train, 4, shuffle=True)))
    assert x.shape == (4, 1, 16, 16)


def test_unknown_dataset_and_missing_dirs():
    with pytest.raises(DataError, match="Choose one of"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "/nonexistent")


def test_augmentation_shifts_and_flips_per_sample():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = augment_shift_flip(x, g, max_shift=0)
    for i in range(2):  # no shift: each sample is itself or its mirror
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    out2 = augment_shift_flip(x, torch.Generator().manual_seed(1), max_shift=2)
    assert out2.shape == x.shape


def test_export_folder_writes_class_folders_the_folder_dataset_reads(tmp_path, capsys):
    from aep_core.cli.main import main

    (tmp_path / "fm").mkdir()
    _fake_fashion_dir(tmp_path / "fm", n_train=200, n_test=60)
    out = tmp_path / "images"
    args = ["export-folder", "--out", str(out), "--data-dir", str(tmp_path / "fm")]
    assert main([*args, "--train-per-class", "3", "--test-per-class", "2"]) == 0
    labels = read_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz")
    per_class = np.bincount(labels, minlength=10)
    expected_train = int(np.minimum(per_class, 3).sum())
    assert len(list((out / "train").glob("*/*.png"))) == expected_train
    b = load_dataset("folder", out, image_size=28, in_channels=1)
    assert len(b.class_names) == 10 and len(b.test) == len(list((out / "test").glob("*/*.png")))
    # an exported image is the IDX image itself
    first = sorted((out / "train" / "Bag").glob("*.png"))[0]
    idx = int(first.stem)
    assert np.array_equal(np.asarray(Image.open(first)), read_idx(tmp_path / "fm" / "train-images-idx3-ubyte.gz")[idx])
    # a folder that is not empty is refused with one line, and nothing in it is touched
    assert main([*args]) == 2
    assert "not empty" in capsys.readouterr().err


def test_folder_normalisation_can_be_given(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(tmp_path / c / f"{i}.png")
    b = load_dataset("folder", tmp_path, image_size=8, in_channels=3, mean=[0.25, 0.5, 0.75], std=[0.5, 0.5, 0.25])
    x, _ = b.train[0]
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.5, 1.0, 1.0])) and b.mean == [0.25, 0.5, 0.75]
    with pytest.raises(DataError, match="one mean and one positive std per channel"):
        load_dataset("folder", tmp_path, image_size=8, in_channels=3, mean=[0.5], std=[0.5])


def test_first_images_of_a_folder_split_equal_its_items(tmp_path):
    from aep_core.data import first_images

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    b = load_dataset("folder", tmp_path, image_size=8, in_channels=1)
    x, y = first_images(b.train, 3)
    assert x.shape == (3, 1, 8, 8) and y.tolist() == [int(b.train[i][1]) for i in range(3)]
    assert all(torch.equal(x[i], b.train[i][0]) for i in range(3))
