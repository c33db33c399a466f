"""The demo's collection: one emoji style, a held-out 20% of it, 20% of the rest captioned."""

from __future__ import annotations

import pytest

from visem.data import DataError
from visem.data.captions import load_captions
from visem.search.demo import run_demo, write_demo_collection


@pytest.fixture(scope="module")
def demo_collection(tmp_path_factory):
    try:
        return write_demo_collection(tmp_path_factory.mktemp("demo"), fraction=0.2, seed=0)
    except DataError as exc:
        pytest.skip(f"emoji data not fetched: {exc}")


def test_collection_split_and_fractions(demo_collection):
    c = demo_collection
    train = load_captions(c["captions"], c["images"])
    held = load_captions(c["heldout_captions"], c["heldout"])
    assert not train.report.issues and not held.report.issues
    assert len(train.images) == c["n_images"] and len(held.images) == c["n_heldout"]
    assert set(train.images).isdisjoint(held.images)
    assert c["n_heldout"] == round(0.2 * (c["n_images"] + c["n_heldout"]))
    captioned = len(set(train.caption_image.tolist()))
    assert captioned == c["n_captioned"] == round(0.2 * c["n_images"])
    assert len(train.captions) == c["n_captions"]
    assert all(train.tags[i] for i in range(len(train.images)))  # every indexed image has tags
    assert len(held.uncaptioned) == 0 and all(not t for t in held.tags)  # held-out captions: no tags
    tags = load_captions(c["heldout_tags"], c["heldout"])  # what index add reads: every held-out image's tags
    assert not tags.captions and set(tags.images) == set(held.images) and all(tags.tags)


def test_collection_is_seeded(demo_collection, tmp_path):
    again = write_demo_collection(tmp_path, fraction=0.2, seed=0)
    assert again["captions"].read_text() == demo_collection["captions"].read_text()
    other = write_demo_collection(tmp_path / "o", fraction=0.2, seed=1)
    assert other["captions"].read_text() != demo_collection["captions"].read_text()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    res = run_demo(tmp_path, steps=60, progress=False)
    assert res["report"]["method"] == "a3vse" and res["report"]["choice"]["how"] == "validation"
    h = res["heldout"]
    assert h["n_images"] > 300 and h["overlap"] == 0 and h["in_index"] == h["n_images"]
    assert set(h["modes"]) == {"hybrid", "dense", "lexical"} and h["lexical_overlap"] == 0
    assert res["added"]["n_images"] > res["report"]["n_images"]
