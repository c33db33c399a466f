"""Xian et al. proposed-split reader on a fixture written in the published layout."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from visem.data import DataError, info, load
from visem.data.xian import load_xian


def _write_fixture(folder, n_per_class=4, d=6, a=5, names=("antelope", "grizzly+bear", "killer_whale", "beaver", "dalmatian")):
    folder.mkdir(parents=True, exist_ok=True)
    c = len(names)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(1, c + 1), n_per_class)  # 1-based
    n = labels.size
    features = rng.standard_normal((d, n))  # D x N: one column per image
    att = rng.random((a, c))  # A x C: one column per class
    unseen = {4, 5}
    idx = np.arange(1, n + 1)  # 1-based image indices
    seen_imgs = idx[~np.isin(labels, list(unseen))]
    test_seen = seen_imgs[::4]
    trainval = np.setdiff1d(seen_imgs, test_seen)
    test_unseen = idx[np.isin(labels, list(unseen))]
    train, val = trainval[labels[trainval - 1] != 3], trainval[labels[trainval - 1] == 3]
    scipy.io.savemat(
        folder / "res101.mat",
        {
            "features": features,
            "labels": labels.reshape(-1, 1),
            "image_files": np.array([[f"img_{i}.jpg"] for i in range(n)], dtype=object),
        },
    )
    scipy.io.savemat(
        folder / "att_splits.mat",
        {
            "att": att,
            "original_att": att * 100,
            "trainval_loc": trainval.reshape(-1, 1),
            "test_seen_loc": test_seen.reshape(-1, 1),
            "test_unseen_loc": test_unseen.reshape(-1, 1),
            "train_loc": train.reshape(-1, 1),
            "val_loc": val.reshape(-1, 1),
            "allclasses_names": np.array([[s] for s in names], dtype=object),
        },
    )
    return features, labels, att, trainval, test_seen, test_unseen


def test_reads_published_layout(tmp_path):
    features, labels, att, trainval, test_seen, test_unseen = _write_fixture(tmp_path / "AWA2")
    z = load_xian(tmp_path / "AWA2")
    assert z.name == "AWA2"
    assert z.features.shape == (20, 6) and z.features.dtype == np.float32
    np.testing.assert_allclose(z.features, features.T, rtol=1e-6)
    np.testing.assert_array_equal(z.labels, labels - 1)
    assert z.attributes.shape == (5, 5)
    np.testing.assert_allclose(z.attributes, att.T, rtol=1e-6)
    assert z.class_names == ["antelope", "grizzly+bear", "killer_whale", "beaver", "dalmatian"]
    np.testing.assert_array_equal(z.splits["trainval"], trainval - 1)
    np.testing.assert_array_equal(z.splits["test_seen"], test_seen - 1)
    np.testing.assert_array_equal(z.splits["test_unseen"], test_unseen - 1)
    assert set(z.splits) == {"trainval", "test_seen", "test_unseen", "train", "val"}
    assert z.seen_classes.tolist() == [0, 1, 2] and z.unseen_classes.tolist() == [3, 4]
    assert z.image_files[0] == "img_0.jpg"
    assert z.original_attributes.shape == (5, 5)


def test_split_selection_and_generic_load(tmp_path):
    _, labels, _, _, _, test_unseen = _write_fixture(tmp_path / "CUB")
    z = load("cub", split="test_unseen", path=tmp_path / "CUB")
    assert z.split == "test_unseen" and len(z) == test_unseen.size
    assert set(z.labels.tolist()) == {3, 4}
    assert z.name == "cub"
    text = info("xian", path=tmp_path / "CUB").format()
    assert "split trainval" in text and "unseen classes: 2" in text
    with pytest.raises(DataError, match="unknown split"):
        load_xian(tmp_path / "CUB", split="nope")


def test_missing_and_bad_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_xian(tmp_path / "nothing")
    folder = tmp_path / "SUN"
    _write_fixture(folder)
    (folder / "att_splits.mat").unlink()
    with pytest.raises(DataError, match="att_splits.mat"):
        load_xian(folder)
    _write_fixture(folder)
    scipy.io.savemat(folder / "res101.mat", {"features": np.zeros((6, 20)), "labels": np.zeros((20, 1))})
    with pytest.raises(DataError, match="res101.mat.*1-based"):
        load_xian(folder)
    scipy.io.savemat(folder / "res101.mat", {"features": np.zeros((6, 19)), "labels": np.ones((20, 1))})
    with pytest.raises(DataError, match="res101.mat.*features"):
        load_xian(folder)
    (folder / "res101.mat").write_bytes(b"MATLAB 7.3 MAT-file, HDF5" + b"\0" * 200)
    with pytest.raises(DataError, match="res101.mat.*v7.3"):
        load_xian(folder)
    (folder / "res101.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="res101.mat"):
        load_xian(folder)


def test_out_of_range_locations_and_overlap(tmp_path):
    folder = tmp_path / "APY"
    _write_fixture(folder)
    att = scipy.io.loadmat(folder / "att_splits.mat")
    att["trainval_loc"] = np.array([[0], [1]])  # 0 is not a valid 1-based index
    scipy.io.savemat(folder / "att_splits.mat", {k: v for k, v in att.items() if not k.startswith("__")})
    with pytest.raises(DataError, match="trainval_loc.*1-based"):
        load_xian(folder)
    att["trainval_loc"] = att["test_unseen_loc"][:2]
    scipy.io.savemat(folder / "att_splits.mat", {k: v for k, v in att.items() if not k.startswith("__")})
    with pytest.raises(DataError, match="share classes"):
        load_xian(folder)
