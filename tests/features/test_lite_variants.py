"""EfficientNet-Lite1 and Lite2: their own weights, input sizes, caches and classifier heads."""

from __future__ import annotations

import numpy as np
import pytest

from visem.features.image import VARIANTS, EfficientNetLite0, extract_image_features, imagenet_probabilities


@pytest.mark.parametrize("variant, side, regions", [("efficientnet-lite1", 240, 64), ("efficientnet-lite2", 260, 81)])
def test_variant_features_and_cache(tmp_path, variant, side, regions):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.png"
        Image.fromarray((rng.random((50, 70, 3)) * 255).astype("uint8")).save(p)
        paths.append(p)
    enc = EfficientNetLite0(variant=variant)
    assert VARIANTS[variant] == side and enc.preprocess.image_size == side
    assert enc.encoder_id.startswith(variant) and enc.encoder_id != EfficientNetLite0().encoder_id  # own cache
    grid = extract_image_features(paths, "grid", encoder=enc, store_root=tmp_path / "store")
    pooled = extract_image_features(paths, "pooled", encoder=enc, store_root=tmp_path / "store")
    assert grid.shape == (2, regions, 1280) and pooled.shape == (2, 1280)
    np.testing.assert_allclose(pooled, grid.astype(np.float32).mean(axis=1), rtol=2e-3, atol=2e-3)
    assert (tmp_path / "store" / enc.encoder_id).is_dir()
    probs = imagenet_probabilities(pooled, variant=variant)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown image encoder"):
        EfficientNetLite0(variant="efficientnet-lite4")
