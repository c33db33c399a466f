"""``visem eval RUN --plot``: curves of a finished run on its held-out data.

* Image-text retrieval runs (held-out ``txt_to_img``): R@K against K, both
  directions (:func:`visem.metrics.retrieval_recall` at every K from 1 to
  :data:`MAX_K`, so each point is the metric the tables print).
* Label retrieval runs (the MAP experiments: held-out ``image_label`` and
  ``text_label``): precision-recall curves, both directions, interpolated
  precision (the best precision at any recall at least r) at 21 recall
  levels, averaged over the queries; the legend carries the MAP the run
  reports.

Written to ``RUN_DIR/curves.png`` (matplotlib, the ``plots`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_K", "plot_run_curves", "pr_curve", "recall_curve"]

#: largest K of the R@K curves
MAX_K = 50
RECALL_LEVELS = np.linspace(0.0, 1.0, 21)


def recall_curve(img: Any, txt: Any, txt_to_img: Any, max_k: int = MAX_K) -> dict[str, np.ndarray]:
    """``{"k", "i2t", "t2i"}``: R@K (percent) for K = 1 .. min(max_k, gallery size)."""
    from visem.metrics import retrieval_recall

    kmax = int(min(max_k, len(img), len(txt)))
    ks = list(range(1, kmax + 1))
    m = retrieval_recall(img, txt, txt_to_img, ks=ks)
    return {"k": np.asarray(ks), "i2t": np.asarray([m[f"i2t_r{k}"] for k in ks]),
            "t2i": np.asarray([m[f"t2i_r{k}"] for k in ks])}


def pr_curve(queries: Any, gallery: Any, q_label: Any, g_label: Any, chunk: int = 512) -> np.ndarray:
    """Interpolated precision at :data:`RECALL_LEVELS`, averaged over the queries with a relevant item.

    Relevance is "same label"; a query's items are ranked by the dot product
    (ties: irrelevant first, as the metrics rank them).
    """
    import torch

    q = torch.as_tensor(np.asarray(queries, dtype=np.float64))
    g = torch.as_tensor(np.asarray(gallery, dtype=np.float64))
    ql, gl = np.asarray(q_label), np.asarray(g_label)
    total = np.zeros(len(RECALL_LEVELS))
    n = 0
    for start in range(0, len(q), chunk):
        s = (q[start:start + chunk] @ g.T).numpy()
        rel = ql[start:start + chunk, None] == gl[None, :]
        order = np.lexsort((rel, -s), axis=-1)  # by score, irrelevant first among ties
        r = np.take_along_axis(rel, order, axis=-1)
        tp = np.cumsum(r, axis=-1)
        n_rel = r.sum(-1)
        keep = n_rel > 0
        precision = tp / np.arange(1, r.shape[1] + 1)[None, :]
        recall = tp / np.maximum(n_rel[:, None], 1)
        # interpolated precision: the best precision at any recall >= level
        best_after = np.maximum.accumulate(precision[:, ::-1], axis=-1)[:, ::-1]
        for j, level in enumerate(RECALL_LEVELS):
            idx = np.argmax(recall >= level - 1e-12, axis=-1)
            total[j] += best_after[np.arange(len(r)), idx][keep].sum()
        n += int(keep.sum())
    return total / max(n, 1)


def plot_run_curves(run_dir: str | Path) -> Path:
    """Evaluate a finished run's final weights and draw its curves to ``run_dir/curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from visem.io import atomic_path
    from visem.train.checkpoint import load_weights
    from visem.train.run import load_run_config, prepare

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir / "config.yaml")
    _, task, model = prepare(cfg)
    load_weights(run_dir / "model.safetensors", model)
    model.eval()
    data = {**task.test, **task.static}
    if not hasattr(model, "embed_pair") or "image" not in data or "text" not in data:
        raise ValueError(f"{run_dir}: {cfg.model['name']} is not an image-text retrieval model: no curves to draw")
    with torch.no_grad():
        img, txt = model.embed_pair(data["image"], data["text"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if "txt_to_img" in data:
        c = recall_curve(img, txt, data["txt_to_img"])
        ax.plot(c["k"], c["i2t"], label="image -> text")
        ax.plot(c["k"], c["t2i"], label="text -> image")
        ax.set_xlabel("K")
        ax.set_ylabel("R@K (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{run_dir.name}: recall at K on held-out data")
    elif "image_label" in data and "text_label" in data:
        from visem.metrics import mean_average_precision

        for q, g, ql, gl, label in ((img, txt, data["image_label"], data["text_label"], "image -> text"),
                                    (txt, img, data["text_label"], data["image_label"], "text -> image")):
            mp = mean_average_precision(q, g, ql, gl)
            ax.plot(RECALL_LEVELS, pr_curve(q, g, ql, gl), marker=".", label=f"{label} (MAP {mp:.3f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("interpolated precision")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{run_dir.name}: precision-recall on held-out data")
    else:
        raise ValueError(f"{run_dir}: held-out data has neither txt_to_img nor image/text labels: no curves")
    ax.grid(alpha=0.3)
    ax.legend()
    out = run_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
