"""Vector stores: top-k search over one space of an index (its images, or its captions), grown by generations.

:class:`VectorStore` is the interface :class:`visem.search.SearchIndex` talks
to; :class:`FaissStore` (the default, files in the index folder) and
:class:`visem.search.milvus.MilvusStore` (a Milvus Lite file or a Milvus
server) implement it. A store never holds the embeddings themselves: they are
the index folder's ``embeddings.<g>.npy`` (float16, memory-mapped), which the
faiss store reads to search exactly and to re-rank, and which a Milvus store
was filled from.

* :func:`build_store` indexes generation 0 of a space and returns the
  manifest entry describing it, with a report of what was built.
* :func:`open_store` opens a space from its entry and the generations' rows.
* :meth:`VectorStore.append` indexes one more generation without touching
  the earlier ones and returns the new entry; the caller commits it with the
  manifest.

Scores are inner products of unit vectors (cosine), and every store returns
**exact** scores against the stored float16 embeddings: the exact kind
computes them directly, IVF-Flat holds those same values as float32, and
IVF-PQ re-ranks its candidates with them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "FaissStore", "StoreOptions", "VectorStore", "build_store", "open_store"]

BACKENDS = ("faiss", "milvus")


@dataclass
class StoreOptions:
    """How a space is indexed. ``kind=None``: by size (``exact`` up to ``exact_max``, ``ivf`` up to ``ivf_max``,
    ``ivfpq`` above); ``opq`` and ``rerank`` apply to ``ivfpq``; ``uri`` to Milvus (a Milvus Lite file, relative
    to the index folder, or a server URL)."""

    backend: str = "faiss"
    kind: str | None = None
    exact_max: int = 50_000
    ivf_max: int = 250_000
    opq: bool = False
    rerank: int = 100
    uri: str | None = None
    seed: int = 0


class VectorStore(ABC):
    """Top-k inner-product search over the vectors of one space; ids ``0 .. ntotal - 1`` in generation order."""

    backend: str
    kind: str

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of searchable vectors."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the top ``min(k, ntotal)`` per query row, best first (float32, int64)."""

    @abstractmethod
    def append(self, rows: np.ndarray, generation: int) -> dict[str, Any]:
        """Index ``rows`` (the next generation's embeddings) after the current ones; the new manifest entry.

        Earlier generations' files are not rewritten. The caller commits the
        entry with the manifest; until then readers of the folder do not see
        the new vectors.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """``backend, kind, n, generations`` and the kind's parameters (for ``visem index info``)."""

    def close(self) -> None:
        """Release connections or files (nothing for faiss)."""


# --------------------------------------------------------------------------- faiss
@dataclass
class _Segment:
    rows: Any  # (n_g, D) embeddings of this generation (a memory map)
    index: Any  # VectorIndex over them, or None for exact search
    offset: int


class FaissStore(VectorStore):
    """A space as faiss files in the index folder, one per generation (none for the exact kind).

    Search runs over every generation and merges the top ``k``: exact
    generations by brute force over their rows (:func:`~visem.search.ann.exact_search`,
    block by block, so a large exact store streams from disk), IVF ones through
    their memory-mapped faiss file (``ivfpq`` re-ranking its candidates with
    the rows). A new generation is indexed with the space's codec (the
    trained, empty index saved at build) into its own file.
    """

    backend = "faiss"

    def __init__(self, folder: Path, space: str, entry: dict[str, Any], rows: list[Any]):
        from visem.search.ann import VectorIndex
        from visem.search.folder import require_file

        self.folder, self.space, self.entry = Path(folder), space, dict(entry)
        self.kind = entry["kind"]
        self.rerank = int(entry.get("rerank") or 100)
        files = list(entry["segments"])
        if len(files) != len(rows):
            raise ValueError(f"{space}: {len(files)} vector files for {len(rows)} generations")
        self._segments: list[_Segment] = []
        offset = 0
        for name, r in zip(files, rows):
            index = None
            if name is not None:
                index = VectorIndex.load(require_file(self.folder, name), mmap=True, rerank=self.rerank)
                if index.ntotal != r.shape[0]:
                    raise ValueError(f"{self.folder / name}: {index.ntotal} vectors for {r.shape[0]} embeddings")
                if index.kind == "ivfpq":
                    index.attach_rows(r)
            self._segments.append(_Segment(r, index, offset))
            offset += r.shape[0]

    @property
    def ntotal(self) -> int:
        return sum(s.rows.shape[0] for s in self._segments)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from visem.search.ann import _top_k, exact_search

        parts_s, parts_i = [], []
        for seg in self._segments:
            if seg.rows.shape[0] == 0:
                continue
            if seg.index is None:
                s, i = exact_search(seg.rows, queries, k)
            else:
                s, i = seg.index.search(queries, k)
            parts_s.append(s)
            parts_i.append(i + seg.offset)
        if not parts_s:
            raise ValueError(f"the {self.space} store is empty")
        if len(parts_s) == 1:
            return parts_s[0], parts_i[0]
        return _top_k(np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1),
                      min(k, sum(p.shape[1] for p in parts_s)))

    def _codec(self):
        """The trained, empty index new generations go into (made once from generation 0 for a version-1 index)."""
        from visem.search.ann import VectorIndex
        from visem.search.folder import codec_file, require_file

        if self.entry.get("codec"):
            return VectorIndex.load(require_file(self.folder, self.entry["codec"]), rerank=self.rerank)
        i = next(j for j, s in enumerate(self._segments) if s.index is not None)
        full = VectorIndex.load(self.folder / self.entry["segments"][i])
        codec = full.empty_copy()
        del full
        name = codec_file(self.space)
        codec.save(self.folder / name)
        self.entry["codec"] = name
        return codec

    def append(self, rows: np.ndarray, generation: int) -> dict[str, Any]:
        from visem.search.ann import VectorIndex
        from visem.search.folder import vector_file

        name = None
        index = None
        if self.kind != "exact" and rows.shape[0]:
            codec = self._codec()
            codec.add(rows)
            name = vector_file(self.space, generation)
            codec.save(self.folder / name)
            del codec
            index = VectorIndex.load(self.folder / name, mmap=True, rerank=self.rerank)
            if index.kind == "ivfpq":
                index.attach_rows(rows)
        self._segments.append(_Segment(rows, index, self.ntotal))
        self.entry["segments"] = list(self.entry["segments"]) + [name]
        return dict(self.entry)

    def describe(self) -> dict[str, Any]:
        first = next((s.index for s in self._segments if s.index is not None), None)
        out = {"backend": "faiss", "kind": self.kind, "n": self.ntotal, "generations": len(self._segments),
               "nprobe": first.nprobe if first is not None else None,
               "nlist": first.nlist if first is not None else None}
        if self.kind == "ivfpq" and first is not None:
            out.update(pq_m=first.pq_m, opq=first.opq, rerank=self.rerank)
        return out


def _exact_report(n: int, dim: int) -> dict[str, Any]:
    return {"kind": "exact", "n": n, "dim": dim, "nlist": None, "nprobe": None, "recall_at_10": 1.0,
            "n_queries": 0, "build_seconds": 0.0, "train_seconds": 0.0, "tune_seconds": 0.0, "pq_m": None,
            "opq": False, "rerank": None, "bytes_per_vector": 2 * dim}


def build_store(options: StoreOptions, folder: Path, space: str, rows: Any,
                queries: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Index generation 0 of ``space`` from ``rows`` (its embeddings); ``(manifest entry, report)``.

    ``queries`` tune IVF's ``nprobe`` (see :meth:`visem.search.ann.VectorIndex.build`).
    The report's ``kind`` says what was built; ``backend`` names the store.
    """
    if options.backend == "milvus":
        from visem.search.milvus import MilvusStore

        return MilvusStore.build(options, Path(folder), space, rows)
    if options.backend != "faiss":
        raise ValueError(f"unknown vector backend {options.backend!r} (expected one of {', '.join(BACKENDS)})")
    from visem.search.ann import VectorIndex, choose_kind
    from visem.search.folder import codec_file, vector_file

    n, dim = rows.shape
    kind = options.kind or choose_kind(n, options.exact_max, options.ivf_max)
    if kind == "exact" or n == 0:  # nothing to train an IVF on: an empty space is searched exactly
        return ({"kind": "exact", "codec": None, "segments": [None]},
                {**_exact_report(n, dim), "backend": "faiss"})
    index, report = VectorIndex.build(rows, kind=kind, queries=queries, seed=options.seed, opq=options.opq,
                                      rerank=options.rerank)
    index.save(Path(folder) / vector_file(space, 0))
    index.codec.save(Path(folder) / codec_file(space))
    return ({"kind": kind, "codec": codec_file(space), "segments": [vector_file(space, 0)],
             "rerank": report["rerank"] or options.rerank, "nprobe": report["nprobe"]}, {**report, "backend": "faiss"})


def open_store(backend: dict[str, Any], folder: Path, space: str, rows: list[Any]) -> VectorStore:
    """The store of ``space`` described by the manifest's ``vectors`` entry ``backend``, over ``rows`` per generation."""
    name = backend.get("backend", "faiss")
    if name == "milvus":
        from visem.search.milvus import MilvusStore

        return MilvusStore.open(backend, Path(folder), space, rows)
    if name != "faiss":
        raise ValueError(f"unknown vector backend {name!r} (expected one of {', '.join(BACKENDS)})")
    return FaissStore(Path(folder), space, backend[space], rows)
