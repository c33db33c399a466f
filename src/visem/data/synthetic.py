"""Synthetic paired data whose structure is known by construction.

Each of ``n_classes`` classes has a vector ``c_k ~ N(0, I)`` (its "side
information"). Images are ``A c_k + noise`` and texts ``B c_k + noise`` for
fixed random linear maps ``A`` and ``B``, so a linear joint embedding can
align the two modalities exactly, and a class's side information predicts
where its images lie. Used by the CLI's synthetic mode and by tests.
"""

from __future__ import annotations

import numpy as np


def synthetic_pairs(
    n_classes: int = 10,
    per_class: int = 20,
    image_dim: int = 32,
    text_dim: int = 16,
    class_dim: int = 8,
    noise: float = 0.1,
    seed: int = 0,
    maps_seed: int = 12345,
) -> dict[str, np.ndarray]:
    """``n_classes * per_class`` row-aligned image/text pairs with labels.

    Returns ``image`` (N, image_dim), ``text`` (N, text_dim), ``label`` (N,),
    ``txt_to_img`` (N,) = arange(N) and ``class_emb`` (n_classes, class_dim).
    ``maps_seed`` fixes the class vectors and the two linear maps, so draws
    with different ``seed`` are train/test samples of the same world.
    """
    if n_classes < 1 or per_class < 1:
        raise ValueError(f"need n_classes >= 1 and per_class >= 1, got {n_classes}, {per_class}")
    world = np.random.default_rng(maps_seed)
    class_emb = world.standard_normal((n_classes, class_dim)).astype(np.float32)
    a = world.standard_normal((class_dim, image_dim)).astype(np.float32) / np.sqrt(class_dim)
    b = world.standard_normal((class_dim, text_dim)).astype(np.float32) / np.sqrt(class_dim)
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(n_classes), per_class)
    # each sample varies a little around its class, in the shared class space
    z = class_emb[label] + 0.3 * rng.standard_normal((label.size, class_dim)).astype(np.float32)
    image = z @ a + noise * rng.standard_normal((label.size, image_dim)).astype(np.float32)
    text = z @ b + noise * rng.standard_normal((label.size, text_dim)).astype(np.float32)
    return {
        "image": image.astype(np.float32),
        "text": text.astype(np.float32),
        "label": label.astype(np.int64),
        "txt_to_img": np.arange(label.size, dtype=np.int64),
        "class_emb": class_emb,
    }
