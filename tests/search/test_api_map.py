"""visem.load (the one-line API), the index map, reloading a served index, the upload pixel limit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


def test_load_an_index_encode_and_search(tiny_index, tiny_collection):
    import visem
    from visem.search import SearchIndex

    folder, _ = tiny_collection
    m = visem.load(tiny_index, progress=False)
    idx = SearchIndex.open(tiny_index)
    paths = [folder / "red_circle.png", folder / "blue_square.png", folder / "green_triangle.png"]
    img = m.encode_image(paths, batch_size=2)  # two batches
    assert img.shape == (3, m.dim) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    ids = [idx._names.index(p.name) for p in paths]
    # the index's own preprocessing and model (its embeddings are stored as float16: 2**-11 relative)
    np.testing.assert_allclose(img, idx.embeddings[ids], atol=1e-3)
    from PIL import Image

    with Image.open(paths[0]) as im:
        np.testing.assert_allclose(m.encode_image(im.copy()), img[:1], atol=1e-4)
        np.testing.assert_allclose(m.encode_image(np.asarray(im.convert("RGB"))), img[:1], atol=1e-4)
    txt = m.encode_text(["a red circle", "a blue square"])
    assert txt.shape == (2, m.dim)
    np.testing.assert_allclose(txt[0], idx.embed_query("a red circle"), atol=1e-5)
    hits = m.search("a red circle", k=3)
    image, score, captions = hits[0]
    assert image.endswith("red_circle.png") and captions == ["a red circle"] and score == hits[0].score
    assert [h.score for h in hits] == [h.score for h in idx.search_text("a red circle", k=3)]


def test_load_a_training_run(tmp_path):
    import visem
    from visem.cli import main

    assert main(["train", "--synthetic", "--out", str(tmp_path / "run"), "--set", "train.steps=5"]) == 0
    m = visem.load(tmp_path / "run")
    assert m.kind == "run"
    feats = np.random.default_rng(0).normal(size=(4, m.model.config.image_dim)).astype(np.float32)
    emb = m.encode_image(feats)
    assert emb.shape[0] == 4
    with pytest.raises(ValueError, match="search needs an index"):
        m.search("x")
    with pytest.raises(ValueError, match="text features"):
        m.encode_text(["a red circle"])


def test_load_refuses_other_folders(tmp_path):
    import visem
    from visem.search import IndexFileError

    with pytest.raises(IndexFileError, match="neither a visem index"):
        visem.load(tmp_path)


def test_project_2d_methods():
    from visem.search.map import project_2d

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (40, 8)) + 3, rng.normal(0, 0.1, (40, 8)) - 3])
    for method in ("pca", "tsne"):
        xy, used = project_2d(x, method)
        assert used == method and xy.shape == (80, 2) and xy.min() >= 0 and xy.max() <= 1
        a, b = xy[:40].mean(0), xy[40:].mean(0)  # the two clusters stay apart
        assert np.linalg.norm(a - b) > 3 * max(xy[:40].std(0).max(), xy[40:].std(0).max())
    assert project_2d(x[:10])[1] == "pca"  # too few points for a neighbour graph


def test_index_map_command_writes_an_image(tiny_index, tmp_path, capsys):
    from PIL import Image

    from visem.cli import main

    out = tmp_path / "map.png"
    assert main(["index", "map", str(tiny_index), "--out", str(out), "--thumbnails", "5"]) == 0
    assert "map of 12 images and 9 captions (pca)" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 300


def test_server_picks_up_index_add(tiny_index, tmp_path, draw_image):
    from fastapi.testclient import TestClient

    from visem.search import SearchIndex
    from visem.search.server import create_app

    idx_dir = tmp_path / "index"
    shutil.copytree(tiny_index, idx_dir)
    with TestClient(create_app(SearchIndex.open(idx_dir), reload_every=0.0)) as c:
        assert c.get("/api/info").json()["n_images"] == 12
        new = tmp_path / "new"
        new.mkdir()
        draw_image(new / "big_red_circle.png", "red", "circle", size=120)
        SearchIndex.open(idx_dir).add_images(new)  # another process's `visem index add`
        assert c.get("/api/info").json()["n_images"] == 13
        assert c.get("/api/images/12").status_code == 200
        r = c.get("/api/similar/12", params={"k": 3})
        assert r.status_code == 200 and r.json()["query_id"] == 12


def test_upload_pixel_limit_is_checked_before_decoding(tiny_index):
    import io

    from PIL import Image

    from visem.search import QueryError, SearchIndex
    from visem.search.upload import open_query_image

    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), "white").save(buf, format="PNG")
    with pytest.raises(QueryError, match="3000 x 2000 pixels, more than the 1,000,000"):
        open_query_image(buf.getvalue(), max_pixels=1_000_000)
    jpg = io.BytesIO()
    Image.new("RGB", (2400, 1600), "red").save(jpg, format="JPEG")
    im = open_query_image(jpg.getvalue(), target=224)
    assert im.size == (600, 400)  # decoded at 1/4 scale: the smallest with both sides at least 224
    idx = SearchIndex.open(tiny_index)
    with pytest.raises(QueryError, match="not a readable image"):
        idx.search_image(b"\x89PNG\r\n\x1a\n not really")


def test_tensorboard_logging_beside_the_csv(tmp_path):
    from visem.cli import main
    from visem.train.tensorboard import available

    if not available():
        pytest.skip("tensorboard (the optional extra) is not installed")
    assert main(["train", "--synthetic", "--out", str(tmp_path / "run"), "--set", "train.steps=20",
                 "--set", "train.log_every=10"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert "loss" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("loss")] == [10, 20]


def test_eval_plot_writes_recall_curves(tmp_path, capsys):
    from visem.cli import main

    assert main(["train", "--synthetic", "--out", str(tmp_path / "run"), "--set", "train.steps=5"]) == 0
    assert main(["eval", str(tmp_path / "run"), "--plot"]) == 0
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert "curves written to" in capsys.readouterr().out


def test_recall_and_pr_curves_against_the_metrics():
    import torch

    from visem.metrics import retrieval_recall
    from visem.train.curves import RECALL_LEVELS, pr_curve, recall_curve

    rng = np.random.default_rng(0)
    img = torch.as_tensor(rng.normal(size=(30, 6)))
    txt = img.repeat_interleave(2, 0) + 0.8 * torch.as_tensor(rng.normal(size=(60, 6)))
    t2i = torch.arange(30).repeat_interleave(2)
    c = recall_curve(img, txt, t2i)
    m = retrieval_recall(img, txt, t2i, ks=(1, 5, 10))
    assert c["i2t"][0] == m["i2t_r1"] and c["t2i"][4] == m["t2i_r5"] and c["t2i"][9] == m["t2i_r10"]
    assert np.all(np.diff(c["t2i"]) >= 0) and c["t2i"][-1] == 100.0  # K = 30 = the gallery
    # PR: a perfect ranking has precision 1 at every recall; known answer for one query
    lab = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(pr_curve(np.eye(4)[:1] + np.eye(4)[1:2], np.eye(4), lab[:1], lab), 1.0)
    # query 0 ranks items [0 (rel), 2, 1 (rel), 3]: precision 1 up to recall 0.5, then 2/3
    q = np.array([[3.0, 1.0, 2.0, 0.0]])
    pr = pr_curve(q, np.eye(4), np.array([0]), lab)
    np.testing.assert_allclose(pr[RECALL_LEVELS <= 0.5], 1.0)
    np.testing.assert_allclose(pr[RECALL_LEVELS > 0.5], 2 / 3)
