"""A tiny image collection drawn with PIL, and an index built over it (shared by the search tests)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from visem.features.tokenize import tokenize

# (file, colour, shape, caption or None): twelve images, nine captioned
ITEMS = [
    ("red_circle.png", "red", "circle", "a red circle"),
    ("blue_square.png", "blue", "square", "a blue square"),
    ("green_triangle.png", "green", "triangle", "a green triangle"),
    ("yellow_circle.png", "yellow", "circle", "a yellow circle"),
    ("red_square.png", "red", "square", "a red square"),
    ("blue_triangle.png", "blue", "triangle", "a blue triangle"),
    ("green_circle.png", "green", "circle", "a green circle"),
    ("yellow_square.png", "yellow", "square", "a yellow square"),
    ("red_triangle.png", "red", "triangle", "a red triangle"),
    ("blue_circle.png", "blue", "circle", None),
    ("green_square.png", "green", "square", None),
    ("yellow_triangle.png", "yellow", "triangle", None),
]
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (240, 210, 20)}


def draw(path: Path, colour: str, shape: str, size: int = 96) -> None:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    c, m = COLOURS[colour], size // 8
    if shape == "circle":
        d.ellipse([m, m, size - m, size - m], fill=c)
    elif shape == "square":
        d.rectangle([m, m, size - m, size - m], fill=c)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=c)
    im.save(path)


def write_collection(folder: Path) -> Path:
    """Draw the twelve images into ``folder`` and write ``captions.csv`` (tags for every image); return the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour, shape, _ in ITEMS:
        draw(folder / name, colour, shape)
    ann = folder / "captions.csv"
    with open(ann, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption", "tags"])
        for name, colour, shape, cap in ITEMS:
            if cap is not None:
                w.writerow([name, cap, f"{colour};{shape}"])
            else:
                w.writerow([name, "", f"{colour};{shape}"])
    return ann


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory) -> tuple[Path, Path]:
    """``(image folder, captions.csv)``."""
    folder = tmp_path_factory.mktemp("tiny") / "images"
    return folder, write_collection(folder)


@pytest.fixture(scope="session")
def tiny_index(tiny_collection, tmp_path_factory) -> Path:
    """An index over the tiny collection (A3VSE: nine captioned, three with tag pseudo captions)."""
    from visem.search import BuildOptions, build_index

    folder, ann = tiny_collection
    out = tmp_path_factory.mktemp("idx") / "index"
    build_index(folder, ann, out, BuildOptions(steps=400, batch_size=8, embed_dim=32, lr=5e-4,
                                                model={"disc_hidden": 32, "heads": 2}))
    return out


@pytest.fixture(scope="session")
def tiny_items() -> list[tuple[str, str, str, str | None]]:
    """The ``(file, colour, shape, caption or None)`` rows of the tiny collection."""
    return list(ITEMS)


@pytest.fixture(scope="session")
def draw_image():
    """``draw_image(path, colour, shape, size=96)`` writes one PNG like the tiny collection's."""
    return draw


def _naive_bm25(docs: list[str], query: list[str], k1: float = 1.5, b: float = 0.75):
    """Lucene's BM25 (its BM25Similarity since Lucene 8: idf * tf / (tf + k1 (1 - b + b dl / avgdl)), the
    constant (k1 + 1) of the textbook formula dropped), one loop per document and term: the reference for bm25s."""
    toks = [tokenize(d) for d in docs]
    n = len(toks)
    avgdl = sum(len(t) for t in toks) / n
    out = np.zeros(n)
    for i, t in enumerate(toks):
        for q in query:
            df = sum(q in u for u in toks)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = t.count(q)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(t) / avgdl))
    return out


@pytest.fixture(scope="session")
def naive_bm25():
    """``naive_bm25(documents, query_tokens)``: Lucene's BM25 by a plain loop (the oracle for bm25s)."""
    return _naive_bm25
