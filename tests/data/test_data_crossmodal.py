"""Cross-modal .mat reader (Wikipedia / Pascal Sentences / NUS-WIDE / XMediaNet layouts)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from visem.data import DataError, info, load
from visem.data.crossmodal import classify_key, load_crossmodal


def test_key_classification():
    assert classify_key("I_tr") == ("image", "train")
    assert classify_key("T_te") == ("text", "test")
    assert classify_key("L_tr") == ("label", "train")
    assert classify_key("train_img_lab") == ("label", "train")
    assert classify_key("train_txt_lab") == ("text_label", "train")
    assert classify_key("test_imgs_deep") == ("image", "test")
    assert classify_key("train_texts_doc") == ("text", "train")
    assert classify_key("val_img") == ("image", "val")
    assert classify_key("something_else") is None


def test_wikipedia_style_transposed_one_based(tmp_path):
    rng = np.random.default_rng(0)
    n_tr, n_te = 12, 5
    y_tr, y_te = rng.integers(1, 11, n_tr), rng.integers(1, 11, n_te)
    y_tr[0], y_te[0] = 1, 10
    img_tr = rng.standard_normal((n_tr, 16))
    txt_tr = rng.standard_normal((n_tr, 7))
    path = tmp_path / "wiki.mat"
    scipy.io.savemat(
        path,
        {
            "I_tr": img_tr.T,  # stored D x N
            "T_tr": txt_tr,
            "L_tr": y_tr.reshape(-1, 1),
            "I_te": rng.standard_normal((n_te, 16)),
            "T_te": rng.standard_normal((n_te, 7)),
            "L_te": y_te.reshape(-1, 1),
        },
    )
    d = load("wikipedia", split="train", path=path)
    assert d.image.shape == (n_tr, 16) and d.text.shape == (n_tr, 7) and d.image.dtype == np.float32
    np.testing.assert_allclose(d.image, img_tr, rtol=1e-6)
    np.testing.assert_array_equal(d.labels, y_tr - 1)  # 1-based -> 0-based
    assert not d.multilabel and d.keys == {"image": "I_tr", "text": "T_tr", "label": "L_tr"}
    assert d.available_splits == ["test", "train"]
    te = load_crossmodal(path, split="test")
    assert te.labels.max() == 9 and len(te) == n_te
    assert load_crossmodal(path, split="test", label_base=0).labels.max() == 10
    assert d.multi_hot().shape == (n_tr, d.n_classes)
    assert "multi-label: False" in info("crossmodal", path=path, split="test").format()


def test_dscmr_style_multilabel(tmp_path):
    rng = np.random.default_rng(1)
    n = 9
    lab = (rng.random((n, 4)) < 0.4).astype(np.float64)
    lab[0] = [1, 1, 0, 0]
    path = tmp_path / "nus.mat"
    scipy.io.savemat(path, {"train_img": rng.standard_normal((n, 10)), "train_txt": rng.standard_normal((n, 3)), "train_img_lab": lab, "train_txt_lab": lab})
    d = load_crossmodal(path, split="train")
    assert d.multilabel and d.labels.dtype == np.uint8 and d.labels.shape == (n, 4)
    assert d.text_labels is None  # identical to the image labels
    np.testing.assert_array_equal(d.multi_hot(), lab.astype(np.uint8))


def test_ambiguous_keys_and_override(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "x.mat"
    scipy.io.savemat(
        path,
        {"train_img": rng.standard_normal((4, 5)), "train_img_vgg": rng.standard_normal((4, 6)), "train_txt": rng.standard_normal((4, 2)), "train_lab": np.arange(4)},
    )
    with pytest.raises(DataError, match="x.mat.*several.*train_img"):
        load_crossmodal(path, split="train")
    d = load_crossmodal(path, split="train", keys={"image_train": "train_img_vgg"})
    assert d.image.shape == (4, 6)
    assert d.labels.tolist() == [0, 1, 2, 3]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nothing.mat.*not found"):
        load_crossmodal(tmp_path / "nothing.mat")
    path = tmp_path / "nolabels.mat"
    scipy.io.savemat(path, {"train_img": np.zeros((3, 2)), "train_txt": np.zeros((3, 2))})
    with pytest.raises(DataError, match="nolabels.mat.*no label"):
        load_crossmodal(path)
    path = tmp_path / "badlab.mat"
    scipy.io.savemat(path, {"train_img": np.zeros((3, 2)), "train_txt": np.zeros((3, 2)), "train_lab": np.array([[0.5, 2, 3]])})
    with pytest.raises(DataError, match="badlab.mat.*integer"):
        load_crossmodal(path)
    path = tmp_path / "mismatch.mat"
    scipy.io.savemat(path, {"train_img": np.zeros((4, 2)), "train_txt": np.zeros((3, 2)), "train_lab": np.arange(3)})
    with pytest.raises(DataError, match="mismatch.mat.*train_img"):
        load_crossmodal(path)
    with pytest.raises(DataError, match="no image variable for split 'test'"):
        load_crossmodal(tmp_path / "badlab.mat", split="test")
