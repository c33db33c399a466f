"""A trained model's embeddings of images (from their stored features) and of captions (token ids), in blocks."""

from __future__ import annotations

from typing import Any, Iterator

__all__ = ["embed_image_blocks", "embed_images", "embed_texts"]


def embed_image_blocks(model: Any, rows: Any, block: int = 256) -> Iterator[Any]:
    """(b, D) float32 unit-norm embeddings of consecutive blocks of ``rows`` (features, any array-like)."""
    import numpy as np
    import torch

    with torch.no_grad():
        for s in range(0, len(rows), block):
            x = torch.from_numpy(np.ascontiguousarray(rows[s:s + block])).float()
            yield model.embed_image(x).numpy().astype(np.float32)


def embed_images(model: Any, rows: Any, block: int = 256):
    """(N, D) float32 image embeddings of ``rows`` in memory (for a few images: an add, a query set)."""
    import numpy as np

    out = list(embed_image_blocks(model, rows, block))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_texts(model: Any, ids: Any, chunk: int = 512):
    """(M, D) float32 unit-norm caption embeddings of (M, L) token ids."""
    import numpy as np
    import torch

    with torch.no_grad():
        return torch.cat([model.embed_text(x) for x in ids.split(chunk)]).numpy().astype(np.float32)
