"""The real emoji table (needs `visem data fetch`) and its caption rules."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from visem.data import DataError, load
from visem.data.emoji import EMOJI_PACKAGES, EMOJI_STYLES, EmojiData, _captions, emoji_package_dir


def _emoji():
    fetched = all((emoji_package_dir(p) / ".visem-complete.json").is_file() for p in EMOJI_PACKAGES)
    if not fetched and os.environ.get("VISEM_OFFLINE_TESTS") == "1":
        pytest.skip("emoji npm packages not fetched and VISEM_OFFLINE_TESTS=1")
    return load("emoji")  # raises DataError (test failure) when not fetched


def test_table_counts_and_columns():
    data = _emoji()
    t = data.table
    assert {"concept", "emoji", "style", "image", "captions", "tags", "group", "subgroup", "label", "order"} <= set(t.columns)
    per_style = t.groupby("style").size()
    assert set(per_style.index) == set(EMOJI_STYLES)
    assert (per_style >= 1500).all()
    assert 90 <= len(data.class_names) <= 110
    assert t["subgroup"].nunique() == len(data.class_names)
    assert "component" not in set(t["group"])
    # labels index class_names
    assert [data.class_names[i] for i in t["label"][:50]] == t["subgroup"][:50].tolist()


def test_every_image_exists_and_is_64px():
    from PIL import Image

    data = _emoji()
    paths = data.image_paths
    missing = [p for p in paths if not Path(p).is_file()]
    assert not missing
    for p in paths[:: max(1, len(paths) // 20)]:
        with Image.open(p) as im:
            assert im.size == (64, 64)


def test_no_skin_tone_variants_and_unique_concepts_per_style():
    data = _emoji()
    t = data.table
    tones = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
    assert not t["concept"].apply(lambda c: any(x in c.split("-") for x in tones)).any()
    assert not t.duplicated(["concept", "style"]).any()


def test_captions_rules():
    data = _emoji()
    for caps in data.table["captions"]:
        assert 1 <= len(caps) <= 3
        assert all(c == c.lower() and c.strip() == c and c for c in caps)
        assert len(set(caps)) == len(caps)
    texts, rows = data.captions()
    assert len(texts) == rows.size == sum(len(c) for c in data.table["captions"])
    assert rows.max() == len(data) - 1


def test_style_split_and_images():
    data = _emoji()
    g = load("emoji", split="google")
    assert set(g.table["style"]) == {"google"} and len(g) < len(data)
    small = EmojiData(g.table.head(3), g.class_names)
    imgs = small.load_images()
    assert imgs.shape == (3, 64, 64, 3) and imgs.dtype == np.uint8
    assert small.load_images(size=32).shape == (3, 32, 32, 3)
    with pytest.raises(DataError, match="unknown split"):
        load("emoji", split="apple")


def test_caption_builder():
    assert _captions("grinning face", "GRINNING FACE", ["grinning"]) == ["grinning face", "grinning"]
    assert _captions("left-facing fist", "LEFT-FACING FIST", ["fist_left", "left-facing_fist"]) == [
        "left-facing fist",
        "fist left facing",
    ]
    assert _captions("thumbs up", "THUMBS UP SIGN", ["+1", "thumbsup"]) == ["thumbs up", "thumbs up sign", "+1 thumbsup"]
