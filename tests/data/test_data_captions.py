"""Bring-your-own image + CSV/JSONL reader: bad rows are reported with line numbers and skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visem.data import DataError, info, load
from visem.data.captions import load_captions


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(p)


def test_csv_with_every_kind_of_problem(tmp_path):
    img = tmp_path / "imgs"
    _images(img, ["a.png", "b.png", "c.png", "sub/d.jpg", "lonely.png"])
    (img / "broken.png").write_bytes(b"not a png")
    (tmp_path / "ann.csv").write_text(
        "image,caption,tags,label\n"
        "a.png,A red square,red;square,shape\n"  # line 2
        "a.png,a second caption for a,,shape\n"  # 3
        "a.png,A red square,,shape\n"  # 4 duplicate
        "b.png,,blue,shape\n"  # 5 no caption but tags and label: an uncaptioned image, not a problem
        "missing.png,where is it,,\n"  # 6 missing image
        "c.png,too,many,fields,here\n"  # 7 malformed
        "broken.png,cannot open,,\n"  # 8 unreadable
        "sub/d.jpg,\"a caption, with a comma\",x|y,other\n"  # 9
        ",no image,,\n"  # 10 malformed (no image)
        "c.png,c caption,,animal\n"  # 11
        "c.png,c caption again,,plant\n"  # 12 label conflict (caption kept)
        "b.png,   ,,\n"  # 13 empty caption, nothing else on the row
    )
    d = load_captions(tmp_path / "ann.csv", images=img)
    r = d.report
    kinds = {i.kind: i for i in r.issues}
    assert r.counts() == {"duplicate": 1, "empty_caption": 1, "missing_image": 1, "malformed": 2, "unreadable": 1, "label_conflict": 1}
    assert kinds["duplicate"].line == 4 and kinds["empty_caption"].line == 13
    assert kinds["missing_image"].line == 6 and "missing.png" in kinds["missing_image"].message
    assert sorted(i.line for i in r.of("malformed")) == [7, 10]
    assert "broken.png" in kinds["unreadable"].message and kinds["unreadable"].line == 8
    assert kinds["label_conflict"].line == 12
    # images: listed ones that load, plus the unlisted lonely.png (uncaptioned)
    assert d.images == ["a.png", "b.png", "sub/d.jpg", "c.png", "lonely.png"]
    assert d.captions == ["A red square", "a second caption for a", "a caption, with a comma", "c caption", "c caption again"]
    assert d.caption_image.tolist() == [0, 0, 2, 3, 3]
    assert d.uncaptioned.tolist() == [1, 4]  # b (no caption) and lonely
    assert d.tags[0] == ["red", "square"] and d.tags[2] == ["x", "y"] and d.tags[1] == ["blue"]
    assert d.class_names == ["animal", "other", "shape"]
    assert d.labels.tolist() == [2, 2, 1, 0, -1]
    assert "skipped" in r.summary() and "ann.csv:4" in r.summary()


def test_jsonl_with_lists_and_bad_lines(tmp_path):
    _images(tmp_path, ["x.png", "y.png"])
    lines = [
        json.dumps({"image": "x.png", "caption": ["one", "two", "one"], "tags": ["t1"]}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"file": "y.png", "text": "why"}),
        "",
        json.dumps({"caption": "no image"}),
    ]
    (tmp_path / "ann.jsonl").write_text("\n".join(lines) + "\n")
    d = load("captions", path=tmp_path / "ann.jsonl", include_unlisted=False)
    assert d.images == ["x.png", "y.png"]
    assert d.captions == ["one", "two", "why"]
    assert d.labels is None
    assert sorted((i.kind, i.line) for i in d.report.issues) == [("duplicate", 1), ("malformed", 2), ("malformed", 3), ("malformed", 6)]
    assert "captions: 3" in info("captions", path=tmp_path / "ann.jsonl").format()


def test_fatal_problems_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nope.csv.*not found"):
        load_captions(tmp_path / "nope.csv")
    (tmp_path / "h.csv").write_text("filename,something\nx.png,y\n")
    with pytest.raises(DataError, match="h.csv.*caption column"):
        load_captions(tmp_path / "h.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="e.csv.*empty"):
        load_captions(tmp_path / "e.csv")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="a.txt.*format"):
        load_captions(tmp_path / "a.txt")
    (tmp_path / "ok.csv").write_text("image,caption\n")
    with pytest.raises(DataError, match="image folder not found"):
        load_captions(tmp_path / "ok.csv", images=tmp_path / "none")
    assert np.asarray(load_captions(tmp_path / "ok.csv").caption_image).size == 0
