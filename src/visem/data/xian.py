"""Zero-shot learning benchmarks in the proposed-split layout of Xian et al.

"Zero-Shot Learning - A Comprehensive Evaluation of the Good, the Bad and the
Ugly" (TPAMI 2018) released, for AwA1, AwA2, CUB, SUN and aPY, one folder per
data set holding:

``res101.mat``
    ``features``: 2048 x N ResNet-101 features, **one column per image**;
    ``labels``: N x 1 class ids, **1-based**; (``image_files``: N x 1 cell).
``att_splits.mat``
    ``att``: A x C class attributes, **one column per class** (l2-normalised);
    ``original_att``: the raw attributes (optional);
    ``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc`` (and ``train_loc``,
    ``val_loc``): **1-based** image indices, each K x 1;
    ``allclasses_names``: C x 1 cell of class names.

:func:`load_xian` returns everything 0-based and row-major: features (N, D),
labels (N,), attributes (C, A). Arrays stored the other way round (features
N x D, att C x A) are accepted and transposed when the shape makes it
unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from visem.data.matfile import load_mat, mat_strings, mat_vector
from visem.data.paths import DataError

__all__ = ["ZSLData", "load_xian", "XIAN_SPLITS"]

XIAN_SPLITS = ("trainval", "test_seen", "test_unseen", "train", "val")


@dataclass
class ZSLData:
    """A zero-shot learning data set: image features, class labels and class side information.

    ``features``: float32 (N, D); ``labels``: int64 (N,), 0-based index into
    ``class_names``; ``attributes``: float32 (C, A), row ``c`` describes class
    ``c``; ``splits``: split name -> int64 row indices into ``features``
    (``trainval``, ``test_seen``, ``test_unseen`` and, when present, ``train``,
    ``val``); ``seen_classes`` / ``unseen_classes``: class ids of trainval and
    test_unseen, disjoint.
    """

    name: str
    split: str
    features: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    class_names: list[str]
    splits: dict[str, np.ndarray]
    seen_classes: np.ndarray
    unseen_classes: np.ndarray
    original_attributes: np.ndarray | None = None
    image_files: list[str] | None = None
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, split: str) -> "ZSLData":
        """The rows of one split; ``splits`` of the result is ``{split: arange(n)}``."""
        if split == "all":
            return self
        if split not in self.splits:
            raise DataError(f"{self.name}: unknown split {split!r} (have {', '.join(['all', *self.splits])})")
        idx = self.splits[split]
        return replace(
            self,
            split=split,
            features=self.features[idx],
            labels=self.labels[idx],
            splits={split: np.arange(idx.size, dtype=np.int64)},
            image_files=[self.image_files[i] for i in idx] if self.image_files else None,
        )


def _loc(att: dict, key: str, n: int, path: Path) -> np.ndarray:
    raw = mat_vector(att[key], path, key)
    if raw.size and (raw.dtype.kind not in "iuf" or np.any(raw != np.round(raw))):
        raise DataError(f"{path}: '{key}' should hold integer (1-based) indices")
    idx = raw.astype(np.int64) - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DataError(f"{path}: '{key}' has indices outside 1..{n} (expected 1-based image indices)")
    return idx


def load_xian(path: str | Path, split: str = "all", name: str | None = None) -> ZSLData:
    """Read ``res101.mat`` + ``att_splits.mat`` from folder ``path`` (see the module docstring).

    ``split``: ``"all"`` (default) or one of ``trainval``, ``test_seen``,
    ``test_unseen``, ``train``, ``val``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected a Xian et al. data set folder with res101.mat and att_splits.mat)")
    res_path, att_path = folder / "res101.mat", folder / "att_splits.mat"
    res = load_mat(res_path, "res101.mat with 'features' (D x N) and 'labels' (N x 1)")
    att = load_mat(att_path, "att_splits.mat with 'att' (A x C), '*_loc' indices and 'allclasses_names'")
    for key in ("features", "labels"):
        if key not in res:
            raise DataError(f"{res_path}: no '{key}' variable (have {', '.join(sorted(res)) or 'none'})")
    for key in ("att", "trainval_loc", "test_seen_loc", "test_unseen_loc"):
        if key not in att:
            raise DataError(f"{att_path}: no '{key}' variable (have {', '.join(sorted(att)) or 'none'})")

    labels_raw = mat_vector(res["labels"], res_path, "labels")
    n = labels_raw.size
    feats = np.asarray(res["features"])
    if feats.ndim != 2:
        raise DataError(f"{res_path}: 'features' should be 2-D (D x N), got shape {feats.shape}")
    if feats.shape[1] == n:
        feats = feats.T  # the published layout: one column per image
    elif feats.shape[0] != n:
        raise DataError(f"{res_path}: 'features' has shape {feats.shape} but there are {n} labels (expected D x {n})")
    features = np.ascontiguousarray(feats, dtype=np.float32)

    names = mat_strings(att["allclasses_names"]) if "allclasses_names" in att else None
    a = np.asarray(att["att"], dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{att_path}: 'att' should be 2-D (A x C), got shape {a.shape}")
    n_classes = len(names) if names is not None else int(labels_raw.max())
    if a.shape[1] == n_classes:
        attributes = a.T
    elif a.shape[0] == n_classes:
        attributes = a
    else:
        raise DataError(f"{att_path}: 'att' has shape {a.shape}, expected A x {n_classes} (one column per class)")
    if names is None:
        names = [f"class_{i + 1}" for i in range(n_classes)]

    if labels_raw.dtype.kind not in "iuf" or np.any(labels_raw != np.round(labels_raw)):
        raise DataError(f"{res_path}: 'labels' should hold integer class ids")
    labels = labels_raw.astype(np.int64) - 1
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(f"{res_path}: 'labels' should be 1-based class ids in 1..{n_classes}, got {labels.min() + 1}..{labels.max() + 1}")

    splits = {s: _loc(att, f"{s}_loc", n, att_path) for s in XIAN_SPLITS if f"{s}_loc" in att}
    seen = np.unique(labels[splits["trainval"]])
    unseen = np.unique(labels[splits["test_unseen"]])
    if np.intersect1d(seen, unseen).size:
        raise DataError(f"{att_path}: trainval and test_unseen share classes {np.intersect1d(seen, unseen)[:5].tolist()} (not a zero-shot split)")
    original = att.get("original_att")
    if original is not None:
        original = np.asarray(original, dtype=np.float32)
        original = original.T if original.ndim == 2 and original.shape[1] == n_classes else original
    image_files = mat_strings(res["image_files"]) if "image_files" in res else None
    data = ZSLData(
        name=name or folder.name,
        split="all",
        features=features,
        labels=labels,
        attributes=attributes.astype(np.float32),
        class_names=names,
        splits=splits,
        seen_classes=seen,
        unseen_classes=unseen,
        original_attributes=original,
        image_files=image_files,
        source={"folder": str(folder), "files": [str(res_path), str(att_path)], "format": "xian"},
    )
    return data.select(split)
