"""Vector index: exact search against numpy, IVF recall against an independent count, add, save/load, input checks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from visem.search.ann import VectorIndex, exact_search, recall_at_k  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def clustered(n: int, d: int, centres: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d))
    return unit(c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)))


def numpy_topk(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full float64 score matrix, full argsort (random continuous data has no ties)."""
    s = queries.astype(np.float64) @ base.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.fixture(scope="module")
def ivf_data():
    base = clustered(3000, 32, centres=40, noise=0.6, seed=1)
    rng = np.random.default_rng(2)
    # outside queries: noisy copies of base vectors (not the vectors themselves)
    queries = unit(base[rng.choice(3000, 300, replace=False)] + 0.3 * rng.standard_normal((300, 32)))
    index, report = VectorIndex.build(base, exact_max=500, target_recall=0.95, queries=queries, seed=0)
    return base, queries, index, report


# ---------------------------------------------------------------- exact
@pytest.mark.parametrize("k", [1, 3, 10, 57])
def test_exact_index_matches_numpy_argsort(k):
    base = random_unit(400, 24, seed=0)
    queries = random_unit(33, 24, seed=1)
    index, report = VectorIndex.build(base)
    assert index.kind == "exact" and report["kind"] == "exact" and index.nprobe is None
    assert report["recall_at_10"] == 1.0 and report["nlist"] is None and report["nprobe"] is None
    scores, ids = index.search(queries, k)
    ref_s, ref_i = numpy_topk(base, queries, k)
    assert scores.shape == ids.shape == (33, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    # the free function agrees, including with chunking over queries
    s2, i2 = exact_search(base, queries, k)
    np.testing.assert_array_equal(i2, ref_i)
    np.testing.assert_allclose(s2, ref_s, atol=1e-5)


def test_exact_search_chunked_matches_unchunked(monkeypatch):
    import visem.search.ann as ann

    base = random_unit(300, 16, seed=3)
    queries = random_unit(50, 16, seed=4)
    whole = exact_search(base, queries, 7)
    monkeypatch.setattr(ann, "EXACT_CHUNK", 7)  # odd chunk size, last chunk partial
    chunked = exact_search(base, queries, 7)
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_array_equal(whole[0], chunked[0])


def test_one_dimensional_query_and_k_above_ntotal():
    base = random_unit(20, 8, seed=5)
    index, _ = VectorIndex.build(base)
    q = random_unit(1, 8, seed=6)[0]
    scores, ids = index.search(q, 50)  # k > ntotal -> every vector, once, ranked
    assert scores.shape == ids.shape == (1, 20)
    ref_s, ref_i = numpy_topk(base, q[None], 20)
    np.testing.assert_array_equal(ids, ref_i)
    assert sorted(ids[0].tolist()) == list(range(20))
    s2, i2 = exact_search(base, q, 50)
    assert i2.shape == (1, 20)


# ----------------------------------------------------------------- recall
def test_recall_at_k_known_answer():
    truth = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    found = np.array([[3, 2, 1, 0],    # top3 {3,2,1} vs {0,1,2} -> 2; top4 same set in another order -> 4
                      [4, 99, 98, 5],  # top3 {4,99,98} vs {4,5,6} -> 1
                      [-1, -1, 8, 9]])  # -1 never counts; top3 {8} vs {8,9,10} -> 1
    assert recall_at_k(found, truth, 3) == pytest.approx((2 + 1 + 1) / 9)
    assert recall_at_k(found, truth, 4) == pytest.approx((4 + 2 + 2) / 12)
    assert recall_at_k(found, truth, 1) == pytest.approx((0 + 1 + 0) / 3)
    assert recall_at_k(truth, truth, 4) == 1.0
    with pytest.raises(ValueError, match="columns"):
        recall_at_k(found, truth, 5)
    with pytest.raises(ValueError, match="same Q"):
        recall_at_k(found[:2], truth, 2)


# -------------------------------------------------------------------- ivf
def test_ivf_report_and_independent_recall(ivf_data):
    base, queries, index, report = ivf_data
    assert index.kind == "ivf" and report["kind"] == "ivf"
    assert report["n"] == 3000 and report["dim"] == 32 and report["n_queries"] == 300
    # 4 * sqrt(3000) = 219 lists would leave < 39 training points each: capped at 3000 // 39 = 76
    assert report["nlist"] == index.nlist == 76
    assert report["nprobe"] == index.nprobe
    assert report["recall_at_10"] >= 0.95
    # independent recomputation: numpy brute force vs what index.search returns
    _, truth = numpy_topk(base, queries, 10)
    _, found = index.search(queries, 10)
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
    assert report["recall_at_10"] == pytest.approx(hits / (10 * len(queries)), abs=1e-12)
    # nprobe is the first step of 1, 2, 4, ..., nlist that reaches the target: the step before does not
    assert index.nprobe in (1, 2, 4, 8, 16, 32, 64, 76)
    if index.nprobe > 1:
        import faiss

        before = 64 if index.nprobe == 76 else index.nprobe // 2
        _, fewer = index.faiss_index.search(queries, 10, params=faiss.SearchParametersIVF(nprobe=before))
        assert recall_at_k(fewer, truth, 10) < 0.95
    for key in ("build_seconds", "train_seconds", "tune_seconds"):
        assert report[key] >= 0


def test_ivf_default_queries_and_seed_reproducible():
    base = clustered(2000, 16, centres=20, noise=0.5, seed=7)
    a, ra = VectorIndex.build(base, exact_max=100, seed=3)
    b, rb = VectorIndex.build(base, exact_max=100, seed=3)
    assert ra["kind"] == "ivf" and ra["n_queries"] == 1000  # a sample of the indexed vectors
    assert ra["nprobe"] == rb["nprobe"] and ra["recall_at_10"] == rb["recall_at_10"]
    q = base[:50]
    np.testing.assert_array_equal(a.search(q, 5)[1], b.search(q, 5)[1])
    c, rc = VectorIndex.build(base, exact_max=100, nlist=8, target_recall=1.0)
    assert rc["nlist"] == c.nlist == 8
    # target 1.0 can need every list; the full scan is exact
    assert rc["recall_at_10"] == 1.0 or rc["nprobe"] == 8


def test_ivf_never_returns_missing_ids():
    # a few vectors spread over many lists: one probed list cannot hold k of them
    base = clustered(400, 8, centres=40, noise=0.05, seed=8)
    index, report = VectorIndex.build(base, exact_max=10, nlist=10, target_recall=0.1)
    assert report["nprobe"] == 1
    queries = random_unit(40, 8, seed=9)
    scores, ids = index.search(queries, 300)
    assert ids.shape == (40, 300) and (ids >= 0).all()
    assert all(len(set(row)) == 300 for row in ids.tolist())
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # those queries were re-run over every list: their scores are the exact top 300
    np.testing.assert_allclose(scores, numpy_topk(base, queries, 300)[0], atol=1e-5)


# -------------------------------------------------------------------- add
@pytest.mark.parametrize("exact_max", [10_000, 500])
def test_add_then_search_finds_new_vectors(exact_max):
    base = clustered(3000, 32, centres=40, noise=0.6, seed=10)
    index, report = VectorIndex.build(base, exact_max=exact_max)
    assert index.kind == ("exact" if exact_max == 10_000 else "ivf")
    new = random_unit(25, 32, seed=11)
    index.add(new)
    assert index.ntotal == 3025
    scores, ids = index.search(new, 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(3000, 3025))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    index.add(new[0])  # one 1-D vector
    assert index.ntotal == 3026
    with pytest.raises(ValueError, match=r"\(4, 31\)"):
        index.add(random_unit(4, 31, seed=12))


# -------------------------------------------------------------- save/load
def test_save_load_round_trip(tmp_path, ivf_data):
    base, queries, ivf, _ = ivf_data
    exact, _ = VectorIndex.build(base[:200])
    for name, index in (("exact.faiss", exact), ("ivf.faiss", ivf)):
        path = tmp_path / "sub" / name
        index.save(path)
        loaded = VectorIndex.load(path)
        assert (loaded.kind, loaded.nprobe, loaded.dim, loaded.ntotal, loaded.nlist) == \
            (index.kind, index.nprobe, index.dim, index.ntotal, index.nlist)
        s1, i1 = index.search(queries, 10)
        s2, i2 = loaded.search(queries, 10)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["exact.faiss", "ivf.faiss"]  # no temp files


def test_save_changed_nprobe_survives(tmp_path, ivf_data):
    base, queries, ivf, _ = ivf_data
    index = VectorIndex.load(_saved(ivf, tmp_path / "a.faiss"))
    index.faiss_index.nprobe = 5
    index.nprobe = 5
    assert VectorIndex.load(_saved(index, tmp_path / "b.faiss")).nprobe == 5


def _saved(index, path):
    index.save(path)
    return path


def test_load_missing_or_garbage_names_the_file(tmp_path, ivf_data):
    missing = tmp_path / "nope.faiss"
    with pytest.raises(ValueError, match="nope.faiss"):
        VectorIndex.load(missing)
    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(b"not a faiss index at all")
    with pytest.raises(ValueError, match="garbage.faiss"):
        VectorIndex.load(garbage)
    good = _saved(ivf_data[2], tmp_path / "good.faiss")
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.faiss"):
        VectorIndex.load(truncated)
    empty = tmp_path / "empty.faiss"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.faiss"):
        VectorIndex.load(empty)


def test_load_rejects_l2_index(tmp_path):
    import faiss

    l2 = faiss.IndexFlatL2(4)
    l2.add(random_unit(5, 4, seed=13))
    faiss.write_index(l2, str(tmp_path / "l2.faiss"))
    with pytest.raises(ValueError, match="l2.faiss"):
        VectorIndex.load(tmp_path / "l2.faiss")


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    import faiss

    index, _ = VectorIndex.build(random_unit(30, 4, seed=14))
    path = tmp_path / "v.faiss"
    index.save(path)
    before = path.read_bytes()

    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(RuntimeError):
        index.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]


# ------------------------------------------------------------- bad input
def test_bad_input_raises_value_error_with_shape():
    good = random_unit(50, 6, seed=15)
    index, _ = VectorIndex.build(good)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        index.search(random_unit(3, 5, seed=16), 2)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        index.search(np.ones(5, np.float32), 2)
    nan_q = good[:2].copy()
    nan_q[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*\(2, 6\)"):
        index.search(nan_q, 2)
    with pytest.raises(ValueError, match="k must be"):
        index.search(good[:1], 0)
    nan_base = good.copy()
    nan_base[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"non-finite.*\(50, 6\)"):
        VectorIndex.build(nan_base)
    with pytest.raises(ValueError, match=r"empty.*\(0, 6\)"):
        VectorIndex.build(np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match=r"2-D.*\(2, 3, 6\)"):
        VectorIndex.build(np.zeros((2, 3, 6), np.float32))
    with pytest.raises(ValueError, match=r"2-D.*\(6,\)"):
        VectorIndex.build(good[0])
    with pytest.raises(ValueError, match=r"dimension 5.*\(10, 5\)"):
        VectorIndex.build(good, exact_max=10, queries=random_unit(10, 5, seed=17))
    with pytest.raises(ValueError, match="real numbers"):
        VectorIndex.build(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="target_recall"):
        VectorIndex.build(good, exact_max=10, target_recall=1.5)
    with pytest.raises(ValueError, match="nlist"):
        VectorIndex.build(good, exact_max=10, nlist=51)


def test_float64_and_noncontiguous_input_are_cast():
    base = np.asfortranarray(random_unit(100, 12, seed=18).astype(np.float64))
    index, _ = VectorIndex.build(base)
    _, ids = index.search(base[::7], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(0, 100, 7))


def test_concurrent_searches_agree(ivf_data):
    from concurrent.futures import ThreadPoolExecutor

    _, queries, index, _ = ivf_data
    expected = index.search(queries, 10)[1]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: index.search(queries[i::4], 10)[1], range(4)))
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, expected[i::4])


# ---------------------------------------------------------------- ivf-pq
@pytest.fixture(scope="module")
def pq_data():
    base = clustered(6000, 32, centres=40, noise=0.6, seed=20)
    rng = np.random.default_rng(21)
    queries = unit(base[rng.choice(6000, 200, replace=False)] + 0.3 * rng.standard_normal((200, 32)))
    rows = base.astype(np.float16)  # what the search index stores
    index, report = VectorIndex.build(rows, kind="ivfpq", pq_m=8, nlist=32, queries=queries, seed=0)
    return rows, queries, index, report


def test_ivfpq_reranks_with_exact_scores(pq_data):
    rows, queries, index, report = pq_data
    assert index.kind == report["kind"] == "ivfpq" and index.pq_m == report["pq_m"] == 8
    assert report["bytes_per_vector"] == 16 and report["rerank"] == 100 and report["nlist"] == 32
    assert report["recall_at_10"] >= 0.95
    truth_s, truth = numpy_topk(rows.astype(np.float32), queries, 10)
    scores, found = index.search(queries, 10)
    # independent recall count, equal to the one the build reported on the same queries
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
    assert report["recall_at_10"] == pytest.approx(hits / 2000, abs=1e-12)
    # the returned scores are the exact inner products with the stored rows, in descending order
    exact = np.einsum("qkd,qd->qk", rows[found].astype(np.float64), queries.astype(np.float64))
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    # PQ codes alone rank far worse than after re-ranking: the re-ranking is doing the work
    index.rows = None
    _, approx = index.search(queries, 10)
    index.attach_rows(rows)
    assert recall_at_k(approx, truth, 10) < report["recall_at_10"] - 0.1


def test_ivfpq_mmap_round_trip_and_read_only(tmp_path, pq_data, ivf_data):
    rows, queries, index, _ = pq_data
    index.save(tmp_path / "pq.faiss")
    mapped = VectorIndex.load(tmp_path / "pq.faiss", mmap=True, rows=rows)
    assert (mapped.kind, mapped.nprobe, mapped.pq_m, mapped.mmapped) == ("ivfpq", index.nprobe, 8, True)
    np.testing.assert_array_equal(mapped.search(queries, 10)[1], index.search(queries, 10)[1])
    with pytest.raises(ValueError, match="read-only"):
        mapped.add(rows[:2])
    ivf = ivf_data[2]
    ivf.save(tmp_path / "ivf.faiss")
    flat, _ = VectorIndex.build(ivf_data[0][:300])
    flat.save(tmp_path / "flat.faiss")
    for name, original in (("ivf.faiss", ivf), ("flat.faiss", flat)):
        m = VectorIndex.load(tmp_path / name, mmap=True)
        np.testing.assert_array_equal(m.search(ivf_data[1], 5)[1], original.search(ivf_data[1], 5)[1])


def test_codec_indexes_new_vectors_like_the_full_index(pq_data):
    rows, queries, index, _ = pq_data
    assert index.codec.ntotal == 0 and index.codec.nprobe == index.nprobe
    part = index.empty_copy()
    part.add(rows[:1000])
    part.attach_rows(rows[:1000])
    # same centroids and codebooks: the first 1000 vectors' own queries find them
    _, ids = part.search(rows[:50].astype(np.float32), 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(50))


def test_opq_variant_builds_and_searches():
    base = clustered(1500, 8, centres=20, noise=0.5, seed=22)
    index, report = VectorIndex.build(base, kind="ivfpq", opq=True, pq_m=2, nlist=8, seed=1)
    assert index.opq and report["opq"] and index.kind == "ivfpq"
    _, ids = index.search(base[:20], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(20))


def test_kind_by_size_and_bad_pq_options():
    from visem.search.ann import choose_kind, default_pq_m

    assert [choose_kind(n, 10, 100) for n in (10, 11, 100, 101)] == ["exact", "ivf", "ivf", "ivfpq"]
    assert (default_pq_m(256), default_pq_m(768), default_pq_m(36), default_pq_m(5)) == (32, 96, 4, 1)
    with pytest.raises(ValueError, match="pq_m must divide"):
        VectorIndex.build(random_unit(200, 12, seed=23), kind="ivfpq", pq_m=5, nlist=2)
    with pytest.raises(ValueError, match="unknown index kind"):
        VectorIndex.build(random_unit(20, 12, seed=23), kind="hnsw")


def test_exact_search_over_float16_blocks_matches_numpy(monkeypatch):
    import visem.search.ann as ann

    base = random_unit(300, 16, seed=24).astype(np.float16)
    queries = random_unit(9, 16, seed=25)
    ref_s, ref_i = numpy_topk(base.astype(np.float32), queries, 12)
    monkeypatch.setattr(ann, "BLOCK", 7)  # many blocks, the last one partial: the merge is exercised
    s, i = exact_search(base, queries, 12)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-5)


def test_ivfpq_raises_its_rerank_depth_when_more_lists_stop_helping(pq_data):
    rows, queries, _, _ = pq_data
    index, report = VectorIndex.build(rows, kind="ivfpq", pq_m=8, nlist=32, queries=queries, seed=0, rerank=2)
    # two candidates cannot hold the true top 10: more lists do not help, more candidates do
    assert report["rerank"] == index.rerank > 2
    assert report["recall_at_10"] >= 0.95 or report["rerank"] == 1000
    assert report["nprobe"] < 32  # not a full scan
    _, truth = numpy_topk(rows.astype(np.float32), queries, 10)
    assert recall_at_k(index.search(queries, 10)[1], truth, 10) == pytest.approx(report["recall_at_10"])
