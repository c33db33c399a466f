"""The search package's value types, errors and limits (no behaviour, no heavy imports).

Every other module of :mod:`visem.search` imports its results, options and
errors from here, so a caller can name them without loading torch or faiss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BuildOptions", "BuildReport", "CaptionHit", "Hit", "IndexFileError", "MAX_K", "MAX_QUERY_CHARS",
           "QueryError", "SimilarResult"]

#: Longest text query accepted, in characters.
MAX_QUERY_CHARS = 500
#: Most results one query may ask for.
MAX_K = 100


class IndexFileError(ValueError):
    """An index folder that is missing, incomplete or of another format (names the file)."""


class QueryError(ValueError):
    """A query that cannot be answered (empty, too long, no known word, bad image); the message says why."""


@dataclass(frozen=True)
class Hit:
    """One image result: its id in the index, its name (path relative to its root), score, a caption if known."""

    id: int
    name: str
    score: float
    caption: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CaptionHit:
    """One caption result: the caption text, the id of the image it describes, and the score."""

    caption: str
    image_id: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimilarResult:
    """Image-query results: similar images and matching captions."""

    images: list[Hit]
    captions: list[CaptionHit]

    def to_dict(self) -> dict[str, Any]:
        return {"images": [h.to_dict() for h in self.images], "captions": [c.to_dict() for c in self.captions]}


@dataclass
class BuildOptions:
    """How :func:`visem.search.build_index` trains and indexes. ``None`` fields are chosen from the data.

    Vector index: ``index_type`` ``None`` (by size: exact up to ``exact_max``
    images, IVF up to ``ivf_max``, IVF-PQ above) or one of ``exact``,
    ``ivf``, ``ivfpq``; ``opq`` adds an OPQ rotation to IVF-PQ; ``rerank``
    is how many IVF-PQ candidates are re-scored exactly. ``backend``:
    ``faiss`` (files in the index folder) or ``milvus`` (``uri``: a Milvus
    Lite file, relative to the index folder, or a server URL).
    ``workers``: image-decoding processes (``None``: from the machine).
    Training length: ``steps``, or ``epochs`` passes over the training items;
    neither: 15 epochs, at least 300 steps, no upper cap.
    """

    method: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    lr: float = 5e-4
    embed_dim: int = 256
    seed: int = 0
    crop: float = 1.0
    exact_max: int = 50_000
    ivf_max: int = 250_000
    index_type: str | None = None
    opq: bool = False
    rerank: int = 100
    backend: str = "faiss"
    uri: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None
    progress: bool = False
    # choosing towers and fusion (visem.search.choose; None = by validation when possible, else the defaults)
    text_encoder: str | None = None
    image_encoder: str = "efficientnet-lite0"
    fusion: dict[str, Any] | None = None
    choose: bool = True
    regions: bool = False  # region features (the 7 x 7 grid) for a method that pools regions (A3VSE); else pooled

    def check(self) -> "BuildOptions":
        """``self``, or ``ValueError`` naming the first option out of range (visem.search.options)."""
        from visem.search.options import check_build_options

        check_build_options(self)
        return self


@dataclass
class BuildReport:
    """What a build found and did (also stored in ``index.json``)."""

    method: str
    reason: str
    n_images: int
    n_captioned: int
    n_captions: int
    n_pseudo: int
    pseudo_source: str
    skipped: dict[str, int]
    problems: list[str]
    ann: dict[str, Any]
    steps: int
    seconds: float
    choice: dict[str, Any] = field(default_factory=dict)  # how the towers, method and fusion were chosen
    notes: list[str] = field(default_factory=list)  # what the build repaired or kept (damaged files, empty captions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
