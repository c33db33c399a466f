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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

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


def train_zsl(
    name: str,
    params: Mapping[str, Any] | None,
    split: ZSLSplit,
    train: TrainConfig,
    transductive: bool = False,
):
    """Train registered zero-shot model ``name`` on ``split``; returns the model.

    Inductive: the model sees the training images and the side information
    of the classes that have training images (seen, plus novel classes in
    few-shot), labels re-indexed to those rows. Transductive: it also gets
    the unseen test images without labels (``unlabeled``, with
    ``unlabeled_classes`` = the unseen classes) and the side information of
    every class, labels as global ids.
    """
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
    extra: dict[str, Tensor] = {"class_emb": class_emb}
    unl = None
    if transductive:
        extra["unlabeled_classes"] = torch.isin(classes, split.unseen)
        unl = BatchSampler({"image": split.test_unseen_image}, train.batch_size, seed=train.seed + 1)
    sampler = _ZSLSampler(BatchSampler({"image": split.train_image, "label": label}, train.batch_size, train.seed),
                          unl, extra)
    if train.steps > 0:
        Trainer(model, sampler, dataclasses.replace(train, progress=False)).fit()
    final = {"image": split.train_image, "label": label, "class_emb": class_emb, "class_ids": classes}
    if transductive:
        final["unlabeled"] = split.test_unseen_image
    model.finalize(final)
    model.eval()
    return model


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

    ``val``: that validation split (default: :func:`validation_split` of ``split``).
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

# the regularisers of the closed-form models, chosen on the validation split
_GRIDS = {
    "eszsl": [{"gamma": g, "lam": l} for g in (0.01, 0.1, 1.0, 10.0, 100.0) for l in (0.01, 0.1, 1.0, 10.0, 100.0)],
    "sae": [{"lam": l} for l in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)],
}

# fixed hyper-parameters of the neural models (set before any run, not tuned on test)
_ZSL_PARAMS = {
    "devise": {"margin": 0.1},
    "revise": {"code_dim": 64, "contractive_weight": 0.01},
    "cada-vae": {"latent_dim": 32, "hidden_image": [128], "hidden_side": [64]},
}


def _image_features(name: str, kind: str, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if kind == "pixels":
        return tuple(data[f"{s}_images"].reshape(len(data[f"{s}_images"]), -1).astype(np.float32) / 255.0
                     for s in ("train", "test"))  # type: ignore[return-value]
    if kind == "efficientnet":
        from visem.features.image import extract_image_features

        return tuple(extract_image_features(data[f"{s}_images"], "pooled") for s in ("train", "test"))  # type: ignore[return-value]
    raise ValueError(f"unknown image feature kind {kind!r} (pixels or efficientnet)")


def run_zsl(dataset: str, out_dir: Any, quick: bool = False, seed: int = 0, progress: bool = False,
            features: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Zero-/few-shot recognition and zero-shot retrieval on MNIST or Fashion-MNIST."""
    from visem.features import compute_features

    n_splits = 1 if quick else 5
    train_pc, test_pc = (20, 12) if quick else (200, 100)
    steps = 40 if quick else 500
    feats = features or (("pixels",) if quick else ("pixels", "efficientnet"))
    data = mnist_subset(dataset, train_pc, test_pc, seed=0)
    class_emb = compute_features(dataset, "glove-classes").array.astype(np.float32)
    train = TrainConfig(steps=steps, batch_size=64 if quick else 128, lr=1e-3, seed=seed, log_every=10**9,
                        checkpoint_every=10**9, progress=False)
    rows: list[dict[str, Any]] = []
    chosen: dict[str, Any] = {}
    for kind in feats:
        x_tr, x_te = _image_features(dataset, kind, data)
        per_run: dict[tuple[str, str], list[dict[str, float]]] = {}
        for i in range(n_splits):
            rng = np.random.default_rng(seed + i)
            unseen = np.sort(rng.choice(10, size=3, replace=False))
            split = standardize_zsl(make_zsl_split(x_tr, data["train_labels"], class_emb, unseen,
                                                   test_image=x_te, test_label=data["test_labels"]))
            tc = dataclasses.replace(train, seed=seed + i)
            for model, setting, extra, transductive, shots in _ZSL_RUNS:
                sp = few_shot_split(split, shots, seed=seed + i) if shots else split
                if model in _GRIDS:
                    params = select_params(model, _GRIDS[model], sp, dataclasses.replace(tc, steps=0), seed=seed + i)
                    chosen[f"{kind}/split{i}/{model}/{setting}"] = params
                    steps_i = 0
                else:
                    params = {**_ZSL_PARAMS.get(model, {}), **extra}
                    if quick and model == "cada-vae":
                        params["cls_epochs"] = 2
                    steps_i = tc.steps
                m = train_zsl(model, params, sp, dataclasses.replace(tc, steps=steps_i), transductive=transductive)
                per_run.setdefault((model, setting), []).append(zsl_metrics(m, sp))
        for (model, setting), results in per_run.items():
            rows.append({"model": model, "setting": setting, "features": kind, **mean_std(results)})
    config = {"dataset": dataset, "splits": n_splits, "seen_unseen": "7/3", "train_per_class": train_pc,
              "test_per_class": test_pc, "class_embedding": "glove-6b-50d class names", "features": list(feats),
              "train_steps": steps, "batch_size": train.batch_size, "lr": train.lr, "neural_params": _ZSL_PARAMS,
              "closed_form_grids": _GRIDS, "closed_form_chosen_on_validation": chosen, "seed": seed}
    return {"experiment": f"zsl-{dataset}", "config": config, "rows": rows, "paper": []}



def _register() -> None:
    from visem.experiments import register_experiment

    for ds in ("fashion-mnist", "mnist"):
        def _run(out_dir, quick=False, seed=0, progress=False, features=None, _ds=ds):
            return run_zsl(_ds, out_dir, quick=quick, seed=seed, progress=progress,
                           features=tuple(features) if features else None)

        register_experiment(
            f"zsl-{ds}",
            description=f"zero-/few-shot recognition and zero-shot retrieval on {ds} (7 seen / 3 unseen, 5 splits)",
            paper="seed 000 (ReViSE) protocol; CADA-VAE, DeViSE, ESZSL, SAE",
        )(_run)


_register()
