"""A 2-D map of an index: its images and captions laid out by their embeddings.

``visem index map INDEX --out map.png`` and the page's map view (``GET
/api/map``) both call :func:`index_map`: a seeded sample of the images and of
the captions, their embeddings (one joint space: nearby means similar, an
image near its captions) projected to 2-D by

* UMAP (``umap-learn``, cosine metric) when it is installed (the ``map``
  extra);
* else scikit-learn's t-SNE (cosine metric, PCA initialisation);
* below :data:`MIN_NEIGHBOUR_POINTS` points, a 2-D PCA (the
  neighbour-graph methods need more points than a tiny index has).

:func:`plot_map` draws the points with a thumbnail of the image at a sample
of them (matplotlib, the ``plots`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MIN_NEIGHBOUR_POINTS", "index_map", "plot_map", "project_2d"]

#: fewer points than this are projected by PCA
MIN_NEIGHBOUR_POINTS = 50


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """``((N, 2) coordinates scaled to [0, 1], method used)`` of the rows of ``x``.

    ``method``: ``auto`` (UMAP if installed, else t-SNE; PCA below
    :data:`MIN_NEIGHBOUR_POINTS` points), ``umap``, ``tsne`` or ``pca``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if method not in ("auto", "umap", "tsne", "pca"):
        raise ValueError(f"method must be auto, umap, tsne or pca, got {method!r}")
    if n < 3:
        xy = np.zeros((n, 2), np.float32)
        xy[:, 0] = np.arange(n)
        return _unit(xy), "none"
    if method == "auto":
        if n < MIN_NEIGHBOUR_POINTS:
            method = "pca"
        else:
            import importlib.util

            method = "umap" if importlib.util.find_spec("umap") is not None else "tsne"
    if method == "pca":
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "umap":
        import umap

        xy = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine", random_state=seed,
                       n_jobs=1).fit_transform(x)
    else:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), metric="cosine", init="pca",
                  random_state=seed).fit_transform(x)
    return _unit(np.asarray(xy, dtype=np.float32)), method


def _unit(xy: np.ndarray) -> np.ndarray:
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return ((xy - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)


def index_map(index: Any, n_images: int = 2000, n_captions: int = 500, method: str = "auto",
              seed: int = 0) -> dict[str, Any]:
    """Map of a seeded sample of an index's images and captions.

    Returns ``{"method", "points": [{"kind": "image", "id", "name", "x", "y"} |
    {"kind": "caption", "image_id", "caption", "x", "y"}]}`` with ``x, y`` in
    [0, 1].
    """
    rng = np.random.default_rng(seed)
    ni = index.n_images
    img_ids = np.sort(rng.choice(ni, size=min(ni, n_images), replace=False)) if ni else np.zeros(0, int)
    nc = len(index._captions)
    cap_ids = np.sort(rng.choice(nc, size=min(nc, n_captions), replace=False)) if nc else np.zeros(0, int)
    x = np.concatenate([index.embedding_rows(img_ids),
                        np.asarray(index.caption_embeddings[cap_ids], dtype=np.float32)])
    xy, used = project_2d(x, method, seed)
    points: list[dict[str, Any]] = []
    for row, i in enumerate(img_ids.tolist()):
        points.append({"kind": "image", "id": int(i), "name": index.name(int(i)),
                       "x": round(float(xy[row, 0]), 5), "y": round(float(xy[row, 1]), 5)})
    for row, j in enumerate(cap_ids.tolist(), start=len(img_ids)):
        points.append({"kind": "caption", "image_id": int(index._caption_image[j]), "caption": index._captions[j],
                       "x": round(float(xy[row, 0]), 5), "y": round(float(xy[row, 1]), 5)})
    return {"method": used, "n_images": int(len(img_ids)), "n_captions": int(len(cap_ids)), "points": points}


def plot_map(index: Any, out: str | Path, n_images: int = 2000, n_captions: int = 500, thumbnails: int = 150,
             method: str = "auto", seed: int = 0, size: float = 14.0) -> dict[str, Any]:
    """Draw :func:`index_map` to ``out`` (PNG, SVG or PDF by its suffix): dots, captions as crosses, and a
    thumbnail of the image at ``thumbnails`` of the image points (a seeded sample). Returns the map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from PIL import Image

    from visem.io import atomic_path

    m = index_map(index, n_images, n_captions, method, seed)
    imgs = [p for p in m["points"] if p["kind"] == "image"]
    caps = [p for p in m["points"] if p["kind"] == "caption"]
    fig, ax = plt.subplots(figsize=(size, size))
    ax.scatter([p["x"] for p in imgs], [p["y"] for p in imgs], s=6, c="#3465a4", label=f"images ({len(imgs)})")
    ax.scatter([p["x"] for p in caps], [p["y"] for p in caps], s=10, marker="x", c="#cc0000",
               label=f"captions ({len(caps)})")
    rng = np.random.default_rng(seed)
    shown = rng.choice(len(imgs), size=min(thumbnails, len(imgs)), replace=False) if imgs else []
    for k in shown:
        p = imgs[int(k)]
        try:
            with Image.open(index.image_file(p["id"])) as im:
                im.thumbnail((48, 48))
                thumb = np.asarray(im.convert("RGBA"))
        except (OSError, KeyError, ValueError):
            continue
        ax.add_artist(AnnotationBbox(OffsetImage(thumb, zoom=0.6), (p["x"], p["y"]), frameon=False))
    ax.set_title(f"{index.path.name}: {len(imgs)} images and {len(caps)} captions ({m['method']})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper right")
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return m
