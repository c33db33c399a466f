"""Image features of a collection: EfficientNet-Lite0, pooled or 7 x 7 regions, from the content-keyed store."""

from __future__ import annotations

from pathlib import Path

__all__ = ["image_features"]


def image_features(paths: list[Path], hashes: list[str], regions: bool, crop: float, progress: bool,
                   encoder: str = "efficientnet-lite0"):
    """Pooled (N, 1280) float32 and, if ``regions``, grid (N, R, 1280) float16 features (content-keyed cache).

    ``encoder``: an EfficientNet-Lite variant (``visem.features.image.VARIANTS``) at its own input size.
    """
    import numpy as np

    from visem.features.image import VARIANTS, EfficientNetLite0, Preprocess, extract_image_features

    enc = EfficientNetLite0(Preprocess(crop=crop, image_size=VARIANTS[encoder]), variant=encoder)
    if len(paths) == 0:
        r = (VARIANTS[encoder] + 31) // 32
        return np.zeros((0, 1280), np.float32), (np.zeros((0, r * r, 1280), np.float16) if regions else None)
    grid = extract_image_features(paths, "grid", encoder=enc, keys=hashes, progress=progress) if regions else None
    pooled = extract_image_features(paths, "pooled", encoder=enc, keys=hashes, progress=progress)
    return np.asarray(pooled, dtype=np.float32), grid
