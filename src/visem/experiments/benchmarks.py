"""The paper models on the user's copies of the papers' data sets: ``visem reproduce NAME --data PATH``.

``zsl-xian`` (seed 000 protocol, ``--data`` = a Xian et al. folder)
    :func:`run_xian`: ESZSL, SAE, DeViSE, ReViSE
    (inductive, transductive, transductive with adaptation) and CADA-VAE on the
    proposed split; rows ``unseen_accuracy``, ``gzsl_seen``, ``gzsl_unseen``,
    ``gzsl_h``, ``retrieval_map`` (percent).

``zscmr-mat`` (seed 004 protocol, ``--data`` = a cross-modal ``.mat`` file)
    LCALE, its four ablations, CADA-VAE, DCCA and the DeViSE-style baseline of
    ``zscmr-emoji`` (:func:`visem.experiments.zscmr.run_cmr_models`) on
    the file's image / text features; rows ``i2t_map``, ``t2i_map``,
    ``avg_map``, ``p_at_100`` (fractions). See :func:`cmr_mat_split`.

``retrieval-precomp`` (seed 003 protocol, ``--data`` = a VSE++ / SCAN
precomp folder)
    VSE++ and DPC and, when the features are regions, SCAN, A3VSE and DAN, at
    ``full`` and the sparse settings of seed 003
    (:func:`visem.experiments.retrieval.sparse_grid`); evaluated on
    ``testall`` (else ``test``) with the COCO 1K 5-fold and 5K protocols when
    it has 5,000 images, the 1K protocol when it has 1,000 (Flickr30K). Rows
    keyed as :func:`visem.metrics.retrieval_recall` names them.

Nothing is selected on test data: the neural models' settings are fixed in
advance, the closed-form zero-shot models' regularisers are chosen on a
validation split inside the seen classes, and every model trains a fixed
number of steps and is evaluated once.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from visem.config import merge
from visem.data.paths import DataError
from visem.experiments import register_experiment
from visem.experiments.retrieval import Budget, Corpus
from visem.experiments.sparse import DPC_LR_DECAY_AT, POOLED_MODELS, RETRIEVAL_MODELS, EvalProtocol, sparse_grid
from visem.experiments.zscmr import (CMR_DEFAULTS, CMR_QUICK, _SEED004, CMRSplit, make_cmr_split, run_cmr_models,
                                    runs_from_settings, split_summary, standardize_cmr)
from visem.experiments.zsl import (_GRID_AXES, _ZSL_RUNS, ZSLSplit, model_settings, run_zsl_models, standardize_zsl,
                                  validation_split, warn_grid_edges)
from visem.train.trainer import TrainConfig

XIAN_LAYOUT = ("a Xian et al. data set folder (AwA2, CUB, SUN, ...) holding res101.mat ('features' D x N, 'labels') "
               "and att_splits.mat ('att', 'trainval_loc', 'test_seen_loc', 'test_unseen_loc')")
MAT_LAYOUT = ("a cross-modal .mat file (Wikipedia / Pascal Sentences / NUS-WIDE style) holding image features, "
              "text features and class labels, e.g. I_tr, T_tr, L_tr (and I_te, T_te, L_te)")
PRECOMP_LAYOUT = ("a VSE++ / SCAN precomp folder (f30k_precomp, coco_precomp) holding train_ims.npy + train_caps.txt "
                  "and testall_ims.npy + testall_caps.txt (or test_*): (N, D) or (N, 36, D) features, 5 captions per image")


# --------------------------------------------------------------------------
# zsl-xian
# --------------------------------------------------------------------------
def xian_validation_classes(d: Any) -> tuple[np.ndarray | None, str]:
    """The ``val`` classes of a Xian-format data set when its ``train`` / ``val`` splits are class-disjoint.

    Returns ``(classes, source)``; ``(None, reason)`` when the file has no such
    split (the caller then draws validation classes from the seen ones).
    """
    if "train" not in d.splits or "val" not in d.splits:
        return None, "no train_loc / val_loc in att_splits.mat"
    tr, va = np.unique(d.labels[d.splits["train"]]), np.unique(d.labels[d.splits["val"]])
    if not va.size or np.intersect1d(tr, va).size or not np.isin(va, d.seen_classes).all():
        return None, "train_loc / val_loc share classes (not a zero-shot validation split)"
    return va, "val_loc classes of att_splits.mat (Xian et al.'s proposed split)"


def xian_defaults(quick: bool) -> dict[str, Any]:
    """Built-in settings of ``zsl-xian`` (each settable with ``--set``)."""
    models = model_settings(quick)
    return {"train": {"steps": 40 if quick else 3000, "batch_size": 128, "lr": 1e-3}, "models": models,
            "grids": copy.deepcopy(_GRID_AXES), "validation_fraction": 0.2}


def run_xian(path: Any, quick: bool = False, seed: int = 0, steps: int | None = None,
             name: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The zero-shot models on a Xian-format benchmark (AwA2, CUB, SUN...: ``res101.mat`` + ``att_splits.mat``).

    ``path`` is what :func:`visem.data.load` accepts for the ``xian`` format.
    Training on ``trainval``, testing on ``test_seen`` / ``test_unseen`` (the
    proposed splits of Xian et al.); image features z-scored with the
    ``trainval`` statistics; class side information = ``att`` as released.
    The closed-form regularisers are chosen on a validation split inside the
    seen classes: the file's ``val`` classes when ``train_loc`` / ``val_loc``
    are class-disjoint (the proposed split), else a seeded
    ``validation_fraction`` of the seen classes; the test images are never
    looked at; a value chosen on the edge of its grid is warned about and
    recorded. The neural models' settings are fixed in advance
    (``models``). ReViSE runs inductive and transductive (unlabelled
    ``test_unseen`` images, with and without the adaptation step); few-shot
    rows are not run. ``steps`` is a shortcut for ``--set train.steps=N``
    (full run 3000, quick 40). A random-floor row (``random`` / ``floor``)
    closes the table.
    """
    from visem.data import load
    from visem.experiments import settings as resolve_settings

    s = resolve_settings(xian_defaults(quick), merge({"train": {"steps": steps}} if steps is not None else {},
                                                     dict(overrides or {})), "zsl-xian")
    d = load("xian", path=path)
    ds = name or d.name
    x = torch.from_numpy(np.asarray(d.features, dtype=np.float32))
    y = torch.from_numpy(np.asarray(d.labels, dtype=np.int64))
    att = torch.from_numpy(np.asarray(d.attributes, dtype=np.float32))
    tr, ts, tu = (torch.from_numpy(d.splits[k]) for k in ("trainval", "test_seen", "test_unseen"))
    split = standardize_zsl(ZSLSplit(x[tr], y[tr], x[ts], y[ts], x[tu], y[tu], att,
                                     torch.from_numpy(np.asarray(d.seen_classes, dtype=np.int64)),
                                     torch.from_numpy(np.asarray(d.unseen_classes, dtype=np.int64))))
    t = s["train"]
    tc = TrainConfig(steps=int(t["steps"]), batch_size=int(t["batch_size"]), lr=float(t["lr"]), seed=seed,
                     log_every=10**9, checkpoint_every=10**9, progress=False)
    val_classes, val_source = xian_validation_classes(d)
    n_val = len(val_classes) if val_classes is not None else max(1, int(round(float(s["validation_fraction"])
                                                                             * len(split.seen))))
    if val_classes is None:
        val_source = f"a seeded {float(s['validation_fraction']):.0%} of the seen classes ({val_source})"
    val = validation_split(split, n_val, seed=seed, val_classes=val_classes)
    runs = [r for r in _ZSL_RUNS if not r[4]]
    res = run_zsl_models(split, tc, s["models"], s["grids"], n_val, seed=seed, runs=runs, val=val)
    rows = [{"model": m, "setting": st, "dataset": ds, **metrics} for m, st, metrics in res["metrics"]]
    chosen = {k.split("/")[0]: v for k, v in res["chosen"].items()}
    edges = {k.split("/")[0]: v for k, v in res["edges"].items() if v}
    for model, e in edges.items():
        warn_grid_edges(f"zsl-xian {ds}", model, e)
    names = list(d.class_names)
    config = {"path": str(path), "dataset": ds, "settings": s, "n_classes": int(att.shape[0]),
              "n_seen": int(len(split.seen)), "n_unseen": int(len(split.unseen)),
              "splits": [{"split": "proposed", "seen": split.seen.tolist(), "unseen": split.unseen.tolist(),
                          "validation_unseen": val.unseen.tolist()}],
              "class_names": names, "n_trainval": int(len(tr)), "n_test_seen": int(len(ts)),
              "n_test_unseen": int(len(tu)), "feature_dim": int(x.shape[1]), "class_dim": int(att.shape[1]),
              "class_embedding": "att of att_splits.mat", "validation": val_source, "n_validation_classes": n_val,
              "closed_form_chosen_on_validation": chosen, "closed_form_on_grid_edge": edges,
              "floor": "random / floor: uniformly random predictions and a random ranking",
              "few_shot": "not run", "quick": quick, "seed": seed}
    return {"experiment": "zsl-xian", "config": config, "rows": rows, "paper": []}



@register_experiment("zsl-xian", description="zero-shot recognition / GZSL / retrieval on a Xian-format benchmark "
                     "(ESZSL, SAE, DeViSE, ReViSE inductive + transductive, CADA-VAE)",
                     paper="seed 000 (ReViSE) protocol on Xian et al.'s proposed split",
                     data="required", data_layout=XIAN_LAYOUT)
def run_zsl_xian(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
                 data: Path | None = None, steps: int | None = None,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return run_xian(data, quick=quick, seed=seed, steps=steps, overrides=overrides)


# --------------------------------------------------------------------------
# zscmr-mat
# --------------------------------------------------------------------------
def _mat_splits(path: Path, mat: dict[str, np.ndarray]) -> list[str]:
    from visem.data.crossmodal import classify_key

    found = {sp for key in mat if (r := classify_key(key)) is not None and r[0] == "image" for sp in [r[1]]}
    if not found:
        raise DataError(f"{path}: no image feature variable found (variables: {', '.join(sorted(mat)) or 'none'}; "
                        f"expected {MAT_LAYOUT})")
    return [sp for sp in ("train", "val", "test", "all") if sp in found]


def _single_labels(d: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(rows kept, int64 labels)``: multi-hot rows with exactly one label become that label, others are dropped."""
    if not d.multilabel:
        return np.arange(len(d.labels)), d.labels.astype(np.int64)
    one = np.flatnonzero(d.labels.sum(1) == 1)
    return one, d.labels[one].argmax(1).astype(np.int64)


def _class_names(mat: dict[str, np.ndarray], n_classes: int) -> list[str] | None:
    """Class names stored in the file: a string array with one entry per class, if there is one."""
    from visem.data.matfile import mat_strings

    for key, value in sorted(mat.items()):
        arr = np.asarray(value)
        if arr.dtype.kind not in "UO" or arr.size != n_classes:
            continue
        try:
            names = mat_strings(arr)
        except Exception:  # noqa: BLE001  (not a cell of strings)
            continue
        if len(names) == n_classes and all(isinstance(n, str) and n for n in names):
            return names
    return None


def load_cmr_mat(path: str | Path) -> dict[str, Any]:
    """The pairs of a cross-modal ``.mat`` file, every split, single-label.

    Returns ``{"splits": {split: (image, text, labels)}, "n_classes", "class_names",
    "dropped_multilabel", "name"}``. Multi-label files (N x C multi-hot) keep
    the pairs with exactly one label; pairs are rows (image row ``i`` with text
    row ``i``), labelled with the image labels.
    """
    from visem.data.crossmodal import load_crossmodal
    from visem.data.matfile import load_mat

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not a file (expected {MAT_LAYOUT})")
    mat = load_mat(path, MAT_LAYOUT)
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    dropped = 0
    for sp in _mat_splits(path, mat):
        d = load_crossmodal(path, split=sp)
        keep, lab = _single_labels(d)
        dropped += len(d) - len(keep)
        out[sp] = (d.image[keep], d.text[keep], lab)
    if "all" in out and len(out) > 1:
        del out["all"]  # split variables win over unsplit ones
    if sum(len(v[2]) for v in out.values()) == 0:
        raise DataError(f"{path}: no image-text pair with exactly one class label")
    n_classes = int(max(int(v[2].max()) for v in out.values() if len(v[2])) + 1)
    return {"splits": out, "n_classes": n_classes, "class_names": _class_names(mat, n_classes),
            "dropped_multilabel": dropped, "name": path.stem}


def _text_prototypes(split: CMRSplit, n_classes: int) -> torch.Tensor:
    """Class embedding = l2-normalised mean of the (z-scored) training texts of each seen class; unseen rows 0."""
    emb = torch.zeros(n_classes, split.train_text.shape[1])
    for c in split.seen.tolist():
        emb[c] = split.train_text[split.train_label == c].mean(0)
    return emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-8)


def cmr_class_embedding(names: list[str] | None) -> tuple[np.ndarray | None, str]:
    """GloVe 50d of the class names when the file has names and GloVe knows a word of each, else ``None``."""
    if names is None:
        return None, "the file holds no class names"
    try:
        from visem.features.text import glove_phrases

        pv = glove_phrases(names, all_oov="zero")
    except DataError as exc:
        return None, f"GloVe unavailable ({exc})"
    if pv.empty:
        return None, f"no GloVe word in class name(s) {[names[i] for i in pv.empty][:5]}"
    return pv.vectors.astype(np.float32), "glove-6b-50d class names"


def cmr_mat_split(data: dict[str, Any], seed: int = 0, unseen_fraction: float = 0.5,
                  class_emb: np.ndarray | None = None,
                  unseen_classes: Sequence[int] | None = None) -> tuple[CMRSplit, str]:
    """The zero-shot split of :func:`load_cmr_mat`'s pairs; returns ``(split, how)``.

    * ``unseen_classes`` given: those classes are unseen, every split's pairs
      pooled (training = every pair of a seen class, test = every pair of an
      unseen class).
    * Else the file defines it when its ``train`` and ``test`` label sets are
      disjoint: seen = the training classes (their ``train`` / ``val`` pairs),
      unseen = the test classes (their ``test`` pairs).
    * Otherwise every split's pairs are pooled and a seeded ``unseen_fraction``
      of the classes is unseen (:func:`make_cmr_split`; the count is clipped to
      ``[1, n - 1]``, never rounded to zero). Seed 004 Table 1 holds out half
      of the classes on every data set (Wikipedia 5/5, Pascal Sentences 10/10,
      NUS-WIDE 5/5, XMediaNet 100/100), the default.

    Features are z-scored with the training pairs' statistics. Class embedding:
    ``class_emb`` (C, K) when given (GloVe of the class names), else the
    l2-normalised mean training text of each seen class (the unseen classes'
    rows are never read: training sees the seen classes' rows only and the
    evaluation embeds images and texts alone).
    """
    sp = data["splits"]
    n_cls = data["n_classes"]
    placeholder = np.zeros((n_cls, 1), dtype=np.float32)
    defined = "train" in sp and "test" in sp and not np.intersect1d(sp["train"][2], sp["test"][2]).size
    if defined and unseen_classes is None:
        tr = [sp[k] for k in ("train", "val") if k in sp]
        xi, xt, y = (np.concatenate([t[j] for t in tr]) for j in range(3))
        ti, tt, ty = sp["test"]
        if np.intersect1d(y, ty).size:
            raise DataError("the val pairs share classes with the test pairs: not a zero-shot split")
        split = CMRSplit(torch.from_numpy(xi), torch.from_numpy(xt), torch.from_numpy(y), torch.from_numpy(ti),
                         torch.from_numpy(tt), torch.from_numpy(ty), torch.from_numpy(ty),
                         torch.from_numpy(placeholder), torch.from_numpy(np.unique(y)), torch.from_numpy(np.unique(ty)))
        how = "the file's split (train and test classes are disjoint)"
    else:
        parts = list(sp.values())
        xi, xt, y = (np.concatenate([t[j] for t in parts]) for j in range(3))
        if len(np.unique(y)) < 2:
            raise DataError(f"{data['name']}: one class only; a zero-shot split needs two or more")
        try:
            split = make_cmr_split(xi, xt, y, placeholder, unseen_fraction=unseen_fraction, seed=seed,
                                   unseen_classes=unseen_classes)
        except ValueError as exc:
            raise DataError(f"{data['name']}: {exc}") from None
        how = (f"unseen classes {sorted(int(c) for c in unseen_classes)} (given)" if unseen_classes is not None
               else f"seeded {unseen_fraction:.0%} of the classes unseen (pooled splits: {', '.join(sp)})")
    split = standardize_cmr(split)
    emb = torch.from_numpy(class_emb) if class_emb is not None else _text_prototypes(split, n_cls)
    return replace(split, class_emb=emb.float()), how


MAT_DEFAULTS: dict[str, Any] = {**CMR_DEFAULTS, "unseen_fraction": 0.5, "unseen_classes": None}
MAT_DEFAULTS.pop("max_class_share")


@register_experiment("zscmr-mat", description="zero-shot cross-modal retrieval on a cross-modal .mat file: "
                     "LCALE, its ablations, CADA-VAE, DCCA, DeViSE-style",
                     paper="seed 004 (LCALE) protocol", data="required", data_layout=MAT_LAYOUT)
def run_zscmr_mat(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
                  data: Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``--set unseen_classes=[0,3,7]`` names the unseen classes, ``--set unseen_fraction=0.5`` draws them."""
    from visem.config import merge
    from visem.experiments import settings as resolve_settings

    s = resolve_settings(merge(MAT_DEFAULTS, CMR_QUICK) if quick else MAT_DEFAULTS, overrides, "zscmr-mat")
    d = load_cmr_mat(data)
    class_emb, emb_how = cmr_class_embedding(d["class_names"])
    if class_emb is None:
        emb_how = f"mean training text feature of each seen class ({emb_how})"
    made = [cmr_mat_split(d, seed=seed + i, unseen_fraction=float(s["unseen_fraction"]), class_emb=class_emb,
                          unseen_classes=s["unseen_classes"]) for i in range(int(s["splits"]))]
    splits, hows = [m[0] for m in made], [m[1] for m in made]
    rows, extra = run_cmr_models(splits, d["name"], int(s["train"]["steps"]), int(s["train"]["batch_size"]), seed,
                                 runs_from_settings(s), workers=s["workers"], progress=progress)
    first = splits[0]
    fixed = not hows[0].startswith("seeded")
    config = {"path": str(data), "dataset": d["name"], "split": hows[0], "settings": s,
              "pairs": {k: int(len(v[2])) for k, v in d["splits"].items()},
              "dropped_multilabel_pairs": d["dropped_multilabel"], "n_classes": d["n_classes"],
              "image_dim": int(first.train_image.shape[1]), "text_dim": int(first.train_text.shape[1]),
              "class_embedding": emb_how, "splits": split_summary(splits),
              "runs_vary": "training seed (split fixed)" if fixed else "split and training seed",
              "seed": seed, **extra}
    return {"experiment": "zscmr-mat", "config": config, "rows": rows, "paper": _SEED004}


# --------------------------------------------------------------------------
# retrieval-precomp
# --------------------------------------------------------------------------
def precomp_protocols(name: str, test_rows: np.ndarray, fold_size: int = 1000) -> list[EvalProtocol]:
    """COCO 1K (5 folds) + 5K for 5 x ``fold_size`` test images, 1K for ``fold_size``, else all of them.

    SCAN (cross attention over every image-caption pair) is not evaluated at
    5K: 25 million pairs, hours on a CPU; it gets the 1K (5-fold) rows.
    """
    n = len(test_rows)
    k = f"{fold_size // 1000}K" if fold_size % 1000 == 0 else str(fold_size)
    if n == 5 * fold_size:
        folds = [test_rows[i:i + fold_size] for i in range(0, n, fold_size)]
        big = f"{5 * fold_size // 1000}K" if fold_size % 1000 == 0 else str(5 * fold_size)
        return [EvalProtocol(f"{name} {k} (5-fold)", folds),
                EvalProtocol(f"{name} {big}", [test_rows], cross_attention=False)]
    if n == fold_size:
        return [EvalProtocol(f"{name} {k}", [test_rows])]
    return [EvalProtocol(f"{name} test ({n} images)", [test_rows])]


def _blocks(n: int, size: int = 256):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def _region_pca_fit(ims: np.ndarray, rows: np.ndarray, k: int, seed: int, max_rows: int = 50_000):
    """Mean and top-``k`` components of the regions of ``rows`` (a memory map is read in blocks)."""
    rng = np.random.default_rng(seed)
    r = ims.shape[1]
    per_image = max(1, min(r, max_rows // max(1, len(rows))))
    pick = []
    for sl in _blocks(len(rows)):
        block = np.asarray(ims[rows[sl]], dtype=np.float32)  # (b, R, D)
        take = np.stack([rng.permutation(r)[:per_image] for _ in range(len(block))])
        pick.append(np.take_along_axis(block, take[:, :, None], axis=1).reshape(-1, block.shape[-1]))
    x = torch.as_tensor(np.concatenate(pick)[:max_rows]).double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / max(1, len(x) - 1)
    _, vecs = torch.linalg.eigh(cov)
    return mean.float(), vecs[:, -k:].flip(1).float()


def load_precomp_corpus(path: str | Path, max_train_images: int | None = None, region_dim: int | None = None,
                        seed: int = 0, val_images: int = 0) -> tuple[Corpus, np.ndarray, list[EvalProtocol], dict[str, Any]]:
    """A :class:`Corpus` of a VSE++ / SCAN precomp folder: training images, the test images, validation images.

    ``train`` (a seeded subset of at most ``max_train_images``), ``testall``
    (else ``test``) and, with ``val_images > 0`` and a ``dev`` split in the
    folder, its first ``val_images`` images (``domain == "val"``, for model
    selection). Region features ``(N, R, D)`` give ``grid`` (projected onto
    ``region_dim`` principal components fitted on training regions, when
    given) and ``pooled`` = their mean; pooled features ``(N, D)`` give
    ``pooled`` only. Returns ``(corpus, training rows, protocols, info)``.
    """
    from visem.data.vsepp import load_vsepp

    folder = Path(path)
    tr = load_vsepp(folder, "train")
    test_split = "testall" if (folder / "testall_ims.npy").is_file() else "test"
    te = load_vsepp(folder, test_split)
    if tr.images.ndim != te.images.ndim or tr.images.shape[-1] != te.images.shape[-1]:
        raise DataError(f"{folder}: train features {tr.images.shape[1:]} and {test_split} features "
                        f"{te.images.shape[1:]} differ in shape")
    name = folder.name[: -len("_precomp")] if folder.name.endswith("_precomp") else folder.name
    rng = np.random.default_rng(seed)
    train_rows = np.arange(tr.n_images)
    if max_train_images is not None and tr.n_images > max_train_images:
        train_rows = np.sort(rng.permutation(tr.n_images)[:max_train_images])
    regions = tr.regions
    info: dict[str, Any] = {"dataset": name, "test_split": test_split, "n_train_images_file": tr.n_images,
                            "n_train_images": int(len(train_rows)), "n_test_images": te.n_images,
                            "features": f"regions {tuple(tr.images.shape[1:])}" if regions else f"pooled {tr.images.shape[1]}",
                            "test_deduplicated": te.deduplicated}

    def pooled_of(ims: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), ims.shape[-1]), dtype=np.float32)
        for sl in _blocks(len(rows)):
            block = np.asarray(ims[rows[sl]], dtype=np.float32)
            out[sl] = block.mean(1) if block.ndim == 3 else block
        return out

    te_rows = np.arange(te.n_images)
    dev = None
    if val_images and (folder / "dev_ims.npy").is_file():
        dev = load_vsepp(folder, "dev")
        if dev.images.shape[1:] != te.images.shape[1:]:
            raise DataError(f"{folder}: dev features {dev.images.shape[1:]} and {test_split} features "
                            f"{te.images.shape[1:]} differ in shape")
    dev_rows = np.arange(min(int(val_images), dev.n_images)) if dev is not None else np.arange(0)
    info["n_val_images"] = int(len(dev_rows))
    pooled = np.concatenate([pooled_of(tr.images, train_rows), pooled_of(te.images, te_rows)]
                            + ([pooled_of(dev.images, dev_rows)] if len(dev_rows) else []))
    grid = None
    if regions:
        d = tr.images.shape[-1]
        if region_dim is not None and region_dim < d:
            mean, comps = _region_pca_fit(tr.images, train_rows, region_dim, seed)
            info["region_pca"] = f"{d} -> {region_dim} (fitted on training regions)"

            def project(ims, rows):
                out = np.empty((len(rows), ims.shape[1], region_dim), dtype=np.float32)
                for sl in _blocks(len(rows)):
                    out[sl] = ((torch.as_tensor(np.asarray(ims[rows[sl]], dtype=np.float32)) - mean) @ comps).numpy()
                return out
        else:
            def project(ims, rows):
                return np.asarray(ims[rows], dtype=np.float32)
        grid = np.concatenate([project(tr.images, train_rows), project(te.images, te_rows)]
                              + ([project(dev.images, dev_rows)] if len(dev_rows) else []))
    k = tr.captions_per_image
    caps = [tr.captions[i * k + j] for i in train_rows for j in range(k)] + list(te.captions)
    n_tr = len(train_rows)
    cap_img = [np.repeat(np.arange(n_tr), k), n_tr + te.caption_image]
    n_te = n_tr + te.n_images
    if len(dev_rows):
        keep = np.flatnonzero(dev.caption_image < len(dev_rows))
        caps += [dev.captions[j] for j in keep]
        cap_img.append(n_te + dev.caption_image[keep])
    n = n_te + len(dev_rows)
    corpus = Corpus(pooled, grid, np.asarray(["train"] * n_tr + ["test"] * te.n_images + ["val"] * len(dev_rows)),
                    np.arange(n, dtype=np.int64), caps, np.concatenate(cap_img).astype(np.int64),
                    [[] for _ in range(n)], glove=False)
    return corpus, np.arange(n_tr), precomp_protocols(name, np.arange(n_tr, n_te)), info


def nearest_caption_pseudo(corpus: Corpus) -> Callable[[np.ndarray, np.ndarray], list[str]]:
    """Pseudo captions for A3VSE without region labels: the caption of the nearest annotated image.

    ``pseudo(paired_captions, images)``: for each image, the annotated
    training image (an image of ``paired_captions``, itself excluded) whose
    centred pooled feature has the largest cosine, and that image's first
    annotated caption. Uses only training images and the captions the sparse
    setting keeps.
    """
    x = torch.as_tensor(corpus.pooled)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-8)

    def pseudo(paired_captions: np.ndarray, images: np.ndarray) -> list[str]:
        paired_captions = np.asarray(paired_captions)
        cap_img = corpus.caption_image[paired_captions]
        imgs, first = np.unique(cap_img, return_index=True)  # first annotated caption of each annotated image
        g = x[torch.as_tensor(imgs)]
        out = []
        for sl in _blocks(len(images), 1024):
            q = torch.as_tensor(np.asarray(images[sl]))
            sim = x[q] @ g.T
            sim[torch.as_tensor(images[sl])[:, None] == torch.as_tensor(imgs)[None, :]] = -2.0
            best = sim.argmax(1).numpy()
            out += [corpus.captions[paired_captions[first[b]]] for b in best]
        return out

    return pseudo


#: VSE++ / SCAN / seed 003 on precomp features: Adam, 300-d word embeddings learned from U(-0.1, 0.1), joint
#: spaces of 1024 (A3VSE 512), gradients clipped at 2, captions never cut (seed 003 uses up to 82 tokens on
#: Flickr30K), the reference code's schedule (2e-4, cut by 10 halfway: VSE++ and SCAN train 30 epochs with
#: lr_update 15), the model selected by rsum on ``dev`` (its first ``val_images``) when the folder has one.
#: Cut for a CPU: 500 steps at batch 128 on a seeded 10,000 of the training images, regions PCA-reduced to 256
#: before the trainable projection. DPC: its own schedule (stage II from 80% of training, the rate cut by 10 for
#: stage II's last third, as its code's 240 + 40 + 20 epochs), a 1024-d joint space and one bottleneck block per
#: stage of its text CNN (the paper's: --set model.dpc.embed_dim=2048 --set 'model.dpc.text_channels=[256,512,
#: 1024,2048]' --set 'model.dpc.text_blocks=[3,4,6,1]'). DAN: the paper's sizes (512-d, K = 2, margin 100).
#: Raise any of it with --set (docs/retrieval.md).
PRECOMP_DEFAULTS: dict[str, Any] = {
    "seeds": 5,
    "workers": None,
    "settings": "all",
    "models": list(RETRIEVAL_MODELS),
    "max_train_images": 10_000,
    "region_dim": 256,
    "val_images": 1000,
    "validate_every": 100,
    "grad_clip": 2.0,
    "lr_decay_at": 0.5,
    "max_len": 0,
    "train": {**{m: {"steps": 500, "batch_size": 128, "lr": 2e-4, "weight_decay": 0.0} for m in RETRIEVAL_MODELS},
              "dpc": {"steps": 500, "batch_size": 128, "lr": 2e-4, "weight_decay": 0.0,
                      "lr_decay_at": DPC_LR_DECAY_AT}},
    "model": {"vsepp": {"embed_dim": 1024, "word_dim": 300},
              "scan-xattn": {"embed_dim": 1024, "word_dim": 300, "eval_block": 64},
              "a3vse": {"embed_dim": 512, "word_dim": 300, "disc_hidden": 512},
              "dpc": {"embed_dim": 1024, "word_dim": 300, "text_channels": [128, 256, 512, 1024],
                      "text_blocks": [1, 1, 1, 1]},
              "dan": {"word_dim": 300, "hidden_dim": 512, "margin": 100.0}},
}
PRECOMP_QUICK: dict[str, Any] = {
    "seeds": 2, "workers": 1, "settings": ["sparse-10-1", "full"], "max_train_images": 2000, "region_dim": 32,
    "val_images": 50, "validate_every": 20,
    "train": {m: {"steps": 60, "batch_size": 16, "lr": 2e-3} for m in RETRIEVAL_MODELS},
    "model": {"vsepp": {"embed_dim": 32, "word_dim": 16}, "scan-xattn": {"embed_dim": 32, "word_dim": 16},
              "a3vse": {"embed_dim": 32, "word_dim": 16, "disc_hidden": 32, "heads": 2},
              "dpc": {"embed_dim": 32, "word_dim": 16, "text_len": 16, "text_channels": [16, 16, 32, 32],
                      "text_blocks": [1, 1, 1, 1]},
              "dan": {"word_dim": 16, "hidden_dim": 32, "margin": 6.25}},
}


def _precomp_job(inputs: str, out_dir: str, seed: int, setting: str, s: dict[str, Any], train_rows: np.ndarray,
                 val_rows: np.ndarray | None, protocols: list[EvalProtocol], progress: bool) -> dict[str, Any]:
    """One (seed, setting) cell of the precomp grid, in a worker process; cached as JSON (resume)."""
    from visem.experiments.parallel import cached_json
    from visem.experiments.retrieval import load_corpus
    from visem.experiments.sparse import parse_setting

    def run() -> dict[str, Any]:
        corpus = load_corpus(Path(inputs))
        budget = Budget.from_settings({**s, "max_len": int(s["max_len"]) or 10**6}, progress)
        return sparse_grid(corpus, Path(out_dir) / f"seed{seed}", budget, train_rows, protocols, seed=seed,
                           settings=[parse_setting(setting)], models=s["models"],
                           pseudo=nearest_caption_pseudo(corpus), val_img=val_rows)

    return cached_json(Path(out_dir) / f"seed{seed}" / setting / "result.json", run)


@register_experiment("retrieval-precomp", description="VSE++, SCAN, A3VSE, DPC and DAN, full and sparse (seed 003 "
                     "grid), on VSE++/SCAN precomp features: COCO 1K (5-fold) + 5K or Flickr30K 1K",
                     paper="seed 003 Tables 1-4 protocol", data="required", data_layout=PRECOMP_LAYOUT)
def run_retrieval_precomp(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
                          data: Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from visem.config import merge
    from visem.experiments import settings as resolve_settings
    from visem.experiments.parallel import run_parallel
    from visem.experiments.retrieval import aggregate, mean_shares, save_corpus
    from visem.experiments.sparse import model_list, setting_list, setting_name

    s = resolve_settings(merge(PRECOMP_DEFAULTS, PRECOMP_QUICK) if quick else PRECOMP_DEFAULTS, overrides,
                         "retrieval-precomp")
    s["settings"] = [setting_name(*t) for t in setting_list(s["settings"])]
    s["models"] = model_list(s["models"])
    corpus, train_rows, protocols, info = load_precomp_corpus(data, seed=seed, max_train_images=s["max_train_images"],
                                                              region_dim=s["region_dim"], val_images=s["val_images"])
    if corpus.grid is None:
        s["models"] = [m for m in s["models"] if m in POOLED_MODELS]
    val_rows = np.flatnonzero(corpus.domain == "val")
    inputs = save_corpus(corpus, Path(out_dir) / "inputs")
    seeds = [seed + i for i in range(int(s["seeds"]))]
    jobs = [{"inputs": str(inputs), "out_dir": str(out_dir), "seed": sd, "setting": st, "s": s,
             "train_rows": train_rows, "val_rows": val_rows if len(val_rows) else None, "protocols": protocols,
             "progress": progress} for st in s["settings"] for sd in seeds]
    results = run_parallel(_precomp_job, jobs, workers=s["workers"], progress=progress)
    rows, shares, splits = [], {}, {}
    for job, res in zip(jobs, results):
        rows += res["rows"]
        for k, v in res["shares"].items():
            shares.setdefault(k, []).append(v)
        splits.setdefault(f"seed{job['seed']}", {}).update(res["splits"])
    config = {"path": str(data), **info, "seeds": seeds, "settings": s, "splits": splits,
              "vocab_size": results[0]["vocab_size"],
              "protocols": [{"dataset": p.dataset, "folds": len(p.folds), "images_per_fold": len(p.folds[0])}
                            for p in protocols],
              "validation": f"{len(val_rows)} images of dev" if len(val_rows) else "none (no dev split): last step",
              "vsepp_image_features": "mean of the regions" if corpus.grid is not None else "pooled features",
              "word_embeddings": "learned from scratch, U(-0.1, 0.1) (as VSE++ and SCAN)",
              "pseudo_captions": "first annotated caption of the nearest annotated training image (pooled cosine)",
              "term_shares": {k: mean_shares(v) for k, v in shares.items()}, "seed": seed}
    return {"experiment": "retrieval-precomp", "config": config, "rows": aggregate(rows),
            "paper": _precomp_paper_rows(info["dataset"], protocols)}


def _precomp_paper_rows(name: str, protocols: list[EvalProtocol]) -> list[dict[str, Any]]:
    """Seed 003's rows, keyed to this run's protocol where the data is the paper's (else as published).

    Flickr30K 1K rows (Tables 1, 2, 5) go to the 1K protocol of a Flickr30K
    folder, MS-COCO 5K rows (Table 4) to the 5K protocol of a COCO folder.
    """
    from visem.experiments.sparse import _seed003_rows

    lower = name.lower()
    keys = {}
    if lower in ("f30k", "flickr30k", "flickr"):
        keys["Flickr30K 1K"] = next((p.dataset for p in protocols if p.dataset.endswith(" 1K")), None)
    if lower in ("coco", "mscoco", "ms-coco"):
        keys["MS-COCO 5K"] = next((p.dataset for p in protocols if p.dataset.endswith(" 5K")), None)
    return [dict(r, dataset=keys[r["dataset"]]) if keys.get(r["dataset"]) else r for r in _seed003_rows()]
