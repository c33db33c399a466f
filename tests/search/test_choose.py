"""Choosing the text tower and the fusion on held-out captions (visem.search.choose)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from visem.search import BuildOptions, SearchIndex, build_index
from visem.search.lexical import FUSION_GRID

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def sixty(tmp_path_factory, draw_image):
    """72 distinct images (4 colours x 3 shapes x 6 sizes): 60 captioned, 12 with tags only."""
    folder = tmp_path_factory.mktemp("sixty") / "images"
    folder.mkdir()
    rows = []
    for c in COLOURS:
        for s in SHAPES:
            for size in (44, 52, 60, 68, 76, 100):
                name = f"{c}_{s}_{size}.png"
                draw_image(folder / name, c, s, size=size)
                caption = "" if size == 100 else f"a {'big' if size > 60 else 'small'} {c} {s}"
                rows.append((name, caption, f"{c};{s}"))
    with open(folder / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption", "tags"])
        w.writerows(rows)
    return folder


def test_validation_chooses_tower_and_fusion_and_holds_images_out(sixty, tmp_path, monkeypatch):
    import visem.search.training as training

    seen = []
    real = training.make_sampler

    def spy(kind, method, data, batch_size, seed):
        seen.append((data.n_own_captions, set(np.asarray(data.uncaptioned).tolist())))
        return real(kind, method, data, batch_size, seed)

    monkeypatch.setattr(training, "make_sampler", spy)
    rep = build_index(sixty, sixty / "captions.csv", tmp_path / "idx",
                      BuildOptions(steps=3, batch_size=8, embed_dim=16))
    c = rep.choice
    assert rep.method == "a3vse" and c["how"] == "validation"
    assert c["validation"]["images"] == 12 and c["validation"]["captions"] == 12
    assert [r["text_encoder"] for r in c["candidates"]] == ["gru", "minilm"]
    for row in c["candidates"]:
        assert set(row["fusions"]) == {"dense", *(f"weighted {f['weight']:g}" for f in FUSION_GRID
                                                 if f["kind"] == "weighted"), "rrf 10", "rrf 60"}
        assert row["fused_rsum"] == max(row["fusions"].values())
    best = max(c["candidates"], key=lambda r: r["fused_rsum"])
    assert c["text_encoder"] == best["text_encoder"] and c["fusion"] == best["fusion"]
    # two held-out fits on 48 captions, the final one on all 60; the held-out images are not trained on at all:
    # the pseudo pairs of the held-out fits are the 12 images with tags only, as in the final fit
    assert [n for n, _ in seen] == [48, 48, 60]
    assert seen[0][1] == seen[1][1] == seen[2][1] and len(seen[2][1]) == 12
    idx = SearchIndex.open(tmp_path / "idx")
    assert idx.fusion == c["fusion"] and idx.info()["text_encoder"] == c["text_encoder"]
    assert not (tmp_path / "idx" / "validate-gru").exists()


def test_nothing_held_out_when_every_choice_is_given(sixty, tmp_path):
    rep = build_index(sixty, sixty / "captions.csv", tmp_path / "idx",
                      BuildOptions(steps=3, batch_size=8, embed_dim=16, text_encoder="gru",
                                   fusion={"kind": "rrf", "k": 60}))
    assert rep.choice["how"] == "given" and rep.choice["candidates"] == []
    assert SearchIndex.open(tmp_path / "idx").fusion == {"kind": "rrf", "k": 60}
