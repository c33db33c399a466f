"""EfficientNet-Lite0 features on a handful of real emoji + a synthetic PNG: shapes, cache, resume, content keys."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visem.features.image import EfficientNetLite0, Preprocess, extract_image_features


class Interrupted(RuntimeError):
    pass


class FlakyEncoder(EfficientNetLite0):
    """Fails on the ``fail_on``-th encode call, as a killed run would."""

    def __init__(self, fail_on: int):
        super().__init__()
        self.fail_on = fail_on

    def encode(self, batch):
        if self.calls + 1 == self.fail_on:
            self.calls += 1
            raise Interrupted("simulated kill")
        return super().encode(batch)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Four real emoji PNGs (copied) and one synthetic RGBA PNG."""
    folder = tmp_path_factory.mktemp("imgs")
    out = []
    try:
        from visem.data import load

        paths = load("emoji", split="google").image_paths[:4]
    except Exception:  # noqa: BLE001
        if os.environ.get("VISEM_OFFLINE_TESTS") == "1":
            paths = []
        else:
            raise
    for p in paths:
        out.append(Path(shutil.copy(p, folder / Path(p).name)))
    rng = np.random.default_rng(0)
    for k in range(1 if out else 5):  # offline without emoji: synthetic images only
        rgba = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(folder / f"synthetic{k}.png")
        out.append(folder / f"synthetic{k}.png")
    return out


def test_shapes_cache_hit_and_pooled_is_grid_mean(images, tmp_path):
    enc = EfficientNetLite0()
    grid = extract_image_features(images, "grid", encoder=enc, store_root=tmp_path, batch_size=8)
    assert grid.shape == (len(images), 49, 1280) and grid.dtype == np.float16
    assert grid[0].shape == (49, 1280)
    calls = enc.calls
    pooled = extract_image_features(images, "pooled", encoder=enc, store_root=tmp_path)
    assert enc.calls == calls  # pooled was stored alongside the grid: no new encoding
    assert pooled.shape == (len(images), 1280) and pooled[0].shape == (1280,) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, grid.astype(np.float32).mean(axis=1), atol=2e-3)
    again = extract_image_features(images, "grid", encoder=enc, store_root=tmp_path)
    assert enc.calls == calls
    np.testing.assert_array_equal(again, grid)
    assert np.isfinite(pooled).all() and (pooled >= 0).all() and (pooled <= 6).all()  # ReLU6


def test_same_bytes_under_two_names_are_encoded_once(images, tmp_path):
    dup = tmp_path / "copy_of_first.png"
    shutil.copy(images[0], dup)
    enc = EfficientNetLite0()
    feats = extract_image_features([images[0], dup, images[-1]], "pooled", encoder=enc, store_root=tmp_path / "st", batch_size=8)
    assert enc.calls == 1
    assert len(list((tmp_path / "st").rglob("chunk-*.npz"))) == 1
    np.testing.assert_array_equal(feats[0], feats[1])


def test_resume_after_interruption(images, tmp_path):
    store = tmp_path / "store"
    flaky = FlakyEncoder(fail_on=2)
    with pytest.raises(Interrupted):
        extract_image_features(images, "pooled", encoder=flaky, store_root=store, batch_size=2, chunk_size=2)
    saved = list(store.rglob("chunk-*.npz"))
    assert len(saved) == 1  # the first chunk (2 images) was saved before the kill
    enc = EfficientNetLite0()
    feats = extract_image_features(images, "pooled", encoder=enc, store_root=store, batch_size=2, chunk_size=2)
    assert enc.calls == int(np.ceil((len(images) - 2) / 2))  # only the missing images were encoded
    # batching does not change the numbers: compare with one batch of everything
    whole = enc.encode(np.stack([enc.preprocess(p) for p in images])).mean(axis=1)
    np.testing.assert_allclose(feats, whole, atol=1e-4)


def test_arrays_and_preprocessing(tmp_path):
    gray = np.zeros((3, 28, 28), dtype=np.uint8)
    gray[:, 8:20, 8:20] = 255
    gray[1] = 0
    enc = EfficientNetLite0()
    f = extract_image_features(gray, "pooled", encoder=enc, store_root=tmp_path)
    assert f.shape == (3, 1280) and enc.calls == 1
    np.testing.assert_array_equal(f[0], f[2])  # identical arrays share one key
    pre = Preprocess()
    assert pre(gray[0]).shape == (224, 224, 3)
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)  # fully transparent -> white background
    assert (pre(rgba) == 255).all()
    assert Preprocess(image_size=112, crop=0.5)(np.zeros((64, 64, 3), np.uint8)).shape == (112, 112, 3)


def test_normalisation_matches_the_tensorflow_lite_weights():
    """The flower photo shipped with scikit-learn is a daisy (ImageNet class 985) under (x-127)/128."""
    import sklearn
    import torch

    photo = Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg"
    if not photo.is_file():
        pytest.skip("scikit-learn sample image not installed")
    enc = EfficientNetLite0(Preprocess(crop=0.875))
    x = enc.preprocess(photo)[None]
    grid = enc.encode(x)
    logits = enc.model._fc(torch.from_numpy(grid.mean(axis=1)))
    assert int(logits.argmax()) == 985
