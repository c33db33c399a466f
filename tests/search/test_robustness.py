"""Builds that never get stuck and options that are checked: one test per problem of the search issue."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat

import numpy as np
import pytest

from visem.cli import main
from visem.search import BuildOptions, SearchIndex, build_index
from visem.search.collection import load_collection
from visem.search.features import scan_images

FAST = dict(steps=3, batch_size=4, embed_dim=16)


def _collection(folder, captions=None):
    """A collection read as a build reads it (one scan of the files, features into the store)."""
    return load_collection(folder, captions, lambda paths: scan_images(paths, regions=False, crop=1.0, workers=0))


def _jpeg(path, truncate: bool = False) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(path, quality=90)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def test_truncated_jpeg_is_skipped_and_listed(tmp_path, tiny_index, draw_image):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    draw_image(folder / "a.png", "red", "circle")
    draw_image(folder / "b.png", "blue", "square")
    _jpeg(folder / "cut.jpg", truncate=True)
    with Image.open(folder / "cut.jpg") as im:
        im.verify()  # passes PIL's verify(): only decoding finds the truncation
    col = _collection(folder, None)
    assert col.names == ["a.png", "b.png"] and col.skipped == {"unreadable": 1}
    assert "cut.jpg" in col.problems[0] and "truncated" in col.problems[0]
    idx_dir = tmp_path / "index"
    shutil.copytree(tiny_index, idx_dir)
    new = tmp_path / "new"
    new.mkdir()
    _jpeg(new / "ok.jpg")
    _jpeg(new / "cut.jpg", truncate=True)
    rep = SearchIndex.open(idx_dir).add_images(new)  # index add goes on past it too
    assert rep["added"] == 1 and rep["skipped"] == {"unreadable": 1} and "cut.jpg" in rep["problems"][0]


def test_damaged_checkpoint_in_partial_is_discarded_and_training_restarted(tiny_collection, tmp_path, monkeypatch):
    import visem.search.vectors as vectors_mod

    folder, ann = tiny_collection
    out = tmp_path / "index"
    real = vectors_mod.build_store

    def crash(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(vectors_mod, "build_store", crash)  # killed after training, before the vector index
    with pytest.raises(RuntimeError, match="killed"):
        build_index(folder, ann, out, BuildOptions(**FAST))
    ckpt = out.with_name("index.partial") / "train" / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # a disk filled up mid-write, say
    monkeypatch.setattr(vectors_mod, "build_store", real)
    rep = build_index(folder, ann, out, BuildOptions(**FAST))
    assert any("damaged training checkpoint" in n and "restarted" in n for n in rep.notes)
    assert SearchIndex.open(out).n_images == 12


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps"), ("steps", -3, "steps"), ("crop", 0.0, "crop"), ("crop", 1.5, "crop"),
    ("embed_dim", 0, "embedding dimension"), ("lr", -1.0, "learning rate"), ("batch_size", 1, "batch size"),
    ("text_encoder", "bert", "text encoder"), ("image_encoder", "efficientnet-lite4", "image encoder"),
    ("fusion", {"kind": "weighted", "weight": -1}, "weight"),
])
def test_options_out_of_range_are_refused_before_anything_is_written(tiny_collection, tmp_path, field, value,
                                                                       message):
    folder, ann = tiny_collection
    with pytest.raises(ValueError, match=message):
        build_index(folder, ann, tmp_path / "x", BuildOptions(**{field: value}))
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps must be an integer >= 1 (--steps"),
    (["--steps", "-3"], "steps must be an integer >= 1 (--steps"),
    (["--crop", "0"], "crop (--crop) must be in (0, 1]"),
    (["--embed-dim", "0"], "embedding dimension (--embed-dim) must be an integer >= 1"),
    (["--fusion", "blend"], "--fusion must be"),
])
def test_cli_build_options_are_one_line_errors(tiny_collection, tmp_path, capsys, args, message):
    folder, ann = tiny_collection
    assert main(["index", "build", "--images", str(folder), "--captions", str(ann), "--out", str(tmp_path / "x"),
                 "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_port_checked_and_address_in_use_before_serving(tiny_index, capsys):
    assert main(["serve", str(tiny_index), "--port", "99999"]) == 2
    out, err = capsys.readouterr()
    assert "port must be an integer from 0 to 65535" in err and "serving" not in out
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert main(["serve", str(tiny_index), "--port", str(busy.getsockname()[1])]) == 2
    finally:
        busy.close()
    out, err = capsys.readouterr()
    assert "address in use" in err and "serving" not in out


def test_csv_unterminated_quote_is_reported_with_its_line_and_swallows_nothing(tmp_path, draw_image):
    from visem.data.captions import load_captions

    for name in ("a.png", "b.png", "c.png"):
        draw_image(tmp_path / name, "red", "circle", size=40 + len(name))
    ann = tmp_path / "c.csv"
    ann.write_text('image,caption\na.png,"a red circle\nb.png,a blue square\nc.png,"a ""quoted"" word"\n')
    ds = load_captions(ann, tmp_path, include_unlisted=False)
    assert ds.captions == ["a blue square", 'a "quoted" word']
    (issue,) = ds.report.issues
    assert issue.kind == "malformed" and issue.line == 2 and "unterminated quote" in issue.message


def test_jsonl_caption_that_is_not_text_is_a_malformed_row(tmp_path, draw_image):
    from visem.data.captions import load_captions

    draw_image(tmp_path / "a.png", "red", "circle")
    ann = tmp_path / "c.jsonl"
    ann.write_text('{"image": "a.png", "caption": 5}\n{"image": "a.png", "caption": {"text": "x"}}\n'
                   '{"image": "a.png", "caption": ["ok", 3]}\n{"image": "a.png", "caption": "a red circle"}\n')
    ds = load_captions(ann, tmp_path)
    assert ds.captions == ["a red circle"]
    assert [(i.kind, i.line) for i in ds.report.issues] == [("malformed", 1), ("malformed", 2), ("malformed", 3)]
    assert "caption must be a string or a list of strings, got int 5" in ds.report.issues[0].message


def test_problem_lists_end_with_and_n_more(tmp_path, draw_image):
    draw_image(tmp_path / "a.png", "red", "circle")
    for i in range(25):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"not a png")
    col = _collection(tmp_path, None)
    assert col.skipped == {"unreadable": 25}
    assert len(col.problems) == 21 and col.problems[-1] == "... and 5 more"


def test_symlinks_and_absolute_paths_outside_the_folder_are_refused(tmp_path, draw_image):
    folder, outside = tmp_path / "imgs", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    draw_image(folder / "a.png", "red", "circle")
    draw_image(folder / "b.png", "blue", "square")
    draw_image(outside / "secret.png", "green", "triangle")
    (folder / "link.png").symlink_to(outside / "secret.png")
    ann = folder / "c.csv"
    ann.write_text(f"image,caption\na.png,a red circle\n{outside / 'secret.png'},a green triangle\n"
                   "link.png,a linked triangle\n")
    col = _collection(folder, ann)
    assert col.names == ["a.png", "b.png"] and col.skipped == {"outside_folder": 2}
    assert all("outside the image folder" in p for p in col.problems)
    assert col.captions == ["a red circle"]
    assert not any(str(outside) in n for n in col.names)  # no absolute path leaks into a name


def test_files_are_created_with_the_users_umask(tmp_path, tiny_index):
    from visem.io import atomic_path, atomic_write_json, file_mode

    mode = file_mode()
    for p in tiny_index.iterdir():  # weights, embeddings, the faiss file, vocab.json: all alike
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == mode, p.name
    old = os.umask(0o027)
    try:
        file_mode.cache_clear()
        atomic_write_json(tmp_path / "x.json", {"a": 1})
        with atomic_path(tmp_path / "y.bin") as tmp:
            tmp.write_bytes(b"1")
        assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640
        assert stat.S_IMODE((tmp_path / "y.bin").stat().st_mode) == 0o640
    finally:
        os.umask(old)
        file_mode.cache_clear()


def test_unicode_captions_count_and_wordless_ones_are_reported(tmp_path, draw_image):
    from visem.features.tokenize import tokenize

    for name in ("a.png", "b.png", "c.png"):
        draw_image(tmp_path / name, "red", "circle", size=40 + ord(name[0]))
    ann = tmp_path / "c.csv"
    ann.write_text("image,caption\na.png,Красное сердце\nb.png,café crème\nc.png,!!! ???\n", encoding="utf-8")
    col = _collection(tmp_path, ann)
    assert col.captions == ["Красное сердце", "café crème"]  # counted as captions, not emptied
    assert tokenize(col.captions[0]) == ["красное", "сердце"] and tokenize(col.captions[1]) == ["café", "crème"]
    assert len(col.notes) == 1 and "1 caption(s) with no usable word ('!!! ???')" in col.notes[0]
    assert len(set(col.caption_image.tolist())) == 2  # c.png is not counted as captioned


def test_build_prints_what_it_chose_and_why(tiny_collection, tmp_path, capsys):
    folder, ann = tiny_collection
    assert main(["index", "build", "--images", str(folder), "--captions", str(ann), "--out", str(tmp_path / "i"),
                 "--quiet", "--steps", "3", "--batch-size", "4", "--embed-dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "chose: a3vse with the minilm text tower and efficientnet-lite0, fusion weighted" in out
    assert "(default: 9 captioned images, fewer than the 50 needed" in out
    manifest = json.loads((tmp_path / "i" / "index.json").read_text())
    assert manifest["report"]["choice"]["how"] == "default"
