"""Data sets by name and benchmark files by path.

Built-in sources (prepared by ``visem data fetch``, see :mod:`visem.data.fetcher`):

* ``mnist``, ``fashion-mnist`` -> :class:`~visem.data.mnist.ImageClassData`
  (uint8 images N x 28 x 28, int64 labels, class names); splits ``train``
  (60,000) and ``test`` (10,000).
* ``emoji`` -> :class:`~visem.data.emoji.EmojiData` (one table: concept,
  style, image, captions, tags, group, subgroup); split ``all`` or a style.
* ``emoji-sketch`` -> :class:`~visem.data.sketch.SketchData` (Symbola line-art
  glyphs of the emoji concepts, and the colour emoji of their subgroups).

Benchmark formats, read from files the user brings (``path=``):

* ``xian`` (aliases ``awa1``, ``awa2``, ``cub``, ``sun``, ``apy``, ``zsl``) ->
  :class:`~visem.data.xian.ZSLData`
* ``vsepp`` (``precomp``, ``f30k_precomp``, ``coco_precomp``, ``flickr30k``,
  ``coco``) -> :class:`~visem.data.vsepp.PrecomputedCaptions`
* ``crossmodal`` (``wikipedia``, ``pascal-sentences``, ``nus-wide``,
  ``xmedianet``) -> :class:`~visem.data.crossmodal.CrossModalData`
* ``captions`` (``folder``) -> :class:`~visem.data.captions.CaptionDataset`
  (``path=`` the CSV/JSONL file, ``images=`` the image folder)

Word resources: :func:`visem.data.wordnet.synonyms`; word and sentence
vectors live in :mod:`visem.features.text`. Protocol samplers:
:mod:`visem.data.splits`.

Errors about files are :class:`DataError` (a ``ValueError``) and name the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visem.data.paths import DataError, data_dir

__all__ = [
    "DataError",
    "data_dir",
    "load",
    "info",
    "fetch",
    "DatasetInfo",
    "BUILTIN",
    "FORMATS",
    "canonical_name",
]

BUILTIN = ("mnist", "fashion-mnist", "emoji", "emoji-sketch")
FORMATS = ("xian", "vsepp", "crossmodal", "captions")
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "emojis": "emoji",
    "emoji-sketches": "emoji-sketch",
    "sketch": "emoji-sketch",
    "zsl": "xian",
    "awa1": "xian",
    "awa2": "xian",
    "cub": "xian",
    "sun": "xian",
    "apy": "xian",
    "precomp": "vsepp",
    "scan": "vsepp",
    "f30k_precomp": "vsepp",
    "coco_precomp": "vsepp",
    "flickr30k": "vsepp",
    "f30k": "vsepp",
    "coco": "vsepp",
    "mat": "crossmodal",
    "wikipedia": "crossmodal",
    "wiki": "crossmodal",
    "pascal-sentences": "crossmodal",
    "pascal": "crossmodal",
    "nus-wide": "crossmodal",
    "nuswide": "crossmodal",
    "xmedianet": "crossmodal",
    "folder": "captions",
    "byo": "captions",
}


def canonical_name(name: str) -> str:
    """The reader a data set name maps to (``awa2`` -> ``xian``); DataError if unknown."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BUILTIN + FORMATS:
        raise DataError(
            f"unknown data set {name!r} (built-in: {', '.join(BUILTIN)}; formats read from path=: {', '.join(FORMATS)})"
        )
    return key


def load(name: str, split: str | None = None, *, path: str | Path | None = None, **kwargs: Any):
    """Load data set ``name``; ``split`` defaults to ``train`` (MNISTs, vsepp, crossmodal) or ``all``.

    Format readers need ``path=`` (a folder for ``xian`` / ``vsepp``, a
    ``.mat`` file for ``crossmodal``, the annotation file for ``captions``);
    other keyword arguments go to the reader.
    """
    key = canonical_name(name)
    pretty = name.strip().lower()
    if key in BUILTIN:
        if path is not None:
            raise DataError(f"{name}: built-in data set, path= is not used (it lives in {data_dir()})")
        if kwargs:
            raise TypeError(f"load({name!r}) takes no options {sorted(kwargs)}")
        if key == "mnist":
            from visem.data.mnist import load_mnist

            return load_mnist(split or "train")
        if key == "fashion-mnist":
            from visem.data.mnist import load_fashion_mnist

            return load_fashion_mnist(split or "train")
        if key == "emoji-sketch":
            from visem.data.sketch import load_emoji_sketch

            if split not in (None, "all"):
                raise DataError(f"emoji-sketch has one split, 'all' (got {split!r})")
            return load_emoji_sketch()
        from visem.data.emoji import load_emoji

        return load_emoji(split or "all")
    if path is None:
        raise DataError(f"{name}: a benchmark format - give path= (see visem.data.{key})")
    if key == "xian":
        from visem.data.xian import load_xian

        ds_name = kwargs.pop("name", None) or (pretty if pretty not in ("xian", "zsl") else None)
        return load_xian(path, split=split or "all", name=ds_name, **kwargs)
    if key == "vsepp":
        from visem.data.vsepp import load_vsepp

        return load_vsepp(path, split=split or "train", **kwargs)
    if key == "crossmodal":
        from visem.data.crossmodal import load_crossmodal

        return load_crossmodal(path, split=split or "train", **kwargs)
    from visem.data.captions import load_captions

    data = load_captions(path, **kwargs)
    if split not in (None, "all"):
        raise DataError(f"{path}: bring-your-own captions have one split, 'all'")
    return data


def fetch(names=None, force: bool = False):
    """Fetch / convert / check built-in sources; see :func:`visem.data.fetcher.fetch`."""
    from visem.data.fetcher import fetch as _fetch

    return _fetch(names, force=force)


# --------------------------------------------------------------------- info
@dataclass
class DatasetInfo:
    """What ``visem data info`` prints: counts, array shapes, classes, provenance, notes."""

    name: str
    counts: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def format(self, max_classes: int = 120) -> str:
        lines = [self.name]
        if self.counts:
            lines.append("counts:")
            lines += [f"  {k}: {v}" for k, v in self.counts.items()]
        if self.shapes:
            lines.append("arrays:")
            lines += [f"  {k}: {v}" for k, v in self.shapes.items()]
        if self.classes:
            shown = self.classes[:max_classes]
            more = f" ... (+{len(self.classes) - max_classes})" if len(self.classes) > max_classes else ""
            lines.append(f"classes ({len(self.classes)}): " + ", ".join(shown) + more)
        if self.source:
            lines.append("source:")
            lines += [f"  {k}: {v}" for k, v in self.source.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __str__ = format


def _shape(a: np.ndarray) -> str:
    return f"{a.dtype} {tuple(a.shape)}"


def info(name: str, path: str | Path | None = None, split: str | None = None, **kwargs: Any) -> DatasetInfo:
    """Summary of a data set (built-in by name, or a format file with ``path=``)."""
    key = canonical_name(name)
    if key in ("mnist", "fashion-mnist"):
        train, test = load(key, "train"), load(key, "test")
        src = train.source
        return DatasetInfo(
            name=key,
            counts={"train": len(train), "test": len(test)},
            shapes={"images": f"uint8 (N, 28, 28), train {train.images.shape}, test {test.images.shape}", "labels": "int64 (N,) in 0..9"},
            classes=list(train.class_names),
            source={"from": src.get("source"), "package": src.get("package"), "cache": src.get("cache")},
            notes=[src["note"]] if src.get("note") else [],
        )
    if key == "emoji":
        from visem.data.emoji import EMOJI_PACKAGES

        data = load("emoji")
        t = data.table
        per_style = t.groupby("style").size().to_dict()
        ncap = t.groupby("style")["captions"].apply(lambda s: sum(len(c) for c in s)).to_dict()
        one = t[t["style"] == data.styles[0]]
        dist = one["captions"].apply(len).value_counts().sort_index().to_dict()
        counts: dict[str, Any] = {f"concepts ({s})": n for s, n in per_style.items()}
        counts["concepts in every style"] = int((t.groupby("concept")["style"].nunique() == len(per_style)).sum())
        counts.update({f"captions ({s})": n for s, n in ncap.items()})
        counts["captions per concept"] = ", ".join(f"{k}: {v} concepts" for k, v in dist.items())
        counts["groups"] = int(t["group"].nunique())
        counts["subgroups (classes)"] = len(data.class_names)
        counts["tags per concept (mean)"] = round(float(one["tags"].apply(len).mean()), 2)
        ex = one.iloc[min(len(one) - 1, 200)]
        return DatasetInfo(
            name="emoji",
            counts=counts,
            shapes={"images": "64 x 64 RGBA PNG (load_images() -> uint8 (N, 64, 64, 3) over white)", "labels": "int64 (N,) subgroup index"},
            classes=list(data.class_names),
            source={**data.source["packages"], "folder": str(Path(next(iter(data.source["folders"].values()))).parent)},
            notes=[
                f"example: {ex['emoji']} {ex['concept']} captions={ex['captions']} subgroup={ex['subgroup']}",
                "skin-tone variants and the 'component' group (skin-tone swatches) are left out",
                f"pinned versions: {', '.join(f'{p}@{v[0]}' for p, v in EMOJI_PACKAGES.items())}",
            ],
        )
    if key == "emoji-sketch":
        return _emoji_sketch_info()
    data = load(name, split=split, path=path, **kwargs)
    if key == "xian":
        return DatasetInfo(
            name=data.name,
            counts={"images": len(data), **{f"split {k}": int(v.size) for k, v in data.splits.items()}, "seen classes": int(data.seen_classes.size), "unseen classes": int(data.unseen_classes.size)},
            shapes={"features": _shape(data.features), "labels": _shape(data.labels), "attributes": _shape(data.attributes)},
            classes=list(data.class_names),
            source=data.source,
        )
    if key == "vsepp":
        return DatasetInfo(
            name=data.name,
            counts={"split": data.split, "images": data.n_images, "captions": len(data.captions)},
            shapes={"images": _shape(data.images)},
            source=data.source,
            notes=["images were stored once per caption; de-duplicated with stride 5"] if data.deduplicated else [],
        )
    if key == "crossmodal":
        return DatasetInfo(
            name=data.name,
            counts={"split": data.split, "items": len(data), "classes": data.n_classes, "multi-label": data.multilabel, "splits in file": ", ".join(data.available_splits)},
            shapes={"image": _shape(data.image), "text": _shape(data.text), "labels": _shape(data.labels)},
            source={**data.source, "keys": data.keys},
        )
    return DatasetInfo(
        name="captions",
        counts={"images": len(data), "captions": len(data.captions), "uncaptioned images": int(data.uncaptioned.size), "labels": len(data.class_names)},
        classes=list(data.class_names),
        source=data.source,
        notes=data.report.summary().splitlines(),
    )


def _emoji_sketch_info() -> DatasetInfo:
    """``visem data info emoji-sketch``: concepts, classes and the per-class counts of both modalities."""
    from visem.data.sketch import SKETCH_PADDING, SKETCH_SIZE

    data = load("emoji-sketch")
    counts = data.class_counts()
    per_style = data.images.groupby("style").size().to_dict()
    out: dict[str, Any] = {"sketches (concepts)": len(data), "classes (subgroups with a sketch)": len(counts)}
    out.update({f"images ({s})": n for s, n in per_style.items()})
    out["sketches per class"] = (f"min {int(counts['sketches'].min())}, median {float(counts['sketches'].median()):g}, "
                                 f"max {int(counts['sketches'].max())}")
    out["per class (sketches / images)"] = "; ".join(f"{r.subgroup} {r.sketches}/{r.images}" for r in counts.itertuples())
    ex = data.table.iloc[min(len(data) - 1, 100)]
    return DatasetInfo(
        name="emoji-sketch",
        counts=out,
        shapes={"sketches": f"{SKETCH_SIZE} x {SKETCH_SIZE} 8-bit grey PNG, glyph fitted inside a {SKETCH_PADDING} px "
                            "padding and centred",
                "images": "64 x 64 RGBA PNG of the emoji styles (the image modality)",
                "labels": "int64 subgroup index (the emoji data's class list)"},
        classes=list(counts["subgroup"]),
        source={k: v for k, v in data.source.items() if v is not None},
        notes=[f"example: {ex['emoji']} {ex['concept']} subgroup={ex['subgroup']} sketch={ex['image']}",
               "sketches: the Symbola glyph of every emoji concept that is one code point (FE0F ignored) and that "
               "the font draws; images: every Google and Twitter emoji of those subgroups"],
    )
