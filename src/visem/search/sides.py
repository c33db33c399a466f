"""The index's sides beside its learned embedding: the text tower's queries, the lexical index and its fusion,
the raw image features; what :class:`visem.search.SearchIndex` calls to load, search, grow and evaluate them.

Kept apart from :mod:`visem.search.index` (which calls each function from a
one-line hook) so the opened index stays one idea: its files and its
queries. See :mod:`visem.search.lexical`, :mod:`visem.search.towers` and
:mod:`visem.search.image_space` for what each side is.

On disk the sides follow the generations (:mod:`visem.search.folder`): each
generation entry names its images' lexical documents (``lexical.<g>.json``)
and raw features (``raw.<g>.npy``), and an ``add`` writes only the new
images'; the manifest's ``lexical`` entry holds the fusion and its
``image_space`` entry the image-to-image score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from visem.search.types import IndexFileError, QueryError

__all__ = ["add_sides", "fusion_for", "held_out_modes", "load_sides", "reloaded", "search_text", "side_entries",
           "similar_fused", "write_sides"]

#: rows per block when the raw features are written from the feature store
_BLOCK = 4096


def side_entries(fusion: dict[str, Any]) -> dict[str, Any]:
    """The manifest's entries of the sides: the fusion, and which score image-to-image search uses."""
    from visem.search.image_space import DEFAULT_IMAGE_SPACE

    return {"lexical": {"fusion": dict(fusion)}, "image_space": {"kind": DEFAULT_IMAGE_SPACE}}


def write_sides(folder: Path, gen: int, col: Any, ids: list[int], pseudo: list[str], pooled: Any,
                lexical: bool = True, raw: bool = True) -> dict[str, str]:
    """Generation ``gen``'s lexical documents and raw features of the images ``ids`` of ``col``.

    ``pseudo`` and ``pooled`` (rows of pooled features, e.g. read from the
    feature store) are row-aligned with ``ids``. Returns the file names for
    the generation entry (``lexical``, ``raw``).
    """
    from visem.search.folder import write_embeddings
    from visem.search.image_space import raw_file, unit_float16
    from visem.search.lexical import image_documents, lexical_file, write_documents

    out: dict[str, str] = {}
    if lexical:  # their captions and tags (from the caption file), else their pseudo captions
        pos = {i: j for j, i in enumerate(ids)}
        caps = [(c, pos[i]) for c, i in zip(col.captions, col.caption_image.tolist()) if i in pos]
        docs = image_documents(len(ids), [c for c, _ in caps], [j for _, j in caps], [col.tags[i] for i in ids],
                               pseudo)
        out["lexical"] = lexical_file(gen)
        write_documents(folder / out["lexical"], docs)
    if raw:
        out["raw"] = raw_file(gen)
        n = len(ids)
        blocks = (unit_float16(pooled[s:s + _BLOCK]) for s in range(0, n, _BLOCK))
        write_embeddings(folder / out["raw"], blocks, n, int(pooled.shape[1]))
    return out


def load_sides(index: Any, model: bool) -> None:
    """Set ``index.side`` (when the model is loaded), ``index._raw_rows``, ``index.lexical`` and ``index.fusion``.

    Indexes built before these sides existed get none: dense text search over
    the learned embedding, image search by the learned embedding.
    """
    from visem.search.folder import GenerationRows, open_rows
    from visem.search.lexical import LexicalIndex, read_documents
    from visem.search.towers import TextSide, text_encoder_of

    m, gens = index.manifest, index.manifest["generations"]
    if model:
        index.side = TextSide(text_encoder_of(index.model), index.vocab, int(m["max_len"]))
    index._raw_rows = None
    space = m.get("image_space")
    if space and space.get("kind") == "fused" and all("raw" in g for g in gens):
        parts = []
        for g in gens:
            rows = _generation_side(index, g, "raw", open_rows, "raw feature")
            if rows.ndim != 2 or len(rows) != int(g["n"]):
                raise IndexFileError(f"{index.path / g['raw']}: shape {rows.shape} for {g['n']} images")
            parts.append(rows)
        index._raw_rows = GenerationRows(parts)
    lex = m.get("lexical")
    index.lexical, index.fusion = None, {"kind": "dense"}
    if lex and all("lexical" in g for g in gens):
        docs: list[str] = []
        for g in gens:
            part = _generation_side(index, g, "lexical", read_documents, "lexical")
            if len(part) != int(g["n"]):
                raise IndexFileError(f"{index.path / g['lexical']}: {len(part)} documents for {g['n']} images")
            docs += part
        index.lexical, index.fusion = LexicalIndex(docs), dict(lex["fusion"])


def _generation_side(index: Any, gen: dict, key: str, read: Any, what: str) -> Any:
    """``read`` of the side file ``gen[key]``; an unreadable one is an :class:`IndexFileError` naming it."""
    try:
        return read(index._file(gen[key]))
    except IndexFileError:
        raise
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{index.path / gen[key]}: damaged {what} file ({exc})") from None


def reloaded(index: Any) -> Any:
    """``index``, or a new index over the same model when ``index add`` wrote a new generation.

    What a long-running reader (``visem serve``) calls to pick up additions:
    it compares the manifest's generation (one small read) and, when it
    changed, opens the generations' files sharing this one's model, text
    side and lock; ``index`` is left untouched, so queries already running
    finish on the old generation.
    """
    from visem.search.folder import read_manifest

    try:
        manifest = read_manifest(index.path)
    except IndexFileError:
        return index
    if manifest.get("generation") == index.manifest.get("generation"):
        return index
    new = object.__new__(type(index))
    new.path, new.manifest, new._lock, new._encoder = index.path, manifest, index._lock, index._encoder
    new.model, new.vocab, new.side = index.model, index.vocab, index.side
    new._load(model=False)
    return new


def fusion_for(index: Any, mode: str | None) -> dict[str, Any]:
    """The fusion a query runs with: the index's, or one side alone."""
    if mode in (None, "hybrid"):
        return index.fusion
    if mode in ("dense", "lexical"):
        if mode == "lexical" and index.lexical is None:
            raise QueryError("this index has no lexical side (built before visem kept one): rebuild it")
        return {"kind": mode}
    raise QueryError(f"mode must be hybrid, dense or lexical, got {mode!r}")


class _EmbeddingRows:
    """``rows[ids]``: the index's image embeddings of ``ids`` (read from the generations), for the fusions."""

    def __init__(self, index: Any):
        self.index = index

    def __len__(self) -> int:
        return self.index.n_images

    def __getitem__(self, ids: Any) -> np.ndarray:
        return self.index.embedding_rows(ids)


def search_text(index: Any, query: str, k: int, mode: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of a text query under the index's fusion (or ``mode``), best first."""
    from visem.features.tokenize import tokenize
    from visem.search.lexical import hybrid_top

    fusion = fusion_for(index, mode)
    ex = index.explain_query(query)
    lex = (index.lexical.scores(tokenize(ex["query"])) if index.lexical is not None and fusion["kind"] != "dense"
           else None)
    try:
        qv = index.embed_query(query) if fusion["kind"] != "lexical" else None
    except QueryError:
        if lex is None or not lex.any():
            raise QueryError(f"no word of {ex['query']!r} is known to this index (neither to its text tower nor "
                             "to the captions, tags and pseudo captions of its images)") from None
        qv = None
    if lex is None:
        scores, ids = index._images.search(qv[None, :], k)
        return scores[0], ids[0]
    if fusion["kind"] == "lexical" and not lex.any():
        raise QueryError(f"no word of {ex['query']!r} is in the captions, tags or pseudo captions of the index")
    return hybrid_top(qv, lex, _EmbeddingRows(index), index._images, fusion, k)


def similar_fused(index: Any, vec: np.ndarray, raw_q: np.ndarray, k: int,
                  exclude: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` images by learned + raw cosine (:func:`visem.search.image_space.fused_top`)."""
    from visem.search.image_space import fused_top

    return fused_top(vec, raw_q, _EmbeddingRows(index), index._raw_rows, index._images, k, exclude)


def add_sides(index: Any, col: Any, new: list[int], gen: int, crop: float, encoder: str) -> dict[str, str]:
    """Write generation ``gen``'s lexical documents and raw features of the new images; the generation entry's
    file names (none for an index without these sides)."""
    from visem.search.collection import pseudo_captions
    from visem.search.features import feature_rows

    if index.lexical is None and index._raw_rows is None:
        return {}
    pooled = feature_rows([col.hashes[i] for i in new], False, crop, encoder)  # stored by the add's scan
    # their captions and tags from `index add --captions`, else ImageNet classes
    pseudo, _ = pseudo_captions([col.tags[i] for i in new], pooled, encoder=encoder)
    return write_sides(index.path, gen, col, new, pseudo, pooled, lexical=index.lexical is not None,
                       raw=index._raw_rows is not None)


def held_out_modes(index: Any, captions: list[str], t2i: np.ndarray, txt: np.ndarray, img: np.ndarray,
                   in_index: list[int | None], have: list[int], modes: dict[str, Any]) -> dict[str, Any]:
    """Add the ``lexical`` and ``hybrid`` rows to ``modes`` for :meth:`SearchIndex.evaluate`; returns the
    ``lexical_overlap`` and ``fusion`` entries of its result."""
    from visem.features.tokenize import tokenize
    from visem.search.lexical import evaluate_fusions, normalise

    lex_all = normalise(index.lexical.matrix([tokenize(c) for c in captions]))
    lex = np.zeros((len(captions), len(img)))  # images not in the index have no document
    lex[:, have] = lex_all[:, [in_index[j] for j in have]]
    dense = txt.astype(np.float64) @ img.astype(np.float64).T
    rows = evaluate_fusions(dense, lex, t2i, [{"kind": "lexical"}, index.fusion])
    modes["lexical"] = {k: v for k, v in rows[0].items() if k not in ("fusion", "label")}
    modes["hybrid"] = {k: v for k, v in rows[1].items() if k not in ("fusion", "label")}
    docs = index.lexical.documents
    overlap = int(sum(in_index[j] is not None and c in docs[in_index[j]] for c, j in zip(captions, t2i.tolist())))
    return {"lexical_overlap": overlap, "fusion": rows[1]["label"]}
