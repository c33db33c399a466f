"""A trained model's embeddings of images (from their features) and of captions (token ids), in chunks."""

from __future__ import annotations

from typing import Any

__all__ = ["embed_images", "embed_texts"]


def embed_images(model: Any, feats: Any, chunk: int = 256):
    """(N, D) float32 unit-norm image embeddings of a (N, ...) feature tensor."""
    import numpy as np
    import torch

    if len(feats) == 0:
        return np.zeros((0, 0), np.float32)
    with torch.no_grad():
        return torch.cat([model.embed_image(x.float()) for x in feats.split(chunk)]).numpy().astype(np.float32)


def embed_texts(model: Any, ids: Any, chunk: int = 512):
    """(M, D) float32 unit-norm caption embeddings of (M, L) token ids."""
    import numpy as np
    import torch

    with torch.no_grad():
        return torch.cat([model.embed_text(x) for x in ids.split(chunk)]).numpy().astype(np.float32)
