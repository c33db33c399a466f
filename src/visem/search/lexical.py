"""Lexical search over each image's words, and its fusion with the dense (embedding) score.

A learned embedding finds the *category* a query names ("dog" -> other
animals); a word match finds the *item* whose captions or tags contain the
word. Every index keeps both:

* **Documents.** One per image: its captions, its tags and its pseudo
  caption (the tags joined, else its top ImageNet classes), tokenised by
  :func:`visem.features.tokenize.tokenize` (any script, accents kept).
  Images added later (``index add``) get their pseudo caption and, with
  ``--captions``, their tags and captions.
* **BM25** (``bm25s``, Lucene's variant, ``k1 = 1.5``, ``b = 0.75``) scores a
  query's tokens against every document. Query words no document holds score
  nothing; an image with no text scores 0 and is reached through the dense
  side only.
* **Fusion** of the dense cosine ``d`` (in [-1, 1]) with the lexical score
  ``l`` normalised by the query's best BM25 score over the whole index (so
  ``l`` is in [0, 1] and 1 for the best word match):

  - ``{"kind": "weighted", "weight": w}``: ``d + w * l``;
  - ``{"kind": "rrf", "k": c}``: reciprocal-rank fusion
    ``1 / (c + rank_d) + 1 / (c + rank_l)`` (Cormack et al. 2009; an image
    without a word match has no lexical term);
  - ``{"kind": "dense"}`` and ``{"kind": "lexical"}``: one side alone (the
    rows the build and the docs print beside the fused one).

  Which fusion an index uses is chosen at build time on a held-out split of
  the user's own captions when there are enough of them
  (:func:`choose_fusion`, :mod:`visem.search.choose`), else
  :data:`DEFAULT_FUSION`, measured in docs/search.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from visem.features.tokenize import tokenize

__all__ = ["DEFAULT_FUSION", "FUSION_GRID", "LexicalIndex", "choose_fusion", "fuse", "fusion_label",
           "hybrid_top", "image_documents", "lexical_file", "read_documents", "write_documents"]

#: The fusion of an index whose captions are too few to choose one: the weight validation chose on 4 of the
#: 6 measured builds (1 to 2 on all; docs/search.md, "Measured defaults").
DEFAULT_FUSION: dict[str, Any] = {"kind": "weighted", "weight": 1.5}

#: Fusions tried on the held-out split: dense alone, the weighted sums, RRF.
FUSION_GRID: tuple[dict[str, Any], ...] = (
    {"kind": "dense"},
    *({"kind": "weighted", "weight": w} for w in (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)),
    {"kind": "rrf", "k": 10},
    {"kind": "rrf", "k": 60},
)

#: Candidates per side of a hybrid query (at least; 10 k for larger k).
MIN_CANDIDATES = 100


def fusion_label(fusion: dict[str, Any]) -> str:
    """``"weighted 0.5"``, ``"rrf 60"``, ``"dense"``, ``"lexical"``."""
    kind = fusion["kind"]
    if kind == "weighted":
        return f"weighted {fusion['weight']:g}"
    if kind == "rrf":
        return f"rrf {fusion['k']:g}"
    return kind


def check_fusion(fusion: Any) -> dict[str, Any]:
    """The fusion as a dict, or ``ValueError`` naming what is wrong."""
    if not isinstance(fusion, dict) or fusion.get("kind") not in ("dense", "lexical", "weighted", "rrf"):
        raise ValueError(f"fusion must be dense, lexical, weighted (weight >= 0) or rrf (k > 0), got {fusion!r}")
    if fusion["kind"] == "weighted" and not (isinstance(fusion.get("weight"), (int, float)) and fusion["weight"] >= 0):
        raise ValueError(f"a weighted fusion needs a weight >= 0, got {fusion!r}")
    if fusion["kind"] == "rrf" and not (isinstance(fusion.get("k"), (int, float)) and fusion["k"] > 0):
        raise ValueError(f"an rrf fusion needs k > 0, got {fusion!r}")
    return dict(fusion)


def parse_fusion(text: str) -> dict[str, Any]:
    """``"auto"`` -> ``{}``; ``"dense"``, ``"lexical"``, ``"weighted:0.5"``, ``"rrf:60"`` -> a fusion dict."""
    text = text.strip().lower()
    if text == "auto":
        return {}
    kind, _, value = text.partition(":")
    try:
        if kind == "weighted":
            return check_fusion({"kind": kind, "weight": float(value)})
        if kind == "rrf":
            return check_fusion({"kind": kind, "k": float(value or 60)})
    except ValueError:
        pass
    if kind in ("dense", "lexical") and not value:
        return {"kind": kind}
    raise ValueError(f"--fusion must be auto, dense, lexical, weighted:W (W >= 0) or rrf:K (K > 0), got {text!r}")


# ---------------------------------------------------------------------- documents
def image_documents(n_images: int, captions: Sequence[str], caption_image: Sequence[int],
                    tags: Sequence[Sequence[str]], pseudo: Sequence[str]) -> list[str]:
    """One text per image: its captions, its tags, and its pseudo caption when it has no tags."""
    parts: list[list[str]] = [[] for _ in range(n_images)]
    for c, i in zip(captions, caption_image):
        parts[int(i)].append(c)
    for i in range(n_images):
        if tags[i]:
            parts[i].append(" ".join(tags[i]))
        elif pseudo[i]:
            parts[i].append(pseudo[i])
    return [" . ".join(p) for p in parts]


def lexical_file(generation: int) -> str:
    return f"lexical.{generation}.json"


def write_documents(path: Path, documents: Sequence[str]) -> None:
    from visem.io import atomic_write_json

    atomic_write_json(path, {"format": "visem-lexical", "version": 1, "documents": list(documents)})


def read_documents(path: Path) -> list[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") != "visem-lexical" or not isinstance(data.get("documents"), list):
        raise ValueError(f"{path}: not a visem lexical file")
    return [str(d) for d in data["documents"]]


# ---------------------------------------------------------------------- BM25
class LexicalIndex:
    """BM25 over one document per image (``bm25s``, Lucene's formula, ``k1 = 1.5``, ``b = 0.75``)."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        import bm25s

        self.documents = list(documents)
        self.tokens = [tokenize(d) for d in self.documents]
        self.vocabulary = {t for toks in self.tokens for t in toks}
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        # bm25s needs one non-empty document; an all-empty corpus still scores 0 everywhere
        self._empty = not any(self.tokens)
        if not self._empty:
            self._bm25.index(self.tokens, show_progress=False)

    @property
    def n(self) -> int:
        return len(self.documents)

    def known(self, tokens: Sequence[str]) -> list[str]:
        """The tokens some document holds."""
        return [t for t in tokens if t in self.vocabulary]

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """``(N,)`` float32 BM25 scores of a tokenised query against every document."""
        tokens = self.known(tokens)
        if self._empty or not tokens:
            return np.zeros(self.n, np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def matrix(self, queries: Sequence[Sequence[str]]) -> np.ndarray:
        """``(Q, N)`` BM25 scores of tokenised queries."""
        out = np.zeros((len(queries), self.n), np.float32)
        for i, q in enumerate(queries):
            out[i] = self.scores(q)
        return out


def normalise(lex: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum (rows with no match stay 0)."""
    lex = np.asarray(lex, dtype=np.float64)
    top = lex.max(axis=-1, keepdims=True) if lex.size else np.zeros(lex.shape[:-1] + (1,))
    return np.divide(lex, top, out=np.zeros_like(lex), where=top > 0)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every entry of each row (descending; ties share the lower rank)."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[-1] + 1)[None, :].repeat(scores.shape[0], 0), axis=-1)
    # ties: the rank of the first of the tied run (so tied entries get equal fused scores)
    sorted_s = np.take_along_axis(scores, order, axis=-1)
    first = np.ones_like(sorted_s, dtype=bool)
    first[:, 1:] = sorted_s[:, 1:] != sorted_s[:, :-1]
    run_start = np.maximum.accumulate(np.where(first, np.arange(scores.shape[-1])[None, :], 0), axis=-1) + 1
    np.put_along_axis(ranks, order, run_start, axis=-1)
    return ranks


def fuse(dense: np.ndarray, lex_norm: np.ndarray, fusion: dict[str, Any]) -> np.ndarray:
    """``(Q, N)`` fused scores of dense cosines and normalised lexical scores (module docstring)."""
    dense = np.atleast_2d(np.asarray(dense, dtype=np.float64))
    lex_norm = np.atleast_2d(np.asarray(lex_norm, dtype=np.float64))
    kind = fusion["kind"]
    if kind == "dense":
        return dense
    if kind == "lexical":
        return lex_norm
    if kind == "weighted":
        return dense + float(fusion["weight"]) * lex_norm
    c = float(fusion["k"])
    rl = _ranks(lex_norm)
    return 1.0 / (c + _ranks(dense)) + np.where(lex_norm > 0, 1.0 / (c + rl), 0.0)


def evaluate_fusions(dense: np.ndarray, lex_norm: np.ndarray, caption_image: Sequence[int],
                     fusions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Held-out R@K of each fusion: ``[{"fusion", "label", **metrics}]`` (captions x images matrices)."""
    from visem.metrics import retrieval_recall_scores

    rows = []
    for f in fusions:
        m = retrieval_recall_scores(fuse(dense, lex_norm, f), caption_image)
        rows.append({"fusion": dict(f), "label": fusion_label(f), **{k: round(float(v), 4) for k, v in m.items()}})
    return rows


def choose_fusion(dense: np.ndarray, lex_norm: np.ndarray, caption_image: Sequence[int],
                  grid: Sequence[dict[str, Any]] = FUSION_GRID) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fusion of ``grid`` with the best held-out rsum (first of equals) and every row measured."""
    rows = evaluate_fusions(dense, lex_norm, caption_image, grid)
    best = max(range(len(rows)), key=lambda i: (rows[i]["rsum"], -i))
    return dict(grid[best]), rows


# ---------------------------------------------------------------------- searching
def _rows(embeddings: Any, ids: np.ndarray) -> np.ndarray:
    """``embeddings[ids]`` as float32 (a memory map's or a row reader's rows)."""
    return np.asarray(embeddings[np.asarray(ids, dtype=np.int64)], dtype=np.float32)


def hybrid_top(query: np.ndarray, lex: np.ndarray, embeddings: Any, vectors: Any, fusion: dict[str, Any],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, ids)`` of one query under ``fusion``, best first.

    ``query``: the (D,) dense query vector (``None`` when the dense side
    cannot embed the query: lexical results only); ``lex``: its (N,) raw BM25
    scores; ``embeddings``: the (N, D) image embeddings (row access only:
    ``embeddings[ids]`` for an integer array, e.g. rows read from the
    index's generations); ``vectors``: the vector store over them
    (:class:`~visem.search.vectors.VectorStore`, exact scores).

    Candidates are the dense top ``C`` (from the vector index) and the
    lexical top ``C`` (``C = max(100, 10 k)``), scored exactly. For a weighted
    fusion the answer is then exact whenever the ``k``-th fused score beats
    every image outside both lists (at most ``d_C + w * l_C``); otherwise
    every image is scored. For RRF, an image outside the dense top ``C``
    takes dense rank ``C + 1``.
    """
    n = int(len(embeddings))
    k = min(k, n)
    lex = np.asarray(lex, dtype=np.float64)
    top = float(lex.max()) if n else 0.0
    kind = fusion["kind"]
    if query is None or kind == "lexical":
        ln = lex / top if top > 0 else lex
        dense = (_rows(embeddings, np.arange(n)) @ query).astype(np.float64) if query is not None else np.zeros(n)
        order = np.lexsort((np.arange(n), -dense, -ln))[:k]  # word match first, then the dense score
        return ln[order].astype(np.float32), order.astype(np.int64)
    if kind == "dense" or top <= 0:
        scores, ids = vectors.search(query[None, :], k)
        return scores[0], ids[0]
    ln = lex / top
    c = min(n, max(MIN_CANDIDATES, 10 * k))
    d_scores, d_ids = vectors.search(query[None, :], c)
    d_ids = d_ids[0]
    nz = np.flatnonzero(ln > 0)
    l_ids = nz[np.argsort(-ln[nz], kind="stable")[:c]]
    cands = np.union1d(d_ids, l_ids)
    dense_c = _rows(embeddings, cands).astype(np.float64) @ np.asarray(query, dtype=np.float64)
    if kind == "weighted":
        w = float(fusion["weight"])
        fused = dense_c + w * ln[cands]
        kth = np.sort(fused)[-k]
        outside_dense = float(d_scores[0][-1]) if len(d_ids) < n else -np.inf
        outside_lex = float(ln[l_ids[-1]]) if len(l_ids) == c and len(nz) > c else 0.0
        if len(cands) < n and kth < outside_dense + w * outside_lex:  # the bound fails: score everything
            cands = np.arange(n)
            fused = _rows(embeddings, cands).astype(np.float64) @ np.asarray(query, dtype=np.float64) + w * ln
    else:
        ck = float(fusion["k"])
        d_rank = {int(i): r for r, i in enumerate(d_ids, 1)}
        l_rank = {int(i): r for r, i in enumerate(l_ids, 1)}
        fused = np.asarray([1.0 / (ck + d_rank.get(int(i), c + 1))
                            + (1.0 / (ck + l_rank[int(i)]) if int(i) in l_rank else 0.0) for i in cands])
    order = np.lexsort((cands, -fused))[:k]
    return fused[order].astype(np.float32), cands[order].astype(np.int64)
