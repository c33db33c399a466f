"""Protocol samplers: disjointness, exact counts, seeds reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from visem.data.splits import domain_split, few_shot_split, sparse_corpus, zero_shot_split

LABELS = np.repeat(np.arange(10), 7)  # 10 classes x 7 images


def _same(a, b):
    for f in a.__dataclass_fields__:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_zero_shot_draw_counts_disjoint_and_reproducible():
    s = zero_shot_split(LABELS, n_unseen=3, n_val=2, seed=5)
    assert s.unseen_classes.size == 3 and s.val_classes.size == 2 and s.train_classes.size == 5
    assert not np.intersect1d(s.seen_classes, s.unseen_classes).size
    assert not np.intersect1d(s.train_classes, s.val_classes).size
    assert s.train_idx.size == 35 and s.val_idx.size == 14 and s.test_idx.size == 21
    assert set(LABELS[s.test_idx]) == set(s.unseen_classes.tolist())
    assert set(LABELS[s.val_idx]) == set(s.val_classes.tolist())
    assert not np.intersect1d(s.train_idx, s.test_idx).size and not np.intersect1d(s.train_idx, s.val_idx).size
    assert s.unlabelled_idx.size == 0 and not s.transductive  # inductive: no test images
    assert s.trainval_idx.size == 49
    _same(s, zero_shot_split(LABELS, n_unseen=3, n_val=2, seed=5))
    other = [zero_shot_split(LABELS, n_unseen=3, seed=k).unseen_classes.tolist() for k in range(6)]
    assert len({tuple(o) for o in other}) > 1


def test_zero_shot_explicit_fraction_transductive_and_gzsl():
    s = zero_shot_split(LABELS, unseen=[1, 4], val=[0], transductive=True, test_seen_fraction=2 / 7, seed=1)
    assert s.unseen_classes.tolist() == [1, 4] and s.val_classes.tolist() == [0]
    np.testing.assert_array_equal(s.unlabelled_idx, s.test_idx)
    assert s.test_seen_idx.size == 7 * 2  # 2 of 7 images of each of the 7 train classes
    assert not np.intersect1d(s.test_seen_idx, s.train_idx).size
    assert s.train_idx.size + s.test_seen_idx.size == 49
    f = zero_shot_split(LABELS, unseen_fraction=0.2, val_fraction=0.25, seed=0)
    assert f.unseen_classes.size == 2 and f.val_classes.size == 2
    extra = zero_shot_split(LABELS, unseen=[10, 11], classes=np.arange(12))  # classes without images
    assert extra.test_idx.size == 0 and extra.train_classes.size == 10
    with pytest.raises(ValueError):
        zero_shot_split(LABELS, unseen=[1], n_unseen=2)
    with pytest.raises(ValueError):
        zero_shot_split(LABELS, unseen=[1], val=[1])
    with pytest.raises(ValueError):
        zero_shot_split(LABELS)


def test_few_shot():
    z = zero_shot_split(LABELS, n_unseen=3, seed=2)
    f = few_shot_split(LABELS, z.unseen_classes, k=2, train_idx=z.train_idx, pool_idx=z.test_idx, seed=3)
    assert f.shot_idx.size == 6
    assert np.bincount(LABELS[f.shot_idx], minlength=10)[z.unseen_classes].tolist() == [2, 2, 2]
    assert f.train_idx.size == z.train_idx.size + 6
    assert not np.intersect1d(f.shot_idx, f.test_idx).size
    assert f.test_idx.size == z.test_idx.size - 6
    _same(f, few_shot_split(LABELS, z.unseen_classes, k=2, train_idx=z.train_idx, pool_idx=z.test_idx, seed=3))
    with pytest.raises(ValueError, match="fewer than k"):
        few_shot_split(LABELS, [0], k=8)
    assert few_shot_split(LABELS, [0, 1], k=0).shot_idx.size == 0


def test_sparse_corpus_counts_nested_and_reproducible():
    n_img = 40
    ci = np.repeat(np.arange(n_img), 5)  # five captions per image
    s = sparse_corpus(ci, image_fraction=0.25, captions_per_image=2, seed=7)
    assert s.paired_images.size == 10 and s.unpaired_images.size == 30
    assert s.paired_captions.size == 20
    assert np.bincount(ci[s.paired_captions], minlength=n_img)[s.paired_images].tolist() == [2] * 10
    assert not np.intersect1d(s.paired_images, s.unpaired_images).size
    assert s.withheld_captions.size == 200 - 20
    assert s.pairs(ci).shape == (20, 2)
    _same(s, sparse_corpus(ci, 0.25, 2, seed=7))
    # a smaller sample is a subset of a larger one with the same seed (shuffle once, trim)
    big = sparse_corpus(ci, 0.5, 5, seed=7)
    assert np.isin(s.paired_images, big.paired_images).all()
    assert np.isin(s.paired_captions, big.paired_captions).all()
    one = sparse_corpus(ci, 0.25, 1, seed=7)
    assert np.isin(one.paired_captions, s.paired_captions).all()
    # restricted to training images; fewer captions than asked keeps them all
    ragged = np.array([0, 0, 1, 2, 2, 2])
    r = sparse_corpus(ragged, 1.0, 2, images=[0, 1], seed=0)
    assert r.paired_images.tolist() == [0, 1] and r.paired_captions.size == 3
    assert sparse_corpus(ci, 0.0, 5).paired_images.size == 0


def test_domain_split_withholds_target_pairing():
    dom = np.array(["src"] * 6 + ["tgt"] * 4)
    ci = np.repeat(np.arange(10), 2)
    d = domain_split(dom, ci, "src", "tgt", seed=3)
    assert d.source_images.tolist() == list(range(6)) and d.source_captions.size == 12
    np.testing.assert_array_equal(ci[d.source_pairs[:, 1]], d.source_pairs[:, 0])
    assert sorted(d.target_images.tolist()) == [6, 7, 8, 9] and d.target_captions.size == 8
    assert sorted(d.target_captions.tolist()) == list(range(12, 20))
    assert d.target_pairs.shape == (8, 2)
    _same(d, domain_split(dom, ci, "src", "tgt", seed=3))
    with pytest.raises(ValueError, match="overlap"):
        domain_split(dom, ci, ["src", "tgt"], "tgt")
