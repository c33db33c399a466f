"""Seed 002 (PSE) reproductions: ``pse-mnist``, ``pse-fashion-mnist`` and ``pse-word-vectors``.

* ``pse-mnist`` / ``pse-fashion-mnist`` (Tables 1 and 2, Figure 2, Figure 4):
  CVAE, JMVAE, TrELBO, SCAN, PSE and PSE* trained with seed 002 Appendix A's
  settings (MLPs 784-512-64-z / z-64-512-784, ReLU, Adam 1e-3, batch 100,
  2,000 steps) on the first 50,000 training images (the paper's training set
  size), evaluated on the 10,000 test images: all six models at latent size
  10, PSE and PSE* at 20, and the same six at 2 for the latent-space figure.
  Rows whose ``setting`` says ``long`` (CVAE 10-D, PSE 10-D, PSE* 20-D) were
  trained for ``LONG_STEPS`` = 10,000 steps and are not the paper's protocol.
* ``pse-word-vectors`` (Table 3, Figures 4b-6): PSE and PSE* on
  Fashion-MNIST with one-hot labels and with GloVe vectors of the class names,
  over several training seeds; images generated for words that are not class
  names, for averages of two labels and along the line between two label
  means.

The evaluation of section 4:

* :func:`reconstruction_error` - negative Bernoulli log-likelihood of each
  test image under its reconstruction from one posterior sample, summed over
  the 784 pixels, averaged over images (nats per image). The targets are the
  grey levels in ``[0, 1]`` (see ``docs/pse.md`` for why).
* :func:`annotation_accuracy` - the image's posterior mean, labelled with the
  class whose label Gaussian gives it the highest density (percent).
* :func:`generation_accuracy` - ``n_per_label`` latent samples per label
  Gaussian, decoded to Bernoulli means and classified by the cached CNN of
  :mod:`visem.models.classifier`; the fraction classified as the label they
  were drawn from, repeated ``repeats`` times (mean and standard deviation,
  percent).

Figures (PNG, under the experiment's output folder): the 2-D latent space of
every model (Figure 2), generated samples per label, interpolation strips
between label means, and, for word vectors, images for unseen words and label
averages.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from visem.config import ConfigError, dump_yaml, load_yaml, to_dict
from visem.experiments import register_experiment
from visem.io import atomic_path
from visem.data.label_tasks import LABEL_ENCODINGS, _dataset_name, _images, label_vectors, labels_task  # noqa: F401

# --------------------------------------------------------------------------
# the paper's tables (seed 002 Tables 1-3), copied exactly
# --------------------------------------------------------------------------
_T = ("model", "latent_dim", "reconstruction_error", "annotation_accuracy", "generation_accuracy",
      "generation_accuracy_std")


def _rows(values: Sequence[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(_T, v)) for v in values]


#: Table 1: MNIST test set. Baselines have a 10-D latent space (section 4.1).
PAPER_TABLE1 = _rows([
    ("cvae", 10, 79.8, None, 97.6, 0.1),
    ("jmvae", 10, 87.7, 95.4, 92.2, 0.3),
    ("trelbo", 10, 83.1, 90.3, 61.1, 0.5),
    ("pse", 10, 82.8, 96.0, 93.9, 0.2),
    ("pse-star", 10, 82.3, 96.3, 94.9, 0.2),
    ("pse-star", 20, 75.0, 97.1, 95.6, 0.2),
])
#: Table 2: Fashion-MNIST test set.
PAPER_TABLE2 = _rows([
    ("cvae", 10, 219.7, None, 81.3, 0.3),
    ("jmvae", 10, 225.4, 80.3, 71.2, 0.5),
    ("trelbo", 10, 220.3, 73.0, 47.5, 0.4),
    ("pse", 10, 219.1, 81.2, 75.9, 0.3),
    ("pse-star", 10, 219.6, 81.3, 76.1, 0.4),
    ("pse-star", 20, 219.0, 81.6, 76.2, 0.4),
])
#: Table 3: Fashion-MNIST, one-hot vs word2vec label vectors (10-D, as the
#: one-hot rows equal Table 2's 10-D rows). The paper's word vectors are
#: 300-d word2vec; visem's are 50-d GloVe (column ``vectors``).
PAPER_TABLE3 = [
    {"model": "pse", "latent_dim": 10, "features": "one-hot", "vectors": None,
     "reconstruction_error": 219.1, "annotation_accuracy": 81.2, "annotation_accuracy_std": 0.1},
    {"model": "pse", "latent_dim": 10, "features": "word-vectors", "vectors": "word2vec-300d",
     "reconstruction_error": 218.7, "annotation_accuracy": 81.4, "annotation_accuracy_std": 0.2},
    {"model": "pse-star", "latent_dim": 10, "features": "one-hot", "vectors": None,
     "reconstruction_error": 219.6, "annotation_accuracy": 81.3, "annotation_accuracy_std": 0.2},
    {"model": "pse-star", "latent_dim": 10, "features": "word-vectors", "vectors": "word2vec-300d",
     "reconstruction_error": 218.8, "annotation_accuracy": 81.9, "annotation_accuracy_std": 0.3},
]
#: The paper's scoring classifiers (section 4): test accuracy in percent.
PAPER_CLASSIFIERS = {"mnist": {"model": "MLP", "test_accuracy": 96.86, "train_accuracy": 98.09},
                     "fashion-mnist": {"model": "ResNet-18", "test_accuracy": 92.4, "train_accuracy": 94.5}}

MODEL_ORDER = ("cvae", "jmvae", "trelbo", "scan-bvae", "pse", "pse-star")


# --------------------------------------------------------------------------
# evaluation (seed 002 section 4)
# --------------------------------------------------------------------------
def _check_eval_inputs(images: Tensor, labels: Tensor | None, class_emb: Tensor) -> None:
    if images.dim() != 2:
        raise ValueError(f"images must be (N, D), got {tuple(images.shape)}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    if class_emb.dim() != 2:
        raise ValueError(f"class_emb must be (n_classes, class_dim), got {tuple(class_emb.shape)}")


@torch.no_grad()
def reconstruction_error(model, images: Tensor, labels: Tensor, class_emb: Tensor, seed: int = 0,
                         chunk: int = 5000) -> float:
    """Mean over images of ``-log p(x | x_hat)`` (Bernoulli, summed over pixels), one posterior sample each: nats/image."""
    from visem.models.pse import bernoulli_nll

    _check_eval_inputs(images, labels, class_emb)
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    try:
        for i in range(0, images.shape[0], chunk):
            x = images[i : i + chunk]
            logits = model.reconstruction_logits(x, class_emb[labels[i : i + chunk]], generator=gen)
            total += float(bernoulli_nll(logits, x).sum())
    finally:
        model.train(was)
    return total / images.shape[0]


@torch.no_grad()
def annotation_accuracy(model, images: Tensor, labels: Tensor, class_emb: Tensor, chunk: int = 5000) -> float:
    """Percent of images whose most likely label Gaussian (at the posterior mean) is their own class."""
    _check_eval_inputs(images, labels, class_emb)
    was = model.training
    model.eval()
    try:
        pred = torch.cat([model.annotate(images[i : i + chunk], class_emb) for i in range(0, images.shape[0], chunk)])
    finally:
        model.train(was)
    return float((pred == labels).float().mean()) * 100.0


@torch.no_grad()
def generation_accuracy(model, classifier, class_emb: Tensor, n_per_label: int = 10000, repeats: int = 10,
                        seed: int = 0, chunk: int = 1000) -> dict[str, Any]:
    """Seed 002's generation accuracy: ``n_per_label`` images per label, scored by ``classifier``.

    Returns ``{"mean", "std", "per_repeat"}`` in percent; ``std`` is the
    sample standard deviation over the ``repeats`` (0 for one repeat).
    """
    from visem.models.classifier import predict

    if n_per_label < 1 or repeats < 1:
        raise ValueError(f"n_per_label and repeats must be >= 1, got {n_per_label}, {repeats}")
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    accs = []
    try:
        for _ in range(repeats):
            correct = 0
            for c in range(class_emb.shape[0]):
                done = 0
                while done < n_per_label:
                    n = min(chunk, n_per_label - done)
                    images = model.generate(class_emb[c : c + 1], n, generator=gen)
                    correct += int((predict(classifier, images, chunk=chunk) == c).sum())
                    done += n
            accs.append(100.0 * correct / (n_per_label * class_emb.shape[0]))
    finally:
        model.train(was)
    std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    return {"mean": float(np.mean(accs)), "std": std, "per_repeat": accs}


@torch.no_grad()
def classify_generated(model, classifier, vectors: Tensor, n: int, seed: int = 0) -> Tensor:
    """``(K, n_classes)`` fraction of ``n`` images generated from each label vector given to each class."""
    from visem.models.classifier import predict

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(vectors.shape[0]):
        pred = predict(classifier, model.generate(vectors[k : k + 1], n, generator=gen))
        rows.append(torch.bincount(pred, minlength=classifier.head[-1].out_features).float() / n)
    return torch.stack(rows)


# --------------------------------------------------------------------------
# figures (matplotlib's object API with the Agg canvas: no global backend state)
# --------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _grid(images: Tensor, rows: int, cols: int) -> np.ndarray:
    """``(rows * cols, 784)`` images -> one ``(rows * 28, cols * 28)`` array."""
    a = images.reshape(rows, cols, 28, 28).permute(0, 2, 1, 3).reshape(rows * 28, cols * 28)
    return a.numpy()


@torch.no_grad()
def plot_latent_2d(models: Mapping[str, Any], images: Tensor, labels: Tensor, class_emb: Tensor,
                   class_names: Sequence[str], path: Path, max_points: int = 5000) -> Path:
    """Figure 2: posterior means of test images in each 2-D model's latent space, coloured by label.

    Models with label Gaussians also show each label's mean and one-sigma ellipse.
    CVAE's points are the learned part of its latent space (q(z|x,l)).
    """
    from matplotlib.patches import Ellipse

    n = len(models)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.2 * cols, 4.0 * rows)
    x, y = images[:max_points], labels[:max_points]
    for i, (name, model) in enumerate(models.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        model.eval()
        if getattr(model, "can_annotate", True):
            mu, _ = model.encode_image(x)
        else:
            mu, _ = model.encoder(torch.cat([x, class_emb[y]], dim=-1))
        if mu.shape[1] != 2:
            raise ValueError(f"{name}: latent space must be 2-D for this plot, got {mu.shape[1]}")
        sc = ax.scatter(mu[:, 0], mu[:, 1], c=y, cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=len(class_names) - 0.5)
        if getattr(model, "can_annotate", True):
            m_l, lv_l = model.encode_label(class_emb)
            sd = torch.exp(0.5 * lv_l)
            for k in range(m_l.shape[0]):
                ax.add_patch(Ellipse((float(m_l[k, 0]), float(m_l[k, 1])), 2 * float(sd[k, 0]), 2 * float(sd[k, 1]),
                                     fill=False, lw=1.2, color="black"))
                ax.annotate(str(k), (float(m_l[k, 0]), float(m_l[k, 1])), fontsize=8, weight="bold")
        ax.set_title(name)
    cbar = fig.colorbar(sc, ax=fig.axes, ticks=range(len(class_names)), shrink=0.8)
    cbar.ax.set_yticklabels([f"{k} {c}" for k, c in enumerate(class_names)], fontsize=7)
    return _save(fig, path)


@torch.no_grad()
def plot_samples(model, class_emb: Tensor, class_names: Sequence[str], path: Path, n: int = 10, seed: int = 0,
                 title: str = "") -> Path:
    """Generated images, one row per label (Figure 3 / 4a)."""
    gen = torch.Generator().manual_seed(seed)
    k = class_emb.shape[0]
    imgs = model.generate(class_emb, n, generator=gen)
    fig = _figure(0.6 * n + 1.6, 0.6 * k + 0.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(_grid(imgs, k, n), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([14 + 28 * i for i in range(k)], [str(c) for c in class_names], fontsize=8)
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def interpolate_means(model, class_emb: Tensor, a: int, b: int, steps: int = 10) -> Tensor:
    """Decoded points on the line between the label means of classes ``a`` and ``b``: ``(steps, 784)``."""
    mu, _ = model.encode_label(class_emb[[a, b]])
    t = torch.linspace(0, 1, steps)[:, None]
    z = (1 - t) * mu[0] + t * mu[1]
    return torch.sigmoid(model.decode(z))


@torch.no_grad()
def plot_strips(strips: Sequence[tuple[str, Tensor]], path: Path) -> Path:
    """One row of images per ``(label, images)``: interpolations (Figure 4b) or generated sets (Figures 5-6)."""
    cols = max(s.shape[0] for _, s in strips)
    fig = _figure(0.6 * cols + 2.4, 0.65 * len(strips) + 0.3)
    for i, (label, imgs) in enumerate(strips):
        ax = fig.add_subplot(len(strips), 1, i + 1)
        pad = torch.zeros(cols - imgs.shape[0], 784)
        ax.imshow(_grid(torch.cat([imgs, pad]), 1, cols), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([14], [label], fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------
def train_model(name: str, params: Mapping[str, Any], data: Mapping[str, Any], steps: int, run_dir: Path,
                seed: int = 0, progress: bool = False):
    """Train registered model ``name`` on a labels task with seed 002's optimiser settings.

    Adam 1e-3, batch 100 (Appendix A). The run folder holds ``config.yaml``,
    checkpoints and ``metrics.csv`` as for ``visem train``; a run folder with
    a finished run of the same config is loaded, not retrained.
    """
    from visem.train.run import RunConfig, prepare
    from visem.train.sampler import BatchSampler
    from visem.train.trainer import TrainConfig, Trainer, seed_everything

    cfg = RunConfig(
        model={"name": name, **dict(params)},
        data=dict(data),
        train=TrainConfig(steps=steps, batch_size=100, lr=1e-3, seed=seed, log_every=max(1, steps // 20),
                          checkpoint_every=steps, progress=progress),
    )
    seed_everything(seed)  # model initialisation
    resolved, task, model = prepare(cfg)
    saved = run_dir / "config.yaml"
    if saved.exists() and load_yaml(saved) != to_dict(resolved):
        raise ConfigError(f"{run_dir} holds a run with a different config ({saved}); use a new --out or delete it")
    dump_yaml(to_dict(resolved), saved)
    t0 = time.perf_counter()
    Trainer(model, BatchSampler(task.train, 100, seed=seed), resolved.train, run_dir, static=task.static).fit()
    model.eval()
    return model, task, time.perf_counter() - t0


def _row(model, task: TaskData, name: str, latent: int, classifier, gen: Mapping[str, int], seed: int) -> dict:
    emb = task.static["class_emb"]
    x, y = task.test["image"], task.test["label"]
    row: dict[str, Any] = {"model": name, "latent_dim": latent}
    row["reconstruction_error"] = reconstruction_error(model, x, y, emb, seed=seed)
    row["annotation_accuracy"] = annotation_accuracy(model, x, y, emb) if model.can_annotate else None
    if classifier is not None:
        g = generation_accuracy(model, classifier, emb, gen["n_per_label"], gen["repeats"], seed=seed)
        row["generation_accuracy"], row["generation_accuracy_std"] = g["mean"], g["std"]
    return row


def _settings(quick: bool) -> dict[str, Any]:
    """What ``--quick`` shortens. ``rows``: (model, latent size, steps) of the table."""
    if quick:
        return {"steps": 400, "rows": [(m, 10, 400) for m in MODEL_ORDER], "plot_steps": 30,
                "generation": {"n_per_label": 200, "repeats": 2},
                "classifier": {"epochs": 1, "n_train": 10000}, "test_size": 2000, "seeds": 1}
    rows = [(m, 10, 2000) for m in MODEL_ORDER] + [("pse", 20, 2000), ("pse-star", 20, 2000)]
    rows += [("cvae", 10, LONG_STEPS), ("pse", 10, LONG_STEPS), ("pse-star", 20, LONG_STEPS)]
    return {"steps": 2000, "rows": rows, "plot_steps": 2000,
            "generation": {"n_per_label": 10000, "repeats": 10},
            "classifier": {"epochs": 12, "n_train": None}, "test_size": None, "seeds": 3}


#: the clearly labelled longer-training row (seed 002 trains for 2,000 steps)
LONG_STEPS = 10000


def _classifier(dataset: str, settings: Mapping[str, Any], progress: bool):
    from visem.models.classifier import ClassifierRecipe, load_classifier

    recipe = ClassifierRecipe(epochs=settings["classifier"]["epochs"], n_train=settings["classifier"]["n_train"])
    model, info = load_classifier(dataset, recipe, progress=progress)
    return model, info


INTERPOLATION_PAIRS = {"mnist": ((4, 9), (7, 9), (3, 8)), "fashion-mnist": ((7, 9), (0, 6), (2, 4))}


def run_tables(dataset: str, out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False) -> dict:
    """Table 1 (``mnist``) or Table 2 (``fashion-mnist``) with the figures of section 4."""
    dataset = _dataset_name(dataset)
    s = _settings(quick)
    exp = f"pse-{dataset}"
    t_start = time.perf_counter()
    classifier, cls_info = _classifier(dataset, s, progress)
    data = {"name": f"{dataset}-labels", "label_encoding": "one-hot", "test_size": s["test_size"]}
    runs = out_dir / "runs"
    fig_dir = out_dir / "figures"
    rows, timings, figures = [], {}, []
    trained: dict[tuple[str, int], Any] = {}
    for name, latent, steps in s["rows"]:
        run = runs / f"{name}-{latent}d-{steps}steps"
        model, task, secs = train_model(name, {"latent_dim": latent}, data, steps, run, seed, progress)
        t0 = time.perf_counter()
        row = _row(model, task, name, latent, classifier, s["generation"], seed)
        label = f"{name}-{latent}d"
        if steps != s["steps"]:  # longer than the paper's protocol: its own, labelled row
            row = {"model": name, "setting": f"long ({steps} steps)", **{k: v for k, v in row.items() if k != "model"}}
            label += f"-{steps}steps"
        else:
            trained[(name, latent)] = (model, task)
        rows.append(row)
        timings[label] = {"train_s": round(secs, 1), "eval_s": round(time.perf_counter() - t0, 1)}
    # figures: samples and interpolations of the main models, then the 2-D latent spaces
    main = 10
    task = trained[("pse", main)][1]
    emb, names = task.static["class_emb"], _images(dataset, "train", None)[2]
    for name in ("pse", "pse-star", "cvae"):
        model = trained[(name, main)][0]
        figures.append(plot_samples(model, emb, names, fig_dir / f"samples_{name}_{main}d.png", seed=seed,
                                    title=f"{name} ({main}-D): images generated from each label"))
    for name in ("pse", "pse-star"):
        model = trained[(name, main)][0]
        strips = [(f"{names[a]} -> {names[b]}", interpolate_means(model, emb, a, b)) for a, b in INTERPOLATION_PAIRS[dataset]]
        figures.append(plot_strips(strips, fig_dir / f"interpolation_{name}_{main}d.png"))
    latent_2d, models_2d = {}, {}
    for name in MODEL_ORDER:
        run = runs / f"{name}-2d-{s['plot_steps']}steps"
        model, task2, _ = train_model(name, {"latent_dim": 2}, data, s["plot_steps"], run, seed, progress)
        models_2d[name] = model
        r = _row(model, task2, name, 2, None, s["generation"], seed)
        latent_2d[name] = {k: r[k] for k in ("reconstruction_error", "annotation_accuracy")}
    figures.append(plot_latent_2d(models_2d, task.test["image"], task.test["label"], emb, names,
                                  fig_dir / "latent_2d.png"))
    paper = PAPER_TABLE1 if dataset == "mnist" else PAPER_TABLE2
    return {
        "experiment": exp,
        "config": {
            "dataset": dataset,
            "quick": quick,
            "seed": seed,
            "train": {"steps": s["steps"], "batch_size": 100, "lr": 1e-3, "optimizer": "adam",
                      "train_images": 50000},
            "rows": [{"model": m, "latent_dim": d, "steps": n} for m, d, n in s["rows"]],
            "test_images": int(task.test["image"].shape[0]),
            "generation": dict(s["generation"]),
            "reconstruction_targets": "grey levels in [0, 1] (Bernoulli cross-entropy, nats per image)",
            "classifier": {k: v for k, v in cls_info.items() if k != "path"} | {"paper": PAPER_CLASSIFIERS[dataset]},
            "timings_s": timings,
            "wall_s": round(time.perf_counter() - t_start, 1),
        },
        "rows": rows,
        "paper": paper,
        "latent_2d": latent_2d,
        "figures": [str(p.relative_to(out_dir)) for p in figures],
    }


@register_experiment("pse-mnist", description="PSE, PSE* and CVAE/JMVAE/TrELBO/SCAN on MNIST (seed 002 Table 1)",
                     paper="seed 002 Table 1, Figure 2")
def run_mnist(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    return run_tables("mnist", Path(out_dir), quick, seed, progress)


@register_experiment("pse-fashion-mnist",
                     description="PSE, PSE* and CVAE/JMVAE/TrELBO/SCAN on Fashion-MNIST (seed 002 Table 2)",
                     paper="seed 002 Table 2, Figure 4")
def run_fashion(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    return run_tables("fashion-mnist", Path(out_dir), quick, seed, progress)


# --------------------------------------------------------------------------
# word vectors (seed 002 section 5)
# --------------------------------------------------------------------------
#: words and phrases that are not Fashion-MNIST class names (Figure 6)
UNSEEN_PHRASES = ("boots", "jeans", "sneakers", "pullover sweater", "sandals", "handbag")
#: pairs of classes whose label vectors are averaged (Figure 5)
AVERAGED_PAIRS = ((7, 9), (0, 6))


@register_experiment("pse-word-vectors",
                     description="PSE/PSE* on Fashion-MNIST with one-hot vs GloVe label vectors (seed 002 Table 3)",
                     paper="seed 002 Table 3, Figures 4b-6")
def run_word_vectors(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    from visem.features.text import glove_phrases

    out_dir = Path(out_dir)
    s = _settings(quick)
    dataset = "fashion-mnist"
    t_start = time.perf_counter()
    classifier, cls_info = _classifier(dataset, s, progress)
    names = _images(dataset, "train", None)[2]
    latent = 10
    seeds = [seed + i for i in range(s["seeds"])]
    rows, timings, figures, per_seed = [], {}, [], {}
    word_models = {}
    for name in ("pse", "pse-star"):
        for enc in LABEL_ENCODINGS:
            params: dict[str, Any] = {"latent_dim": latent}
            if name == "pse-star" and enc == "word-vectors":
                params["label_likelihood"] = "gaussian"
            data = {"name": f"{dataset}-labels", "label_encoding": enc, "test_size": s["test_size"]}
            recs, anns = [], []
            for sd in seeds:
                run = out_dir / "runs" / f"{name}-{enc}-{latent}d-{s['steps']}steps-seed{sd}"
                model, task, secs = train_model(name, params, data, s["steps"], run, sd, progress)
                t0 = time.perf_counter()
                r = _row(model, task, name, latent, classifier if sd == seeds[0] else None, s["generation"], sd)
                recs.append(r["reconstruction_error"])
                anns.append(r["annotation_accuracy"])
                if sd == seeds[0]:
                    gen_row, first = r, (model, task)
                timings[f"{name}-{enc}-seed{sd}"] = {"train_s": round(secs, 1), "eval_s": round(time.perf_counter() - t0, 1)}
            per_seed[f"{name}/{enc}"] = {"reconstruction_error": recs, "annotation_accuracy": anns}
            rows.append({
                "model": name, "latent_dim": latent, "features": enc,
                "vectors": "glove-6b-50d" if enc == "word-vectors" else None,
                "reconstruction_error": float(np.mean(recs)),
                "annotation_accuracy": float(np.mean(anns)),
                "annotation_accuracy_std": float(np.std(anns, ddof=1)) if len(anns) > 1 else 0.0,
                "generation_accuracy": gen_row["generation_accuracy"],
                "generation_accuracy_std": gen_row["generation_accuracy_std"],
            })
            if enc == "word-vectors":
                word_models[name] = first
    # section 5: unseen words, label averages, interpolation (PSE* with word vectors, Figure 5)
    model, task = word_models["pse-star"]
    emb = task.static["class_emb"]
    fig_dir = out_dir / "figures"
    pv = glove_phrases(list(UNSEEN_PHRASES), mode="mean")
    vecs = torch.from_numpy(np.ascontiguousarray(pv.vectors))
    cos = torch.nn.functional.normalize(vecs, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T
    n_probe = 200 if quick else 2000
    frac = classify_generated(model, classifier, vecs, n_probe, seed=seed)
    unseen = {}
    for i, phrase in enumerate(UNSEEN_PHRASES):
        top = torch.argsort(frac[i], descending=True)[:2]
        unseen[phrase] = {
            "nearest_class_by_glove": names[int(cos[i].argmax())],
            "glove_cosine": round(float(cos[i].max()), 3),
            "generated_classified_as": {names[int(k)]: round(100 * float(frac[i, k]), 1) for k in top},
        }
    avg_vecs = torch.stack([0.5 * (emb[a] + emb[b]) for a, b in AVERAGED_PAIRS])
    frac_avg = classify_generated(model, classifier, avg_vecs, n_probe, seed=seed)
    averages = {}
    for i, (a, b) in enumerate(AVERAGED_PAIRS):
        averages[f"0.5 ({names[a]} + {names[b]})"] = {
            names[a]: round(100 * float(frac_avg[i, a]), 1),
            names[b]: round(100 * float(frac_avg[i, b]), 1),
            "other": round(100 * float(1 - frac_avg[i, a] - frac_avg[i, b]), 1),
        }
    gen = torch.Generator().manual_seed(seed)
    figures.append(plot_strips([(p, model.generate(vecs[i : i + 1], 8, generator=gen)) for i, p in enumerate(UNSEEN_PHRASES)],
                               fig_dir / "unseen_words.png"))
    strips = []
    for a, b in AVERAGED_PAIRS:
        for label, v in ((names[a], emb[a]), (f"0.5({names[a]}+{names[b]})", 0.5 * (emb[a] + emb[b])), (names[b], emb[b])):
            strips.append((label, model.generate(v[None], 8, generator=gen)))
    figures.append(plot_strips(strips, fig_dir / "label_averages.png"))
    figures.append(plot_strips([(f"{names[a]} -> {names[b]}", interpolate_means(model, emb, a, b)) for a, b in AVERAGED_PAIRS],
                               fig_dir / "interpolation_word_vectors.png"))
    figures.append(plot_samples(model, emb, names, fig_dir / "samples_pse-star_word-vectors.png", seed=seed,
                                title="PSE* with GloVe label vectors: images generated from each label"))
    return {
        "experiment": "pse-word-vectors",
        "config": {
            "dataset": dataset,
            "quick": quick,
            "seeds": seeds,
            "train": {"steps": s["steps"], "batch_size": 100, "lr": 1e-3, "optimizer": "adam", "train_images": 50000},
            "word_vectors": "GloVe 6B 50d, mean over the words of the class name (paper: word2vec 300d)",
            "pse_star_label_likelihood": {"one-hot": "categorical", "word-vectors": "gaussian, sigma 1"},
            "generation": dict(s["generation"]) | {"model_seed": seeds[0]},
            "annotation_accuracy_std": "over training seeds",
            "classifier": {k: v for k, v in cls_info.items() if k != "path"} | {"paper": PAPER_CLASSIFIERS[dataset]},
            "timings_s": timings,
            "wall_s": round(time.perf_counter() - t_start, 1),
        },
        "rows": rows,
        "paper": PAPER_TABLE3,
        "per_seed": per_seed,
        "unseen_words": unseen,
        "label_averages": averages,
        "figures": [str(p.relative_to(out_dir)) for p in figures],
    }
