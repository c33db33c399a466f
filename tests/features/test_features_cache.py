"""Chunked content-addressed store and npy + JSON sidecar files."""

from __future__ import annotations

import numpy as np
import pytest

from visem.features.cache import FeatureStore, cached_features, content_key, keys_digest, load_features, save_features


def test_store_put_get_missing_and_reopen(tmp_path):
    st = FeatureStore(tmp_path / "s")
    assert len(st) == 0 and st.missing(["a", "b", "a"]) == ["a", "b"]
    st.put(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    st.put(["c"], np.array([[5.0, 6.0]], dtype=np.float32))
    assert st.missing(["a", "c", "d"]) == ["d"]
    np.testing.assert_array_equal(st.get(["c", "a", "a"]), [[5, 6], [1, 2], [1, 2]])
    again = FeatureStore(tmp_path / "s")  # a new process sees the chunks on disk
    assert len(again) == 3 and "b" in again
    with pytest.raises(KeyError):
        again.get(["zz"])
    assert not list((tmp_path / "s").glob("*.tmp"))


def test_damaged_chunk_is_ignored(tmp_path):
    st = FeatureStore(tmp_path)
    st.put(["a"], np.zeros((1, 2)))
    (tmp_path / "chunk-broken.npz").write_bytes(b"half a file")
    assert FeatureStore(tmp_path).missing(["a", "b"]) == ["b"]


def test_content_key_depends_on_bytes_not_names():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert content_key(a) == content_key(a.copy())
    assert content_key(a) != content_key(a.reshape(3, 2))
    assert content_key(b"xyz") == content_key(b"xyz") != content_key(b"xy")
    assert keys_digest(["a", "b"]) != keys_digest(["b", "a"])


def test_save_and_load_with_sidecar(tmp_path):
    arr = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    path = save_features(tmp_path / "f" / "x.npy", arr, {"encoder": "e1", "inputs_sha256": "h"})
    back, meta = load_features(path)
    np.testing.assert_array_equal(back, arr)
    assert meta["shape"] == [3, 4] and meta["dtype"] == "float32" and meta["encoder"] == "e1"
    assert cached_features(path, {"encoder": "e1", "inputs_sha256": "h"}) is not None
    assert cached_features(path, {"encoder": "e2"}) is None
    assert save_features(tmp_path / "noext", arr, {}).name == "noext.npy"
