"""Lexical side of the index: BM25 against a naive loop, fusion, choosing a fusion, the hybrid top-k."""

from __future__ import annotations

import numpy as np
import pytest

from visem.features.tokenize import tokenize
from visem.search.lexical import (
    LexicalIndex,
    choose_fusion,
    fuse,
    hybrid_top,
    image_documents,
    normalise,
    parse_fusion,
)


DOCS = ["a red circle . red;circle", "a blue square", "", "dog face . dog;animal;pet", "hot dog . food",
        "café crème . coffee", "красное сердце"]


@pytest.mark.parametrize("query", ["red circle", "dog", "dog dog food", "café", "сердце", "guitar", "a"])
def test_bm25_matches_a_naive_loop(query, naive_bm25):
    lex = LexicalIndex(DOCS)
    np.testing.assert_allclose(lex.scores(tokenize(query)), naive_bm25(DOCS, tokenize(query)), rtol=1e-5, atol=1e-6)


def test_documents_hold_captions_tags_and_pseudo_captions():
    docs = image_documents(3, ["a red circle", "round and red"], [0, 0], [["red", "circle"], [], []],
                           ["red circle", "tabby", ""])
    assert docs == ["a red circle . round and red . red circle", "tabby", ""]
    lex = LexicalIndex(docs)
    assert lex.scores(["tabby"]).argmax() == 1 and lex.scores(["tabby"])[2] == 0.0


def test_fusion_formulas_and_known_ranking():
    dense = np.array([[0.9, 0.5, 0.1]])
    lex = normalise(np.array([[0.0, 2.0, 4.0]]))
    np.testing.assert_allclose(lex, [[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(fuse(dense, lex, {"kind": "weighted", "weight": 1.0}), [[0.9, 1.0, 1.1]])
    np.testing.assert_allclose(fuse(dense, lex, {"kind": "dense"}), dense)
    rrf = fuse(dense, lex, {"kind": "rrf", "k": 10})
    np.testing.assert_allclose(rrf, [[1 / 11, 1 / 12 + 1 / 12, 1 / 13 + 1 / 11]])  # no word match: no lexical term
    assert normalise(np.zeros((1, 3))).tolist() == [[0.0, 0.0, 0.0]]


def test_choose_fusion_picks_the_best_held_out_rsum():
    # 4 images, one caption each; dense ranks them wrongly, the words rightly: any weight on words wins
    dense = np.array([[0.1, 0.9, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 0.9], [0.0, 0.0, 0.9, 0.1]])
    lex = np.eye(4)
    best, rows = choose_fusion(dense, lex, [0, 1, 2, 3])
    by = {r["label"]: r["rsum"] for r in rows}
    assert by["dense"] == 0.0 + 0.0 + 100.0 * 2 * 2  # R@1 0, R@5 and R@10 100 both ways (4 images)
    assert by["weighted 8"] == 600.0 and by["rrf 60"] == 600.0
    assert by["weighted 0.75"] == 400.0  # 0.1 + 0.75 < 0.9: the wrong image still first
    assert best == {"kind": "weighted", "weight": 1.0}  # the first weight of the grid with 0.1 + w > 0.9


class _Flat:
    """An exact vector index over ``emb`` (what VectorIndex.search returns), for hybrid_top."""

    def __init__(self, emb):
        self.emb = emb

    def search(self, q, k):
        s = self.emb @ q[0]
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        return s[order][None, :], order[None, :]


@pytest.mark.parametrize("fusion", [{"kind": "weighted", "weight": 0.7}, {"kind": "weighted", "weight": 30.0},
                                    {"kind": "rrf", "k": 60}, {"kind": "dense"}])
def test_hybrid_top_equals_fusing_every_image(fusion):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(500, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb[3] + 0.1 * rng.normal(size=8)
    lex = np.zeros(500)
    lex[rng.choice(500, 150, replace=False)] = rng.random(150) * 5  # more word matches than candidates
    scores, ids = hybrid_top(q, lex, emb, _Flat(emb), fusion, 10)
    full = fuse((emb @ q)[None, :], (lex / lex.max())[None, :], fusion)[0]
    if fusion["kind"] == "rrf":  # candidates: dense top 100 and lexical top 100; others take dense rank 101
        assert len(set(ids.tolist())) == 10 and scores.tolist() == sorted(scores.tolist(), reverse=True)
        top_full = set(np.argsort(-full, kind="stable")[:5].tolist())
        assert top_full <= set(ids.tolist())
        return
    np.testing.assert_array_equal(ids, np.lexsort((np.arange(500), -full))[:10])
    np.testing.assert_allclose(scores, full[ids], rtol=1e-6)


def test_images_without_text_are_reached_densely_and_queries_without_dense_side_lexically():
    emb = np.eye(3)
    lex = np.array([0.0, 0.0, 2.0])
    scores, ids = hybrid_top(np.array([1.0, 0.0, 0.0]), lex, emb, _Flat(emb), {"kind": "weighted", "weight": 0.5}, 3)
    assert ids.tolist() == [0, 2, 1]  # image 0 has no word match and comes first on its dense score (1 > 0 + 0.5)
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.0])
    scores, ids = hybrid_top(None, lex, emb, _Flat(emb), {"kind": "weighted", "weight": 0.5}, 2)
    assert ids[0] == 2


def test_parse_fusion():
    assert parse_fusion("auto") == {}
    assert parse_fusion("weighted:0.5") == {"kind": "weighted", "weight": 0.5}
    assert parse_fusion("rrf:60") == {"kind": "rrf", "k": 60.0} and parse_fusion("dense") == {"kind": "dense"}
    for bad in ("weighted:-1", "rrf:0", "blend", "weighted:x"):
        with pytest.raises(ValueError, match="--fusion"):
            parse_fusion(bad)
