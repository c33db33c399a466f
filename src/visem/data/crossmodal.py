"""Labelled cross-modal retrieval features in a MATLAB ``.mat`` file.

The benchmarks of LCALE (seed 004) - Wikipedia, Pascal Sentences, NUS-WIDE,
PKU-XMediaNet - circulate as ``.mat`` files holding image features (e.g. VGG
fc7, 4096-d), text features (e.g. Doc2Vec, 300-d) and class labels, per split.
Releases name the variables differently, so keys are matched by their word
parts (split on ``_``, ``-``, ``.`` and case-insensitive):

* **split**: ``train`` / ``tr`` / ``trn`` / ``training``; ``test`` / ``te`` /
  ``tst`` / ``testing``; ``val`` / ``valid`` / ``validation`` / ``va`` / ``dev``.
  A key with no split word belongs to split ``all``.
* **labels** (checked first, so ``train_img_lab`` is a label): ``lab``,
  ``label``, ``labels``, ``l``, ``y``, ``gt``, ``cat``, ``category``,
  ``categories``, ``class``, ``classes``.
* **image**: ``i``, ``img``, ``imgs``, ``image``, ``images``, ``x``, ``v``,
  ``vis``, ``visual``, ``vgg``, ``cnn``, ``fc7``, ``pic``.
* **text**: ``t``, ``txt``, ``text``, ``texts``, ``doc``, ``docs``,
  ``doc2vec``, ``d2v``, ``tag``, ``tags``, ``bow``, ``w2v``, ``sent``,
  ``sentence``, ``sentences``, ``word``, ``words``.

So ``I_tr``/``T_tr``/``L_tr`` (Wikipedia raw features), ``train_img`` /
``train_txt`` / ``train_img_lab`` (DSCMR style), ``train_imgs_deep`` /
``train_texts_doc`` / ``train_imgs_labels`` are all recognised. When two keys
compete for one role the loader stops and lists them; pass ``keys=`` (e.g.
``{"image_train": "I_tr", "label_train": "L_tr"}``) to choose.

Labels: a vector of class ids (1-D, or N x 1) -> int64 (N,); ids that start at 1
(MATLAB convention: the smallest id over all splits is 1) are shifted to start
at 0 (``label_base=`` overrides: 0, 1 or ``None`` = detect). A 2-D N x C 0/1
matrix is multi-label and kept as uint8 multi-hot. Feature matrices stored
D x N (one column per item) are transposed when the label count makes that
unambiguous. When separate image and text label arrays exist, the image labels
are :attr:`labels` and differing text labels are kept in :attr:`text_labels`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visem.data.matfile import load_mat
from visem.data.paths import DataError

__all__ = ["CrossModalData", "load_crossmodal", "classify_key"]

_SPLIT_WORDS = {
    "train": {"train", "tr", "trn", "training"},
    "test": {"test", "te", "tst", "testing"},
    "val": {"val", "valid", "validation", "va", "dev"},
}
_LABEL_WORDS = {"lab", "label", "labels", "l", "y", "gt", "cat", "category", "categories", "class", "classes"}
_IMAGE_WORDS = {"i", "img", "imgs", "image", "images", "x", "v", "vis", "visual", "vgg", "cnn", "fc7", "pic"}
_TEXT_WORDS = {
    "t", "txt", "text", "texts", "doc", "docs", "doc2vec", "d2v", "tag", "tags", "bow", "w2v",
    "sent", "sentence", "sentences", "word", "words",
}  # fmt: skip


@dataclass
class CrossModalData:
    """Paired image and text features with class labels, one split.

    ``image``: float32 (N, Dv); ``text``: float32 (N, Dt), row ``i`` pairs with
    image row ``i``; ``labels``: int64 (N,) single-label or uint8 (N, C)
    multi-hot; ``keys``: the ``.mat`` variables used.
    """

    name: str
    split: str
    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    text_labels: np.ndarray | None = None
    keys: dict[str, str] = field(default_factory=dict)
    available_splits: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def n_classes(self) -> int:
        return int(self.labels.shape[1]) if self.multilabel else int(self.labels.max()) + 1

    def multi_hot(self) -> np.ndarray:
        """uint8 (N, C) label matrix for either kind of labels (relevance = sharing a label)."""
        if self.multilabel:
            return self.labels
        out = np.zeros((len(self.labels), self.n_classes), dtype=np.uint8)
        out[np.arange(len(self.labels)), self.labels] = 1
        return out


def _words(key: str) -> list[str]:
    return [w for w in re.split(r"[_\-.\s]+", key.lower()) if w]


def classify_key(key: str) -> tuple[str, str] | None:
    """``(role, split)`` of a variable name, role in image/text/label, or None if unrecognised."""
    words = set(_words(key))
    if words & {"name", "names", "classnames"}:  # class-name lists (e.g. class_names) are not labels
        return None
    split = "all"
    for name, vocab in _SPLIT_WORDS.items():
        if words & vocab:
            split = name
            break
    if words & _LABEL_WORDS:
        modality = "text" if words & _TEXT_WORDS and not words & _IMAGE_WORDS else "image"
        return ("label" if modality == "image" else "text_label", split)
    if words & _IMAGE_WORDS and not words & _TEXT_WORDS:
        return ("image", split)
    if words & _TEXT_WORDS and not words & _IMAGE_WORDS:
        return ("text", split)
    return None


def _as_rows(arr: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    arr = np.asarray(arr)
    if hasattr(arr, "toarray"):
        arr = arr.toarray()
    if arr.ndim != 2:
        raise DataError(f"{path}: '{key}' should be a 2-D feature matrix, got shape {arr.shape}")
    if arr.shape[0] != n and arr.shape[1] == n:
        arr = arr.T
    if arr.shape[0] != n:
        raise DataError(f"{path}: '{key}' has shape {arr.shape} but the split has {n} labels")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _labels(arr, path: Path, key: str) -> np.ndarray:
    if hasattr(arr, "toarray"):
        arr = arr.toarray()
    arr = np.asarray(arr)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim == 1:
        if arr.dtype.kind not in "iuf" or np.any(arr != np.round(arr)) or (arr.size and arr.min() < 0):
            raise DataError(f"{path}: '{key}' should hold non-negative integer class ids")
        return arr.astype(np.int64)
    if arr.ndim == 2:
        if not np.isin(arr, (0, 1)).all():
            raise DataError(f"{path}: '{key}' is 2-D but not a 0/1 label matrix (N x C multi-hot)")
        return arr.astype(np.uint8)
    raise DataError(f"{path}: '{key}' should be a label vector (N,) or a multi-hot matrix (N, C), got shape {arr.shape}")


def load_crossmodal(
    path: str | Path,
    split: str = "train",
    keys: dict[str, str] | None = None,
    label_base: int | None = None,
    name: str | None = None,
) -> CrossModalData:
    """Read one split (``train``, ``test``, ``val`` or ``all``) of a cross-modal ``.mat`` file."""
    path = Path(path)
    mat = load_mat(path, "a .mat file with image features, text features and labels")
    roles: dict[tuple[str, str], list[str]] = {}
    for key in mat:
        found = classify_key(key)
        if found is not None:
            roles.setdefault(found, []).append(key)
    for spec, key in (keys or {}).items():
        role, _, sp = spec.rpartition("_")
        if role not in ("image", "text", "label", "text_label") or sp not in (*_SPLIT_WORDS, "all"):
            raise DataError(f"{path}: keys entry {spec!r} should look like image_train, text_test, label_val, text_label_all")
        if key not in mat:
            raise DataError(f"{path}: no variable {key!r} (have {', '.join(sorted(mat))})")
        roles[(role, sp)] = [key]
    available = sorted({sp for (role, sp) in roles if role == "image"})
    if split not in (*_SPLIT_WORDS, "all"):
        raise DataError(f"{path}: unknown split {split!r} (expected train, test, val or all)")

    def pick(role: str, required: bool = True) -> str | None:
        cands = roles.get((role, split), [])
        if len(cands) > 1:
            raise DataError(f"{path}: several variables could be the {role} of split {split!r}: {', '.join(cands)} (choose with keys={{'{role}_{split}': ...}})")
        if not cands:
            if required:
                raise DataError(
                    f"{path}: no {role} variable for split {split!r} (variables: {', '.join(sorted(mat))}; "
                    f"splits with images: {', '.join(available) or 'none'}; name them with keys=)"
                )
            return None
        return cands[0]

    k_img, k_txt = pick("image"), pick("text")
    k_lab = pick("label", required=False)
    k_tlab = pick("text_label", required=False)
    if k_lab is None and k_tlab is None:
        pick("label")  # raises the 'no label variable' error
    labels = _labels(mat[k_lab or k_tlab], path, k_lab or k_tlab)
    text_labels = _labels(mat[k_tlab], path, k_tlab) if (k_lab and k_tlab) else None
    n = labels.shape[0]
    image = _as_rows(mat[k_img], n, path, k_img)
    text = _as_rows(mat[k_txt], n, path, k_txt)

    if labels.ndim == 1:
        base = label_base
        if base is None:  # 1 when the smallest id over every split's label vectors is 1
            mins = []
            for (role, _), ks in roles.items():
                if role in ("label", "text_label"):
                    for k in ks:
                        v = np.asarray(mat[k])
                        if v.size and (v.ndim == 1 or (v.ndim == 2 and 1 in v.shape)):
                            mins.append(float(v.min()))
            base = 1 if mins and min(mins) == 1 else 0
        labels = labels - base
        if text_labels is not None and text_labels.ndim == 1:
            text_labels = text_labels - base
        if labels.size and labels.min() < 0:
            raise DataError(f"{path}: '{k_lab or k_tlab}' has ids below label_base={base}")
    if text_labels is not None and text_labels.shape == labels.shape and np.array_equal(text_labels, labels):
        text_labels = None
    used = {"image": k_img, "text": k_txt, "label": k_lab or k_tlab}
    if text_labels is not None:
        used["text_label"] = k_tlab
    return CrossModalData(
        name=name or path.stem,
        split=split,
        image=image,
        text=text,
        labels=labels,
        text_labels=text_labels,
        keys=used,
        available_splits=available,
        source={"file": str(path), "format": "crossmodal-mat"},
    )
