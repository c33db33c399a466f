"""Encoders that turn raw data into cached feature arrays.

:func:`compute_features` is the one entry point behind ``visem features NAME
--kind KIND``: it loads a built-in data set, runs an encoder and caches the
result (see :mod:`visem.features.cache` for the layout).

=====================  ======================================================
kind                   rows x columns
=====================  ======================================================
``efficientnet``       images x 1280, float32 (EfficientNet-Lite0, pooled)
``efficientnet-grid``  images x 49 x 1280, float16 (7 x 7 regions at 224)
``pixels``             images x H*W*C, float32 in [0, 1]
``glove``              text items x 50 (mean of GloVe word vectors)
``minilm``             text items x 384 (all-MiniLM-L6-v2, unit norm)
``glove-classes``      classes x 50 (GloVe vectors of the class names)
=====================  ======================================================

Text items are the captions for ``emoji`` (flattened over the selected rows,
``caption_row`` in the sidecar maps each caption to its row) and the class
names for ``mnist`` / ``fashion-mnist``, which have no captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visem.data.paths import DataError
from visem.features.cache import (
    FeatureStore,
    cached_features,
    content_key,
    features_dir,
    file_key,
    keys_digest,
    load_features,
    save_features,
)

__all__ = [
    "FEATURE_KINDS",
    "FEATURE_DATASETS",
    "FeatureResult",
    "compute_features",
    "FeatureStore",
    "save_features",
    "load_features",
    "features_dir",
    "content_key",
    "file_key",
]

FEATURE_KINDS = ("efficientnet", "efficientnet-grid", "pixels", "glove", "minilm", "glove-classes")
FEATURE_DATASETS = ("mnist", "fashion-mnist", "emoji")
_IMAGE_KINDS = {"efficientnet": "pooled", "efficientnet-grid": "grid"}


@dataclass
class FeatureResult:
    """``array`` with its sidecar ``meta``; ``path`` of the cached ``.npy``; ``cached``: reused without computing."""

    array: np.ndarray
    meta: dict[str, Any]
    path: Path
    cached: bool


def _cache_path(name: str, kind: str, split: str | None, extra: str) -> Path:
    parts = [kind] + ([split] if split and split != "all" else []) + ([extra] if extra else [])
    return features_dir() / name / ("-".join(parts) + ".npy")


def _text_items(data, name: str, kind: str) -> tuple[list[str], dict[str, Any]]:
    if name == "emoji" and kind != "glove-classes":
        texts, rows = data.captions()
        return texts, {"rows": "captions of the selected emoji rows", "caption_row": rows.tolist(), "captions": texts}
    classes = data.class_texts() if name == "emoji" else list(data.class_names)
    return classes, {"rows": "class names", "classes": list(data.class_names)}


def compute_features(
    name: str,
    kind: str,
    *,
    split: str | None = None,
    style: str | None = None,
    limit: int | None = None,
    image_size: int = 224,
    batch_size: int = 16,
    progress: bool = False,
    force: bool = False,
    out: str | Path | None = None,
    workers: int | None = None,
) -> FeatureResult:
    """Features of built-in data set ``name`` (``mnist``, ``fashion-mnist``, ``emoji``).

    ``split``: ``train`` (default) / ``test`` for the MNISTs; ``style``:
    ``google`` / ``twitter`` for emoji (default both, table order). ``limit``:
    only the first N rows (quick looks). ``force``: recompute even if cached.
    ``out``: also write the array (``.npy``) and sidecar (``.json``) there.

    Image files (emoji) are read once each, hashed and, where the feature
    store lacks them, decoded in ``workers`` DataLoader processes
    (:func:`visem.features.files.extract_files`). Under ``torchrun`` each rank
    encodes its share of the missing images into the shared store and rank 0
    alone writes the assembled ``.npy`` and sidecar (every rank returns the
    array).
    """
    from visem import distributed
    from visem.data import load

    if kind not in FEATURE_KINDS:
        raise DataError(f"unknown feature kind {kind!r} (expected one of {', '.join(FEATURE_KINDS)})")
    if name not in FEATURE_DATASETS:
        raise DataError(f"features: unknown data set {name!r} (expected one of {', '.join(FEATURE_DATASETS)})")
    if name == "emoji":
        if split not in (None, "all"):
            raise DataError("emoji: use --style, not --split (emoji has no train/test split)")
        data = load("emoji", split=style or "all")
        sel = style or "all"
    else:
        if style is not None:
            raise DataError(f"{name}: --style applies to emoji only")
        sel = split or "train"
        data = load(name, split=sel)
    n_rows = len(data)
    if limit is not None:
        n_rows = min(n_rows, int(limit))

    meta: dict[str, Any] = {"dataset": name, "kind": kind, "selection": sel, "limit": limit}
    extra = f"n{limit}" if limit is not None else ""
    if kind in _IMAGE_KINDS or kind == "pixels":
        if name == "emoji":
            rows = data.table.iloc[:n_rows]
            inputs = rows["image"].tolist()
            if kind in _IMAGE_KINDS:  # one read per file: the hash, and the decode where the store lacks it
                from visem.features.files import extract_files
                from visem.features.image import EfficientNetLite0, Preprocess

                scan = extract_files(inputs, (_IMAGE_KINDS[kind],), encoder=EfficientNetLite0(Preprocess(image_size=image_size)),
                                     workers=workers, batch_size=batch_size, progress=progress)
                if scan.errors:
                    raise DataError(f"{len(scan.errors)} unreadable emoji image(s), e.g. {scan.errors[min(scan.errors)]}")
                keys = scan.keys
            else:
                keys = [file_key(p) for p in inputs]
            meta.update(rows="emoji table rows", concepts=rows["concept"].tolist(), styles=rows["style"].tolist(), labels=rows["label"].tolist())
        else:
            inputs = data.images[:n_rows]
            keys = [content_key(np.ascontiguousarray(im)) for im in inputs]
            meta.update(rows=f"visem.data.load({name!r}, split={sel!r}) order")
        if kind == "pixels":
            encoder_id = "pixels-rgb-white" if name == "emoji" else "pixels-gray"
        else:
            from visem.features.image import EfficientNetLite0, Preprocess

            encoder = EfficientNetLite0(Preprocess(image_size=image_size))
            encoder_id = encoder.encoder_id
            if image_size != 224:
                extra = "-".join(p for p in (f"s{image_size}", extra) if p)
    else:
        texts, text_meta = _text_items(data, name, kind)
        keys = texts
        meta.update(text_meta)
        encoder_id = {"glove": "glove-6b-50d-mean", "glove-classes": "glove-6b-50d-mean", "minilm": "all-MiniLM-L6-v2"}[kind]
    digest = keys_digest(keys, encoder_id)
    meta.update(encoder=encoder_id, inputs_sha256=digest)
    path = _cache_path(name, kind, None if name == "emoji" and sel == "all" else sel, extra)

    hit = None if force else cached_features(path, {"encoder": encoder_id, "inputs_sha256": digest})
    if hit is not None:
        array, meta = hit
        cached = True
    else:
        cached = False
        if kind == "pixels":
            if name == "emoji":
                from visem.data.emoji import composite_rgb

                array = np.stack([composite_rgb(p) for p in inputs]).reshape(len(inputs), -1).astype(np.float32) / 255.0
            else:
                array = np.asarray(inputs).reshape(len(inputs), -1).astype(np.float32) / 255.0
        elif kind in _IMAGE_KINDS:
            from visem.features.image import extract_image_features

            array = extract_image_features(inputs, _IMAGE_KINDS[kind], encoder=encoder, keys=keys, batch_size=batch_size,
                                           progress=progress, workers=workers)
        elif kind in ("glove", "glove-classes"):
            from visem.features.text import glove_phrases

            pv = glove_phrases(texts, mode="mean", all_oov="zero")
            array = pv.vectors
            meta.update(oov_words=pv.oov_words, all_oov_rows=pv.empty)
        else:
            from visem.features.text import encode_sentences

            unique = list(dict.fromkeys(texts))
            vecs = encode_sentences(unique, progress=progress)
            pos = {t: i for i, t in enumerate(unique)}
            array = vecs[[pos[t] for t in texts]]
        if distributed.is_main():
            path = save_features(path, array, meta)
    if out is not None and distributed.is_main():
        save_features(out, array, meta)
    return FeatureResult(array=array, meta=meta, path=path, cached=cached)
