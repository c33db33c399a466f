"""visem: joint visual-semantic embeddings when paired annotations are scarce.

The library is organised as small pure-function losses and metrics
(:mod:`visem.losses`, :mod:`visem.metrics`), data readers and protocol
samplers (:mod:`visem.data`), feature extractors (:mod:`visem.features`),
models registered by name and built from typed configs (:mod:`visem.models`),
a trainer (:mod:`visem.train`), search indexes (:mod:`visem.search`) and
paper reproductions (:mod:`visem.experiments`). The ``visem`` command line
is a thin layer on top (:mod:`visem.cli`).

The names below are imported on first use, so ``import visem`` stays light::

    import visem
    m = visem.load("runs/demo/index")       # visem.api.load
    hits = m.search("a red heart", k=5)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# name -> module that defines it (imported on first access)
_EXPORTS = {
    "load": "visem.api",
    "Model": "visem.api",
    "build_model": "visem.models",
    "list_models": "visem.models",
    "reproduce": "visem.experiments",
    "list_experiments": "visem.experiments",
    "retrieval_recall": "visem.metrics",
    "retrieval_recall_scores": "visem.metrics",
    "coco_1k_recall": "visem.metrics",
    "mean_average_precision": "visem.metrics",
    "precision_at_k": "visem.metrics",
    "per_class_accuracy": "visem.metrics",
    "gzsl_harmonic": "visem.metrics",
    "bleu": "visem.metrics",
    "build_index": "visem.search",
    "SearchIndex": "visem.search",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'visem' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
