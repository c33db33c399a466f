"""Image features of a collection: one read per file into the feature store, then rows read from it.

The index uses an EfficientNet-Lite image tower (:mod:`visem.features.image`;
Lite0 by default, Lite1 or Lite2 with ``--image-encoder``, each at its own
input size): pooled (1280-d) features, or the region grid (7 x 7 at 224)
when a method that pools regions is asked for them (``--regions``), kept in
the content-addressed feature store. :func:`scan_images` is the pass over
the files (hash each once; decode and encode, in DataLoader workers, only
what the store lacks; under ``torchrun`` each rank takes its share);
:func:`feature_rows` then gives the rows the trainer and the embedding pass
read, from disk, a batch or a block at a time, so no stage holds the
collection's features in memory (the grid costs 125 kB per image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_IMAGE_ENCODER", "FEATURE_DIM", "encoder", "feature_rows", "scan_images"]

FEATURE_DIM = 1280
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"


def encoder(crop: float, variant: str = DEFAULT_IMAGE_ENCODER) -> Any:
    """The index's image encoder: an EfficientNet-Lite ``variant`` at its own input size, with the given centre crop."""
    from visem.features.image import VARIANTS, EfficientNetLite0, Preprocess

    return EfficientNetLite0(Preprocess(crop=crop, image_size=VARIANTS[variant]), variant=variant)


def scan_images(paths: list[Path], *, regions: bool, crop: float, workers: int | None = None,
                progress: bool = False, keys: list[str | None] | None = None, skip: set[str] | None = None,
                variant: str = DEFAULT_IMAGE_ENCODER) -> Any:
    """Hash every file once and store the features the store lacks (grid and pooled, or pooled); a ``FileScan``.

    ``keys``: content keys already known (e.g. a source index's; such a
    file is not read when its features are stored); ``skip``: keys whose
    features are not needed (images already indexed).
    """
    from visem.features.files import FileScan, extract_files

    if not paths:
        return FileScan([], {})
    return extract_files(paths, ("grid",) if regions else ("pooled",), encoder=encoder(crop, variant), keys=keys,
                         skip=skip, workers=workers, progress=progress)


def feature_rows(keys: list[str], regions: bool, crop: float, variant: str = DEFAULT_IMAGE_ENCODER) -> Any:
    """The stored features of ``keys`` as rows read on demand: (N, R, 1280) float16 grid, or (N, 1280) pooled."""
    from visem.features.image import _store

    return _store(encoder(crop, variant), "grid" if regions else "pooled", None).view(keys)
