"""A space's vectors in Milvus: the same :class:`~visem.search.vectors.VectorStore` interface, served by a database.

``visem index build --backend milvus [--uri PATH_OR_URL]`` puts each space
(images, captions) in a Milvus collection instead of faiss files; search and
``index add`` then go through it. The client is ``pymilvus``; the URI says
which Milvus:

* a path (default ``milvus.db``, relative to the index folder): **Milvus
  Lite**, embedded (``pip install 'visem[milvus]'`` installs ``milvus-lite``);
  the database lives inside the index folder and moves with it;
* ``http://host:19530`` (or ``https://``, ``tcp://``): a Milvus standalone
  or cluster server, the same code; the index folder keeps only the URI and
  the collection names.

Collections: ``visem_<space>_<token>``, a random token per build, so several
indexes can share one server. Fields: ``id`` (INT64, the image or caption
id) and ``vector`` (FLOAT_VECTOR, the float16 embedding as float32), inner
product metric, Milvus's ``AUTOINDEX`` (Milvus picks the structure; Milvus
Lite searches its segments with faiss or by brute force). Writes are
``upsert`` with explicit ids, so an ``index add`` stopped after writing and
before its manifest commit is simply written again by the next add; and
searches filter ``id < ntotal`` (the ids the manifest commits), so a
reader never sees vectors of an uncommitted add.

Scores are Milvus's inner products of the stored vectors: exact for the
candidates it returns, like the faiss store's.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np

from visem.search.vectors import StoreOptions, VectorStore

__all__ = ["DEFAULT_URI", "MilvusStore", "milvus_available"]

#: Milvus Lite database, relative to the index folder.
DEFAULT_URI = "milvus.db"
#: rows sent per insert call.
INSERT_BATCH = 4096
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def milvus_available() -> bool:
    """``pymilvus`` can be imported (the one probe of this optional dependency)."""
    import importlib.util

    return importlib.util.find_spec("pymilvus") is not None


def _is_server(uri: str) -> bool:
    return uri.startswith(_SERVER_SCHEMES)


def _resolve(uri: str, folder: Path) -> str:
    """A server URL as is; a Milvus Lite path made absolute against the index folder."""
    return uri if _is_server(uri) else str((folder / uri).resolve())


def _client(uri: str) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise ImportError("the Milvus backend needs pymilvus (and milvus-lite for a local file): "
                          "pip install 'visem[milvus]'") from exc
    return MilvusClient(uri)


def release_lite(uri: str) -> None:
    """Stop the in-process Milvus Lite server of a local database (nothing for a server URL)."""
    if _is_server(uri):
        return
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # an older Milvus Lite manages its own process
        return
    server_manager_instance.release_server(uri)


class MilvusStore(VectorStore):
    """One space of an index as a Milvus collection (see the module docstring)."""

    backend = "milvus"
    kind = "milvus"

    def __init__(self, folder: Path, entry: dict[str, Any], n: int):
        self.folder, self.entry = Path(folder), dict(entry)
        self.uri = _resolve(entry["uri"], self.folder)
        self.collection = entry["collection"]
        self._n = int(n)
        self._client = _client(self.uri)
        if not self._client.has_collection(self.collection):
            raise ValueError(f"Milvus at {self.uri} has no collection {self.collection!r} (named by the index)")
        self._client.load_collection(self.collection)

    @property
    def ntotal(self) -> int:
        return self._n

    @classmethod
    def build(cls, options: StoreOptions, folder: Path, space: str, rows: Any) -> tuple[dict, dict]:
        """Create the space's collection, insert ``rows`` as ids ``0 .. n - 1``; ``(entry, report)``."""
        import time

        t0 = time.perf_counter()
        n, dim = rows.shape
        uri = options.uri or DEFAULT_URI
        entry = {"uri": uri, "collection": f"visem_{space}_{secrets.token_hex(6)}", "index_type": "AUTOINDEX"}
        client = _client(_resolve(uri, folder))
        try:
            client.create_collection(entry["collection"], dimension=int(dim), metric_type="IP", auto_id=False,
                                     id_type="int", primary_field_name="id", vector_field_name="vector")
            _upsert(client, entry["collection"], rows, 0)
        finally:
            client.close()
            release_lite(_resolve(uri, folder))
        report = {"kind": "milvus", "backend": "milvus", "n": int(n), "dim": int(dim), "index_type": "AUTOINDEX",
                  "nlist": None, "nprobe": None, "recall_at_10": None, "n_queries": 0, "pq_m": None, "opq": False,
                  "rerank": None, "build_seconds": time.perf_counter() - t0, "train_seconds": 0.0,
                  "tune_seconds": 0.0, "uri": uri, "collection": entry["collection"]}
        return entry, report

    @classmethod
    def open(cls, backend: dict[str, Any], folder: Path, space: str, rows: list[Any]) -> "MilvusStore":
        return cls(folder, backend[space], sum(int(r.shape[0]) for r in rows))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if self._n == 0:
            raise ValueError(f"the Milvus collection {self.collection} is empty")
        k = min(int(k), self._n)
        res = self._client.search(self.collection, data=q.tolist(), limit=k, filter=f"id < {self._n}",
                                  search_params={"metric_type": "IP"})
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        for r, hits in enumerate(res):
            for j, h in enumerate(hits[:k]):
                scores[r, j], ids[r, j] = float(h["distance"]), int(h["id"])
        if (ids < 0).any():
            raise ValueError(f"Milvus returned fewer than {k} results from {self.collection} "
                             f"({int((ids < 0).sum())} missing): is the collection complete?")
        order = np.argsort(-scores, axis=1, kind="stable")  # best first, whatever the server's order
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def append(self, rows: np.ndarray, generation: int) -> dict[str, Any]:
        _upsert(self._client, self.collection, rows, self._n)
        self._n += int(rows.shape[0])
        return dict(self.entry)

    def describe(self) -> dict[str, Any]:
        return {"backend": "milvus", "kind": "milvus", "n": self._n, "uri": self.entry["uri"],
                "collection": self.collection, "index_type": self.entry.get("index_type"),
                "nprobe": None, "generations": None}

    def close(self) -> None:
        self._client.close()
        release_lite(self.uri)


def _upsert(client: Any, collection: str, rows: Any, first_id: int) -> None:
    """Write ``rows`` as ids ``first_id ..`` (upsert: writing them again replaces them), then flush."""
    n = int(rows.shape[0])
    for s in range(0, n, INSERT_BATCH):
        block = np.asarray(rows[s:s + INSERT_BATCH], dtype=np.float32)
        client.upsert(collection, [{"id": first_id + s + j, "vector": v} for j, v in enumerate(block.tolist())])
    if n:
        client.flush(collection)
