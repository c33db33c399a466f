"""Precomputed image-caption features in the VSE++ / SCAN layout (Flickr30K, MS-COCO).

One folder per data set (``f30k_precomp``, ``coco_precomp``, ...) with, per
split (Karpathy splits ``train`` / ``dev`` / ``test``, and for COCO ``testall``
= the 5K test set whose five 1K folds give the "COCO 1K" numbers):

``{split}_ims.npy``
    image features, (N, D) pooled (VSE++, e.g. 2048-d ResNet-152) or
    (N, R, D) regions (SCAN bottom-up features, R = 36).
``{split}_caps.txt``
    one caption a line, five captions per image, in image order (captions
    ``5i .. 5i+4`` describe image ``i``).

**Repeated images.** In the SCAN release some dev/test ``ims.npy`` store every
image five times, one row per caption. When ``len(ims) == len(caps)`` the
images are de-duplicated with a stride of five (rows ``0, 5, 10, ...``); the
first group is checked to really repeat, and :attr:`PrecomputedCaptions.deduplicated`
records that it happened.

Image arrays are memory-mapped (COCO train regions are tens of GB); the
de-duplicated array is a strided view of the map, not a copy.

A vocabulary for word-sequence models is built from the **training** captions
only: :func:`train_vocabulary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visem.data.paths import DataError, reading, require_file

__all__ = ["PrecomputedCaptions", "load_vsepp", "train_vocabulary", "coco_1k_folds", "VSEPP_SPLITS"]

VSEPP_SPLITS = ("train", "dev", "test", "testall")


@dataclass
class PrecomputedCaptions:
    """Image features with their captions.

    ``images``: float (N, D) or (N, R, D), possibly a read-only memory map;
    ``captions``: list of ``N * captions_per_image`` strings;
    ``caption_image``: int64 (M,), the image row of each caption (``j // 5``).
    """

    name: str
    split: str
    images: np.ndarray
    captions: list[str]
    caption_image: np.ndarray
    captions_per_image: int = 5
    deduplicated: bool = False
    source: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def regions(self) -> bool:
        """True for (N, R, D) region features."""
        return self.images.ndim == 3


def _read_captions(path: Path) -> list[str]:
    require_file(path, "a text file with one caption a line, five per image in image order")
    with reading(path, "UTF-8 text, one caption a line"):
        text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def load_vsepp(path: str | Path, split: str = "train", captions_per_image: int = 5, mmap: bool = True, name: str | None = None) -> PrecomputedCaptions:
    """Read ``{split}_ims.npy`` and ``{split}_caps.txt`` from folder ``path``."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected a VSE++/SCAN precomp folder with {{split}}_ims.npy and {{split}}_caps.txt)")
    ims_path = folder / f"{split}_ims.npy"
    caps_path = folder / f"{split}_caps.txt"
    if not ims_path.is_file():
        have = sorted(p.name[: -len("_ims.npy")] for p in folder.glob("*_ims.npy"))
        raise DataError(f"{ims_path}: file not found (expected image features for split {split!r}; splits here: {', '.join(have) or 'none'})")
    captions = _read_captions(caps_path)
    with reading(ims_path, "a .npy array of image features (N x D or N x R x D)"):
        images = np.load(ims_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if images.ndim not in (2, 3) or images.dtype.kind != "f":
        raise DataError(f"{ims_path}: expected float image features of shape (N, D) or (N, R, D), got {images.dtype} {images.shape}")
    k = int(captions_per_image)
    deduplicated = False
    if images.shape[0] == len(captions) and k > 1:
        if images.shape[0] % k:
            raise DataError(f"{ims_path}: {images.shape[0]} rows, one per caption, is not a multiple of {k}")
        first = np.asarray(images[:k])
        if not np.array_equal(first, np.broadcast_to(first[:1], first.shape)):
            raise DataError(
                f"{ims_path}: as many image rows as captions ({len(captions)}) but rows 0..{k - 1} differ; "
                f"expected each image repeated {k} times"
            )
        images = images[::k]
        deduplicated = True
    if len(captions) != images.shape[0] * k:
        raise DataError(
            f"{caps_path}: {len(captions)} captions for {images.shape[0]} images in {ims_path.name}; "
            f"expected {k} captions per image ({images.shape[0] * k})"
        )
    empty = [i + 1 for i, c in enumerate(captions) if not c]
    if empty:
        raise DataError(f"{caps_path}: empty caption on line {empty[0]} ({len(empty)} empty lines)")
    _check_finite(ims_path, images)
    return PrecomputedCaptions(
        name=name or folder.name,
        split=split,
        images=images,
        captions=captions,
        caption_image=np.arange(len(captions), dtype=np.int64) // k,
        captions_per_image=k,
        deduplicated=deduplicated,
        source={"folder": str(folder), "files": [str(ims_path), str(caps_path)], "format": "vsepp"},
    )


def _check_finite(path: Path, images: np.ndarray, block: int = 1024) -> None:
    """Raise DataError naming ``path`` and the first image row with a NaN or infinite value (read in blocks)."""
    for a in range(0, images.shape[0], block):
        chunk = np.asarray(images[a:a + block])
        bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if bad.any():
            row = a + int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: image row {row} holds NaN or infinite values "
                            f"({int(bad.sum())} such rows in rows {a}..{a + len(chunk) - 1})")


def train_vocabulary(path: str | Path, min_count: int = 1, split: str = "train"):
    """A :class:`visem.features.text.Vocabulary` built from ``{split}_caps.txt`` only (training captions)."""
    from visem.features.text import Vocabulary

    return Vocabulary.build(_read_captions(Path(path) / f"{split}_caps.txt"), min_count=min_count)


def coco_1k_folds(n_images: int = 5000, fold_size: int = 1000) -> list[np.ndarray]:
    """Image-row folds of COCO ``testall`` for the "1K test" protocol (five folds of 1,000 images)."""
    if n_images % fold_size:
        raise ValueError(f"{n_images} images do not split into folds of {fold_size}")
    return [np.arange(i, i + fold_size, dtype=np.int64) for i in range(0, n_images, fold_size)]
