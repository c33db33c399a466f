"""Search index: build on a tiny drawn collection, search, add, evaluate, bad input, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from visem.search import BuildOptions, QueryError, SearchIndex, build_index
from visem.search.collection import pseudo_captions
from visem.search.methods import choose_method
from visem.search.types import MAX_K, MAX_QUERY_CHARS, IndexFileError

TINY_OPTIONS = dict(steps=400, batch_size=8, embed_dim=32, lr=5e-4, model={"disc_hidden": 32, "heads": 2})


@pytest.fixture(scope="module")
def index(tiny_index) -> SearchIndex:
    return SearchIndex.open(tiny_index)


def test_build_report_and_files(tiny_index, index):
    rep = index.manifest["report"]
    assert rep["method"] == "a3vse" and "uncaptioned" in rep["reason"]
    assert (rep["n_images"], rep["n_captioned"], rep["n_captions"], rep["n_pseudo"]) == (12, 9, 9, 3)
    assert rep["pseudo_source"] == "tags for 12" and rep["skipped"] == {}
    assert rep["ann"]["kind"] == "exact" and rep["ann"]["n"] == 12
    files = {p.name for p in tiny_index.iterdir()}
    assert {"index.json", "model.safetensors", "model.yaml", "vocab.json", "captions.json", "lexical.0.json",
            "raw.0.npy", "caption_embeddings.npy", "images.0.json", "embeddings.0.npy"} <= files
    assert not any(f.endswith(".faiss") for f in files)  # exact search reads the embeddings themselves
    # nine captioned images: too few to hold some out, so the documented defaults (and the report says so)
    from visem.search.choose import DEFAULT_TEXT_ENCODER
    from visem.search.lexical import DEFAULT_FUSION

    assert rep["choice"]["how"] == "default" and "fewer than the 50" in rep["choice"]["why"]
    assert rep["choice"]["text_encoder"] == DEFAULT_TEXT_ENCODER and rep["choice"]["fusion"] == DEFAULT_FUSION
    assert index.fusion == DEFAULT_FUSION and index.lexical.n == 12
    assert not tiny_index.with_name(tiny_index.name + ".partial").exists()
    assert index.n_images == 12 and index.embeddings.shape == (12, index.manifest["dim"])
    assert index.embeddings.dtype == np.float16 and isinstance(index.embeddings, np.memmap)
    # float16 storage: unit norm to its precision (a relative step of 2**-11 per component)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings.astype(np.float64), axis=1), 1.0, atol=2e-3)


def test_each_caption_finds_its_own_image_first(index, tiny_items):
    captioned = [(name, cap) for name, _, _, cap in tiny_items if cap is not None]
    for name, cap in captioned:
        hits = index.search_text(cap, k=3)
        assert hits[0].name == name, (cap, [h.name for h in hits])
        assert hits[0].caption == cap and hits[0].score >= hits[1].score >= hits[2].score


def test_search_results_match_brute_force(index, naive_bm25):
    from visem.features.tokenize import tokenize

    q = index.embed_query("a green circle")
    hits = index.search_text("a green circle", k=MAX_K, mode="dense")
    assert len(hits) == 12  # k larger than the collection: everything, ranked
    brute = index.embeddings @ q
    assert [h.id for h in hits] == np.argsort(-brute, kind="stable").tolist()
    np.testing.assert_allclose([h.score for h in hits], np.sort(brute)[::-1], atol=1e-5)
    # the index's fusion: dense + w * BM25 / best BM25, with BM25 from a naive loop over the documents
    w = index.fusion["weight"]
    bm = naive_bm25(index.lexical.documents, tokenize("a green circle"))
    fused = brute + w * bm / bm.max()
    hybrid = index.search_text("a green circle", k=MAX_K)
    assert [h.id for h in hybrid] == np.lexsort((np.arange(12), -fused)).tolist()
    np.testing.assert_allclose([h.score for h in hybrid], np.sort(fused)[::-1], atol=1e-5)
    assert hybrid[0].name == "green_circle.png"


def test_open_vocabulary_and_bad_queries_rejected(index):
    ex = index.explain_query("a Pink circle guitar 猫")
    assert ex["used"] == ["a", "pink", "circle", "guitar"]  # MiniLM spells any word; no caption said pink
    assert ex["matched"] == ["a", "circle"] and ex["unknown"] == ["猫"]  # MiniLM's [UNK], in no document
    assert index.search_text("guitar", k=3, mode="dense")  # a word no caption or tag holds is still a query
    with pytest.raises(QueryError, match="empty"):
        index.search_text("   ")
    with pytest.raises(QueryError, match="too long"):
        index.search_text("circle " * (MAX_QUERY_CHARS // 7 + 1))
    with pytest.raises(QueryError, match="no word"):
        index.search_text("!!! ???")
    for k in (0, MAX_K + 1, True, 2.5):
        with pytest.raises(QueryError, match="k must be"):
            index.search_text("circle", k=k)


def test_gru_tower_ignores_and_lists_words_outside_its_vocabulary(tiny_collection, tmp_path):
    folder, ann = tiny_collection
    rep = build_index(folder, ann, tmp_path / "gru", BuildOptions(steps=5, batch_size=4, embed_dim=16,
                                                                   text_encoder="gru"))
    assert rep.choice["how"] == "default" and rep.choice["text_encoder"] == "gru"
    idx = SearchIndex.open(tmp_path / "gru")
    ex = idx.explain_query("a Pink circle xqzzyv")
    assert ex["used"] == ["a", "circle"] and ex["unknown"] == ["pink", "xqzzyv"]
    np.testing.assert_allclose(idx.embed_query("a pink circle xqzzyv"), idx.embed_query("a circle"), atol=1e-6)
    with pytest.raises(QueryError, match="no word"):
        idx.search_text("xqzzyv qqqwwv")


def test_image_queries(index, tiny_collection):
    folder, _ = tiny_collection
    res = index.search_image(folder / "red_circle.png", k=3)
    # the index ranks images by learned + raw cosine (visem.search.image_space): the image itself scores 2
    assert res.images[0].name == "red_circle.png" and res.images[0].score == pytest.approx(2.0, abs=1e-3)
    assert len(res.captions) == 3 and res.captions[0].caption in index._captions
    same = index.search_image((folder / "red_circle.png").read_bytes(), k=3)
    assert [h.id for h in same.images] == [h.id for h in res.images]
    i = index._names.index("blue_square.png")
    sim = index.similar(i, k=4)
    assert i not in [h.id for h in sim.images] and len(sim.images) == 4
    vec = index.embeddings[i].astype(np.float32)
    raw = np.asarray(index.raw, dtype=np.float32)
    brute = index.embeddings @ vec + raw @ raw[i]  # learned + raw cosine (visem.search.image_space)
    brute[i] = -np.inf
    assert [h.id for h in sim.images] == np.argsort(-brute, kind="stable")[:4].tolist()
    np.testing.assert_allclose([h.score for h in sim.images], np.sort(brute)[::-1][:4], atol=1e-3)
    # image to caption goes through the captions' vector store: the same ranking as brute force
    cap_scores = index.caption_embeddings.astype(np.float32) @ vec
    assert [index._captions.index(c.caption) for c in sim.captions] == np.argsort(-cap_scores, kind="stable")[:4].tolist()
    np.testing.assert_allclose([c.score for c in sim.captions], np.sort(cap_scores)[::-1][:4], atol=1e-5)
    with pytest.raises(QueryError, match="not a readable image"):
        index.search_image(b"definitely not an image")
    with pytest.raises(KeyError):
        index.similar(12)


def test_image_file_stays_inside_the_indexed_folder(tiny_index, tiny_collection, tmp_path):
    folder, _ = tiny_collection
    idx_copy, img_copy = tmp_path / "index", tmp_path / "images"
    shutil.copytree(tiny_index, idx_copy)
    shutil.copytree(folder, img_copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (img_copy / "red_circle.png").unlink()
    (img_copy / "red_circle.png").symlink_to(secret)
    (img_copy / "blue_square.png").unlink()
    manifest = json.loads((idx_copy / "index.json").read_text())
    manifest["roots"] = [str(img_copy)]
    (idx_copy / "index.json").write_text(json.dumps(manifest))
    idx = SearchIndex.open(idx_copy)
    assert idx.image_file(idx._names.index("green_triangle.png")) == (img_copy / "green_triangle.png").resolve()
    with pytest.raises(KeyError, match="outside"):
        idx.image_file(idx._names.index("red_circle.png"))
    with pytest.raises(FileNotFoundError):
        idx.image_file(idx._names.index("blue_square.png"))
    for bad in (-1, 12, "0", None):
        with pytest.raises(KeyError):
            idx.image_file(bad)


def test_add_images_then_search_them(tiny_index, tiny_collection, tmp_path, draw_image):
    idx_dir = tmp_path / "index"
    shutil.copytree(tiny_index, idx_dir)
    new = tmp_path / "new"
    new.mkdir()
    draw_image(new / "purple_circle.png", "red", "circle", size=80)  # new bytes (other size)
    draw_image(new / "tiny_square.png", "blue", "square", size=64)
    shutil.copyfile(tiny_collection[0] / "green_circle.png", new / "again.png")  # already indexed (same bytes)
    (new / "broken.png").write_bytes(b"\x89PNG but not really")
    idx = SearchIndex.open(idx_dir)
    rep = idx.add_images(new)
    assert rep["added"] == 2 and rep["already_indexed"] == 1 and rep["skipped"] == {"unreadable": 1}
    assert rep["n_images"] == 14 and idx.n_images == 14
    assert idx.manifest["generation"] == 1 and len(idx.roots) == 2
    # the new generation holds only the new images; generation 0's files are untouched
    assert np.load(idx_dir / "embeddings.1.npy").shape == (2, idx.manifest["dim"])
    assert (idx_dir / "embeddings.0.npy").read_bytes() == (tiny_index / "embeddings.0.npy").read_bytes()
    assert (idx_dir / "images.0.json").read_bytes() == (tiny_index / "images.0.json").read_bytes()
    # so do its sides: the new images' lexical documents and raw features, generation 0's untouched
    assert np.load(idx_dir / "raw.1.npy").shape == (2, 1280) and idx.lexical.n == 14
    assert len(json.loads((idx_dir / "lexical.1.json").read_text())["documents"]) == 2
    for f in ("raw.0.npy", "lexical.0.json"):
        assert (idx_dir / f).read_bytes() == (tiny_index / f).read_bytes()
    reopened = SearchIndex.open(idx_dir)
    hit = reopened.search_image(new / "tiny_square.png", k=1).images[0]
    assert hit.name == "tiny_square.png" and hit.score == pytest.approx(2.0, abs=1e-3)
    assert reopened.raw.shape == (14, 1280)  # the added images' raw features joined the image-to-image side
    assert reopened.image_file(hit.id) == (new / "tiny_square.png").resolve()
    assert idx.add_images(new)["added"] == 0  # idempotent


def test_evaluate_held_out_and_training_captions(tiny_index, tiny_collection, tmp_path):
    folder, ann = tiny_collection
    idx = SearchIndex.open(tiny_index)
    held = tmp_path / "held.csv"
    held.write_text("image,caption\nblue_circle.png,a blue circle\ngreen_square.png,a green square\n"
                    "yellow_triangle.png,a yellow triangle\nyellow_triangle.png,a triangle in yellow\n")
    res = idx.evaluate(held, folder)
    assert (res["n_images"], res["n_captions"], res["in_index"], res["overlap"]) == (3, 4, 3, 0)
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r10", "rsum"):
        assert 0.0 <= res[key] <= (600.0 if key == "rsum" else 100.0)
    assert res["i2t_r5"] == 100.0 and res["t2i_r5"] == 100.0  # 3 images: any rank is within 5
    train = idx.evaluate(ann, folder)  # the training pairs: flagged, and memorised
    assert train["overlap"] == 9 and train["t2i_r1"] == 100.0


def test_method_choice_and_errors(tiny_collection, tmp_path):
    assert choose_method(10, 0, False)[0] == "vsepp"
    assert choose_method(3, 7, False)[0] == "a3vse"
    assert choose_method(0, 7, False)[0] == "vsepp" and "pseudo" in choose_method(0, 7, False)[1]
    assert choose_method(3, 7, True)[0] == "vsa-ae-mmd"
    folder, ann = tiny_collection
    with pytest.raises(ValueError, match="no single-vector"):
        build_index(folder, ann, tmp_path / "x", BuildOptions(method="scan-xattn"))
    with pytest.raises(ValueError, match="unknown method"):
        build_index(folder, ann, tmp_path / "x", BuildOptions(method="nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable image"):
        build_index(empty, None, tmp_path / "y")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already there"):
        build_index(folder, ann, tmp_path / "taken")
    for p in (tmp_path / "x", tmp_path / "y"):
        assert not p.exists() and not p.with_name(p.name + ".partial").exists()


def test_open_errors_name_the_file(tmp_path, tiny_index):
    with pytest.raises(IndexFileError, match="no index folder"):
        SearchIndex.open(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(IndexFileError, match="index.json"):
        SearchIndex.open(tmp_path / "plain")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_index, broken)
    (broken / "embeddings.0.npy").unlink()
    with pytest.raises(IndexFileError, match="embeddings.0.npy"):
        SearchIndex.open(broken)


def test_bad_rows_are_reported_and_skipped(tmp_path, tiny_items, draw_image):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, colour, shape, _ in tiny_items[:4]:
        draw_image(folder / name, colour, shape)
    shutil.copyfile(folder / "red_circle.png", folder / "copy_of_red.png")
    (folder / "notes.png").write_text("not an image")
    ann = folder / "c.csv"
    ann.write_text("image,caption\nred_circle.png,a red circle\nblue_square.png,a blue square\n"
                   "missing.png,gone\nnotes.png,bad file\nblue_square.png,\nonly,three,fields,here\n"
                   "green_triangle.png,a green triangle\ncopy_of_red.png,a red disc\n")
    rep = build_index(folder, ann, tmp_path / "idx", BuildOptions(steps=5, batch_size=4, embed_dim=16))
    assert rep.n_images == 4 and rep.method == "a3vse"  # yellow_circle is uncaptioned
    assert rep.skipped["missing_image"] == 1 and rep.skipped["unreadable"] == 1
    assert rep.skipped["duplicate_image"] == 1 and rep.skipped["malformed"] == 1
    assert "empty_caption" not in rep.skipped  # blue_square.png is kept (it has a caption): a note, not a skip
    assert rep.notes == ["1 row(s) with an empty caption: their images kept, uncaptioned"]
    assert any("copy_of_red.png" in p for p in rep.problems)
    idx = SearchIndex.open(tmp_path / "idx")
    red = idx._names.index("red_circle.png")
    assert set(idx.captions_of(red)) == {"a red circle", "a red disc"}  # the duplicate's caption merged


def test_interrupted_build_resumes_to_the_same_index(tiny_collection, tiny_index, tmp_path, monkeypatch):
    import visem.search.vectors as vectors_mod

    folder, ann = tiny_collection
    out = tmp_path / "index"
    real = vectors_mod.build_store

    def crash(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(vectors_mod, "build_store", crash)
    with pytest.raises(RuntimeError, match="killed"):
        build_index(folder, ann, out, BuildOptions(**TINY_OPTIONS))
    partial = out.with_name("index.partial")
    assert not out.exists() and any((partial / "train").iterdir())
    monkeypatch.setattr(vectors_mod, "build_store", real)
    build_index(folder, ann, out, BuildOptions(**TINY_OPTIONS))
    assert not partial.exists()
    np.testing.assert_array_equal(np.load(out / "embeddings.0.npy"), np.load(tiny_index / "embeddings.0.npy"))


def test_stale_partial_of_other_options_is_discarded(tiny_collection, tmp_path):
    folder, ann = tiny_collection
    out = tmp_path / "index"
    partial = out.with_name("index.partial")
    (partial / "train").mkdir(parents=True)
    (partial / "build.json").write_text(json.dumps({"fingerprint": "other"}))
    (partial / "train" / "junk").write_text("x")
    build_index(folder, ann, out, BuildOptions(steps=3, batch_size=4, embed_dim=16))
    assert not partial.exists() and SearchIndex.open(out).n_images == 12


def test_pseudo_captions_from_tags_else_imagenet_classes(tiny_collection):
    from visem.data.imagenet import imagenet_classes
    from visem.features.image import extract_image_features

    folder, _ = tiny_collection
    pooled = extract_image_features([folder / "red_circle.png", folder / "blue_square.png"], "pooled")
    caps, note = pseudo_captions([["red", "circle"], []], pooled)
    assert caps[0] == "red circle" and note == "tags for 1, ImageNet classes for 1"
    first_names = {c.split(",")[0].strip() for c in imagenet_classes()}
    words = caps[1]
    assert words and any(words.startswith(n) for n in first_names)


def test_cli_info_search_and_bad_backend_options(tiny_index, tiny_collection, tmp_path, capsys):
    from visem.cli import main

    assert main(["index", "info", str(tiny_index)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ann"]["kind"] == "exact" and info["ann"]["backend"] == "faiss" and info["generations"] == 1
    assert main(["search", str(tiny_index), "a red circle", "--json", "-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["name"] == "red_circle.png"
    folder, ann = tiny_collection
    code = main(["index", "build", "--images", str(folder), "--captions", str(ann), "--out", str(tmp_path / "x"),
                 "--backend", "milvus", "--index-type", "ivf", "--quiet"])
    assert code == 2 and "picks its own" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_training_length_is_proportional_to_the_collection_with_no_cap(tiny_collection, tmp_path):
    from visem.search.training import default_steps

    assert default_steps(100, 64) == 300  # small collections: the floor
    assert default_steps(1_000_000, 64) == 234_375  # 15 passes, no 2,000-step cap
    assert default_steps(1_000_000, 64, epochs=0.5) == 7_813  # ceil(0.5 * 1e6 / 64)
    assert default_steps(10, 64, epochs=1) == 1  # an explicit length has no floor
    folder, ann = tiny_collection
    for opts, msg in ((BuildOptions(steps=10, epochs=2.0), "not both"), (BuildOptions(epochs=0.0), "epochs must be"),
                      (BuildOptions(steps=0), "steps must be")):
        with pytest.raises(ValueError, match=msg):
            build_index(folder, ann, tmp_path / "z", opts)
    assert not (tmp_path / "z").exists()
