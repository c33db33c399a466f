"""LCALE's hyper-parameter sensitivity (seed 004 Figure 6) on zero-shot image-text retrieval: ``lcale-sensitivity``.

Seed 004 Sec. 4.4 varies each weight of Eq. 9 (``alpha`` of L_CR, ``beta`` of
L_CA1, ``lambda`` of L_CA2, ``gamma`` of L_CYC) over ``[0.01, 100]`` with the
others at their defaults (1, 0.1, 0.1, 0.01), and the latent size over 25-250
(Figure 6 (a), (b)), on Wikipedia. visem does the same on ``zscmr-emoji``'s
data and balanced splits (:mod:`visem.experiments.zscmr`): one LCALE run per
value (the run at the defaults is shared by the four curves), Avg. MAP
(mean of Img2Txt and Txt2Img) mean ± std over the splits, written as
``figure6_sensitivity.png``. Seed 004 prints no numbers for Figure 6, so the
table has no paper column.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["SENSITIVITY_DEFAULTS", "SENSITIVITY_QUICK", "WEIGHTS", "run_lcale_sensitivity"]

#: Eq. 9's weights: config field -> (symbol, default of seed 004 Sec. 4.1)
WEIGHTS = {"alpha": ("alpha", 1.0), "beta": ("beta", 0.1), "lam": ("lambda", 0.1), "gamma": ("gamma", 0.01)}
_BASE = {"latent_dim": 64, "hidden": [256], "reg_hidden": [256]}  # zscmr-emoji's LCALE

SENSITIVITY_DEFAULTS: dict[str, Any] = {
    "splits": 3,
    "workers": None,
    "unseen_fraction": 0.25,
    "max_class_share": 0.15,
    "grid": [0.01, 0.1, 1.0, 10.0, 100.0],
    "weights": list(WEIGHTS),
    "latent_dims": [16, 32, 64, 128, 256],
    "train": {"steps": 600, "batch_size": 128, "lr": 1e-3},
    "model": {"hidden": [256], "reg_hidden": [256]},
}
SENSITIVITY_QUICK: dict[str, Any] = {"splits": 2, "workers": 1, "grid": [0.01, 1.0, 100.0], "latent_dims": [16, 64],
                                     "train": {"steps": 20}, "model": {"hidden": [32], "reg_hidden": [32]}}


def _runs(s: Mapping[str, Any]) -> tuple[list[tuple[str, str, dict[str, Any], float]], dict[str, dict[str, str]]]:
    """Distinct LCALE runs and, per curve point, the setting that holds it (the defaults' run is shared)."""
    base = {**_BASE, **s["model"]}
    runs: dict[str, dict[str, Any]] = {"default": dict(base)}
    points: dict[str, dict[str, str]] = {}
    for w in s["weights"]:
        if w not in WEIGHTS:
            raise ValueError(f"unknown weight {w!r}; known: {', '.join(WEIGHTS)}")
        points[w] = {}
        for v in s["grid"]:
            label = "default" if float(v) == WEIGHTS[w][1] else f"{WEIGHTS[w][0]}={float(v):g}"
            runs.setdefault(label, {**base, w: float(v)})
            points[w][f"{float(v):g}"] = label
    points["latent_dim"] = {}
    for k in s["latent_dims"]:
        label = "default" if int(k) == base["latent_dim"] else f"latent={int(k)}"
        runs.setdefault(label, {**base, "latent_dim": int(k)})
        points["latent_dim"][str(int(k))] = label
    lr = float(s["train"]["lr"])
    return [("lcale", label, p, lr) for label, p in runs.items()], points


def plot_sensitivity(curves: Mapping[str, Mapping[str, tuple[float, float]]], floor: float, path: Path,
                     title: str) -> Path:
    """Figure 6: (a) Avg. MAP against each weight (log scale), (b) against the latent size; mean ± std."""
    from visem.experiments.sbir_figures import _pyplot, save_figure

    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for w, pts in curves.items():
        xs = [float(x) for x in pts]
        ys, es = np.array([pts[x][0] for x in pts]), np.array([pts[x][1] for x in pts])
        ax = b if w == "latent_dim" else a
        name = "latent size" if w == "latent_dim" else WEIGHTS[w][0]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    for ax, label in ((a, "weight value (others at seed 004's defaults)"), (b, "latent size")):
        ax.axhline(floor, ls="--", color="grey", label="random floor")
        ax.set_xscale("log", base=10 if ax is a else 2)
        ax.set_xlabel(label)
        ax.set_ylabel("Avg. MAP (Img2Txt, Txt2Img)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a.set_title("(a) loss weights of Eq. 9", fontsize=9)
    b.set_title("(b) latent embedding size", fontsize=9)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def run_lcale_sensitivity(out_dir: Any, quick: bool = False, seed: int = 0, progress: bool = False,
                          overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """LCALE's Avg. MAP on ``zscmr-emoji`` splits as each Eq. 9 weight and the latent size vary (Figure 6)."""
    from visem.config import merge
    from visem.experiments import settings as resolve_settings
    from visem.experiments.zscmr import emoji_cmr_data, make_emoji_cmr_split, run_cmr_models, split_summary

    t0 = time.perf_counter()
    s = resolve_settings(merge(SENSITIVITY_DEFAULTS, SENSITIVITY_QUICK) if quick else SENSITIVITY_DEFAULTS, overrides,
                         "lcale-sensitivity")
    kind = "pixels" if quick else "efficientnet"
    data = emoji_cmr_data("google", kind)
    splits = [make_emoji_cmr_split(data, seed=seed + i, unseen_fraction=float(s["unseen_fraction"]),
                                   max_class_share=s["max_class_share"]) for i in range(int(s["splits"]))]
    runs, points = _runs(s)
    t = s["train"]
    rows, extra = run_cmr_models(splits, "emoji-google", int(t["steps"]), int(t["batch_size"]), seed, runs,
                                 workers=s["workers"], progress=progress)
    by_setting = {r["setting"]: r for r in rows if r["model"] == "lcale"}
    curves = {w: {x: (by_setting[label]["avg_map"], by_setting[label]["avg_map_std"]) for x, label in pts.items()}
              for w, pts in points.items()}
    floor = next(r["avg_map"] for r in rows if r["model"] == "random")
    banner = " (QUICK: numbers mean nothing)" if quick else ""
    fig = plot_sensitivity(curves, floor, Path(out_dir) / "figure6_sensitivity.png",
                           f"LCALE sensitivity on zscmr-emoji, {len(splits)} splits{banner}")
    config = {"style": "google", "image_features": kind, "text_features": "all-MiniLM-L6-v2 captions",
              "class_embedding": "glove-6b-50d subgroup names", "settings": s, "seed": seed,
              "splits": split_summary(splits), "curves": {w: {x: list(v) for x, v in c.items()} for w, c in curves.items()},
              "points": points, "figure": fig.name, "term_shares": extra["term_shares"],
              "avg_map_per_split": extra["avg_map_per_split"], "floor_per_split": extra["floor_per_split"],
              "wall_seconds": time.perf_counter() - t0}
    return {"experiment": "lcale-sensitivity", "config": config, "rows": rows, "paper": []}


def _register() -> None:
    from visem.experiments import register_experiment

    register_experiment(
        "lcale-sensitivity",
        description="LCALE's Avg. MAP as alpha, beta, lambda, gamma vary over [0.01, 100] and the latent size over "
                    "16-256, on zscmr-emoji splits (seed 004 Figure 6)",
        paper="seed 004 (LCALE) Sec. 4.4, Figure 6",
    )(run_lcale_sensitivity)


_register()
