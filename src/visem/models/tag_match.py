"""The ``s_g`` baseline of seed 003 (Sec. 4.2): retrieval with no paired data.

Each image has a vector ``s_g`` of image-level semantics over a concept
vocabulary (the paper merges the scores of four pretrained taggers into
16,500 concepts; visem's emoji experiment uses each image's tags, so ``s_g``
is k-hot, or weighted where scores are given). A caption becomes a k-hot
query ``q`` over the same concepts: its tokens (and adjacent word pairs, for
multi-word concepts), expanded with the lemma names of their WordNet synsets,
matched against the concept names. The score is ``r = s_g^T q``.

No training: :class:`TagMatcher` is a plain class, not a registered model.
Ties (e.g. captions that match no concept score 0 against every image) count
against the query, as everywhere in :mod:`visem.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from visem.models.scan_xattn import recall_from_scores
from visem.features.text import tokenize


def wordnet_synonyms(word: str) -> set[str]:
    """WordNet lemma names of ``word`` (:func:`visem.data.wordnet.synonyms`)."""
    from visem.data.wordnet import synonyms

    return synonyms(word)


def _norm(concept: str) -> str:
    return " ".join(tokenize(concept))


class TagMatcher:
    """Tag matching: ``r(image, caption) = s_g(image) . q(caption)``.

    Args:
        image_tags: one iterable of concept names (tags) per image.
        synonyms: ``word -> set of words``, the query expansion (WordNet by
            default; pass ``None`` for exact token matching only).
        tag_scores: optional per-image ``{tag: score}`` mappings used instead
            of 1 for each present tag (the paper's normalised detector scores).
    """

    def __init__(self, image_tags: Sequence[Iterable[str]],
                 synonyms: Callable[[str], set[str]] | None = wordnet_synonyms,
                 tag_scores: Sequence[dict[str, float]] | None = None) -> None:
        tags = [[_norm(t) for t in ts] for ts in image_tags]
        self.concepts = sorted({t for ts in tags for t in ts if t})
        self.index = {c: i for i, c in enumerate(self.concepts)}
        self.synonyms = synonyms
        s_g = torch.zeros(len(tags), len(self.concepts))
        for i, ts in enumerate(tags):
            for t in ts:
                if t:
                    s_g[i, self.index[t]] = 1.0
            if tag_scores is not None:
                for t, v in tag_scores[i].items():
                    if _norm(t) in self.index:
                        s_g[i, self.index[_norm(t)]] = float(v)
        self.s_g = s_g
        self._cache: dict[str, set[str]] = {}

    def _expand(self, word: str) -> set[str]:
        if word not in self._cache:
            out = {word}
            if self.synonyms is not None:
                out |= {_norm(s) for s in self.synonyms(word)}
            self._cache[word] = out
        return self._cache[word]

    def query(self, caption: str) -> Tensor:
        """The k-hot query vector ``q`` of one caption."""
        words = tokenize(caption)
        terms: set[str] = set()
        for w in words:
            terms |= self._expand(w)
        terms |= {f"{a} {b}" for a, b in zip(words, words[1:])}
        q = torch.zeros(len(self.concepts))
        for t in terms:
            j = self.index.get(t)
            if j is not None:
                q[j] = 1.0
        return q

    def scores(self, captions: Sequence[str]) -> Tensor:
        """``(n_images, n_captions)`` matching scores ``s_g^T q``."""
        if not captions:
            raise ValueError("captions is empty")
        q = torch.stack([self.query(c) for c in captions])
        return self.s_g @ q.T

    def evaluate(self, captions: Sequence[str], txt_to_img: Tensor) -> dict[str, float]:
        """R@K both ways (:func:`visem.metrics.retrieval_recall` names) of the tag-matching scores."""
        return recall_from_scores(self.scores(captions).double(), torch.as_tensor(txt_to_img))
