"""Tokenizer, vocabulary, GloVe phrase vectors (against a manual mean, OOV reported), MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from visem.data import DataError
from visem.features.text import Vocabulary, encode_sentences, glove, glove_matrix, glove_phrases, tokenize


def test_tokenize():
    assert tokenize("A T-shirt, don't!") == ["a", "t-shirt", "do", "n't"]
    assert tokenize("The dog's  ball\nIS red.") == ["the", "dog", "'s", "ball", "is", "red"]
    assert tokenize("four o\u2019clock") == ["four", "o'clock"]
    assert tokenize("") == []


def test_vocabulary_build_encode_roundtrip():
    v = Vocabulary.build(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert v.words[:4] == ["<pad>", "<unk>", "<start>", "<end>"]
    assert v.words[4:] == ["a", "dog"]  # most frequent first; 'runs', 'sits', 'cat' below min_count
    ids, lengths = v.encode_batch(["a dog", "a cat sits here"], add_bounds=True)
    assert ids.shape == (2, 6) and lengths.tolist() == [4, 6]
    assert ids[0].tolist() == [2, 4, 5, 3, 0, 0]
    assert ids[1, 2] == Vocabulary.UNK
    assert v.decode(ids[0]) == "a dog"
    assert Vocabulary.from_json(v.to_json()).words == v.words
    assert len(Vocabulary.build(["a b c d e"], max_size=6)) == 6


def test_glove_phrase_mean_matches_manual_and_reports_oov():
    g = glove()
    assert len(g) == 400000 and g.dim == 50
    pv = glove_phrases(["Ankle boot", "ankle qwzxvb boot", "T-shirt/top"])
    manual = (g.vector("ankle") + g.vector("boot")) / 2
    np.testing.assert_allclose(pv.vectors[0], manual, rtol=1e-6)
    np.testing.assert_allclose(pv.vectors[1], manual, rtol=1e-6)  # the unknown word is left out ...
    assert pv.oov == [[], ["qwzxvb"], []]  # ... and reported
    assert pv.oov_words == ["qwzxvb"]
    np.testing.assert_allclose(pv.vectors[2], (g.vector("t-shirt") + g.vector("top")) / 2, rtol=1e-6)
    assert pv.vectors.dtype == np.float32 and pv.vectors.shape == (3, 50)


def test_glove_l2sum_and_all_oov():
    g = glove()
    pv = glove_phrases(["white horse"], mode="l2sum")
    w, h = g.vector("white"), g.vector("horse")
    s = w / np.linalg.norm(w) + h / np.linalg.norm(h)
    np.testing.assert_allclose(pv.vectors[0], s / np.linalg.norm(s), rtol=1e-5)
    with pytest.raises(DataError, match="qwzxvb"):
        glove_phrases(["qwzxvb zzqqxx"])
    z = glove_phrases(["qwzxvb", "cat"], all_oov="zero")
    assert z.empty == [0] and not z.vectors[0].any() and z.vectors[1].any()


def test_glove_matrix_for_a_vocabulary():
    v = Vocabulary.build(["red dog qwzxvb"])
    m, oov = glove_matrix(v, seed=0)
    assert m.shape == (len(v), 50) and oov == ["qwzxvb"]
    assert not m[Vocabulary.PAD].any()
    np.testing.assert_allclose(m[v.index["dog"]], glove().vector("dog"))
    np.testing.assert_array_equal(glove_matrix(v, seed=0)[0], m)


def test_minilm_unit_norm_384():
    vecs = encode_sentences(["a dog runs on the grass", "a puppy running across a lawn", "stock prices fell sharply"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > sim[0, 2]
