"""Seed 002 (PSE) reproductions: ``pse-mnist``, ``pse-fashion-mnist`` and ``pse-word-vectors``.

* ``pse-mnist`` / ``pse-fashion-mnist`` (Tables 1 and 2, Figure 2, Figure 4):
  CVAE, JMVAE, TrELBO, SCAN, PSE and PSE* trained with seed 002 Appendix A's
  settings (MLPs 784-512-64-z / z-64-512-784, ReLU, Adam 1e-3, batch 100,
  2,000 steps) on the first 50,000 training images (the paper's training set
  size), evaluated on the 10,000 test images: all six models at latent size
  10, PSE and PSE* at 20, each over ``seeds`` (5) training seeds (mean and
  sample std), and the same six at latent size 2, one seed, for the
  latent-space figure. Rows at longer budgets (``--set long.steps=[20000]``)
  carry ``setting: "N steps"`` and are not the paper's protocol.
* ``pse-word-vectors`` (Table 3, Figures 4b-6): PSE and PSE* on
  Fashion-MNIST with one-hot labels and with GloVe vectors of the class names,
  over ``seeds`` training seeds; images generated for words that are not class
  names, for averages of two labels and along the line between two label
  means.

Every table cell is the mean over the training seeds with its sample standard
deviation (``KEY_std``, :func:`visem.experiments.stats.mean_std`); the
generation accuracy of one seed scores ``generation.n_per_label`` (10,000)
images per label, ``generation.repeats`` (1) times. The evaluation functions
live with the models (:mod:`visem.models.pse_eval`). The independent runs go
to :func:`visem.experiments.parallel.run_parallel` (one process per core),
longest first; each finished run folder under ``runs/`` is reused, not
retrained. The scoring CNN is trained once per data set and recipe and cached
(:mod:`visem.models.classifier`).

Every budget is a setting (``visem reproduce pse-mnist --set seeds=5 --set
train.steps=20000``); the resolved settings are stored as
``config.settings`` in ``results.json``, with the wall and CPU seconds.
Each run also measures the share of the encoders' gradient each weighted term
carries (:func:`visem.train.shares.gradient_shares`), at initialisation and
after training, on five fixed batches of 100 training images
(``term_shares`` in ``results.json``).

Figures (PNG, under the experiment's output folder): the 2-D latent space of
every model (Figure 2; its title gives the training steps), generated samples
per label, interpolation strips between label means, and, for word vectors,
images for unseen words and label averages.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from visem import distributed as dist
from visem.config import ConfigError, dump_yaml, load_yaml, to_dict
from visem.experiments import register_experiment, settings as resolve_settings
from visem.experiments.parallel import run_parallel
from visem.experiments.stats import mean_std
from visem.io import atomic_path
from visem.data.label_tasks import LABEL_ENCODINGS, _dataset_name, _images, label_vectors, labels_task  # noqa: F401
from visem.models.pse_eval import (  # noqa: F401  (re-exported: the evaluation of section 4)
    annotation_accuracy,
    classify_generated,
    floor_scores,
    generation_accuracy,
    reconstruction_error,
)

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
# figures (matplotlib's object API with the Agg canvas: no global backend state)
# --------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG at ``path`` (rank 0 alone under torchrun)."""
    from visem.distributed import is_main

    if not is_main():
        return path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _grid(images: Tensor, rows: int, cols: int) -> np.ndarray:
    """``(rows * cols, 784)`` images -> one ``(rows * 28, cols * 28)`` array."""
    a = images.reshape(rows, cols, 28, 28).permute(0, 2, 1, 3).reshape(rows * 28, cols * 28)
    return a.numpy()


@torch.no_grad()
def plot_latent_2d(models: Mapping[str, Any], images: Tensor, labels: Tensor, class_emb: Tensor,
                   class_names: Sequence[str], path: Path, max_points: int = 5000, title: str = "") -> Path:
    """Figure 2: posterior means of test images in each 2-D model's latent space, coloured by label.

    Models with label Gaussians also show each label's mean and one-sigma ellipse.
    CVAE's points are the learned part of its latent space (q(z|x,l)).
    ``title`` goes above the panels (the experiments state the training steps there).
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
    if title:
        fig.suptitle(title, fontsize=10)
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
# training one run, and everything measured on it (one job of run_parallel)
# --------------------------------------------------------------------------
def train_model(name: str, params: Mapping[str, Any], data: Mapping[str, Any], steps: int, run_dir: Path,
                seed: int = 0, progress: bool = False, before_fit: Callable[[Any, Any], None] | None = None,
                batch_size: int = 100, lr: float = 1e-3):
    """Train registered model ``name`` on a labels task with seed 002's optimiser settings.

    Adam 1e-3, batch 100 (Appendix A; ``--set train.batch_size`` / ``train.lr`` change them). The run folder holds ``config.yaml``,
    checkpoints and ``metrics.csv`` as for ``visem train``; a run folder with
    a finished run of the same config is loaded, not retrained.
    ``before_fit(model, task)`` sees the model at its initialisation.
    Returns ``(model, task, seconds)``.
    """
    from visem.train.run import RunConfig, prepare
    from visem.train.sampler import BatchSampler
    from visem.train.trainer import TrainConfig, Trainer

    cfg = RunConfig(
        model={"name": name, **dict(params)},
        data=dict(data),
        train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=max(1, steps // 20),
                          checkpoint_every=steps, progress=progress),
    )
    resolved, task, model = prepare(cfg)
    saved = run_dir / "config.yaml"
    if saved.exists() and load_yaml(saved) != to_dict(resolved):
        raise ConfigError(f"{run_dir} holds a run with a different config ({saved}); use a new --out or delete it")
    if before_fit is not None:
        before_fit(model, task)
    t0 = time.perf_counter()
    if dist.is_main():
        dump_yaml(to_dict(resolved), saved)
    Trainer(model, BatchSampler(task.train, batch_size, seed=seed), resolved.train, run_dir, static=task.static).fit()
    model.eval()
    return model, task, time.perf_counter() - t0


#: seed 002 Appendix A
BATCH_SIZE, LR, TRAIN_IMAGES = 100, 1e-3, 50000
#: the term-share diagnostics: this many fixed batches of BATCH_SIZE training images
SHARE_BATCHES = 5


def share_batches(task, n: int = SHARE_BATCHES, seed: int = 0) -> list[dict[str, Tensor]]:
    """``n`` fixed batches of ``BATCH_SIZE`` training images (the same for every model and seed)."""
    idx = torch.randperm(task.train["image"].shape[0], generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(n):
        j = idx[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
        out.append({"image": task.train["image"][j], "label": task.train["label"][j], **task.static})
    return out


def term_shares(model, batches: Sequence[Mapping[str, Tensor]], progress: float, seed: int = 0) -> dict[str, dict]:
    """Each weighted term's share of the encoders' gradient, averaged over ``batches``.

    ``"encoders"``: over all of :meth:`encoder_parameters`, the quantity of
    :func:`visem.train.shares.gradient_shares`; one entry per encoder network
    (``image_encoder``, ``label_encoder``, ``joint_encoder``, ``encoder``):
    over that network alone, which is what Adam's per-parameter step sees (a
    term that is a network's only gradient trains it at full speed whatever
    its share of the whole). One backward pass per term gives both. The
    reparameterisation noise of batch ``b`` is seeded with ``seed + b``; the
    global RNG state is restored afterwards.
    """
    groups = {g: [p for p in m.parameters() if p.requires_grad] for g, m in model.encoders().items()}
    flat = [p for ps in groups.values() for p in ps]
    acc: dict[str, dict[str, float]] = {"encoders": {}, **{g: {} for g in groups}}
    was = model.training
    model.train()
    try:
        with torch.random.fork_rng():
            for b, batch in enumerate(batches):
                torch.manual_seed(seed + b)
                weighted = model.objective(batch, progress).weighted()
                names = list(weighted)
                norms: dict[str, dict[str, float]] = {g: {} for g in acc}
                for i, name in enumerate(names):
                    term = weighted[name]
                    grads = (torch.autograd.grad(term, flat, retain_graph=i < len(names) - 1, allow_unused=True)
                             if term.requires_grad else [None] * len(flat))
                    k, total = 0, 0.0
                    for g, ps in groups.items():
                        sq = sum(float(x.detach().double().pow(2).sum()) for x in grads[k : k + len(ps)] if x is not None)
                        norms[g][name] = sq ** 0.5
                        total += sq
                        k += len(ps)
                    norms["encoders"][name] = total ** 0.5
                for g, d in norms.items():
                    tot = sum(d.values())
                    for name, v in d.items():
                        acc[g][name] = acc[g].get(name, 0.0) + (v / tot if tot > 0 else 0.0) / len(batches)
    finally:
        model.train(was)
    return acc


def run_job(name: str, params: Mapping[str, Any], data: Mapping[str, Any], steps: int, seed: int, run_dir: str,
            classifier: Mapping[str, Any] | None = None, generation: Mapping[str, int] | None = None,
            shares: bool = True, progress: bool = False, batch_size: int = 100, lr: float = 1e-3) -> dict[str, Any]:
    """Train one model (one seed), evaluate it; what :func:`run_parallel` runs in a worker.

    ``classifier``: ``{"dataset", "recipe"}`` of the cached scoring CNN (the
    parent trained it), or ``None`` to skip generation accuracy. Returns
    ``{"metrics", "diagnostics", "shares", "timing"}``.
    """
    from visem.models.classifier import ClassifierRecipe, load_classifier

    c0 = time.process_time()
    start: dict[str, Any] = {}

    def at_init(model, task):
        if shares:
            start.update(term_shares(model, share_batches(task), 0.0))

    model, task, secs = train_model(name, params, data, steps, Path(run_dir), seed, progress, at_init,
                                    batch_size=batch_size, lr=lr)
    t0 = time.perf_counter()
    emb = task.static["class_emb"]
    x, y = task.test["image"], task.test["label"]
    m: dict[str, Any] = {"reconstruction_error": reconstruction_error(model, x, y, emb, seed=seed)}
    m["annotation_accuracy"] = annotation_accuracy(model, x, y, emb) if model.can_annotate else None
    if classifier is not None:
        cnn, _ = load_classifier(classifier["dataset"], ClassifierRecipe(**classifier["recipe"]))
        g = generation_accuracy(model, cnn, emb, generation["n_per_label"], generation["repeats"], seed=seed)
        m["generation_accuracy"] = g["mean"]
        if generation["repeats"] > 1:
            m["generation_repeat_std"] = g["std"]
    xb = (x > 0.5).to(x.dtype)
    diag = {"reconstruction_error_posterior_mean": reconstruction_error(model, x, y, emb, seed=seed, decode="mean"),
            "reconstruction_error_thresholded": reconstruction_error(model, xb, y, emb, seed=seed)}
    out = {"metrics": m, "diagnostics": diag,
           "shares": {"start": start, "end": term_shares(model, share_batches(task), 1.0)} if shares else None,
           "weights": dict(model.objective(share_batches(task, 1)[0]).weights)}
    out["timing"] = {"train_s": round(secs, 1), "eval_s": round(time.perf_counter() - t0, 1),
                     "cpu_s": round(time.process_time() - c0, 1)}
    return out


#: CPU milliseconds per training step on one thread, measured (docs/pse.md): orders the jobs longest first
STEP_COST_MS = {"cvae": 9.0, "jmvae": 11.0, "trelbo": 15.0, "scan-bvae": 8.0, "pse": 7.5, "pse-star": 11.5}


def run_jobs(jobs: Sequence[Mapping[str, Any]], workers: int | None) -> list[dict[str, Any]]:
    """:func:`run_job` over ``jobs`` in ``workers`` processes, longest first; results in job order."""
    cost = [-job["steps"] * STEP_COST_MS.get(job["name"], 10.0) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: (cost[i], i))
    done = run_parallel(run_job, [jobs[i] for i in order], workers=workers)
    out: list[Any] = [None] * len(jobs)
    for i, r in zip(order, done):
        out[i] = r
    return out


def summarise(results: Sequence[Mapping[str, Any]], part: str = "metrics") -> dict[str, Any]:
    """``KEY``, ``KEY_std`` over seeds of each metric, in order, then ``n_runs`` (``None`` metrics stay ``None``)."""
    per = [r[part] for r in results]
    keys = [k for k in per[0] if per[0][k] is not None]
    stats = mean_std([{k: float(p[k]) for k in keys} for p in per])
    out: dict[str, Any] = {}
    for k in per[0]:
        out[k] = stats[k] if k in keys else None
        out[f"{k}_std"] = stats[f"{k}_std"] if k in keys else None
    out["n_runs"] = stats["n_runs"]
    return out


def mean_shares(results: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Term shares averaged over seeds: ``{"weights", "start": {group: {term: share}}, "end": ...}``."""
    if not results or results[0]["shares"] is None:
        return None
    out: dict[str, Any] = {"weights": results[0]["weights"]}
    for when in ("start", "end"):
        groups: dict[str, dict[str, float]] = {}
        for r in results:
            for g, sh in r["shares"][when].items():
                d = groups.setdefault(g, {})
                for k, v in sh.items():
                    d[k] = d.get(k, 0.0) + v / len(results)
        out[when] = {g: {k: round(v, 5) for k, v in d.items()} for g, d in groups.items()}
    return out


def _parse_rows(rows: Sequence[Any], key: str) -> list[tuple[str, int]]:
    """``["pse:10", ...]`` -> ``[("pse", 10), ...]``; a bad entry is a ConfigError naming it."""
    from visem.models import list_models

    known = {s.name for s in list_models(family="generative")}
    out = []
    for r in rows:
        name, _, latent = str(r).partition(":")
        if name not in known or not latent.isdigit() or int(latent) < 1:
            raise ConfigError(f"{key}: {r!r} is not MODEL:LATENT_DIM with MODEL one of {sorted(known)}")
        out.append((name, int(latent)))
    return out


def _table_defaults(quick: bool) -> dict[str, Any]:
    """The built-in settings of ``pse-mnist`` / ``pse-fashion-mnist`` (``--quick`` shortens them)."""
    if quick:
        return {"seeds": 1, "train": {"steps": 400, "batch_size": BATCH_SIZE, "lr": LR}, "rows": [f"{m}:10" for m in MODEL_ORDER],
                "long": {"steps": [], "rows": ["pse:10"], "seeds": 1}, "plot_steps": 30,
                "generation": {"n_per_label": 200, "repeats": 1},
                "classifier": {"epochs": 1, "n_train": 10000}, "test_size": 2000, "workers": None,
                "shares": True}
    return {"seeds": 5, "train": {"steps": 2000, "batch_size": BATCH_SIZE, "lr": LR},
            "rows": [f"{m}:10" for m in MODEL_ORDER] + ["pse:20", "pse-star:20"],
            "long": {"steps": [], "rows": ["pse:10"], "seeds": 5}, "plot_steps": 2000,
            "generation": {"n_per_label": 10000, "repeats": 1},
            "classifier": {"epochs": 12, "n_train": None}, "test_size": None, "workers": None,
            "shares": True}


def _check_counts(s: Mapping[str, Any], experiment: str) -> None:
    for key, v in (("seeds", s["seeds"]), ("train.steps", s["train"]["steps"]),
                   ("generation.n_per_label", s["generation"]["n_per_label"]),
                   ("generation.repeats", s["generation"]["repeats"])):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{experiment}: {key} must be a positive integer, got {v!r}")


def _classifier(dataset: str, s: Mapping[str, Any], progress: bool):
    """The cached scoring CNN (trained here, once, if the cache lacks it) and how to find it again."""
    from dataclasses import asdict

    from visem.models.classifier import ClassifierRecipe, load_classifier

    recipe = ClassifierRecipe(epochs=s["classifier"]["epochs"], n_train=s["classifier"]["n_train"])
    model, info = load_classifier(dataset, recipe, progress=progress)
    return model, info, {"dataset": dataset, "recipe": asdict(recipe)}


def floor_row(task, **ids: Any) -> dict[str, Any]:
    """The random-floor row of a table (:func:`visem.models.pse_eval.floor_scores`): no training, no std."""
    f = floor_scores(task.train["image"], task.test["image"], task.dims["n_classes"])
    row: dict[str, Any] = {"model": "random-floor", "setting": "per-pixel mean image, chance labels", **ids}
    for k, v in f.items():
        row[k], row[f"{k}_std"] = v, 0.0
    row["n_runs"] = 1
    return row


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


INTERPOLATION_PAIRS = {"mnist": ((4, 9), (7, 9), (3, 8)), "fashion-mnist": ((7, 9), (0, 6), (2, 4))}


def run_tables(dataset: str, out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
               overrides: Mapping[str, Any] | None = None) -> dict:
    """Table 1 (``mnist``) or Table 2 (``fashion-mnist``) with the figures of section 4."""
    dataset = _dataset_name(dataset)
    exp = f"pse-{dataset}"
    s = resolve_settings(_table_defaults(quick), overrides, exp)
    _check_counts(s, exp)
    rows_spec = _parse_rows(s["rows"], "rows")
    long_spec = _parse_rows(s["long"]["rows"], "long.rows")
    long_steps = list(s["long"]["steps"] or [])
    long_seeds = s["long"]["seeds"]
    long_seeds = list(long_seeds) if isinstance(long_seeds, (list, tuple)) else [long_seeds] * len(long_steps)
    if len(long_seeds) != len(long_steps) or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                                 for n in long_seeds + long_steps):
        raise ConfigError(f"{exp}: long.steps must be a list of positive step counts and long.seeds a positive "
                          f"integer or one per entry of long.steps; got {s['long']['steps']!r}, {s['long']['seeds']!r}")
    t_start, cpu_start = time.perf_counter(), _cpu_seconds()
    classifier, cls_info, cls_ref = _classifier(dataset, s, progress)
    data = {"name": f"{dataset}-labels", "label_encoding": "one-hot", "test_size": s["test_size"]}
    runs, fig_dir = out_dir / "runs", out_dir / "figures"
    steps = s["train"]["steps"]
    opt = {"batch_size": int(s["train"]["batch_size"]), "lr": float(s["train"]["lr"])}
    seeds = [seed + i for i in range(s["seeds"])]
    groups: list[tuple[str, int, int, list[int]]] = [(m, d, steps, seeds) for m, d in rows_spec]
    groups += [(m, d, n, [seed + i for i in range(k)]) for n, k in zip(long_steps, long_seeds) for m, d in long_spec]
    solo = s["workers"] is not None and int(s["workers"]) <= 1
    jobs, where = [], []
    for g, (name, latent, n, sds) in enumerate(groups):
        for sd in sds:
            jobs.append({"name": name, "params": {"latent_dim": latent}, "data": data, "steps": n, "seed": sd,
                         "run_dir": str(runs / f"{name}-{latent}d-{n}steps-seed{sd}"), "classifier": cls_ref,
                         "generation": dict(s["generation"]), "shares": bool(s["shares"]),
                         "progress": progress and solo, **opt})
            where.append(g)
    plot_runs = {name: runs / f"{name}-2d-{s['plot_steps']}steps-seed{seed}" for name in MODEL_ORDER}
    for name, run in plot_runs.items():
        jobs.append({"name": name, "params": {"latent_dim": 2}, "data": data, "steps": s["plot_steps"], "seed": seed,
                     "run_dir": str(run), "classifier": None, "generation": None, "shares": False,
                     "progress": progress and solo, **opt})
        where.append(None)
    done = run_jobs(jobs, s["workers"])
    t_trained = time.perf_counter()

    rows, diagnostics, shares, timings = [], [], {}, {}
    for g, (name, latent, n, sds) in enumerate(groups):
        res = [r for r, w in zip(done, where) if w == g]
        row: dict[str, Any] = {"model": name}
        if n != steps:  # another budget than the table's: its own, labelled row
            row["setting"] = f"{n} steps"
        row["latent_dim"] = latent
        row.update(summarise(res))
        rows.append(row)
        label = f"{name}-{latent}d" + (f"-{n}steps" if n != steps else "")
        diagnostics.append({"model": name, "latent_dim": latent, "steps": n, **summarise(res, "diagnostics")})
        shares[label] = mean_shares(res)
        for sd, r in zip(sds, res):
            timings[f"{label}-seed{sd}"] = r["timing"]
    latent_2d = {}
    for (name, _), r in zip(plot_runs.items(), done[len(done) - len(plot_runs):]):
        latent_2d[name] = {k: r["metrics"][k] for k in ("reconstruction_error", "annotation_accuracy")}
        timings[f"{name}-2d"] = r["timing"]

    # figures from the seed-0 models (their finished run folders are loaded, not retrained)
    figures = []
    names = _images(dataset, "train", None)[2]
    loaded = {}

    def load(name: str, latent: int, n: int, run: Path):
        if (name, latent, n) not in loaded:
            loaded[(name, latent, n)] = train_model(name, {"latent_dim": latent}, data, n, run, seed, **opt)[:2]
        return loaded[(name, latent, n)]

    main = 10
    for name in ("pse", "pse-star", "cvae"):
        if (name, main) in rows_spec:
            model, task = load(name, main, steps, runs / f"{name}-{main}d-{steps}steps-seed{seed}")
            figures.append(plot_samples(model, task.static["class_emb"], names,
                                        fig_dir / f"samples_{name}_{main}d.png", seed=seed,
                                        title=f"{name} ({main}-D, {steps} steps): images generated from each label"))
            if name != "cvae":
                emb = task.static["class_emb"]
                strips = [(f"{names[a]} -> {names[b]}", interpolate_means(model, emb, a, b))
                          for a, b in INTERPOLATION_PAIRS[dataset]]
                figures.append(plot_strips(strips, fig_dir / f"interpolation_{name}_{main}d.png"))
    models_2d = {name: load(name, 2, s["plot_steps"], run)[0] for name, run in plot_runs.items()}
    task = load("pse", 2, s["plot_steps"], plot_runs["pse"])[1]
    rows.append(floor_row(task, latent_dim=0))
    title = f"2-D latent spaces after {s['plot_steps']} training steps (seed {seed})"
    if s["plot_steps"] != 2000:
        title += f"; not the paper's 2,000 steps"
    figures.append(plot_latent_2d(models_2d, task.test["image"], task.test["label"], task.static["class_emb"], names,
                                  fig_dir / "latent_2d.png", title=title))
    paper = PAPER_TABLE1 if dataset == "mnist" else PAPER_TABLE2
    return {
        "experiment": exp,
        "config": {
            "dataset": dataset,
            "seed": seed,
            "seeds": seeds,
            "settings": s,
            "train": {"steps": steps, "batch_size": BATCH_SIZE, "lr": LR, "optimizer": "adam",
                      "train_images": TRAIN_IMAGES},
            "rows": [{"model": m, "latent_dim": d, "steps": n, "seeds": list(sds)} for m, d, n, sds in groups],
            "test_images": int(task.test["image"].shape[0]),
            "statistics": "mean and sample std (ddof=1) over the training seeds; n_runs seeds per row",
            "generation": dict(s["generation"]) | {
                "per_seed": f"{s['generation']['n_per_label']} images per label, {s['generation']['repeats']} "
                            "repeat(s); the row's std is over seeds (the paper's +- is over 10 repeats of one model)"},
            "reconstruction_targets": "grey levels in [0, 1] (Bernoulli cross-entropy, nats per image), "
                                      "one posterior sample per image",
            "classifier": {k: v for k, v in cls_info.items() if k != "path"} | {"paper": PAPER_CLASSIFIERS[dataset]},
            "workers": s["workers"],
            "timings_s": timings,
            "train_wall_s": round(t_trained - t_start, 1),
            "wall_s": round(time.perf_counter() - t_start, 1),
            "cpu_s": round(_cpu_seconds() - cpu_start, 1),
        },
        "rows": rows,
        "paper": paper,
        "reconstruction_variants": diagnostics,
        "term_shares": shares,
        "latent_2d": latent_2d,
        "latent_2d_steps": s["plot_steps"],
        "figures": [str(p.relative_to(out_dir)) for p in figures],
    }


@register_experiment("pse-mnist", description="PSE, PSE* and CVAE/JMVAE/TrELBO/SCAN on MNIST (seed 002 Table 1)",
                     paper="seed 002 Table 1, Figure 2")
def run_mnist(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return run_tables("mnist", Path(out_dir), quick, seed, progress, overrides)


@register_experiment("pse-fashion-mnist",
                     description="PSE, PSE* and CVAE/JMVAE/TrELBO/SCAN on Fashion-MNIST (seed 002 Table 2)",
                     paper="seed 002 Table 2, Figure 4")
def run_fashion(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return run_tables("fashion-mnist", Path(out_dir), quick, seed, progress, overrides)


# --------------------------------------------------------------------------
# word vectors (seed 002 section 5)
# --------------------------------------------------------------------------
#: words and phrases that are not Fashion-MNIST class names (Figure 6)
UNSEEN_PHRASES = ("boots", "jeans", "sneakers", "pullover sweater", "sandals", "handbag")
#: pairs of classes whose label vectors are averaged (Figure 5)
AVERAGED_PAIRS = ((7, 9), (0, 6))


def _word_defaults(quick: bool) -> dict[str, Any]:
    d = _table_defaults(quick)
    return {"seeds": d["seeds"], "train": d["train"], "generation": d["generation"], "classifier": d["classifier"],
            "test_size": d["test_size"], "workers": d["workers"], "probe_images": 200 if quick else 2000,
            "shares": d["shares"]}


@register_experiment("pse-word-vectors",
                     description="PSE/PSE* on Fashion-MNIST with one-hot vs GloVe label vectors (seed 002 Table 3)",
                     paper="seed 002 Table 3, Figures 4b-6")
def run_word_vectors(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from visem.features.text import glove_phrases

    out_dir = Path(out_dir)
    exp = "pse-word-vectors"
    s = resolve_settings(_word_defaults(quick), overrides, exp)
    _check_counts(s, exp)
    dataset = "fashion-mnist"
    t_start, cpu_start = time.perf_counter(), _cpu_seconds()
    classifier, cls_info, cls_ref = _classifier(dataset, s, progress)
    names = _images(dataset, "train", None)[2]
    latent, steps = 10, s["train"]["steps"]
    opt = {"batch_size": int(s["train"]["batch_size"]), "lr": float(s["train"]["lr"])}
    seeds = [seed + i for i in range(s["seeds"])]
    solo = s["workers"] is not None and int(s["workers"]) <= 1
    groups, jobs, where = [], [], []
    for name in ("pse", "pse-star"):
        for enc in LABEL_ENCODINGS:
            params: dict[str, Any] = {"latent_dim": latent}
            if name == "pse-star" and enc == "word-vectors":
                params["label_likelihood"] = "gaussian"
            data = {"name": f"{dataset}-labels", "label_encoding": enc, "test_size": s["test_size"]}
            groups.append((name, enc, params, data))
            for sd in seeds:
                jobs.append({"name": name, "params": params, "data": data, "steps": steps, "seed": sd,
                             "run_dir": str(out_dir / "runs" / f"{name}-{enc}-{latent}d-{steps}steps-seed{sd}"),
                             "classifier": cls_ref, "generation": dict(s["generation"]), "shares": bool(s["shares"]),
                             "progress": progress and solo, **opt})
                where.append(len(groups) - 1)
    done = run_jobs(jobs, s["workers"])
    rows, per_seed, timings, shares = [], {}, {}, {}
    for g, (name, enc, params, data) in enumerate(groups):
        res = [r for r, w in zip(done, where) if w == g]
        rows.append({"model": name, "latent_dim": latent, "features": enc,
                     "vectors": "glove-6b-50d" if enc == "word-vectors" else None, **summarise(res)})
        per_seed[f"{name}/{enc}"] = {k: [r["metrics"][k] for r in res] for k in res[0]["metrics"]}
        shares[f"{name}/{enc}"] = mean_shares(res)
        for sd, r in zip(seeds, res):
            timings[f"{name}-{enc}-seed{sd}"] = r["timing"]
    # section 5: unseen words, label averages, interpolation (PSE* with word vectors, seed 0, Figure 5)
    name, enc, params, data = groups[[(g[0], g[1]) for g in groups].index(("pse-star", "word-vectors"))]
    model, task, _ = train_model(name, params, data, steps,
                                 out_dir / "runs" / f"{name}-{enc}-{latent}d-{steps}steps-seed{seeds[0]}", seeds[0], **opt)
    rows.append(floor_row(task, latent_dim=0, features="none"))
    emb = task.static["class_emb"]
    fig_dir = out_dir / "figures"
    figures = []
    pv = glove_phrases(list(UNSEEN_PHRASES), mode="mean")
    vecs = torch.from_numpy(np.ascontiguousarray(pv.vectors))
    cos = torch.nn.functional.normalize(vecs, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T
    n_probe = int(s["probe_images"])
    frac = classify_generated(model, classifier, vecs, n_probe, seed=seed, n_classes=len(names))
    unseen = {}
    for i, phrase in enumerate(UNSEEN_PHRASES):
        top = torch.argsort(frac[i], descending=True)[:2]
        unseen[phrase] = {
            "nearest_class_by_glove": names[int(cos[i].argmax())],
            "glove_cosine": round(float(cos[i].max()), 3),
            "generated_classified_as": {names[int(k)]: round(100 * float(frac[i, k]), 1) for k in top},
        }
    avg_vecs = torch.stack([0.5 * (emb[a] + emb[b]) for a, b in AVERAGED_PAIRS])
    frac_avg = classify_generated(model, classifier, avg_vecs, n_probe, seed=seed, n_classes=len(names))
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
                                title=f"PSE* with GloVe label vectors ({steps} steps): images generated from each label"))
    return {
        "experiment": exp,
        "config": {
            "dataset": dataset,
            "seeds": seeds,
            "settings": s,
            "train": {"steps": steps, "batch_size": BATCH_SIZE, "lr": LR, "optimizer": "adam",
                      "train_images": TRAIN_IMAGES},
            "word_vectors": "GloVe 6B 50d, mean over the words of the class name (paper: word2vec 300d)",
            "pse_star_label_likelihood": {"one-hot": "categorical", "word-vectors": "gaussian, sigma 1"},
            "statistics": "mean and sample std (ddof=1) over the training seeds; n_runs seeds per row",
            "generation": dict(s["generation"]),
            "probes": f"{n_probe} images per phrase from the seed-{seeds[0]} PSE* word-vector model",
            "classifier": {k: v for k, v in cls_info.items() if k != "path"} | {"paper": PAPER_CLASSIFIERS[dataset]},
            "workers": s["workers"],
            "timings_s": timings,
            "wall_s": round(time.perf_counter() - t_start, 1),
            "cpu_s": round(_cpu_seconds() - cpu_start, 1),
        },
        "rows": rows,
        "paper": PAPER_TABLE3,
        "per_seed": per_seed,
        "term_shares": shares,
        "unseen_words": unseen,
        "label_averages": averages,
        "figures": [str(p.relative_to(out_dir)) for p in figures],
    }
