"""Which embedding image-to-image search ranks by: the learned one, the raw CNN features, or both.

An index answers "images like this one" (``visem search --image``, a click
on the page, ``/api/similar``) by one of:

* ``learned``: the cosine of the trained model's image embeddings;
* ``raw``: the cosine of the image encoder's pooled features (EfficientNet
  as trained on ImageNet, before any training on the collection);
* ``fused`` (:data:`DEFAULT_IMAGE_SPACE`): the sum of the two cosines.

Measured across emoji styles (each of the 1,906 Twitter-style emoji ranks
the Google-style ones; a hit is the same concept; the learned embedding of
the demo index, seed 0; ``visem.search.measure.image_to_image``): R@1 raw
41.0, learned 41.2, fused 43.6; R@10 70.9, 71.7, 74.3. The fused score is
the default. The raw features are stored in the index (``raw.<g>.npy``, one file
per generation, unit norm, float16) and the query takes the learned top ``C = max(100,
10 k)`` from the vector index, re-ranked by the fused score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEFAULT_IMAGE_SPACE", "fused_top", "raw_file", "unit_float16"]

DEFAULT_IMAGE_SPACE = "fused"


def raw_file(generation: int) -> str:
    return f"raw.{generation}.npy"


def unit_float16(pooled: Any) -> np.ndarray:
    """``(N, F)`` float16 rows of unit norm (the stored raw features)."""
    x = np.asarray(pooled, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float16)


def fused_top(vec: np.ndarray, raw_q: np.ndarray, embeddings: Any, raw: Any, vectors: Any, k: int,
              exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, ids)`` by learned + raw cosine among the learned top ``C`` (``exclude`` left out).

    ``embeddings`` and ``raw``: row access (``rows[ids]``) to the learned and raw image vectors.
    """
    n = int(len(embeddings))
    c = min(n, max(100, 10 * k) + (exclude is not None))
    _, ids = vectors.search(np.asarray(vec, dtype=np.float32)[None, :], c)
    cand = ids[0][ids[0] != (exclude if exclude is not None else -1)]
    q = np.asarray(raw_q, dtype=np.float32)
    s = np.asarray(embeddings[cand], dtype=np.float32) @ np.asarray(vec, dtype=np.float32) + \
        np.asarray(raw[cand], dtype=np.float32) @ (q / max(float(np.linalg.norm(q)), 1e-12))
    order = np.lexsort((cand, -s))[:k]
    return s[order], cand[order]
