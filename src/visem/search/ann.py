"""Top-k inner-product search over embeddings with faiss: exact, IVF, or IVF-PQ with exact re-ranking.

The search index stores unit-norm embeddings, so the inner product is the
cosine similarity. :meth:`VectorIndex.build` picks the structure from the
collection's size (or takes ``kind=``):

* ``exact`` (``n <= exact_max``, 50 000 by default): ``IndexFlatIP``, brute
  force. At that size a query costs ``n * d`` multiply-adds (about 13 M for
  d = 256), a few milliseconds, and the answer is exact.
* ``ivf`` (``n <= ivf_max``, 250 000 by default): ``IndexIVFFlat`` with
  ``METRIC_INNER_PRODUCT``. k-means splits the vectors into ``nlist`` lists;
  a query scans the ``nprobe`` lists whose centroids score highest. The
  lists hold the float32 vectors: ``4 d + 8`` bytes per vector.
* ``ivfpq`` (above): ``IndexIVFPQ`` (optionally behind an OPQ rotation,
  ``opq=True``), ``pq_m`` bytes of code per vector (``d / 8`` by default:
  32 B at d = 256, 96 B at d = 768), then **exact re-ranking**: the
  ``rerank`` (100) best candidates by PQ distance are scored again with the
  stored vectors (``rows``, typically a memory-mapped float16 array on disk)
  and the top ``k`` of those exact scores returned. PQ alone ranks poorly
  (recall@10 about 0.2-0.3 on clustered data); re-ranking 100 candidates
  brings it back to about 0.95, at the price of reading ``rerank`` rows per
  query from disk or page cache.

``nprobe`` is tuned at build time: the smallest power of two whose recall@10
against exact search reaches ``target_recall`` on a set of queries (after
re-ranking, for ``ivfpq``), and that recall is reported, so what a user is
told about the approximation is measured, not assumed.

Indexes past RAM: :meth:`VectorIndex.build` reads its input in blocks of
:data:`BLOCK` rows (a float16 memory map is fine: nothing makes a float32
copy of the whole input; k-means trains on a sample of at most
:data:`MAX_TRAIN` vectors), and :meth:`VectorIndex.load` with ``mmap=True``
maps the inverted lists (``IO_FLAG_MMAP``) or the flat codes
(``IO_FLAG_MMAP_IFC``) instead of reading them, so opening costs the
centroids and codebooks only. A trained, empty copy of an IVF index
(:attr:`VectorIndex.codec`) lets new vectors be indexed into a new file
without touching the old one (the generations of :mod:`visem.search.vectors`).

Thread safety: :meth:`VectorIndex.search` only reads the index (faiss search
methods are ``const``, and the full-probe fallback passes its ``nprobe``
through per-call search parameters instead of changing the index), so
several threads may search one index at once, as the web server does.
:meth:`VectorIndex.add` mutates it and must not run while another thread
searches. Nothing here changes faiss's global settings (OpenMP thread count
included).

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

__all__ = ["KINDS", "VectorIndex", "exact_search", "recall_at_k"]

#: Index structures, smallest collection first.
KINDS = ("exact", "ivf", "ivfpq")
#: faiss warns below this many training points per centroid (k-means is then unreliable).
MIN_POINTS_PER_LIST = 39
#: faiss's own default ``max_points_per_centroid``: more training points add time, not quality.
MAX_POINTS_PER_LIST = 256
#: k-means and PQ train on at most this many vectors (a sample), whatever the collection's size.
MAX_TRAIN = 262_144
#: queries drawn from the indexed vectors when :meth:`VectorIndex.build` gets none.
DEFAULT_TUNING_QUERIES = 1000
#: recall is measured at this depth.
RECALL_K = 10
#: queries per block in :func:`exact_search` (bounds the (block, BLOCK) score matrix faiss builds).
EXACT_CHUNK = 1024
#: rows of the indexed vectors converted to float32 at a time (building, adding, exact search).
BLOCK = 65_536
#: candidates re-ranked exactly per query by an ``ivfpq`` index (at least k).
DEFAULT_RERANK = 100
#: ``ivfpq`` tuning: the re-ranking depth doubles up to this many candidates while probing more lists
#: gains less than ``PLATEAU`` recall@10.
MAX_RERANK = 1000
PLATEAU = 0.005
#: default sizes at which :meth:`VectorIndex.build` moves from exact to IVF and from IVF to IVF-PQ.
DEFAULT_EXACT_MAX = 50_000
DEFAULT_IVF_MAX = 250_000

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


def _check_rows(x: Any, name: str, dim: int | None = None, *, allow_1d: bool = False) -> Any:
    """``x`` as a 2-D real array (a memory map stays one: nothing is copied); ``ValueError`` names the problem."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    shape = arr.shape
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
    return arr


def _block(arr: Any, start: int, stop: int, name: str) -> np.ndarray:
    """Rows ``start:stop`` of a checked array as C-contiguous float32, refusing NaN and inf (names the shape)."""
    out = np.ascontiguousarray(arr[start:stop], dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).any(axis=1).sum())
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {bad} rows from row {start} "
                         f"(shape {tuple(arr.shape)})")
    return out


def _as_matrix(x: Any, name: str, dim: int | None = None, *, allow_1d: bool = False) -> np.ndarray:
    """Validate ``x`` as a non-empty, finite, real 2-D array and return it as C-contiguous float32."""
    arr = _check_rows(x, name, dim, allow_1d=allow_1d)
    return _block(arr, 0, arr.shape[0], name)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` highest ``scores`` (descending; equal scores keep their column order) and their ids."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def exact_search(base: Any, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search of ``queries`` (Q, D) in ``base`` (N, D).

    Returns ``(scores, ids)``, float32 and int64, both (Q, min(k, N)), each row
    in descending score. ``base`` may be any real dtype, float16 and memory
    maps included: it is read in blocks of :data:`BLOCK` rows converted to
    float32, each searched with faiss's brute-force ``knn`` (BLAS) over blocks
    of :data:`EXACT_CHUNK` queries, and the blocks' top-k merged; the
    transient score matrix is at most ``EXACT_CHUNK * BLOCK``. A 1-D query is
    one row.
    """
    faiss = _faiss()
    base = _check_rows(base, "base")
    queries = _as_matrix(queries, "queries", base.shape[1], allow_1d=True)
    n = base.shape[0]
    k = min(_check_k(k), n)
    parts_s, parts_i = [], []
    for b0 in range(0, n, BLOCK):
        block = _block(base, b0, min(b0 + BLOCK, n), "base")
        kb = min(k, block.shape[0])
        s = np.empty((queries.shape[0], kb), dtype=np.float32)
        i = np.empty((queries.shape[0], kb), dtype=np.int64)
        for start in range(0, queries.shape[0], EXACT_CHUNK):
            stop = min(start + EXACT_CHUNK, queries.shape[0])
            s[start:stop], i[start:stop] = faiss.knn(queries[start:stop], block, kb, metric=faiss.METRIC_INNER_PRODUCT)
        parts_s.append(s)
        parts_i.append(i + b0)
    if len(parts_s) == 1:
        return parts_s[0], parts_i[0]
    return _top_k(np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1), k)


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


def default_pq_m(dim: int) -> int:
    """Bytes of PQ code per vector: ``dim / 8`` (8 dimensions per sub-quantizer), lowered to a divisor of ``dim``."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def _probe_ladder(nlist: int) -> list[int]:
    """1, 2, 4, ... below ``nlist``, then ``nlist`` itself (a full scan, exact up to ties)."""
    ladder, p = [], 1
    while p < nlist:
        ladder.append(p)
        p *= 2
    ladder.append(nlist)
    return ladder


def _tune(index: "VectorIndex", q: np.ndarray, truth: np.ndarray, k: int, target: float,
          nlist: int) -> tuple[int, float]:
    """``(nprobe, recall@k)``: the first step of 1, 2, 4, ..., ``nlist`` whose recall reaches ``target``.

    ``ivfpq`` also tunes its re-ranking depth: when doubling ``nprobe``
    gains less than :data:`PLATEAU` recall, the candidates re-ranked, not
    the lists probed, are what is missing, so ``index.rerank`` doubles (up
    to :data:`MAX_RERANK`) and the ladder resumes from the smaller
    ``nprobe`` of the two; on a plateau at the largest depth that smaller
    ``nprobe`` is kept (probing
    every list would cost a full scan for nothing).
    """
    ladder = _probe_ladder(nlist)
    i, prev = 0, None
    while True:
        probe = ladder[i]
        recall = recall_at_k(index.search(q, k, nprobe=probe)[1], truth, k)
        if recall >= target:
            return probe, recall
        if index.kind == "ivfpq" and prev is not None and recall - prev[1] < PLATEAU:
            if index.rerank < MAX_RERANK:  # more candidates, measured again from the smaller nprobe
                index.rerank = min(MAX_RERANK, 2 * index.rerank)
                i, prev = i - 1, None
                continue
            return prev
        prev = (probe, recall)
        i += 1
        if i == len(ladder):
            return probe, recall


def choose_kind(n: int, exact_max: int = DEFAULT_EXACT_MAX, ivf_max: int = DEFAULT_IVF_MAX) -> str:
    """``exact`` up to ``exact_max`` vectors, ``ivf`` up to ``ivf_max``, ``ivfpq`` above."""
    return "exact" if n <= exact_max else "ivf" if n <= ivf_max else "ivfpq"


class VectorIndex:
    """Inner-product (cosine on unit vectors) top-k search over vectors with faiss.

    Attributes:
        kind: ``"exact"`` (``IndexFlatIP``), ``"ivf"`` (``IndexIVFFlat``) or
            ``"ivfpq"`` (``IndexIVFPQ``, possibly behind an OPQ rotation), all
            ``METRIC_INNER_PRODUCT``.
        dim: the vectors' dimension.
        nprobe: lists scanned per query (IVF kinds), ``None`` for exact.
        ntotal: number of indexed vectors; ids are ``0 .. ntotal - 1`` in insertion order.
        rows: for ``ivfpq``, the indexed vectors (any (ntotal, dim) array, a
            float16 memory map typically) used to re-rank candidates exactly;
            ``None`` returns PQ's approximate scores.
        rerank: candidates re-ranked per query (``ivfpq`` with ``rows``).
        codec: after :meth:`build`, the trained index with no vectors
            (``None`` for exact), what :mod:`visem.search.vectors` saves to
            index later generations with.

    Make one with :meth:`build` or :meth:`load`; the constructor wraps an
    existing faiss index (flat IP, IVF-flat IP or IVF-PQ IP) as-is.
    """

    def __init__(self, index: Any, *, rows: Any = None, rerank: int = DEFAULT_RERANK, mmapped: bool = False):
        faiss = _faiss()
        self._owner = index  # the proxy that owns the C++ object (and what it refers to)
        top = faiss.downcast_index(index)
        inner = faiss.downcast_index(top.index) if isinstance(top, faiss.IndexPreTransform) else top
        if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"expected an inner-product faiss index, got metric {inner.metric_type}")
        if isinstance(inner, faiss.IndexFlat) and inner is top:
            self.kind = "exact"
        elif isinstance(inner, faiss.IndexIVFFlat) and inner is top:
            self.kind = "ivf"
        elif isinstance(inner, faiss.IndexIVFPQ):
            self.kind = "ivfpq"
        else:
            raise ValueError(f"unsupported faiss index type {type(inner).__name__} "
                             f"(expected IndexFlatIP, IndexIVFFlat or IndexIVFPQ)")
        self._index = top
        self._ivf = inner if self.kind != "exact" else None
        self.nprobe = int(inner.nprobe) if self._ivf is not None else None
        self.opq = top is not inner
        self.dim = int(top.d)
        self.rows = None
        self.rerank = int(rerank)
        self.mmapped = mmapped
        self.codec: VectorIndex | None = None
        if rows is not None:
            self.attach_rows(rows)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def nlist(self) -> int | None:
        """Number of IVF lists, ``None`` for exact."""
        return int(self._ivf.nlist) if self._ivf is not None else None

    @property
    def pq_m(self) -> int | None:
        """Bytes of PQ code per vector (``ivfpq``), else ``None``."""
        return int(self._ivf.pq.M) if self.kind == "ivfpq" else None

    @property
    def bytes_per_vector(self) -> int:
        """Bytes one vector costs in the index: float32 vector (+ 8-byte id for IVF), or PQ code + id."""
        return {"exact": 4 * self.dim, "ivf": 4 * self.dim + 8}.get(self.kind, (self.pq_m or 0) + 8)

    @property
    def faiss_index(self) -> Any:
        """The underlying faiss index (read it; changing it bypasses this class's checks)."""
        return self._index

    def attach_rows(self, rows: Any) -> None:
        """Use ``rows`` ((ntotal, dim), any real dtype, a memory map included) to re-rank ``ivfpq`` candidates."""
        rows = _check_rows(rows, "rows", self.dim)
        if rows.shape[0] != self.ntotal:
            raise ValueError(f"rows has {rows.shape[0]} vectors (shape {rows.shape}), the index {self.ntotal}")
        self.rows = rows

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self._ivf is not None else ""
        if self.kind == "ivfpq":
            extra += f", pq_m={self.pq_m}, opq={self.opq}, rerank={self.rerank if self.rows is not None else None}"
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, ntotal={self.ntotal}{extra})"

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: Any, *, kind: str | None = None, exact_max: int = DEFAULT_EXACT_MAX,
              ivf_max: int = DEFAULT_IVF_MAX, target_recall: float = 0.95, queries: Any = None, seed: int = 0,
              nlist: int | None = None, pq_m: int | None = None, opq: bool = False,
              rerank: int = DEFAULT_RERANK) -> tuple["VectorIndex", dict]:
        """Index ``vectors`` (N, D); the kind from ``kind`` or the size (:func:`choose_kind`).

        ``vectors`` is read in blocks of :data:`BLOCK` rows; a float16 memory
        map works and stays on disk (an ``ivfpq`` index keeps it as its
        re-ranking :attr:`rows`).

        IVF construction (``ivf`` and ``ivfpq``):

        * ``nlist`` = the given value or ``round(4 * sqrt(N))`` (faiss's guideline
          is 4-16 sqrt(N)), capped at ``N // 39`` so every list has the 39
          training points per centroid faiss asks for.
        * k-means (spherical, so centroids stay on the unit sphere like the
          data; faiss's 10 iterations; ``seed`` seeds it) runs on a seeded
          random sample of ``min(N, 256 * nlist, MAX_TRAIN)`` vectors: beyond
          256 points per centroid faiss would subsample anyway. ``ivfpq``
          trains its ``pq_m``-byte product quantizer (8 bits per sub-quantizer;
          ``opq=True`` learns an OPQ rotation first) on the same sample. All
          N vectors are then added.
        * ``nprobe`` = the smallest of 1, 2, 4, ..., ``nlist`` whose recall@10
          (:func:`recall_at_k` of the index's top 10, re-ranked for ``ivfpq``,
          against :func:`exact_search`) reaches ``target_recall``; ``nlist``
          (a full scan) if none does. ``ivfpq`` raises its ``rerank`` depth
          when more lists stop helping (see :func:`_tune`); the report gives
          the depth reached.

        Tuning queries: pass ``queries`` (Q, D) drawn from the distribution
        the index will serve (for text-to-image search, caption embeddings).
        When ``None``, a seeded sample of up to 1000 of the indexed vectors is
        used as is, excluding nothing: each such query's own vector is in its
        exact top 10 and is almost always found, so the measured recall is
        optimistic by up to ``(1 - recall) / 10`` and nprobe may come out one
        step lower than for outside queries.

        Returns ``(index, report)``; ``report`` has ``kind, n, dim, nlist,
        nprobe, recall_at_10, n_queries, build_seconds, train_seconds,
        tune_seconds, pq_m, opq, rerank, bytes_per_vector``. For exact
        search ``recall_at_10`` is 1.0 by definition (not measured),
        ``nlist``/``nprobe`` are ``None``, ``n_queries`` 0 and
        ``train_seconds``/``tune_seconds`` 0.0. ``build_seconds`` is the
        whole call.

        Raises ``ValueError`` for vectors that are not a non-empty finite real
        2-D array, queries of another dimension, an unknown ``kind``,
        ``target_recall`` outside (0, 1], ``nlist`` outside [1, N] or a
        ``pq_m`` that does not divide D.
        """
        faiss = _faiss()
        t0 = time.perf_counter()
        x = _check_rows(vectors, "vectors")
        n, dim = x.shape
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        if exact_max < 0 or ivf_max < 0:
            raise ValueError(f"exact_max and ivf_max must be >= 0, got {exact_max} and {ivf_max}")
        if kind is None:
            kind = choose_kind(n, exact_max, ivf_max)
        elif kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r} (expected one of {', '.join(KINDS)})")
        q = None if queries is None else _as_matrix(queries, "queries", dim)
        report: dict[str, Any] = {"kind": kind, "n": n, "dim": dim, "nlist": None, "nprobe": None,
                                  "recall_at_10": 1.0, "n_queries": 0, "build_seconds": 0.0,
                                  "train_seconds": 0.0, "tune_seconds": 0.0, "pq_m": None, "opq": False,
                                  "rerank": None, "bytes_per_vector": 4 * dim}

        if kind == "exact":
            flat = faiss.IndexFlatIP(dim)
            for b0 in range(0, n, BLOCK):
                flat.add(_block(x, b0, min(b0 + BLOCK, n), "vectors"))
            report["build_seconds"] = time.perf_counter() - t0
            return cls(flat), report

        if nlist is None:
            nlist = _default_nlist(n)
        elif isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or not 1 <= nlist <= n:
            raise ValueError(f"nlist must be an integer in [1, {n}] for {n} vectors, got {nlist!r}")
        nlist = int(nlist)
        if kind == "ivfpq":
            pq_m = default_pq_m(dim) if pq_m is None else int(pq_m)
            if pq_m < 1 or dim % pq_m:
                raise ValueError(f"pq_m must divide the dimension {dim}, got {pq_m}")
        rng = np.random.default_rng(seed)

        t_train = time.perf_counter()
        if kind == "ivf":
            quantizer = faiss.IndexFlatIP(dim)  # faiss's Python wrapper keeps it alive as long as the index
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf = index
        else:
            spec = (f"OPQ{pq_m}," if opq else "") + f"IVF{nlist},PQ{pq_m}np"  # np: no polysemous training
            index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = int(seed) & 0x7FFFFFFF
        ivf.cp.spherical = True
        n_train = min(n, MAX_POINTS_PER_LIST * nlist, MAX_TRAIN)
        sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else None
        train = _block(x, 0, n, "vectors") if sample is None else _as_matrix(x[sample], "vectors")
        index.train(train)
        del train
        codec = faiss.clone_index(index)  # trained, empty: later generations are indexed with it
        train_seconds = time.perf_counter() - t_train
        for b0 in range(0, n, BLOCK):
            index.add(_block(x, b0, min(b0 + BLOCK, n), "vectors"))
        out = cls(index, rows=x if kind == "ivfpq" else None, rerank=rerank)

        t_tune = time.perf_counter()
        if q is None:
            n_q = min(n, DEFAULT_TUNING_QUERIES)
            q = _as_matrix(x[np.sort(rng.choice(n, n_q, replace=False))], "vectors")
        k = min(RECALL_K, n)
        _, truth = exact_search(x, q, k)
        chosen, recall = _tune(out, q, truth, k, target_recall, nlist)
        out.set_nprobe(chosen)
        out.codec = cls(codec)
        out.codec.set_nprobe(chosen)
        out.codec.rerank = out.rerank
        report.update(nlist=nlist, nprobe=chosen, recall_at_10=float(recall), n_queries=int(q.shape[0]),
                      train_seconds=train_seconds, tune_seconds=time.perf_counter() - t_tune,
                      pq_m=out.pq_m, opq=out.opq, rerank=out.rerank if kind == "ivfpq" else None,
                      bytes_per_vector=out.bytes_per_vector)
        report["build_seconds"] = time.perf_counter() - t0
        return out, report

    def set_nprobe(self, nprobe: int) -> None:
        """Lists scanned per query from now on (saved with the index). Not while another thread searches."""
        if self._ivf is None:
            raise ValueError("an exact index has no nprobe")
        self._ivf.nprobe = int(nprobe)
        self.nprobe = int(nprobe)

    def empty_copy(self) -> "VectorIndex":
        """A trained copy with no vectors (same centroids, codebooks, nprobe): index new vectors with it."""
        faiss = _faiss()
        if self.codec is not None:
            return VectorIndex(faiss.clone_index(self.codec._index), rerank=self.rerank)
        if self.mmapped:
            raise ValueError("cannot copy a memory-mapped index: load it without mmap, or keep its codec file")
        copy = faiss.clone_index(self._index)
        copy.reset()
        return VectorIndex(copy, rerank=self.rerank)

    # ----------------------------------------------------------------- search
    def _params(self, nprobe: int) -> tuple[Any, Any]:
        """Per-call search parameters with ``nprobe`` (and the object that must stay alive with them)."""
        faiss = _faiss()
        ivf = faiss.SearchParametersIVF(nprobe=int(nprobe))
        if not self.opq:
            return ivf, ivf
        pt = faiss.SearchParametersPreTransform()
        pt.index_params = ivf
        return pt, ivf

    def _search_complete(self, q: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """faiss's top-k, with queries short of k results searched again over every list."""
        if self._ivf is None:
            return self._index.search(q, k)
        params, _keep = self._params(nprobe if nprobe is not None else self.nprobe)
        scores, ids = self._index.search(q, k, params=params)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            full, _keep2 = self._params(self.nlist)
            s2, i2 = self._index.search(np.ascontiguousarray(q[short]), k, params=full)
            scores[short], ids[short] = s2, i2
        return scores, ids

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidate ids ``cand`` (Q, C) against :attr:`rows`; the top ``k`` of each row."""
        valid = cand >= 0
        uniq = np.unique(cand[valid])
        rows = np.asarray(self.rows[uniq], dtype=np.float32)  # sorted ids: sequential reads of a memory map
        pos = np.searchsorted(uniq, np.where(valid, cand, uniq[0] if uniq.size else 0))
        out_s = np.empty((q.shape[0], k), np.float32)
        out_i = np.empty((q.shape[0], k), np.int64)
        for s in range(0, q.shape[0], block):
            e = min(s + block, q.shape[0])
            sc = np.matmul(rows[pos[s:e]], q[s:e, :, None])[..., 0]
            sc[~valid[s:e]] = -np.inf
            out_s[s:e], out_i[s:e] = _top_k(sc, cand[s:e], k)
        return out_s, out_i

    def search(self, queries: Any, k: int, *, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of ``queries`` (Q, D), or one query (D,): ``(scores, ids)``, both (Q, min(k, ntotal)).

        Rows are in descending score; ``scores`` float32, ``ids`` int64.
        ``ivfpq`` with :attr:`rows`: the ``max(rerank, k)`` best candidates
        by PQ score are scored exactly against ``rows`` and the top ``k``
        returned with their exact scores; without ``rows``, PQ's approximate
        scores. Never returns a -1 id: IVF can return fewer results than asked
        when the ``nprobe`` lists it scans hold fewer vectors in all; those
        queries (only those) are searched again with ``nprobe = nlist``, which
        scans every list. ``nprobe`` overrides the index's for this call only
        (passed per call, so the index is never modified and concurrent
        searches stay safe).

        Raises ``ValueError`` for a wrong dimension, non-finite values, an
        empty batch or ``k < 1``.
        """
        q = _as_matrix(queries, "queries", self.dim, allow_1d=True)
        k = _check_k(k)
        if self.ntotal == 0:
            raise ValueError("the index is empty")
        k = min(k, self.ntotal)
        if self.kind == "ivfpq" and self.rows is not None:
            _, cand = self._search_complete(q, min(max(self.rerank, k), self.ntotal), nprobe)
            return self._rescore(q, cand, k)
        return self._search_complete(q, k, nprobe)

    # -------------------------------------------------------------------- add
    def add(self, vectors: Any) -> None:
        """Append ``vectors`` (M, D) (or one (D,) vector); their ids are ``ntotal .. ntotal + M - 1``.

        IVF is not retrained: new vectors go to the nearest existing centroid
        (and are encoded with the existing codebooks) and ``nprobe`` is kept.
        That is right while new images resemble the old ones; rebuild after
        the collection has grown or shifted a lot (the build's recall figure
        describes the data it was tuned on). An ``ivfpq`` index drops its
        re-ranking :attr:`rows` (attach the grown rows again). Same
        validation as :meth:`build`. Not safe while another thread searches;
        refused on a memory-mapped index.
        """
        if self.mmapped:
            raise ValueError("a memory-mapped index is read-only: index new vectors into an empty_copy()")
        x = _check_rows(vectors, "vectors", self.dim, allow_1d=True)
        for b0 in range(0, x.shape[0], BLOCK):
            self._index.add(_block(x, b0, min(b0 + BLOCK, x.shape[0]), "vectors"))
        self.rows = None

    # ------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temporary file in the same folder, then rename).

        faiss's format stores the index type (hence :attr:`kind`) and, for
        IVF, ``nlist`` and ``nprobe``, so no sidecar file is needed
        (:attr:`rows` and :attr:`rerank` are not saved: the caller keeps them).
        """
        faiss = _faiss()
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False, rows: Any = None,
             rerank: int = DEFAULT_RERANK) -> "VectorIndex":
        """Read an index written by :meth:`save`.

        ``mmap=True`` maps the file instead of reading it: faiss's
        ``IO_FLAG_MMAP`` for IVF indexes (the inverted lists stay on disk),
        ``IO_FLAG_MMAP_IFC`` for a flat one (the codes stay on disk); the index
        is then read-only. ``rows`` and ``rerank``: see :meth:`attach_rows`.

        Raises ``ValueError`` naming the file when it is missing, not a faiss
        index, truncated, or a faiss index of another kind.
        """
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"vector index file not found: {path}")
        flags = 0
        if mmap:  # faiss's fourcc says which mapping this index type supports
            with open(path, "rb") as fh:
                flat = fh.read(3) == b"IxF"
            flags = faiss.IO_FLAG_MMAP_IFC if flat else faiss.IO_FLAG_MMAP
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot read vector index {path}: not a faiss index or corrupt ({first})") from exc
        try:
            return cls(index, rows=rows, rerank=rerank, mmapped=mmap)
        except ValueError as exc:
            raise ValueError(f"vector index {path}: {exc}") from exc
