"""The demo of ``make demo``: a search index over one emoji style from 20% of its captions.

Steps (each a library call the CLI also makes):

1. Copy the images of one emoji style into ``<out>/images`` and hold out a
   seeded 20% of the concepts into ``<out>/heldout`` (never seen in training).
2. Write ``<out>/images/captions.csv``: the captions of a seeded ``fraction``
   of the indexed images, and every image's tags (the pseudo captions of the
   uncaptioned ones); ``<out>/heldout/captions.csv``: the held-out captions
   (for evaluation only) and ``<out>/heldout/tags.csv``: the held-out images'
   tags (every image of the collection has tags).
3. :func:`~visem.search.build_index` (method, text tower and fusion chosen
   on a held-out split of the training captions), a few text searches,
   :meth:`~visem.search.SearchIndex.add_images` of the held-out folder with
   its tags (images never seen in training, searchable by their tags and by
   the dense side), then :meth:`~visem.search.SearchIndex.evaluate` of the
   held-out captions against the held-out images: the index's fusion, and
   the dense and lexical sides alone.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np

DEMO_QUERIES = ("smiling face with tears", "red heart", "cat", "pizza", "airplane", "rainy weather")


def write_demo_collection(out: Path, style: str = "google", fraction: float = 0.2, heldout: float = 0.2,
                          seed: int = 0) -> dict[str, Any]:
    """Steps 1-2; returns the folder and file paths and their counts."""
    from visem.data import load

    table = load("emoji").style(style).table
    rng = np.random.default_rng(seed)
    n = len(table)
    order = rng.permutation(n)
    n_test = int(round(heldout * n))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    captioned = set(rng.choice(train, size=int(round(fraction * len(train))), replace=False).tolist())
    folders = {"images": out / "images", "heldout": out / "heldout"}
    for f in folders.values():
        if f.exists():
            shutil.rmtree(f)
        f.mkdir(parents=True)
    rows = table.to_dict("records")
    n_caps = 0
    with open(folders["heldout"] / "tags.csv", "w", newline="") as fh:  # what index add reads: tags, no caption
        w = csv.writer(fh)
        w.writerow(["image", "caption", "tags"])
        for i in test.tolist():
            w.writerow([Path(rows[i]["image"]).name, "", ";".join(rows[i]["tags"])])
    for key, members in (("images", train), ("heldout", test)):
        with open(folders[key] / "captions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "caption", "tags"])
            for i in members.tolist():
                r = rows[i]
                name = Path(r["image"]).name
                shutil.copyfile(r["image"], folders[key] / name)
                tags = ";".join(r["tags"])
                if key == "heldout" or i in captioned:
                    for c in r["captions"]:
                        w.writerow([name, c, tags if key == "images" else ""])
                        n_caps += key == "images"
                else:
                    w.writerow([name, "", tags])
    return {"images": folders["images"], "captions": folders["images"] / "captions.csv",
            "heldout": folders["heldout"], "heldout_captions": folders["heldout"] / "captions.csv",
            "heldout_tags": folders["heldout"] / "tags.csv",
            "n_images": int(len(train)), "n_captioned": len(captioned), "n_captions": n_caps,
            "n_heldout": int(len(test))}


def run_demo(out: str | Path, fraction: float = 0.2, seed: int = 0, steps: int | None = None,
             method: str | None = None, progress: bool = True, style: str = "google",
             options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build, search, extend and evaluate the demo index; returns everything the CLI prints.

    ``options``: more :class:`~visem.search.BuildOptions` fields (``text_encoder``, ``fusion``, ...).
    """
    from visem.search import BuildOptions, SearchIndex, build_index

    out = Path(out)
    col = write_demo_collection(out, style=style, fraction=fraction, seed=seed)
    report = build_index(col["images"], col["captions"], out / "index",
                         BuildOptions(method=method, steps=steps, seed=seed, progress=progress, **(options or {})),
                         overwrite=True)
    from visem.search import QueryError

    idx = SearchIndex.open(out / "index")
    searches: dict[str, Any] = {}
    for q in DEMO_QUERIES:  # a word no caption, tag or text tower knows is reported, not fatal
        try:
            searches[q] = idx.search_text(q, k=3)
        except QueryError as exc:
            searches[q] = str(exc)
    added = idx.add_images(col["heldout"], progress=progress, captions=col["heldout_tags"])
    heldout = idx.evaluate(col["heldout_captions"], col["heldout"])
    return {"collection": {k: (str(v) if isinstance(v, Path) else v) for k, v in col.items()},
            "report": report.to_dict(),
            "searches": {q: (hs if isinstance(hs, str) else [h.to_dict() for h in hs]) for q, hs in searches.items()},
            "heldout": heldout, "added": added, "index": str(out / "index")}
