"""Build time, search time, recall@10 and memory of the vector index (exact vs IVF; one store with --json).

    python bench/bench_ann.py [--sizes 10000 100000 1000000] [--dim 256] [--out results.json]
    python bench/bench_ann.py --n 1000000 --dim 768 --json [--index-type ivfpq] [--opq] [--workdir DIR]

``--json``: the search index's own vector store (:mod:`visem.search.vectors`)
at one size, the way ``visem index build`` makes it: float16 embeddings
written to a ``.npy`` in ``--workdir`` block by block (never whole in
memory), the store built over that memory map (kind by size unless
``--index-type``; nprobe tuned on 1000 noisy copies of base rows), then, in
a fresh process (:func:`open_phase`), the store opened with its files
memory-mapped (``open_s``, ``open_rss_mb``: resident memory the open added),
1000 other noisy copies searched at k = 10 in one batch (``qps``; one at a
time for ``qps_single``), ``recall_at_10`` against exact search over the
same float16 rows, and a generation of 1000 new vectors appended
(``add_1000_s``: embeddings file + vector file + search structures, what
``visem index add`` does after embedding). Prints one JSON object: ``kind,
n, dim, build_s, open_s, open_rss_mb, recall_at_10, qps, add_1000_s`` and
the details (``nlist, nprobe, pq_m, rerank, bytes_per_vector, disk_mb,
build_peak_rss_mb``; for IVF-PQ ``recall_at_10_pq_only``, the same search
without re-ranking; the machine and its load average).

Data: synthetic unit vectors around 1000 Gaussian centres (centre ~ N(0, I)
normalised, plus N(0, 0.05^2 I) noise, renormalised), so IVF's k-means has
structure to find, as with image embeddings. Queries: 1000 noisy copies of
base vectors (+ N(0, 0.03^2 I), renormalised). IVF's nprobe is tuned on a
*different* set of 1000 noisy copies (another seed), and recall@10 is
measured on the evaluation queries against exact search, so the recall is
not tuned on the queries it is reported for.

With ``--peers``: visem's index next to plain faiss on the same vectors
(one OpenMP thread, CPU seconds; the rows of ``bench/RESULTS.md``, see
:func:`peer_rows`).

Per size: the exact build (``IndexFlatIP``), the IVF build (k-means
training + adding + nprobe tuning, ``VectorIndex.build(..., kind="ivf")``),
the time to search 1000 queries at k=10 with each, IVF's recall@10 and the
peak resident memory added by each step (read from /proc while it runs; the
base vectors themselves, 4*n*d bytes, are already resident). Prints a table,
then the results as JSON (or writes them to ``--out``).

Measured (``python bench/bench_ann.py --sizes 10000 100000 1000000``;
``nproc`` = 2, AMD EPYC, shared with other jobs; faiss-cpu 1.15.1, 2 OpenMP
threads; d=256):

    search = 1000 queries, k=10; times in seconds; RSS in MB
            n exact build exact search ivf build  (train  tune) nlist nprobe ivf search recall@10 +RSS build  peak RSS
        10000        0.00        0.048       0.3     0.1    0.1   256     16      0.014     0.961         13        89
       100000        0.09        0.464       9.2     8.1    0.5  1265      2      0.018     0.997        138       372
      1000000        2.91       25.540     506.3   424.3   30.0  4000      4      0.265     0.958       1449      2587

The whole run took about 10 minutes with the machine's load average at 4-7
(other jobs). Times vary up to ~4x between runs here: an earlier 10k+100k run
gave exact search 0.22 s / 1.79 s and IVF build 0.9 s / 13.8 s, with the same
nlist, nprobe and recall. At 1M, k-means (4000
lists, 10 iterations over 1M points) is 84% of the IVF build; search is ~100x
faster than brute force at recall 0.958 on queries nprobe was not tuned on.
"+RSS build" is the IVF build's peak over the resident base vectors (the IVF
copy of the data plus transient k-means buffers); "peak RSS" is the process
high-water mark after that size (base + queries + exact index + IVF index).

The data's difficulty drives nprobe, not n alone (100k rows, ``--noise``):
0.05 -> nprobe 2, recall 0.997; 0.08 -> nprobe 2, 0.997; 0.12 -> nprobe 64,
0.954, IVF search 0.31 s. With ``--noise 0.1`` at 10k no nprobe below nlist
reached 0.95 and the build fell back to a full scan (nprobe = nlist = 256,
recall 1.000): one reason the index is exact below 50 000 vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np
from _measure import Row, cpu_model, measure, measure_cpu

from visem.io import atomic_write_json
from visem.search.ann import VectorIndex, recall_at_k


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(n: int, dim: int, centres: int, noise: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 unit vectors around ``centres`` random unit centres, generated in chunks."""
    rng = np.random.default_rng(seed)
    c = unit_rows(rng.standard_normal((centres, dim), dtype=np.float32))
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        block = c[rng.integers(0, centres, e - s)] + noise * rng.standard_normal((e - s, dim), dtype=np.float32)
        out[s:e] = unit_rows(block)
    return out


def noisy_copies(base: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = base[rng.choice(base.shape[0], count, replace=False)]
    return unit_rows(rows + noise * rng.standard_normal(rows.shape, dtype=np.float32))


def bench_size(n: int, args) -> dict:
    base = clustered(n, args.dim, args.centres, args.noise, seed=n)
    queries = noisy_copies(base, args.queries, args.query_noise, seed=1)
    tune = noisy_copies(base, args.queries, args.query_noise, seed=2)
    row: dict = {"n": n, "dim": args.dim}

    (exact, rep), sec, mem = measure(lambda: VectorIndex.build(base, exact_max=n))
    row.update(exact_build_s=sec, exact_build_rss_mb=mem)
    exact.search(queries[:10], 10)  # warm-up
    (_, truth), sec, mem = measure(lambda: exact.search(queries, 10))
    row.update(exact_search_s=sec, exact_search_rss_mb=mem)
    del exact

    (ivf, rep), sec, mem = measure(lambda: VectorIndex.build(base, kind="ivf", queries=tune,
                                                             target_recall=args.target_recall))
    row.update(ivf_build_s=sec, ivf_train_s=rep["train_seconds"], ivf_tune_s=rep["tune_seconds"],
               ivf_build_rss_mb=mem, nlist=rep["nlist"], nprobe=rep["nprobe"],
               ivf_tuning_recall=rep["recall_at_10"])
    ivf.search(queries[:10], 10)
    (_, found), sec, mem = measure(lambda: ivf.search(queries, 10))
    row.update(ivf_search_s=sec, ivf_search_rss_mb=mem, ivf_recall_at_10=recall_at_k(found, truth, 10))
    row["process_peak_rss_mb"] = peak_rss_mb()
    del ivf
    return row


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def table(rows: list[dict], n_queries: int) -> str:
    head = (f"{'n':>9} {'exact build':>11} {'exact search':>12} {'ivf build':>9} {'(train':>7} {'tune)':>6} "
            f"{'nlist':>5} {'nprobe':>6} {'ivf search':>10} {'recall@10':>9} {'+RSS build':>10} {'peak RSS':>9}")
    lines = [f"search = {n_queries} queries, k=10; times in seconds; RSS in MB", head]
    for r in rows:
        lines.append(
            f"{r['n']:>9} {r['exact_build_s']:>11.2f} {r['exact_search_s']:>12.3f} {r['ivf_build_s']:>9.1f} "
            f"{r['ivf_train_s']:>7.1f} {r['ivf_tune_s']:>6.1f} {r['nlist']:>5} {r['nprobe']:>6} "
            f"{r['ivf_search_s']:>10.3f} {r['ivf_recall_at_10']:>9.3f} {r['ivf_build_rss_mb']:>10.0f} "
            f"{r['process_peak_rss_mb']:>9.0f}")
    return "\n".join(lines)


def _interleaved_search(visem_index, faiss_index, queries: np.ndarray, k: int = 10):
    """Top-``k`` ids of visem's index, its CPU seconds and added RSS, and the mean CPU seconds of the faiss
    index timed before and after it (both warmed up on 10 queries first)."""
    visem_index.search(queries[:10], k)
    faiss_index.search(queries[:10], k)
    _, peer1, _, _ = measure_cpu(lambda: faiss_index.search(queries, k))
    (_, ids), visem_s, _, mem = measure_cpu(lambda: visem_index.search(queries, k))
    _, peer2, _, _ = measure_cpu(lambda: faiss_index.search(queries, k))
    return ids, visem_s, mem, (peer1 + peer2) / 2


def peer_rows(n: int, dim: int, n_queries: int, command: str, centres: int = 1000, noise: float = 0.05,
         query_noise: float = 0.03, target_recall: float = 0.95) -> list[Row]:
    """visem's VectorIndex next to plain faiss on the same vectors, one OpenMP thread, CPU seconds.

    Exact search: ``VectorIndex.search`` against ``faiss.IndexFlatIP.search``.
    IVF: visem's build (k-means training, adding, tuning ``nprobe`` on other
    queries) against plain faiss's ``IndexIVFFlat`` train + add with the same
    ``nlist`` (no tuning: the extra work visem does is in the ratio), and the
    searches at the same ``nprobe``.
    """
    import faiss

    faiss.omp_set_num_threads(1)
    base = clustered(n, dim, centres, noise, seed=n)
    queries = noisy_copies(base, n_queries, query_noise, seed=1)
    tune = noisy_copies(base, n_queries, query_noise, seed=2)
    out: list[Row] = []

    def plain_flat():
        index = faiss.IndexFlatIP(dim)
        index.add(base)
        return index

    flat = plain_flat()
    (exact, _), _, _, _ = measure_cpu(lambda: VectorIndex.build(base, exact_max=n))
    truth, visem_s, mem, peer_s = _interleaved_search(exact, flat, queries)
    out.append(Row(f"exact top-10 search, {n_queries:,} queries over {n:,} x {dim}", visem_s,
                   "plain faiss IndexFlatIP.search", peer_s, mem, command))

    (ivf, rep), visem_s, _, mem = measure_cpu(
        lambda: VectorIndex.build(base, kind="ivf", queries=tune, target_recall=target_recall))
    nlist, nprobe = rep["nlist"], rep["nprobe"]

    def plain_ivf():
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True
        index.train(base)
        index.add(base)
        index.nprobe = nprobe
        return index

    plain, peer_s, _, _ = measure_cpu(plain_ivf)
    out.append(Row(f"IVF build (nlist {nlist}) of {n:,} x {dim}", visem_s,
                   "plain faiss IndexIVFFlat train + add (no nprobe tuning)", peer_s, mem, command,
                   note=f"visem tunes nprobe = {nprobe} on other queries (recall@10 >= {target_recall})"))
    found, visem_s, mem, peer_s = _interleaved_search(ivf, plain, queries)
    out.append(Row(f"IVF top-10 search (nprobe {nprobe}), {n_queries:,} queries over {n:,}", visem_s,
                   "plain faiss IndexIVFFlat.search, same nprobe", peer_s, mem, command,
                   note=f"visem recall@10 {recall_at_k(found, truth, 10):.3f}"))
    for r in out:
        print(f"{r.task}: visem {r.visem_s:.3f} s, {r.peer} {r.peer_s:.3f} s, ratio {r.ratio:.2f}", flush=True)
    return out


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _write_rows(path, n: int, dim: int, centres: int, noise: float, seed: int, chunk: int = 65_536):
    """``n`` clustered unit vectors as a float16 ``.npy`` at ``path``, written chunk by chunk; its memory map."""
    from visem.search.folder import open_rows, write_embeddings

    rng = np.random.default_rng(seed)
    c = unit_rows(rng.standard_normal((centres, dim), dtype=np.float32))

    def blocks():
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            yield unit_rows(c[rng.integers(0, centres, e - s)] + noise * rng.standard_normal((e - s, dim),
                                                                                           dtype=np.float32))

    write_embeddings(path, blocks(), n, dim)
    return open_rows(path)


def _noisy(rows, count: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows.shape[0], count, replace=False))
    x = np.asarray(rows[pick], dtype=np.float32)
    return unit_rows(x + noise * rng.standard_normal(x.shape, dtype=np.float32))


def store_json(args) -> dict:
    """Build phase of ``--json`` (this process), then the open phase in a fresh one; the merged result."""
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from visem.search.vectors import StoreOptions, build_store

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_ann_"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    rows = _write_rows(work / "embeddings.0.npy", args.n, args.dim, args.centres, args.noise, seed=args.n)
    write_s = time.perf_counter() - t
    tune = _noisy(rows, args.queries, args.query_noise, seed=2)
    opts = StoreOptions(kind=args.index_type, opq=args.opq, rerank=args.rerank)
    (entry, report), build_s, build_mem = measure(lambda: build_store(opts, work, "images", rows, queries=tune))
    (work / "entry.json").write_text(json.dumps(entry))
    out = subprocess.run([sys.executable, __file__, "--open-phase", str(work), "--queries", str(args.queries),
                          "--query-noise", str(args.query_noise)], check=True, capture_output=True, text=True)
    opened = json.loads(out.stdout.strip().splitlines()[-1])
    files = [p for p in work.iterdir() if p.suffix in (".faiss", ".npy")]
    return {"kind": report["kind"], "n": args.n, "dim": args.dim, "build_s": round(build_s, 2), **opened,
            "embeddings_write_s": round(write_s, 2), "build_peak_rss_mb": round(build_mem),
            "nlist": report["nlist"], "nprobe": report["nprobe"], "pq_m": report["pq_m"], "opq": report["opq"],
            "rerank": report["rerank"], "bytes_per_vector": report["bytes_per_vector"],
            "tuning_recall_at_10": report["recall_at_10"],
            "disk_mb": round(sum(p.stat().st_size for p in files) / 2**20), "workdir": str(work)}


def open_phase(work: str, n_queries: int, query_noise: float) -> dict:
    """Open the store built in ``work`` (memory-mapped), search, measure recall and one 1000-vector generation."""
    import time
    from pathlib import Path

    from visem.search.ann import exact_search
    from visem.search.folder import open_rows, write_embeddings
    from visem.search.vectors import open_store

    work = Path(work)
    entry = json.loads((work / "entry.json").read_text())
    before = _rss_now_mb()
    t = time.perf_counter()
    rows = open_rows(work / "embeddings.0.npy")
    store = open_store({"backend": "faiss", "images": entry}, work, "images", [rows])
    open_s = time.perf_counter() - t
    open_rss = _rss_now_mb() - before
    queries = _noisy(rows, n_queries, query_noise, seed=1)
    store.search(queries[:10], 10)  # warm-up
    t = time.perf_counter()
    _, found = store.search(queries, 10)
    batch_s = time.perf_counter() - t
    t = time.perf_counter()
    for q in queries[:100]:
        store.search(q[None], 10)
    single_s = (time.perf_counter() - t) / 100
    _, truth = exact_search(rows, queries, 10)
    pq_only = None
    seg = store._segments[0].index
    if seg is not None and seg.kind == "ivfpq":  # the same candidates without re-ranking: what PQ alone gives
        kept, seg.rows = seg.rows, None
        pq_only = round(recall_at_k(seg.search(queries, 10)[1], truth, 10), 4)
        seg.attach_rows(kept)
    new = np.asarray(_noisy(rows, 1000, query_noise, seed=3), dtype=np.float16)
    t = time.perf_counter()
    write_embeddings(work / "embeddings.1.npy", new, 1000, rows.shape[1])
    store.append(open_rows(work / "embeddings.1.npy"), 1)
    add_s = time.perf_counter() - t
    for p in work.glob("*.1.*"):
        p.unlink()
    return {"open_s": round(open_s, 3), "open_rss_mb": round(open_rss, 1),
            "recall_at_10": round(recall_at_k(found, truth, 10), 4), "recall_at_10_pq_only": pq_only,
            "qps": round(n_queries / batch_s, 1),
            "qps_single": round(1 / single_s, 1), "add_1000_s": round(add_s, 3)}


def sweep(work: str, n_queries: int, query_noise: float) -> None:
    """Recall@10 and batch queries/s of the IVF-PQ index a ``--json --workdir`` run left, at other nprobe and
    re-ranking depths (the same evaluation queries as its open phase); one JSON line per setting."""
    import time

    from visem.search.ann import exact_search
    from visem.search.folder import open_rows

    rows = open_rows(f"{work}/embeddings.0.npy")
    index = VectorIndex.load(f"{work}/vectors.0.faiss", mmap=True, rows=rows)
    queries = _noisy(rows, n_queries, query_noise, seed=1)
    _, truth = exact_search(rows, queries, 10)
    for nprobe in (16, 64, 256):
        for rerank in (100, 400, 1000):
            index.rerank = rerank
            t = time.perf_counter()
            _, found = index.search(queries, 10, nprobe=nprobe)
            print(json.dumps({"nprobe": nprobe, "rerank": rerank, "recall_at_10": round(recall_at_k(found, truth, 10), 4),
                              "qps": round(n_queries / (time.perf_counter() - t), 1)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--centres", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.05, help="per-coordinate std of base vectors around centres")
    p.add_argument("--query-noise", type=float, default=0.03, help="per-coordinate std of queries around base rows")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--out", help="write the JSON results here instead of printing them")
    p.add_argument("--peers", action="store_true",
                   help="instead: visem next to plain faiss at each size, one thread, CPU seconds (the RESULTS.md rows)")
    p.add_argument("--json", action="store_true",
                   help="instead: the search index's vector store at size --n, one JSON object (see the docstring)")
    p.add_argument("--n", type=int, default=100_000, help="--json: number of vectors")
    p.add_argument("--index-type", choices=["exact", "ivf", "ivfpq"], default=None, help="--json: force the kind")
    p.add_argument("--opq", action="store_true", help="--json: OPQ rotation for IVF-PQ")
    p.add_argument("--rerank", type=int, default=100, help="--json: IVF-PQ candidates re-ranked exactly")
    p.add_argument("--workdir", default=None, help="--json: where the files go (default: a new temporary folder)")
    p.add_argument("--sweep", default=None, metavar="WORKDIR",
                   help="instead: nprobe x re-ranking depth of the IVF-PQ index a --json run left in WORKDIR")
    p.add_argument("--open-phase", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    import faiss

    if args.sweep:
        sweep(args.sweep, args.queries, args.query_noise)
        return
    if args.open_phase:
        print(json.dumps(open_phase(args.open_phase, args.queries, args.query_noise)))
        return
    if args.json:
        result = store_json(args)
        result["machine"] = {"cpu": cpu_model(), "nproc": os.cpu_count(), "faiss": faiss.__version__,
                             "omp_threads": faiss.omp_get_max_threads(),
                             "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
        result["command"] = "python " + " ".join(sys.argv)
        print(json.dumps(result))
        return

    if args.peers:
        command = "python " + " ".join(sys.argv)
        print(f"command: {command}")
        for n in args.sizes:
            peer_rows(n, args.dim, args.queries, command, args.centres, args.noise, args.query_noise, args.target_recall)
        return

    machine = {"cpu": cpu_model(), "nproc": os.cpu_count(), "faiss": faiss.__version__,
               "omp_threads": faiss.omp_get_max_threads(), "numpy": np.__version__,
               "python": platform.python_version()}
    print(f"command: python {' '.join(sys.argv)}")
    print("machine: " + " ".join(f"{k}={v}" for k, v in machine.items()))
    rows = []
    for n in args.sizes:
        rows.append(bench_size(n, args))
        lines = table(rows, args.queries).splitlines()
        print("\n".join(lines if len(rows) == 1 else lines[-1:]), flush=True)
    result = {"command": "python " + " ".join(sys.argv), "machine": machine, "config": vars(args), "rows": rows}
    if args.out:
        atomic_write_json(args.out, result)
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
