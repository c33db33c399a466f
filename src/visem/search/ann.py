"""Top-k inner-product search over image embeddings with faiss: exact, or IVF above a size.

The search index stores unit-norm float32 embeddings, so the inner product is
the cosine similarity. :meth:`VectorIndex.build` picks the structure from the
collection's size:

* ``n <= exact_max`` (50 000 by default): ``IndexFlatIP``, brute force. At
  that size a query costs ``n * d`` multiply-adds (about 13 M for d = 256), a
  few milliseconds, and the answer is exact.
* above it: ``IndexIVFFlat`` with ``METRIC_INNER_PRODUCT``. k-means splits the
  vectors into ``nlist`` lists; a query scans the ``nprobe`` lists whose
  centroids score highest. ``nprobe`` is tuned at build time: the smallest
  power of two whose recall@10 against exact search reaches ``target_recall``
  on a set of queries, and that recall is reported, so what a user is told
  about the approximation is measured, not assumed.

Thread safety: :meth:`VectorIndex.search` only reads the index (faiss search
methods are ``const``, and the full-probe fallback passes its ``nprobe``
through per-call ``SearchParametersIVF`` instead of changing the index), so
several threads may search one index at once, as the web server does.
:meth:`VectorIndex.add` mutates it and must not run while another thread
searches; callers that add while serving hold a lock or swap in a new index.
Nothing here changes faiss's global settings (OpenMP thread count included).

faiss is an optional dependency (``pip install visem[search]``); it is
imported on first use, so importing this module does not need it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from visem.io import atomic_path

__all__ = ["VectorIndex", "exact_search", "recall_at_k"]

#: faiss warns below this many training points per centroid (k-means is then unreliable).
MIN_POINTS_PER_LIST = 39
#: faiss's own default ``max_points_per_centroid``: more training points add time, not quality.
MAX_POINTS_PER_LIST = 256
#: queries drawn from the indexed vectors when :meth:`VectorIndex.build` gets none.
DEFAULT_TUNING_QUERIES = 1000
#: recall is measured at this depth.
RECALL_K = 10
#: queries per block in :func:`exact_search` (bounds the (block, n) score matrix faiss builds).
EXACT_CHUNK = 1024

_faiss_module = None


def _faiss():
    """Import faiss once, with an install hint if it is missing."""
    global _faiss_module
    if _faiss_module is None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the vector index needs faiss: pip install 'visem[search]' (faiss-cpu)") from exc
        _faiss_module = faiss
    return _faiss_module


def _as_matrix(x: Any, name: str, dim: int | None = None, *, allow_1d: bool = False) -> np.ndarray:
    """Validate ``x`` as a non-empty, finite, real 2-D array and return it as C-contiguous float32.

    Raises ``ValueError`` naming ``name`` and the shape or the problem.
    """
    arr = np.asarray(x)
    shape = arr.shape  # as given, for messages
    if allow_1d and arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        want = "1-D or 2-D" if allow_1d else "2-D (n, dim)"
        raise ValueError(f"{name} must be {want}, got shape {shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype} (shape {shape})")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]} (shape {shape}), the index has {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {bad} of {arr.shape[0]} rows "
                         f"(shape {shape})")
    return arr


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def exact_search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search of ``queries`` (Q, D) in ``base`` (N, D).

    Returns ``(scores, ids)``, float32 and int64, both (Q, min(k, N)), each row
    in descending score. Uses faiss's brute-force ``knn`` (BLAS, no copy of
    ``base`` into an index) over blocks of :data:`EXACT_CHUNK` queries, so the
    transient score matrix is at most ``EXACT_CHUNK * N``. A 1-D query is one row.
    """
    faiss = _faiss()
    base = _as_matrix(base, "base")
    queries = _as_matrix(queries, "queries", base.shape[1], allow_1d=True)
    k = min(_check_k(k), base.shape[0])
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], EXACT_CHUNK):
        stop = min(start + EXACT_CHUNK, queries.shape[0])
        d, i = faiss.knn(queries[start:stop], base, k, metric=faiss.METRIC_INNER_PRODUCT)
        scores[start:stop], ids[start:stop] = d, i
    return scores, ids


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of ``|found[:k] ∩ truth[:k]| / k`` (the ANN literature's k-recall@k).

    ``found`` and ``truth`` are (Q, >= k) id arrays, one row per query; ids
    < 0 (faiss's "no result") in ``found`` never count. The denominator is
    ``k`` for every query, so the arrays need at least ``k`` columns.
    """
    k = _check_k(k)
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2 or found.shape[0] != truth.shape[0]:
        raise ValueError(f"found and truth must be (Q, k) with the same Q, got {found.shape} and {truth.shape}")
    if found.shape[0] == 0:
        raise ValueError(f"no queries: found has shape {found.shape}")
    if found.shape[1] < k or truth.shape[1] < k:
        raise ValueError(f"need at least k={k} columns, got found {found.shape} and truth {truth.shape}")
    hits = 0
    for f, t in zip(found[:, :k], truth[:, :k]):
        hits += len(np.intersect1d(f[f >= 0], t))
    return hits / (k * found.shape[0])


def _default_nlist(n: int) -> int:
    """``round(4 * sqrt(n))``, capped so every list gets >= 39 training points (never below 1)."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // MIN_POINTS_PER_LIST))


def _probe_ladder(nlist: int) -> list[int]:
    """1, 2, 4, ... below ``nlist``, then ``nlist`` itself (a full scan, exact up to ties)."""
    ladder, p = [], 1
    while p < nlist:
        ladder.append(p)
        p *= 2
    ladder.append(nlist)
    return ladder


class VectorIndex:
    """Inner-product (cosine on unit vectors) top-k search over float32 vectors with faiss.

    Attributes:
        kind: ``"exact"`` (``IndexFlatIP``) or ``"ivf"`` (``IndexIVFFlat``, ``METRIC_INNER_PRODUCT``).
        dim: the vectors' dimension.
        nprobe: lists scanned per query (IVF), ``None`` for exact.
        ntotal: number of indexed vectors; ids are ``0 .. ntotal - 1`` in insertion order.

    Make one with :meth:`build` or :meth:`load`; the constructor wraps an
    existing faiss index (flat IP or IVF-flat IP) as-is.
    """

    def __init__(self, index: Any):
        faiss = _faiss()
        self._owner = index  # the proxy that owns the C++ object (and, for IVF, refers to the quantizer)
        if not isinstance(index, (faiss.IndexFlat, faiss.IndexIVFFlat)):
            index = faiss.downcast_index(index)
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"expected an inner-product faiss index, got metric {index.metric_type}")
        if isinstance(index, faiss.IndexFlat):
            self.kind = "exact"
            self.nprobe = None
        elif isinstance(index, faiss.IndexIVFFlat):
            self.kind = "ivf"
            self.nprobe = int(index.nprobe)
        else:
            raise ValueError(f"unsupported faiss index type {type(index).__name__} "
                             f"(expected IndexFlatIP or IndexIVFFlat)")
        self._index = index
        self.dim = int(index.d)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def nlist(self) -> int | None:
        """Number of IVF lists, ``None`` for exact."""
        return int(self._index.nlist) if self.kind == "ivf" else None

    @property
    def faiss_index(self) -> Any:
        """The underlying faiss index (read it; changing it bypasses this class's checks)."""
        return self._index

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.kind == "ivf" else ""
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, ntotal={self.ntotal}{extra})"

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, *, exact_max: int = 50_000, target_recall: float = 0.95,
              queries: np.ndarray | None = None, seed: int = 0,
              nlist: int | None = None) -> tuple["VectorIndex", dict]:
        """Index ``vectors`` (N, D): exact when ``N <= exact_max``, else IVF with a tuned ``nprobe``.

        IVF construction:

        * ``nlist`` = the given value or ``round(4 * sqrt(N))`` (faiss's guideline
          is 4-16 sqrt(N)), capped at ``N // 39`` so every list has the 39
          training points per centroid faiss asks for.
        * k-means (spherical, so centroids stay on the unit sphere like the
          data; faiss's 10 iterations; ``seed`` seeds it) runs on a seeded
          random sample of ``min(N, 256 * nlist)`` vectors: beyond 256 points
          per centroid faiss would subsample anyway. All N vectors are then added.
        * ``nprobe`` = the smallest of 1, 2, 4, ..., ``nlist`` whose recall@10
          (:func:`recall_at_k` of the IVF top 10 against :func:`exact_search`)
          reaches ``target_recall``; ``nlist`` (a full scan) if none does.

        Tuning queries: pass ``queries`` (Q, D) drawn from the distribution
        the index will serve (for text-to-image search, caption embeddings).
        When ``None``, a seeded sample of up to 1000 of the indexed vectors is
        used as is, excluding nothing: each such query's own vector is in its
        exact top 10 and is always found (its list is the first one probed),
        so the measured recall is optimistic by up to ``(1 - recall) / 10``
        and nprobe may come out one step lower than for outside queries.

        Returns ``(index, report)``; ``report`` has ``kind, n, dim, nlist,
        nprobe, recall_at_10, n_queries, build_seconds, train_seconds,
        tune_seconds``. For exact search ``recall_at_10`` is 1.0 by
        definition (not measured), ``nlist``/``nprobe`` are ``None``,
        ``n_queries`` 0 and ``train_seconds``/``tune_seconds`` 0.0.
        ``build_seconds`` is the whole call.

        Raises ``ValueError`` for vectors that are not a non-empty finite real
        2-D array, queries of another dimension, ``target_recall`` outside
        (0, 1], or ``nlist`` outside [1, N].
        """
        faiss = _faiss()
        t0 = time.perf_counter()
        x = _as_matrix(vectors, "vectors")
        n, dim = x.shape
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        if exact_max < 0:
            raise ValueError(f"exact_max must be >= 0, got {exact_max}")
        q = None if queries is None else _as_matrix(queries, "queries", dim)
        report: dict[str, Any] = {"kind": None, "n": n, "dim": dim, "nlist": None, "nprobe": None,
                                  "recall_at_10": 1.0, "n_queries": 0, "build_seconds": 0.0,
                                  "train_seconds": 0.0, "tune_seconds": 0.0}

        if n <= exact_max:
            flat = faiss.IndexFlatIP(dim)
            flat.add(x)
            out = cls(flat)
            report["kind"] = "exact"
            report["build_seconds"] = time.perf_counter() - t0
            return out, report

        if nlist is None:
            nlist = _default_nlist(n)
        elif isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or not 1 <= nlist <= n:
            raise ValueError(f"nlist must be an integer in [1, {n}] for {n} vectors, got {nlist!r}")
        nlist = int(nlist)
        rng = np.random.default_rng(seed)

        t_train = time.perf_counter()
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = int(seed) & 0x7FFFFFFF
        ivf.cp.spherical = True
        n_train = min(n, MAX_POINTS_PER_LIST * nlist)
        train = x if n_train == n else x[np.sort(rng.choice(n, n_train, replace=False))]
        ivf.train(train)
        del train
        train_seconds = time.perf_counter() - t_train
        ivf.add(x)  # faiss's Python wrapper keeps `quantizer` alive as long as `ivf`

        t_tune = time.perf_counter()
        if q is None:
            n_q = min(n, DEFAULT_TUNING_QUERIES)
            q = x[np.sort(rng.choice(n, n_q, replace=False))]
        k = min(RECALL_K, n)
        _, truth = exact_search(x, q, k)
        chosen, recall = nlist, None
        for probe in _probe_ladder(nlist):
            _, found = ivf.search(q, k, params=faiss.SearchParametersIVF(nprobe=probe))
            recall = recall_at_k(found, truth, k)
            if recall >= target_recall:
                chosen = probe
                break
        ivf.nprobe = chosen
        out = cls(ivf)
        report.update(kind="ivf", nlist=nlist, nprobe=chosen, recall_at_10=float(recall),
                      n_queries=int(q.shape[0]), train_seconds=train_seconds,
                      tune_seconds=time.perf_counter() - t_tune)
        report["build_seconds"] = time.perf_counter() - t0
        return out, report

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of ``queries`` (Q, D), or one query (D,): ``(scores, ids)``, both (Q, min(k, ntotal)).

        Rows are in descending score; ``scores`` float32, ``ids`` int64.
        Never returns a -1 id: IVF can return fewer than k results when the
        ``nprobe`` lists it scans hold fewer than k vectors in all; those
        queries (only those) are searched again with ``nprobe = nlist``,
        which scans every list, so their results are complete (and exact).
        The retry's ``nprobe`` is passed per call, so the index is never
        modified and concurrent searches stay safe.

        Raises ``ValueError`` for a wrong dimension, non-finite values, an
        empty batch or ``k < 1``.
        """
        q = _as_matrix(queries, "queries", self.dim, allow_1d=True)
        k = _check_k(k)
        if self.ntotal == 0:
            raise ValueError("the index is empty")
        k = min(k, self.ntotal)
        scores, ids = self._index.search(q, k)
        if self.kind == "ivf":
            short = np.flatnonzero((ids < 0).any(axis=1))
            if short.size:
                faiss = _faiss()
                params = faiss.SearchParametersIVF(nprobe=int(self._index.nlist))
                s2, i2 = self._index.search(np.ascontiguousarray(q[short]), k, params=params)
                scores[short], ids[short] = s2, i2
        return scores, ids

    # -------------------------------------------------------------------- add
    def add(self, vectors: np.ndarray) -> None:
        """Append ``vectors`` (M, D) (or one (D,) vector); their ids are ``ntotal .. ntotal + M - 1``.

        IVF is not retrained: new vectors go to the nearest existing centroid
        and ``nprobe`` is kept. That is right while new images resemble the
        old ones; rebuild after the collection has grown or shifted a lot
        (the build's recall figure describes the data it was tuned on).
        Same validation as :meth:`build`. Not safe while another thread searches.
        """
        x = _as_matrix(vectors, "vectors", self.dim, allow_1d=True)
        self._index.add(x)

    # ------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temporary file in the same folder, then rename).

        faiss's format stores the index type (hence :attr:`kind`) and, for
        IVF, ``nlist`` and ``nprobe``, so no sidecar file is needed.
        """
        faiss = _faiss()
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "VectorIndex":
        """Read an index written by :meth:`save`.

        Raises ``ValueError`` naming the file when it is missing, not a faiss
        index, truncated, or a faiss index of another kind.
        """
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"vector index file not found: {path}")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot read vector index {path}: not a faiss index or corrupt ({first})") from exc
        try:
            return cls(index)
        except ValueError as exc:
            raise ValueError(f"vector index {path}: {exc}") from exc
