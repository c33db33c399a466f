"""retrieval_recall_scores (a given score matrix) against retrieval_recall (the embeddings' dot products)."""

from __future__ import annotations

import numpy as np
import pytest

from visem.metrics import retrieval_recall, retrieval_recall_scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_as_retrieval_recall_on_dot_products(seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(37, 5))
    t2i = np.concatenate([np.arange(37), rng.integers(0, 37, 40)])
    txt = img[t2i] + rng.normal(scale=1.2, size=(len(t2i), 5))
    ks = (1, 3, 5, 10)
    want = retrieval_recall(img, txt, t2i, ks=ks)
    got = retrieval_recall_scores(txt @ img.T, t2i, ks=ks)
    assert got == pytest.approx(want)


def test_ties_count_against_the_query():
    # every score equal: each caption's image ties with all 3 images -> rank 3; each image ties all captions
    got = retrieval_recall_scores(np.ones((3, 3)), [0, 1, 2], ks=(1, 2, 3))
    assert got["t2i_r1"] == 0.0 and got["t2i_r3"] == 100.0 and got["t2i_medr"] == 3.0
    assert got["i2t_r1"] == 0.0 and got["i2t_r3"] == 100.0
    # known answer: caption 0 -> image 1 first (wrong), caption 1 -> image 1 first (right)
    s = np.array([[0.2, 0.9], [0.1, 0.8]])
    got = retrieval_recall_scores(s, [0, 1], ks=(1,))
    assert got["t2i_r1"] == 50.0 and got["t2i_meanr"] == 1.5
    assert got["i2t_r1"] == 50.0  # image 0: its caption (0.2) beats caption 1 (0.1); image 1: 0.8 < 0.9, rank 2
    assert got["i2t_meanr"] == 1.5


def test_bad_input_named():
    with pytest.raises(ValueError, match="one entry per caption"):
        retrieval_recall_scores(np.zeros((2, 2)), [0])
    with pytest.raises(ValueError, match="has no caption"):
        retrieval_recall_scores(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall_scores(np.full((1, 1), np.nan), [0])
