"""Vector stores over generations (faiss), and reading a version-1 index folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("faiss")

from visem.search.ann import exact_search  # noqa: E402
from visem.search.folder import open_rows, write_embeddings  # noqa: E402
from visem.search.vectors import StoreOptions, build_store, open_store  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((30, d))
    return unit(c[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, d)))


def rows_file(folder, name, x):
    write_embeddings(folder / name, x, len(x), x.shape[1])
    return open_rows(folder / name)


@pytest.mark.parametrize("kind", ["exact", "ivf", "ivfpq"])
def test_generations_append_without_rewriting_and_search_as_one(tmp_path, kind):
    gens = [clustered(3000, 32, seed=1), clustered(400, 32, seed=2), clustered(7, 32, seed=3)]
    rows = [rows_file(tmp_path, f"e{g}.npy", x) for g, x in enumerate(gens)]
    entry, report = build_store(StoreOptions(kind=kind), tmp_path, "images", rows[0])
    assert report["kind"] == entry["kind"] == kind
    store = open_store({"backend": "faiss", "images": entry}, tmp_path, "images", rows[:1])
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.faiss")}
    for g in (1, 2):
        entry = store.append(rows[g], g)
    assert store.ntotal == 3407 and len(entry["segments"]) == 3
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.faiss") if p.name in before} == before
    assert (entry["segments"][1:] == [None, None]) == (kind == "exact")
    reopened = open_store({"backend": "faiss", "images": entry}, tmp_path, "images", rows)
    every = np.concatenate([r.astype(np.float32) for r in rows])
    # each appended vector finds itself first, with its id after the earlier generations'
    s, i = reopened.search(every[3000:3407], 3)
    np.testing.assert_array_equal(i[:, 0], np.arange(3000, 3407))
    np.testing.assert_allclose(s[:, 0], np.einsum("nd,nd->n", every[3000:3407], every[3000:3407]), atol=1e-5)
    queries = unit(every[::97] + 0.2 * np.random.default_rng(4).standard_normal((len(every[::97]), 32)))
    s, i = reopened.search(queries, 10)
    ref_s, ref_i = exact_search(every, queries, 10)
    if kind == "exact":  # exact generations merge into exactly the one-array answer
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(s, ref_s, atol=1e-6)
    else:  # approximate candidates, exact scores of the stored rows
        np.testing.assert_allclose(s, np.take_along_axis(queries @ every.T, i, axis=1), atol=1e-5)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i.tolist(), ref_i.tolist())]) >= 0.9


def test_store_of_a_version_1_ivf_file_makes_its_codec_once(tmp_path):
    from visem.search.ann import VectorIndex

    x = clustered(3000, 16, seed=5)
    rows0 = rows_file(tmp_path, "e0.npy", x)
    index, _ = VectorIndex.build(rows0, kind="ivf", seed=0)
    index.save(tmp_path / "vectors.0.faiss")  # version 1 kept no codec
    entry = {"kind": "ivf", "codec": None, "segments": ["vectors.0.faiss"]}
    store = open_store({"backend": "faiss", "images": entry}, tmp_path, "images", [rows0])
    new = rows_file(tmp_path, "e1.npy", clustered(50, 16, seed=6))
    entry = store.append(new, 1)
    assert entry["codec"] == "vectors.codec.faiss" and (tmp_path / "vectors.codec.faiss").is_file()
    assert VectorIndex.load(tmp_path / "vectors.codec.faiss").ntotal == 0
    _, i = store.search(new.astype(np.float32), 1)
    np.testing.assert_array_equal(i[:, 0], np.arange(3000, 3050))


def _as_version_1(src, dst):
    """Rewrite a built (version 2, exact) index folder the way visem 0.1 before generations wrote it."""
    import faiss

    shutil.copytree(src, dst)
    m = json.loads((dst / "index.json").read_text())
    emb = np.load(dst / "embeddings.0.npy").astype(np.float32)
    np.save(dst / "embeddings.0.npy", emb)
    np.save(dst / "caption_embeddings.npy", np.load(dst / "caption_embeddings.npy").astype(np.float32))
    flat = faiss.IndexFlatIP(emb.shape[1])
    flat.add(emb)
    faiss.write_index(flat, str(dst / "vectors.0.faiss"))
    for key in ("generations", "vectors", "captions"):
        del m[key]
    m.update(version=1, files={"images": "images.0.json", "embeddings": "embeddings.0.npy",
                               "vectors": "vectors.0.faiss"})
    (dst / "index.json").write_text(json.dumps(m))


def test_version_1_index_opens_searches_and_grows_without_rewriting(tiny_index, tmp_path, draw_image):
    from visem.search import SearchIndex

    v1 = tmp_path / "v1"
    _as_version_1(tiny_index, v1)
    old = {p.name: p.read_bytes() for p in v1.iterdir() if p.name != "index.json"}
    idx = SearchIndex.open(v1)
    assert idx.info()["format_version"] == 1 and idx.n_images == 12
    assert idx.lexical is None and idx.raw is None  # a version-1 index had no sides: dense search
    now = SearchIndex.open(tiny_index)
    for q in ("a red circle", "a blue square"):
        assert [h.id for h in idx.search_text(q, k=5)] == [h.id for h in now.search_text(q, k=5, mode="dense")]
    new = tmp_path / "new"
    new.mkdir()
    draw_image(new / "small_square.png", "green", "square", size=70)
    assert idx.add_images(new)["added"] == 1
    m = json.loads((v1 / "index.json").read_text())
    assert m["version"] == 2 and [g["n"] for g in m["generations"]] == [12, 1] and "files" not in m
    assert {p.name: p.read_bytes() for p in v1.iterdir() if p.name in old} == old  # nothing rewritten
    again = SearchIndex.open(v1)
    hit = again.search_image(new / "small_square.png", k=1).images[0]
    assert hit.id == 12 and hit.name == "small_square.png"
