"""The index's sides beside its learned embedding: the text tower's queries, the lexical index and its fusion,
the raw image features; what :class:`visem.search.SearchIndex` calls to load, search, grow and evaluate them.

Kept apart from :mod:`visem.search.index` (which calls each function from a
one-line hook) so the opened index stays one idea: its files and its
queries. See :mod:`visem.search.lexical`, :mod:`visem.search.towers` and
:mod:`visem.search.image_space` for what each side is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visem.search.types import IndexFileError, QueryError

__all__ = ["add_sides", "fusion_for", "held_out_modes", "load_sides", "reloaded", "search_text"]


def load_sides(index: Any, model: bool) -> None:
    """Set ``index.side`` (when the model is loaded), ``index.raw``, ``index.lexical`` and ``index.fusion``.

    Indexes built before these sides existed get none: dense text search over
    the learned embedding, image search by the learned embedding.
    """
    from visem.search.lexical import LexicalIndex, read_documents
    from visem.search.towers import TextSide, text_encoder_of

    if model:
        index.side = TextSide(text_encoder_of(index.model), index.vocab, int(index.manifest["max_len"]))
    space = index.manifest.get("image_space")
    index.raw = None
    if space and space.get("kind") == "fused":
        try:
            index.raw = np.load(index._file(space["file"]), mmap_mode="r")
        except IndexFileError:
            raise
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"{index.path}: damaged raw feature file ({exc})") from None
        if len(index.raw) != index.n_images:
            raise IndexFileError(f"{index.path}: {index.n_images} images but {len(index.raw)} raw feature rows")
    lex = index.manifest.get("lexical")
    index.lexical, index.fusion = None, {"kind": "dense"}
    if lex:
        try:
            docs = read_documents(index._file(lex["file"]))
        except IndexFileError:
            raise
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"{index.path}: damaged lexical file ({exc})") from None
        if len(docs) != index.n_images:
            raise IndexFileError(f"{index.path}: {index.n_images} images but {len(docs)} lexical documents")
        index.lexical, index.fusion = LexicalIndex(docs), dict(lex["fusion"])


def reloaded(index: Any) -> Any:
    """``index``, or a new index over the same model when ``index add`` wrote a new generation.

    What a long-running reader (``visem serve``) calls to pick up additions:
    it compares the manifest's generation (one small read) and, when it
    changed, opens the new generation's files sharing this one's model, text
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
        scores, ids = index.vectors.search(qv[None, :], k)
        return scores[0], ids[0]
    if fusion["kind"] == "lexical" and not lex.any():
        raise QueryError(f"no word of {ex['query']!r} is in the captions, tags or pseudo captions of the index")
    return hybrid_top(qv, lex, index.embeddings, index.vectors, fusion, k)


def add_sides(index: Any, manifest: dict[str, Any], col: Any, new: list[int], gen: int) -> dict[str, str]:
    """Write generation ``gen``'s lexical documents and raw features with the new images', set them in
    ``manifest``; returns the files they replace (to delete after the commit)."""
    from visem.io import atomic_path
    from visem.search.collection import pseudo_captions
    from visem.search.features import image_features
    from visem.search.image_space import raw_file, unit_float16
    from visem.search.lexical import image_documents, lexical_file, write_documents

    replaced: dict[str, str] = {}
    if index.lexical is None and index.raw is None:
        return replaced
    enc = index.manifest.get("image_encoder", "efficientnet-lite0")
    pooled, _ = image_features([col.paths[i] for i in new], [col.hashes[i] for i in new], False,
                               index.manifest["crop"], False, enc)  # from the feature cache: just computed
    if index.lexical is not None:  # their captions and tags from `index add --captions`, else ImageNet classes
        tags = [col.tags[i] for i in new]
        pseudo, _ = pseudo_captions(tags, pooled, encoder=enc)
        pos = {i: j for j, i in enumerate(new)}
        caps = [(c, pos[i]) for c, i in zip(col.captions, col.caption_image.tolist()) if i in pos]
        docs = image_documents(len(new), [c for c, _ in caps], [j for _, j in caps], tags, pseudo)
        name = lexical_file(gen)
        write_documents(index.path / name, list(index.lexical.documents) + docs)
        manifest["lexical"] = {**index.manifest["lexical"], "file": name}
        replaced["lexical"] = index.manifest["lexical"]["file"]
    if index.raw is not None:
        name = raw_file(gen)
        with atomic_path(index.path / name) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.concatenate([np.asarray(index.raw), unit_float16(pooled)]))
        manifest["image_space"] = {**index.manifest["image_space"], "file": name}
        replaced["image_space"] = index.manifest["image_space"]["file"]
    return replaced


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
