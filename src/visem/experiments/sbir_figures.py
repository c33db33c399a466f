"""The figures of ``zs-sbir-emoji`` (seed 004 Figures 3-5) as PNG files.

* ``figure3_pr_curves.png`` -- precision-recall curves of LCALE and the
  compared methods (mean over the splits of each split's interpolated curve,
  :func:`visem.metrics.precision_recall_curve`), with the random floor.
* ``figure4_top10.png`` -- LCALE's top-10 images for a few query sketches of
  split 0 (one query per class, drawn with the seed); a wrong result (another
  class) is framed in red, a right one in green.
* ``figure5_tsne.png`` -- t-SNE of the unseen-class sketches (pentagons) and
  images (circles) of split 0, colour = class: (a) the input features, (b)
  LCALE's latent embeddings (seed 004 Fig. 5 shows Wikipedia; this is the
  sketch task).

Written with matplotlib's Agg backend, atomically (:func:`visem.io.atomic_path`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from visem.io import atomic_path

__all__ = ["figure_payload", "write_figures", "plot_pr_curves", "plot_top10", "plot_tsne", "save_figure"]

#: rows drawn in Figure 3 (as the paper: LCALE and the compared methods), in this order
PR_ROWS = ("lcale:all", "lcale (binary):all", "sem-pcyc:all", "sem-pcyc (binary):all", "zsih (binary):all",
           "zs-sbir:all", "gdh (binary):all", "gn-triplet:all", "frwgan:all", "random:floor")
N_QUERIES = 4
TOP = 10


def figure_payload(model: Any, split: Any, n_queries: int = N_QUERIES, seed: int = 0) -> dict[str, Any]:
    """What the figures need from a trained model on one split (computed in the worker that trained it).

    Queries: one test sketch of each of ``n_queries`` unseen classes drawn with
    ``seed``; ``top``: their 10 best images by cosine (test-image indices).
    ``latent``: the model's embeddings of every test sketch and image (t-SNE).
    """
    s, i = model.embed_both(split.test_sketch, split.test_image)
    s_n, i_n = torch.nn.functional.normalize(s.double(), dim=1), torch.nn.functional.normalize(i.double(), dim=1)
    rng = np.random.default_rng(seed)
    labels = split.test_sketch_label.numpy()
    classes = rng.permutation(np.unique(labels))[:n_queries]
    queries = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
    top = [torch.argsort(-(i_n @ s_n[q]), stable=True)[:TOP].tolist() for q in queries]
    return {"queries": queries, "top": top, "sketch_latent": s.float().tolist(), "image_latent": i.float().tolist()}


def save_figure(fig: Any, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, atomically (rank 0 alone under torchrun); the figure is closed."""
    import matplotlib.pyplot as plt

    from visem.distributed import is_main

    if is_main():
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
            os.chmod(tmp, 0o644)  # an ordinary file, not the temporary file's private mode
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(pr: Mapping[str, Any], path: Path, title: str) -> Path:
    plt = _pyplot()
    recall = np.asarray(pr["recall"])
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    extra = [k for k in pr["precision"] if k not in PR_ROWS and not k.startswith("lcale:")]  # not the ablations
    for key in [k for k in PR_ROWS if k in pr["precision"]] + extra:
        name = key.replace(":all", "").replace(":floor", " (floor)")
        style = {"ls": "--", "color": "grey"} if key.startswith("random") else {"ls": ":" if "binary" in key else "-"}
        ax.plot(recall, pr["precision"][key], marker="o", ms=3, label=name, lw=2 if key == "lcale:all" else 1.2, **style)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_top10(payload: Mapping[str, Any], split: Any, data: Mapping[str, Any], path: Path, title: str) -> Path:
    from PIL import Image

    from visem.data.emoji import composite_rgb

    plt = _pyplot()
    names = data["class_names"]
    n = len(payload["queries"])
    fig, axes = plt.subplots(n, TOP + 1, figsize=(1.25 * (TOP + 1), 1.45 * n), squeeze=False)
    for r, (q, top) in enumerate(zip(payload["queries"], payload["top"])):
        q_label = int(split.test_sketch_label[q])
        sketch = Image.open(data["sketch_path"][split.test_sketch_rows[q]]).convert("RGB")
        axes[r, 0].imshow(sketch)
        axes[r, 0].set_title(f"query: {names[q_label]}", fontsize=6)
        for c, j in enumerate(top, start=1):
            ax = axes[r, c]
            ax.imshow(composite_rgb(data["image_path"][split.test_image_rows[j]]))
            right = int(split.test_image_label[j]) == q_label
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("green" if right else "red")
                spine.set_linewidth(1.5 if right else 3.5)
            if not right:
                ax.set_title(names[int(split.test_image_label[j])], fontsize=5, color="red")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def plot_tsne(payload: Mapping[str, Any], split: Any, data: Mapping[str, Any], path: Path, title: str,
              quick: bool = False) -> Path:
    from sklearn.manifold import TSNE

    plt = _pyplot()
    ls, li = split.test_sketch_label.numpy(), split.test_image_label.numpy()
    panels = []
    if split.test_sketch.shape[1] == split.test_image.shape[1]:
        panels.append(("(a) input features", split.test_sketch.numpy(), split.test_image.numpy()))
    panels.append(("(b) LCALE latent embeddings", np.asarray(payload["sketch_latent"]),
                   np.asarray(payload["image_latent"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    classes = np.unique(np.concatenate([ls, li]))
    cmap = plt.get_cmap("tab20", max(len(classes), 2))
    colour = {c: cmap(k % 20) for k, c in enumerate(classes)}
    for ax, (name, s, i) in zip(axes[0], panels):
        x = np.concatenate([s, i]).astype(np.float64)
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0,
                   max_iter=250 if quick else 1000).fit_transform(x)
        e_s, e_i = emb[: len(s)], emb[len(s):]
        ax.scatter(e_i[:, 0], e_i[:, 1], c=[colour[c] for c in li], marker="o", s=10, alpha=0.6, label="images")
        ax.scatter(e_s[:, 0], e_s[:, 1], c=[colour[c] for c in ls], marker="p", s=28, edgecolors="k",
                   linewidths=0.3, label="sketches")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def write_figures(out_dir: Path, pr: Mapping[str, Any], payload: Mapping[str, Any] | None, split0: Any,
                  data: Mapping[str, Any], quick: bool = False) -> dict[str, str]:
    """Figures 3-5 into ``out_dir``; ``{figure: file name or the reason it was not drawn}``."""
    banner = " (QUICK: numbers mean nothing)" if quick else ""
    out = {"figure3": plot_pr_curves(pr, out_dir / "figure3_pr_curves.png",
                                     f"Sketch-to-image precision-recall, unseen classes{banner}").name}
    if payload is None:
        out["figure4"] = out["figure5"] = "not drawn: LCALE was not among the runs"
        return out
    if data.get("sketch_path") is not None and data.get("image_path") is not None:
        out["figure4"] = plot_top10(payload, split0, data, out_dir / "figure4_top10.png",
                                    f"LCALE top-10 images per query sketch (split 0; red frame = wrong class){banner}").name
    else:
        out["figure4"] = "not drawn: the --data file holds features, not pictures"
    out["figure5"] = plot_tsne(payload, split0, data, out_dir / "figure5_tsne.png",
                               f"t-SNE of the unseen classes' sketches and images (split 0){banner}", quick=quick).name
    return out
