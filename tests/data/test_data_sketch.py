"""The emoji-sketch data: the Symbola renderer (same bytes twice, pinned font hash) and the rendered table."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from visem.data import DataError, info, load
from visem.data.sketch import (SKETCH_PADDING, SKETCH_SIZE, STAMP, SYMBOLA_FONT, SYMBOLA_SHA256, check_font,
                               emoji_sketch_dir, prepare_emoji_sketch, render_glyph)

needs_font = pytest.mark.skipif(not SYMBOLA_FONT.is_file(), reason="fonts-symbola is not installed (make system)")


@needs_font
def test_renderer_gives_the_same_bytes_twice_and_a_fitted_centred_glyph():
    from PIL import Image

    for ch in ("\U0001F43C", "\u263A", "\u231A"):  # panda face, smiling face, watch
        a = render_glyph(SYMBOLA_FONT, ch)
        assert a == render_glyph(SYMBOLA_FONT, ch)
        im = np.asarray(Image.open(io.BytesIO(a)))
        assert im.shape == (SKETCH_SIZE, SKETCH_SIZE) and im.dtype == np.uint8
        ink = np.argwhere(im < 128)
        (top, left), (bottom, right) = ink.min(0), ink.max(0)
        # the glyph's longer side fills the box inside the padding, centred (within a pixel of rounding)
        assert max(bottom - top, right - left) + 1 >= SKETCH_SIZE - 2 * SKETCH_PADDING - 2
        assert min(top, left) >= SKETCH_PADDING - 1 and max(bottom, right) <= SKETCH_SIZE - SKETCH_PADDING
        assert abs((top + bottom) / 2 - (SKETCH_SIZE - 1) / 2) <= 1.5 or abs((left + right) / 2 - (SKETCH_SIZE - 1) / 2) <= 1.5
    assert render_glyph(SYMBOLA_FONT, "\U0001F43C") != render_glyph(SYMBOLA_FONT, "\u263A")


@needs_font
def test_a_font_with_another_hash_is_refused_and_nothing_is_written(tmp_path):
    bad = tmp_path / "Symbola_hint.ttf"
    bad.write_bytes(SYMBOLA_FONT.read_bytes() + b"\0")
    with pytest.raises(DataError, match="sha256 .* differs from the pinned"):
        check_font(bad)
    target = tmp_path / "out"
    with pytest.raises(DataError, match="sha256"):
        prepare_emoji_sketch(font=bad, target=target, limit=3)
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    with pytest.raises(DataError, match="file not found .*fonts-symbola"):
        check_font(tmp_path / "missing.ttf")
    assert check_font(SYMBOLA_FONT) == SYMBOLA_FONT


@needs_font
def test_prepare_renders_atomically_with_a_marker_and_is_idempotent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    path, created, n = prepare_emoji_sketch(target=a, limit=4)
    assert created and n == 4 and (a / STAMP).is_file()
    assert prepare_emoji_sketch(target=a, limit=4)[1] is False  # the marker says it is complete
    prepare_emoji_sketch(target=b, limit=4)
    files = sorted(p.name for p in a.glob("*.png"))
    assert len(files) == 4 and files == sorted(p.name for p in b.glob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # two renderings, same bytes
    (a / STAMP).unlink()  # an interrupted rendering (no marker) is done again
    assert prepare_emoji_sketch(target=a, limit=4)[1] is True
    shutil.rmtree(b)


def _sketches():
    if not (emoji_sketch_dir() / STAMP).is_file():
        pytest.fail(f"{emoji_sketch_dir()}: emoji sketches not rendered (run `visem data fetch`)")
    return load("emoji-sketch")


def test_rendered_table_lines_up_with_the_emoji_classes():
    sk = _sketches()
    assert 1100 <= len(sk) <= 1200  # 1,140 single-code-point concepts that Symbola draws
    assert sk.table["concept"].is_unique
    assert (sk.table["subgroup"] == [sk.class_names[i] for i in sk.labels]).all()
    assert set(sk.images["label"]) == set(sk.labels)  # the image modality covers exactly the sketch classes
    assert set(sk.images["style"]) == {"google", "twitter"}
    emoji = load("emoji")
    assert (emoji.table.loc[sk.images["row"], "image"].to_numpy() == sk.images["image"].to_numpy()).all()
    counts = sk.class_counts()
    assert counts["sketches"].sum() == len(sk) and counts["images"].sum() == len(sk.images)
    with pytest.raises(DataError, match="one split"):
        load("emoji-sketch", split="train")


def test_info_prints_concepts_classes_and_per_class_counts():
    _sketches()
    text = info("emoji-sketch").format()
    assert "sketches (concepts): 1140" in text
    assert "classes (subgroups with a sketch)" in text and "animal-mammal" in text
    assert SYMBOLA_SHA256 in text
