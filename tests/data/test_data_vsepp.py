"""VSE++ / SCAN precomputed features reader on fixtures in the published layout."""

from __future__ import annotations

import numpy as np
import pytest

from visem.data import DataError, info, load
from visem.data.vsepp import coco_1k_folds, load_vsepp, train_vocabulary


def _write(folder, split, ims, captions):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}_ims.npy", ims)
    (folder / f"{split}_caps.txt").write_text("\n".join(captions) + "\n")


def _caps(n, tag="a"):
    return [f"{tag} dog runs on grass number {i} caption {j}" for i in range(n) for j in range(5)]


def test_pooled_features(tmp_path):
    ims = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    _write(tmp_path / "f30k_precomp", "train", ims, _caps(4))
    d = load_vsepp(tmp_path / "f30k_precomp", "train")
    assert d.n_images == 4 and not d.regions and not d.deduplicated
    assert len(d.captions) == 20
    np.testing.assert_array_equal(d.caption_image, np.repeat(np.arange(4), 5))
    np.testing.assert_array_equal(np.asarray(d.images), ims)
    assert d.captions[6] == "a dog runs on grass number 1 caption 1"


def test_region_features_and_repeated_images_are_deduplicated(tmp_path):
    rng = np.random.default_rng(1)
    unique = rng.standard_normal((3, 36, 4)).astype(np.float32)
    repeated = np.repeat(unique, 5, axis=0)  # SCAN dev/test: one row per caption
    _write(tmp_path / "coco_precomp", "testall", repeated, _caps(3))
    d = load("coco_precomp", split="testall", path=tmp_path / "coco_precomp")
    assert d.deduplicated and d.regions
    assert d.images.shape == (3, 36, 4)
    np.testing.assert_array_equal(np.asarray(d.images), unique)
    np.testing.assert_array_equal(d.caption_image, np.repeat(np.arange(3), 5))
    assert "de-duplicated" in info("vsepp", path=tmp_path / "coco_precomp", split="testall").format()


def test_rows_per_caption_that_do_not_repeat_are_an_error(tmp_path):
    ims = np.random.default_rng(2).standard_normal((10, 4)).astype(np.float32)
    _write(tmp_path / "p", "dev", ims, _caps(2))
    with pytest.raises(DataError, match="dev_ims.npy.*repeated"):
        load_vsepp(tmp_path / "p", "dev")


def test_count_mismatch_and_missing_files(tmp_path):
    _write(tmp_path / "p", "test", np.zeros((3, 4), np.float32), _caps(2))
    with pytest.raises(DataError, match="test_caps.txt.*10 captions for 3 images"):
        load_vsepp(tmp_path / "p", "test")
    with pytest.raises(DataError, match="train_ims.npy.*splits here: test"):
        load_vsepp(tmp_path / "p", "train")
    (tmp_path / "p" / "test_caps.txt").unlink()
    with pytest.raises(DataError, match="test_caps.txt"):
        load_vsepp(tmp_path / "p", "test")
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "train_ims.npy").write_bytes(b"junk")
    (tmp_path / "q" / "train_caps.txt").write_text("x\n" * 5)
    with pytest.raises(DataError, match="train_ims.npy"):
        load_vsepp(tmp_path / "q", "train")


def test_vocabulary_from_training_captions_only(tmp_path):
    _write(tmp_path / "p", "train", np.zeros((2, 4), np.float32), _caps(2, tag="train"))
    _write(tmp_path / "p", "test", np.zeros((1, 4), np.float32), ["zebra unseen words here"] * 5)
    vocab = train_vocabulary(tmp_path / "p")
    assert "train" in vocab and "dog" in vocab
    assert "zebra" not in vocab
    assert vocab.encode("zebra dog")[0] == vocab.UNK


def test_coco_folds():
    folds = coco_1k_folds()
    assert len(folds) == 5 and all(f.size == 1000 for f in folds)
    assert np.concatenate(folds).tolist() == list(range(5000))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_reported_with_file_and_row(tmp_path, bad):
    ims = np.random.default_rng(2).standard_normal((2000, 3, 4)).astype(np.float32)
    ims[1500, 2, 1] = bad  # in the second block of the streamed check
    _write(tmp_path / "f30k_precomp", "train", ims, _caps(2000))
    with pytest.raises(DataError, match=r"train_ims\.npy: image row 1500 holds NaN or infinite values"):
        load_vsepp(tmp_path / "f30k_precomp", "train")
