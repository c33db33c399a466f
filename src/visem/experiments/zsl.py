"""Zero- and few-shot recognition: ``zsl-mnist`` and ``zsl-fashion-mnist`` (seed 000 protocol).

Protocol helpers, used by the built-in experiments, ``zsl-xian`` and the tests:

* :class:`ZSLSplit` -- seen-class training images, seen and unseen test
  images, the side information of every class; :func:`make_zsl_split` draws
  one from labelled features, :func:`few_shot_split` moves ``k`` images of
  each unseen class into training, :func:`validation_split` carves a
  validation split out of the seen classes (model selection never looks at
  the test set).
* :func:`train_zsl` -- builds a registered zero-shot model, trains it on a
  split (inductive: only the training images and the training classes' side
  information; transductive: the unlabelled unseen test images and every
  class's side information too), then calls its ``finalize``.
* :func:`zsl_metrics` -- per-class mean top-1 on unseen classes among the
  unseen classes; GZSL seen / unseen accuracy among all classes and their
  harmonic mean H; zero-shot retrieval mAP (each unseen class's side
  information is the query, the unseen test images the gallery). Percent.
* :func:`run_zsl_models` -- every row of the table on one split (closed
  forms chosen on a validation split over ``10^-3 .. 10^3``, a warning when
  a choice sits on a grid's edge), the random floor (:class:`RandomScorer`)
  and, with ``shares``, each neural run's term shares (:func:`term_shares`).

The built-in experiments (:func:`run_zsl`) resolve their settings with
:func:`visem.experiments.settings` (``visem reproduce zsl-mnist --set
train.steps=2000``), run the splits in parallel processes and report mean
and sample std over the splits.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from visem.config import ConfigError
from visem.experiments.stats import as_tensor, floored_std, mean_std
from visem.metrics import gzsl_harmonic, mean_average_precision, per_class_accuracy
from visem.models.registry import build_model
from visem.train.sampler import BatchSampler
from visem.train.trainer import TrainConfig, Trainer

_t = as_tensor


# --------------------------------------------------------------------------
# zero-shot recognition splits
# --------------------------------------------------------------------------
@dataclass
class ZSLSplit:
    """One zero-shot split; labels are global class ids (rows of ``class_emb``)."""

    train_image: Tensor
    train_label: Tensor
    test_seen_image: Tensor
    test_seen_label: Tensor
    test_unseen_image: Tensor
    test_unseen_label: Tensor
    class_emb: Tensor
    seen: Tensor  # global ids of the seen classes
    unseen: Tensor  # global ids of the unseen classes

def make_zsl_split(
    image: Any,
    label: Any,
    class_emb: Any,
    unseen: Any,
    test_image: Any | None = None,
    test_label: Any | None = None,
    seen_test_fraction: float = 0.2,
    seed: int = 0,
) -> ZSLSplit:
    """A ZSL split of labelled features.

    Images of ``unseen`` classes are test images only. Seen-class images come
    from ``image`` (training) and ``test_image`` (seen test), or, without a
    separate test set, ``seen_test_fraction`` of each seen class is held out.
    """
    x, y = _t(image, torch.float32), _t(label, torch.long)
    s = _t(class_emb, torch.float32)
    unseen_t = torch.as_tensor(sorted(int(c) for c in np.asarray(unseen).ravel()), dtype=torch.long)
    n_cls = s.shape[0]
    if len(unseen_t) == 0 or int(unseen_t.max()) >= n_cls or int(unseen_t.min()) < 0:
        raise ValueError(f"unseen must be non-empty class ids in [0, {n_cls}), got {unseen_t.tolist()}")
    seen_t = torch.as_tensor([c for c in range(n_cls) if c not in set(unseen_t.tolist())], dtype=torch.long)
    is_unseen = torch.isin(y, unseen_t)
    if test_image is not None:
        xt, yt = _t(test_image, torch.float32), _t(test_label, torch.long)
        tr = ~is_unseen
        te_seen = ~torch.isin(yt, unseen_t)
        return ZSLSplit(x[tr], y[tr], xt[te_seen], yt[te_seen], xt[~te_seen], yt[~te_seen], s, seen_t, unseen_t)
    gen = torch.Generator().manual_seed(seed)
    train_idx, seen_test_idx = [], []
    for c in seen_t.tolist():
        idx = torch.nonzero(y == c).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = int(round(seen_test_fraction * len(idx)))
        seen_test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    tr, te = torch.cat(train_idx), torch.cat(seen_test_idx)
    return ZSLSplit(x[tr], y[tr], x[te], y[te], x[is_unseen], y[is_unseen], s, seen_t, unseen_t)


def few_shot_split(split: ZSLSplit, shots: int, seed: int = 0) -> ZSLSplit:
    """Move ``shots`` random test images of each unseen class into training."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.ones(len(split.test_unseen_label), dtype=torch.bool)
    moved = []
    for c in split.unseen.tolist():
        idx = torch.nonzero(split.test_unseen_label == c).squeeze(1)
        if len(idx) <= shots:
            raise ValueError(f"unseen class {c} has {len(idx)} test images, too few for {shots} shots")
        pick = idx[torch.randperm(len(idx), generator=gen)[:shots]]
        keep[pick] = False
        moved.append(pick)
    mv = torch.cat(moved)
    return dataclasses.replace(
        split,
        train_image=torch.cat([split.train_image, split.test_unseen_image[mv]]),
        train_label=torch.cat([split.train_label, split.test_unseen_label[mv]]),
        test_unseen_image=split.test_unseen_image[keep],
        test_unseen_label=split.test_unseen_label[keep],
    )


def validation_split(split: ZSLSplit, n_val_classes: int, seed: int = 0, val_classes: Any | None = None) -> ZSLSplit:
    """A ZSL split inside the seen classes: ``n_val_classes`` of them play the unseen ones.

    Only the training images are used; the held-out seen classes' training
    images become the "unseen" test images. Model selection runs on this.
    ``val_classes`` names those classes instead of a seeded draw (the ``val``
    classes of Xian et al.'s proposed split); they must be seen classes.
    """
    if val_classes is not None:
        val_unseen = torch.as_tensor(sorted(int(c) for c in np.asarray(val_classes).ravel()), dtype=torch.long)
        if len(val_unseen) == 0 or not bool(torch.isin(val_unseen, split.seen).all()):
            raise ValueError(f"val_classes must be non-empty seen classes, got {val_unseen.tolist()}")
        rest = split.seen[~torch.isin(split.seen, val_unseen)]
    else:
        gen = torch.Generator().manual_seed(seed)
        seen = split.seen[torch.randperm(len(split.seen), generator=gen)]
        val_unseen, rest = seen[:n_val_classes].sort().values, seen[n_val_classes:]
    x, y = split.train_image, split.train_label
    inner = make_zsl_split(x, y, split.class_emb, val_unseen.numpy(), seed=seed)
    # classes that were unseen in the outer split stay out entirely
    return dataclasses.replace(inner, seen=rest.sort().values)


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------
class _ZSLSampler:
    """Labelled batches, with a batch of unlabelled images joined in (transductive)."""

    def __init__(self, labelled: BatchSampler, unlabeled: BatchSampler | None,
                 extra: Mapping[str, Tensor]) -> None:
        self.labelled, self.unlabeled, self.extra = labelled, unlabeled, dict(extra)

    def __iter__(self) -> "_ZSLSampler":
        return self

    def shard(self, rank: int, world: int) -> "_ZSLSampler":
        self.labelled.shard(rank, world)
        if self.unlabeled is not None:
            self.unlabeled.shard(rank, world)
        return self

    def __next__(self) -> dict[str, Tensor]:
        batch = {**next(self.labelled), **self.extra}
        if self.unlabeled is not None:
            batch["unlabeled"] = next(self.unlabeled)["image"]
        return batch

    def state_dict(self) -> dict[str, Any]:
        out = {"labelled": self.labelled.state_dict()}
        if self.unlabeled is not None:
            out["unlabeled"] = self.unlabeled.state_dict()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.labelled.load_state_dict(state["labelled"])
        if self.unlabeled is not None:
            self.unlabeled.load_state_dict(state["unlabeled"])


def _training_setup(name: str, params: Mapping[str, Any] | None, split: ZSLSplit, train: TrainConfig,
                    transductive: bool, sampler_seed: int | None = None):
    """``(model, sampler, final)`` of :func:`train_zsl`: the untrained model, its batch stream, the finalize dict."""
    torch.manual_seed(train.seed)
    if transductive:
        classes = torch.arange(split.class_emb.shape[0])
    else:
        classes = torch.unique(split.train_label)
    remap = torch.full((split.class_emb.shape[0],), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    label = remap[split.train_label]
    class_emb = split.class_emb[classes]
    dims = {"image_dim": split.train_image.shape[1], "class_dim": split.class_emb.shape[1],
            "n_classes": len(classes)}
    model = build_model(name, dict(params or {}), dims=dims)
    with_label = torch.isin(classes, torch.unique(split.train_label))
    novel = with_label & torch.isin(classes, split.unseen)
    rows = torch.ones(len(label), dtype=torch.bool)
    if not getattr(model, "novel_shots_in_training", True):
        rows = ~torch.isin(split.train_label, split.unseen)
    seed = train.seed if sampler_seed is None else sampler_seed
    extra: dict[str, Tensor] = {"class_emb": class_emb}
    unl = None
    if transductive:
        extra["labeled_classes"] = torch.isin(classes, torch.unique(split.train_label[rows]))
        extra["unlabeled_classes"] = torch.isin(classes, split.unseen)
        unl = BatchSampler({"image": split.test_unseen_image}, train.batch_size, seed=seed + 1)
    sampler = _ZSLSampler(BatchSampler({"image": split.train_image[rows], "label": label[rows]},
                                       train.batch_size, seed), unl, extra)
    final = {"image": split.train_image, "label": label, "class_emb": class_emb, "class_ids": classes,
             "labeled_classes": with_label, "novel_classes": novel}
    if transductive:
        final["unlabeled"] = split.test_unseen_image
    return model, sampler, final


def train_zsl(
    name: str,
    params: Mapping[str, Any] | None,
    split: ZSLSplit,
    train: TrainConfig,
    transductive: bool = False,
    on_step: Callable[[int, Any], None] | None = None,
):
    """Train registered zero-shot model ``name`` on ``split``; returns the model.

    Inductive: the model sees the training images and the side information
    of the classes that have training images (seen, plus novel classes in
    few-shot), labels re-indexed to those rows. Transductive: it also gets
    the unseen test images without labels (``unlabeled``, with
    ``unlabeled_classes`` = the unseen classes) and the side information of
    every class, labels as global ids; ``labeled_classes`` marks the classes
    that have labelled images (the negatives of a labelled image's ranking).

    Few-shot splits: a model whose ``novel_shots_in_training`` is False
    (CADA-VAE's reference protocol) learns its representation from the seen
    classes' images only; the novel classes' shots reach it in
    :meth:`~visem.models.zeroshot.ZeroShotModel.finalize` (``novel_classes``
    marks those classes). The model's ``prepare`` sees the same dict before
    training (input statistics), ``finalize`` after it. ``on_step(step,
    model)`` is called after every training step.
    """
    model, sampler, final = _training_setup(name, params, split, train, transductive)
    model.prepare(final)
    if train.steps > 0:
        hook = None if on_step is None else (lambda step, terms: on_step(step, model))
        Trainer(model, sampler, dataclasses.replace(train, progress=False), on_step=hook).fit()
    model.finalize(final)
    model.eval()
    return model


def share_batch(name: str, params: Mapping[str, Any] | None, split: ZSLSplit, train: TrainConfig,
                transductive: bool = False) -> dict[str, Tensor]:
    """One training batch of :func:`train_zsl`'s stream (another seed), for :func:`visem.train.shares.gradient_shares`."""
    with torch.random.fork_rng():
        _, sampler, _ = _training_setup(name, params, split, train, transductive, sampler_seed=train.seed + 7919)
        return next(sampler)


def term_shares(name: str, params: Mapping[str, Any] | None, split: ZSLSplit, train: TrainConfig,
                transductive: bool = False) -> tuple[Any, dict[str, dict[str, float]]]:
    """Train like :func:`train_zsl` and measure each weighted term's share of the encoders' gradient.

    Returns ``(model, {"start": ..., "mid": ..., "end": ...})``: ``start`` is the untrained model with
    the weights at their final values (``progress = 1``), ``mid`` the model half-way with the weights
    where the schedule has them then (``progress = 0.5``), ``end`` the trained model at ``progress = 1``;
    all on one batch of the training stream (:func:`share_batch`); a phase in which no term has a
    gradient (every hinge satisfied on the batch) reports 0 for every term. The measurements run under
    ``torch.random.fork_rng``, so the trained model is the one :func:`train_zsl` returns.
    """
    from visem.train.shares import gradient_norms

    batch = share_batch(name, params, split, train, transductive)

    def measure(m: Any, progress: float) -> dict[str, float]:
        with torch.random.fork_rng():
            norms = gradient_norms(m, batch, progress=progress)
        total = sum(norms.values())  # 0 when every term is satisfied (a hinge at zero): all shares 0
        return {k: (v / total if total > 0 else 0.0) for k, v in norms.items()}

    m0, _, final = _training_setup(name, params, split, train, transductive)
    m0.prepare(final)
    out = {"start": measure(m0, 1.0)}
    half = max(1, train.steps // 2)

    def at_half(step: int, m: Any) -> None:
        if step == half:
            out["mid"] = measure(m, step / train.steps)

    model = train_zsl(name, params, split, train, transductive, on_step=at_half)
    out["end"] = measure(model, 1.0)
    return model, out


def zsl_metrics(model: Any, split: ZSLSplit) -> dict[str, float]:
    """ZSL, GZSL and zero-shot retrieval scores of a trained model (percent)."""
    s = split.class_emb
    pred_u = split.unseen[model.predict(split.test_unseen_image, s[split.unseen], split.unseen)]
    unseen_acc = per_class_accuracy(pred_u, split.test_unseen_label)
    all_ids = torch.arange(s.shape[0])
    pred_gs = model.predict(split.test_seen_image, s, all_ids)
    pred_gu = model.predict(split.test_unseen_image, s, all_ids)
    g_seen = per_class_accuracy(pred_gs, split.test_seen_label)
    g_unseen = per_class_accuracy(pred_gu, split.test_unseen_label)
    with torch.no_grad():
        q = model.embed_class(s[split.unseen])
        g = model.embed_image(split.test_unseen_image)
    rmap = 100.0 * mean_average_precision(q, g, split.unseen, split.test_unseen_label)
    return {"unseen_accuracy": unseen_acc, "gzsl_seen": g_seen, "gzsl_unseen": g_unseen,
            "gzsl_h": gzsl_harmonic(g_seen, g_unseen), "retrieval_map": rmap}


# --------------------------------------------------------------------------
# data for the built-in experiments
# --------------------------------------------------------------------------
def mnist_subset(name: str, train_per_class: int, test_per_class: int, seed: int = 0) -> dict[str, Any]:
    """A fixed, class-balanced subset of MNIST / Fashion-MNIST (uint8 images, labels, class names).

    ``train_per_class`` images of each class from the official training split
    and ``test_per_class`` from the test split, drawn with ``seed``; the
    subset (not the zero-shot split) is the same for every split seed, so
    image features are computed once.
    """
    from visem.data import load

    out: dict[str, Any] = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        d = load(name, split=split)
        rng = np.random.default_rng(seed)
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(d.labels == c))[:per]
                                      for c in range(len(d.class_names))]))
        out[f"{split}_images"] = np.asarray(d.images)[idx]
        out[f"{split}_labels"] = np.asarray(d.labels)[idx].astype(np.int64)
        out["class_names"] = list(d.class_names)
    return out

def standardize_zsl(split: ZSLSplit) -> ZSLSplit:
    """Z-score image features with the mean / std of the training images only.

    Each dimension's std is floored at a tenth of the mean std, so near-constant
    inputs (border pixels) are not blown up.
    """
    mu = split.train_image.mean(0)
    sd = floored_std(split.train_image)
    f = lambda x: (x - mu) / sd  # noqa: E731
    return dataclasses.replace(split, train_image=f(split.train_image), test_seen_image=f(split.test_seen_image),
                               test_unseen_image=f(split.test_unseen_image))


def select_params(name: str, grid: list[dict[str, Any]], split: ZSLSplit, train: TrainConfig,
                  n_val_classes: int = 2, seed: int = 0, val: ZSLSplit | None = None) -> dict[str, Any]:
    """The entry of ``grid`` with the best unseen accuracy on a validation split of the seen classes.

    ``val``: that validation split (default: :func:`validation_split` of ``split``). Ties keep the
    first entry.
    """
    if val is None:
        val = validation_split(split, n_val_classes, seed=seed)
    best, best_acc = grid[0], -1.0
    for params in grid:
        model = train_zsl(name, params, val, train)
        acc = zsl_metrics(model, val)["unseen_accuracy"]
        if acc > best_acc:
            best, best_acc = params, acc
    return best


def param_grid(axes: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """The product grid of ``{param: values}`` as a list of parameter dicts (first axis outermost)."""
    grid: list[dict[str, float]] = [{}]
    for key, values in axes.items():
        if not len(values):
            raise ValueError(f"grid axis {key!r} has no values")
        grid = [{**g, key: float(v)} for g in grid for v in values]
    return grid


def grid_edges(axes: Mapping[str, Sequence[float]], chosen: Mapping[str, float]) -> list[str]:
    """The parameters of ``chosen`` that sit on the lowest or highest value of their grid axis.

    A value chosen on the edge means the best one may lie outside the grid.
    Axes with a single value have no edge.
    """
    out = []
    for key, values in axes.items():
        lo, hi = min(values), max(values)
        if lo == hi:
            continue
        v = chosen[key]
        if v == lo:
            out.append(f"{key}={v:g} (lowest of {lo:g}..{hi:g})")
        elif v == hi:
            out.append(f"{key}={v:g} (highest of {lo:g}..{hi:g})")
    return out


def warn_grid_edges(where: str, model: str, edges: Sequence[str]) -> None:
    if edges:
        warnings.warn(f"{where}: {model} chose {', '.join(edges)} on the validation split; the best value may "
                      f"lie outside the grid (widen it with --set grids.{model}.PARAM=[...])", stacklevel=2)


class RandomScorer:
    """The random floor: uniformly random predictions and random embeddings (a random ranking).

    Stands in for a trained model in :func:`zsl_metrics`: ``predict`` draws
    each image's class uniformly among the candidates, ``embed_image`` /
    ``embed_class`` draw i.i.d. Gaussian vectors, so retrieval ranks the
    gallery at random. Seeded, so a table's floor is reproducible.
    """

    def __init__(self, seed: int = 0, dim: int = 8) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.dim = dim

    def predict(self, image: Tensor, class_emb: Tensor, class_ids: Tensor | None = None) -> Tensor:
        return torch.randint(0, class_emb.shape[0], (image.shape[0],), generator=self.gen)

    def embed_image(self, image: Tensor) -> Tensor:
        return torch.randn(image.shape[0], self.dim, generator=self.gen)

    def embed_class(self, class_emb: Tensor) -> Tensor:
        return torch.randn(class_emb.shape[0], self.dim, generator=self.gen)


# (model, setting, extra params, transductive, shots per novel class)
_ZSL_RUNS: list[tuple[str, str, dict[str, Any], bool, int]] = [
    ("eszsl", "inductive", {}, False, 0),
    ("sae", "inductive", {}, False, 0),
    ("devise", "inductive", {}, False, 0),
    ("revise", "inductive", {}, False, 0),
    ("revise", "transductive", {}, True, 0),
    ("revise", "transductive-adapt", {"adapt_weight": 1.0, "adapt_start": 0.5}, True, 0),
    ("cada-vae", "inductive", {}, False, 0),
    ("revise", "few-shot-1", {}, False, 1),
    ("revise", "few-shot-5", {}, False, 5),
    ("revise", "few-shot-10", {}, False, 10),
    ("cada-vae", "few-shot-1", {}, False, 1),
    ("cada-vae", "few-shot-5", {}, False, 5),
    ("cada-vae", "few-shot-10", {}, False, 10),
]
FLOOR = ("random", "floor")

# the regularisers of the closed-form models, chosen on the validation split: the papers' range 10^-3 .. 10^3
_DECADES = [10.0 ** k for k in range(-3, 4)]
_GRID_AXES: dict[str, dict[str, list[float]]] = {
    "eszsl": {"gamma": list(_DECADES), "lam": list(_DECADES)},
    "sae": {"lam": list(_DECADES)},
}
_GRIDS = {name: param_grid(axes) for name, axes in _GRID_AXES.items()}

# fixed hyper-parameters of the neural models (set before any run, not tuned on test)
_ZSL_PARAMS: dict[str, dict[str, Any]] = {
    "devise": {"margin": 0.1},
    "revise": {"code_dim": 64},
    "cada-vae": {"latent_dim": 32, "hidden_image": [128], "hidden_side": [64]},
}


_DATA_FIELDS = ("image_dim", "class_dim", "text_dim", "n_classes")


def model_settings(quick: bool = False) -> dict[str, dict[str, Any]]:
    """Every config field of the table's gradient-trained models, at the table's values.

    The registered config's defaults overlaid with ``_ZSL_PARAMS`` (fields read off the data left
    out, tuples as lists), so that ``--set models.revise.mmd_weight=1`` finds its key.
    """
    from visem.models.registry import get_model_spec

    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(m for m, *_ in _ZSL_RUNS if m not in _GRID_AXES):
        cfg = get_model_spec(name).config_cls()
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _DATA_FIELDS}
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
        out[name] = {**fields, **copy.deepcopy(_ZSL_PARAMS.get(name, {}))}
    if quick:
        out["cada-vae"]["cls_epochs"] = 2
    return out


def zsl_defaults(quick: bool) -> dict[str, Any]:
    """Built-in settings of ``zsl-mnist`` / ``zsl-fashion-mnist`` (each settable with ``--set``)."""
    models = model_settings(quick)
    return {
        "splits": 1 if quick else 5,
        "unseen_classes": 3,
        "train_per_class": 20 if quick else 200,
        "test_per_class": 12 if quick else 100,
        "features": ["pixels"] if quick else ["pixels", "efficientnet"],
        "train": {"steps": 40 if quick else 500, "batch_size": 64 if quick else 128, "lr": 1e-3},
        "models": models,
        "grids": copy.deepcopy(_GRID_AXES),
        "n_val_classes": 2,
        "shares": True,
        "workers": None,
    }


def run_zsl_models(split: ZSLSplit, train: TrainConfig, models: Mapping[str, Mapping[str, Any]],
                   grids: Mapping[str, Mapping[str, Sequence[float]]], n_val_classes: int = 2, seed: int = 0,
                   runs: Sequence[tuple[str, str, dict[str, Any], bool, int]] = _ZSL_RUNS,
                   val: ZSLSplit | None = None, shares: bool = False) -> dict[str, Any]:
    """Every run of ``runs`` on one split, plus the random floor.

    Returns ``{"metrics": [[model, setting, zsl_metrics], ...] (floor last), "chosen": {model/setting: params},
    "edges": {model/setting: [...]}, "shares": {model/setting: {"start", "mid", "end"}}}``. Closed-form
    models (those in ``grids``) pick their regularisers on ``val`` (default :func:`validation_split` of the
    split) and train no steps; with ``shares`` the gradient-trained ones also report :func:`term_shares`.
    """
    out: list[list[Any]] = []
    chosen: dict[str, Any] = {}
    edges: dict[str, list[str]] = {}
    share_out: dict[str, Any] = {}
    for model, setting, extra, transductive, shots in runs:
        sp = few_shot_split(split, shots, seed=seed) if shots else split
        if model in grids:
            params = select_params(model, param_grid(grids[model]), sp, dataclasses.replace(train, steps=0),
                                   n_val_classes, seed=seed, val=val if not shots else None)
            chosen[f"{model}/{setting}"] = params
            edges[f"{model}/{setting}"] = grid_edges(grids[model], params)
            steps = 0
        else:
            params = {**models.get(model, {}), **extra}
            steps = train.steps
        tc = dataclasses.replace(train, steps=steps)
        if shares and steps > 0:
            m, share_out[f"{model}/{setting}"] = term_shares(model, params, sp, tc, transductive)
        else:
            m = train_zsl(model, params, sp, tc, transductive=transductive)
        out.append([model, setting, zsl_metrics(m, sp)])
    out.append([*FLOOR, zsl_metrics(RandomScorer(seed), split)])
    return {"metrics": out, "chosen": chosen, "edges": edges, "shares": share_out}


def _zsl_split_job(kind: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
                   class_emb: np.ndarray, unseen: list[int], index: int, seed: int,
                   settings: Mapping[str, Any]) -> dict[str, Any]:
    """One split of ``zsl-*`` (a worker of :func:`visem.experiments.parallel.run_parallel`)."""
    split = standardize_zsl(make_zsl_split(x_tr, y_tr, class_emb, unseen, test_image=x_te, test_label=y_te))
    t = settings["train"]
    train = TrainConfig(steps=int(t["steps"]), batch_size=int(t["batch_size"]), lr=float(t["lr"]), seed=seed,
                        log_every=10**9, checkpoint_every=10**9, progress=False)
    res = run_zsl_models(split, train, settings["models"], settings["grids"], int(settings["n_val_classes"]),
                         seed=seed, shares=bool(settings["shares"]))
    return {"kind": kind, "index": index, **res}


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _image_features(name: str, kind: str, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if kind == "pixels":
        return tuple(data[f"{s}_images"].reshape(len(data[f"{s}_images"]), -1).astype(np.float32) / 255.0
                     for s in ("train", "test"))  # type: ignore[return-value]
    if kind == "efficientnet":
        from visem.features.image import extract_image_features

        return tuple(extract_image_features(data[f"{s}_images"], "pooled") for s in ("train", "test"))  # type: ignore[return-value]
    raise ConfigError(f"unknown image feature kind {kind!r} (pixels or efficientnet)")


def summarise_runs(per_split: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table rows: per (model, setting), :func:`~visem.experiments.stats.mean_std` over the splits, in run order."""
    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    for res in per_split:
        for model, setting, metrics in res["metrics"]:
            groups.setdefault((model, setting), []).append(metrics)
    return [{"model": m, "setting": s, **extra, **mean_std(v)} for (m, s), v in groups.items()]


def summarise_shares(per_split: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{model/setting: {phase: {term: mean share}, phase + "_min": {term: smallest share}}}`` over the splits."""
    out: dict[str, Any] = {}
    keys = [k for r in per_split for k in r.get("shares", {})]
    for key in dict.fromkeys(keys):
        per = [r["shares"][key] for r in per_split if key in r.get("shares", {})]
        entry: dict[str, Any] = {}
        for phase in ("start", "mid", "end"):
            vals = [p[phase] for p in per if phase in p]
            if not vals:
                continue
            terms = list(dict.fromkeys(t for v in vals for t in v))
            entry[phase] = {t: float(np.mean([v.get(t, 0.0) for v in vals])) for t in terms}
            entry[f"{phase}_min"] = {t: float(np.min([v.get(t, 0.0) for v in vals])) for t in terms}
        out[key] = entry
    return out


def run_zsl(dataset: str, out_dir: Any, quick: bool = False, seed: int = 0, progress: bool = False,
            features: tuple[str, ...] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Zero-/few-shot recognition and zero-shot retrieval on MNIST or Fashion-MNIST.

    ``features`` (a shortcut for ``--set features=[...]``) picks the image feature kinds. The splits of
    every feature kind run in parallel processes (``workers``, default one per core, one thread each).
    """
    from visem.experiments import settings as resolve_settings
    from visem.experiments.parallel import run_parallel
    from visem.features import compute_features

    exp = f"zsl-{dataset}"
    s = resolve_settings(zsl_defaults(quick), {**({"features": list(features)} if features else {}),
                                               **dict(overrides or {})}, exp)
    for key in ("splits", "unseen_classes", "train_per_class", "test_per_class"):
        if int(s[key]) < 1:
            raise ConfigError(f"experiment {exp!r}: {key} must be >= 1, got {s[key]!r}")
    unknown = sorted(set(s["models"]) - {m for m, *_ in _ZSL_RUNS})
    if unknown:
        raise ConfigError(f"experiment {exp!r}: models.{unknown[0]} is not a model of the table")
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    data = mnist_subset(dataset, int(s["train_per_class"]), int(s["test_per_class"]), seed=0)
    class_emb = compute_features(dataset, "glove-classes").array.astype(np.float32)
    n_cls = class_emb.shape[0]
    if int(s["unseen_classes"]) >= n_cls:
        raise ConfigError(f"experiment {exp!r}: unseen_classes must be below the {n_cls} classes")
    split_classes = []
    for i in range(int(s["splits"])):
        rng = np.random.default_rng(seed + i)
        unseen = sorted(int(c) for c in rng.choice(n_cls, size=int(s["unseen_classes"]), replace=False))
        split_classes.append({"split": i, "seed": seed + i, "unseen": unseen,
                              "seen": [c for c in range(n_cls) if c not in unseen]})
    jobs = []
    feats = list(s["features"])
    for kind in feats:
        x_tr, x_te = _image_features(dataset, kind, data)
        for sc in split_classes:
            jobs.append({"kind": kind, "x_tr": x_tr, "y_tr": data["train_labels"], "x_te": x_te,
                         "y_te": data["test_labels"], "class_emb": class_emb, "unseen": sc["unseen"],
                         "index": sc["split"], "seed": sc["seed"], "settings": s})
    done = run_parallel(_zsl_split_job, jobs, workers=s["workers"])
    rows: list[dict[str, Any]] = []
    chosen: dict[str, Any] = {}
    edges: dict[str, list[str]] = {}
    term_share_table: dict[str, Any] = {}
    per_split = [{"features": r["kind"], "split": r["index"], "model": m, "setting": st, **metrics}
                 for r in done for m, st, metrics in r["metrics"]]
    for kind in feats:
        res = [r for r in done if r["kind"] == kind]
        rows += summarise_runs(res, {"features": kind})
        term_share_table.update({f"{kind}/{k}": v for k, v in summarise_shares(res).items()})
        for r in res:
            for k, v in r["chosen"].items():
                chosen[f"{kind}/split{r['index']}/{k}"] = v
            for k, v in r["edges"].items():
                if v:
                    edges[f"{kind}/split{r['index']}/{k}"] = v
                    warn_grid_edges(f"{exp} {kind} split {r['index']}", k.split("/")[0], v)
    config = {"dataset": dataset, "settings": s, "splits": split_classes,
              "seen_unseen": f"{n_cls - int(s['unseen_classes'])}/{s['unseen_classes']}",
              "class_embedding": "glove-6b-50d class names", "runs": [
                  {"model": m, "setting": st, "params": ({} if m in s["grids"] else {**s["models"].get(m, {}), **ex}),
                   "transductive": tr, "shots": k} for m, st, ex, tr, k in _ZSL_RUNS],
              "closed_form_chosen_on_validation": chosen, "closed_form_on_grid_edge": edges,
              "term_shares": term_share_table, "per_split": per_split,
              "floor": "random / floor: uniformly random predictions and a random ranking on the same splits",
              "timing": {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_seconds() - cpu0, 1),
                         "workers": s["workers"] if s["workers"] is not None else "one per core"},
              "seed": seed}
    return {"experiment": exp, "config": config, "rows": rows, "paper": []}


def _register() -> None:
    from visem.experiments import register_experiment

    for ds in ("fashion-mnist", "mnist"):
        def _run(out_dir, quick=False, seed=0, progress=False, features=None, overrides=None, _ds=ds):
            return run_zsl(_ds, out_dir, quick=quick, seed=seed, progress=progress,
                           features=tuple(features) if features else None, overrides=overrides)

        register_experiment(
            f"zsl-{ds}",
            description=f"zero-/few-shot recognition and zero-shot retrieval on {ds} (7 seen / 3 unseen, 5 splits)",
            paper="seed 000 (ReViSE) protocol; CADA-VAE, DeViSE, ESZSL, SAE",
        )(_run)


_register()
