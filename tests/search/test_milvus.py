"""The Milvus backend, on Milvus Lite (embedded): the vector-store interface, and an index built, searched and grown."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from visem.search.ann import exact_search  # noqa: E402
from visem.search.folder import open_rows, write_embeddings  # noqa: E402
from visem.search.vectors import StoreOptions, build_store, open_store  # noqa: E402


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_milvus_store_searches_exactly_appends_and_hides_uncommitted_ids(tmp_path):
    from visem.search.milvus import MilvusStore

    rng = np.random.default_rng(0)
    x0, x1 = unit(rng.standard_normal((300, 16))), unit(rng.standard_normal((20, 16)))
    for name, x in (("e0.npy", x0), ("e1.npy", x1)):
        write_embeddings(tmp_path / name, x, len(x), 16)
    r0, r1 = open_rows(tmp_path / "e0.npy"), open_rows(tmp_path / "e1.npy")
    entry, report = build_store(StoreOptions(backend="milvus"), tmp_path, "images", r0)
    assert report["backend"] == "milvus" and entry["uri"] == "milvus.db" and (tmp_path / "milvus.db").exists()
    store = open_store({"backend": "milvus", "images": entry}, tmp_path, "images", [r0])
    try:
        assert isinstance(store, MilvusStore) and store.ntotal == 300
        q = unit(rng.standard_normal((7, 16)))
        s, i = store.search(q, 5)
        ref_s, ref_i = exact_search(r0, q, 5)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(s, ref_s, atol=1e-5)
        store.append(r1, 1)
        s, i = store.search(r1.astype(np.float32), 1)
        np.testing.assert_array_equal(i[:, 0], np.arange(300, 320))
        # vectors written by an add that never committed (ids past ntotal) are not searched
        store._client.upsert(store.collection, [{"id": 999, "vector": r1[0].astype(np.float32).tolist()}])
        store._client.flush(store.collection)
        s, i = store.search(r1[:1].astype(np.float32), 2)
        assert 999 not in i and i[0, 0] == 300
    finally:
        store.close()


def test_index_built_searched_and_grown_through_milvus(tiny_collection, tmp_path, draw_image):
    from visem.search import BuildOptions, SearchIndex, build_index

    folder, ann = tiny_collection
    rep = build_index(folder, ann, tmp_path / "index",
                      BuildOptions(steps=3, batch_size=4, embed_dim=16, backend="milvus",
                                   model={"disc_hidden": 16, "heads": 2}))
    assert rep.ann["backend"] == "milvus" and (tmp_path / "index" / "milvus.db").exists()
    idx = SearchIndex.open(tmp_path / "index")
    try:
        assert idx.info()["ann"]["backend"] == "milvus"
        q = idx.embed_query("a red circle")
        hits = idx.search_text("a red circle", k=12, mode="dense")  # the dense side alone: the store's ranking
        brute = idx.embeddings.astype(np.float32) @ q
        assert [h.id for h in hits] == np.argsort(-brute, kind="stable").tolist()
        fused = idx.search_text("a red circle", k=3)  # the index's fusion, its dense candidates from Milvus
        assert len(fused) == 3 and fused[0].score >= fused[-1].score
        sim = idx.similar(0, k=3)  # images and captions both through Milvus
        assert 0 not in [h.id for h in sim.images] and len(sim.captions) == 3
        new = tmp_path / "new"
        new.mkdir()
        draw_image(new / "wide_circle.png", "blue", "circle", size=72)
        assert idx.add_images(new)["added"] == 1
    finally:
        idx.close()
    again = SearchIndex.open(tmp_path / "index")
    try:
        hit = again.search_image(new / "wide_circle.png", k=1).images[0]
        assert (hit.id, hit.name) == (12, "wide_circle.png")
    finally:
        again.close()
