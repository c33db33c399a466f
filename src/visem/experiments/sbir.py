"""Zero-shot sketch-based image retrieval (seed 004 Sec. 4.3, Table 3, Table 4's Sketchy column): ``zs-sbir-emoji``.

* Data: :func:`emoji_sbir_data` (the Symbola sketches of :mod:`visem.data.sketch`
  as queries, the Google and Twitter emoji as the gallery, CLDR subgroups as
  classes, GloVe of the subgroup names as class embeddings) or, with
  ``--data PATH``, :func:`npz_sbir_data` (the user's sketch / image features).
* :class:`SBIRSplit` / :func:`make_sbir_split` -- seen / unseen classes, the
  unseen gallery balanced (:func:`visem.experiments.zscmr.cap_class_share`),
  features z-scored with the training statistics.
* :func:`train_sbir` -- a registered :class:`~visem.models.sbir.SketchImageModel`
  trained on same-class sketch-image pairs of the seen classes (:func:`class_pairs`);
  :func:`sbir_scores` -- MAP (all results) and P@100, cosine or Hamming, plus
  the precision-recall curve of Figure 3.
* :func:`run_zs_sbir` -- every run over several splits in parallel processes:
  mean ± std rows, the random floor of each split, paired differences, the
  figures (:mod:`visem.experiments.sbir_figures`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from visem.data.paths import DataError
from visem.experiments.stats import floored_std, mean_std, paired_difference
from visem.experiments.zscmr import cap_class_share, choose_unseen
from visem.metrics import precision_recall_curve
from visem.models.registry import build_model
from visem.models.sbir import sbir_metrics
from visem.train.sampler import BatchSampler
from visem.train.trainer import TrainConfig, Trainer

__all__ = ["SBIRSplit", "NPZ_KEYS", "emoji_sbir_data", "npz_sbir_data", "make_sbir_split", "class_pairs",
           "train_sbir", "sbir_scores", "split_fingerprint", "random_floor", "run_zs_sbir", "SBIR_DEFAULTS", "SBIR_QUICK", "SEED004_SBIR"]

#: the arrays of a ``--data`` file (``class_embeddings`` optional)
NPZ_KEYS = ("sketch_features", "sketch_labels", "image_features", "image_labels", "class_names", "unseen_classes")
NPZ_LAYOUT = ("an .npz file holding sketch_features (Ns, Ds), sketch_labels (Ns,), image_features (Ni, Di), "
              "image_labels (Ni,) (class indices into class_names), class_names (C,), unseen_classes (names or "
              "indices) and optionally class_embeddings (C, A)")
PR_LEVELS = 21


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def _thumbnails(paths: Sequence[str], size: int, grey: bool) -> np.ndarray:
    """Pixels of each picture composited on white and box-averaged to ``size x size`` (the quick features)."""
    from PIL import Image

    from visem.data.emoji import composite_rgb

    out = []
    for p in paths:
        im = Image.fromarray(composite_rgb(p)).resize((size, size), Image.BOX)
        out.append(np.asarray(im.convert("L") if grey else im, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(out)


def emoji_sbir_data(kind: str = "efficientnet", max_classes: int | None = None) -> dict[str, Any]:
    """Symbola sketches and Google / Twitter emoji of the same subgroups, with GloVe subgroup embeddings.

    ``kind``: ``"efficientnet"`` (EfficientNet-Lite0 pooled, 1280-d, both
    modalities; computed once and cached by :mod:`visem.features`) or
    ``"pixels"`` (the quick variant: 8 x 8 grey sketches, 8 x 8 RGB emoji).
    Subgroups whose name has no GloVe word (``keycap``, ``alphanum``) are left
    out (an all-zero class embedding). ``max_classes``: only the first N of the
    remaining subgroups (CLDR order; the quick run).
    """
    from visem.data import load
    from visem.features import compute_features

    sk = load("emoji-sketch")
    cls = compute_features("emoji", "glove-classes", style="google").array.astype(np.float32)
    keep = np.abs(cls).sum(1) > 0
    dropped = [sk.class_names[c] for c in np.unique(sk.labels) if not keep[c]]
    if max_classes is not None:
        keep &= np.isin(np.arange(len(keep)), np.unique(sk.labels[keep[sk.labels]])[: int(max_classes)])
    s_keep, i_keep = keep[sk.labels], keep[sk.image_labels]
    if kind == "efficientnet":
        sketch = compute_features("emoji-sketch", "efficientnet").array.astype(np.float32)[s_keep]
        image = compute_features("emoji", "efficientnet").array.astype(np.float32)[sk.images["row"].to_numpy()][i_keep]
    elif kind == "pixels":
        sketch = _thumbnails(np.asarray(sk.table["image"])[s_keep].tolist(), 8, grey=True)
        image = _thumbnails(np.asarray(sk.images["image"])[i_keep].tolist(), 8, grey=False)
    else:
        raise ValueError(f"kind must be 'efficientnet' or 'pixels', got {kind!r}")
    return {"sketch": sketch, "sketch_label": sk.labels[s_keep], "image": image,
            "image_label": sk.image_labels[i_keep], "class_emb": cls, "class_names": list(sk.class_names),
            "sketch_path": list(np.asarray(sk.table["image"])[s_keep]),
            "image_path": list(np.asarray(sk.images["image"])[i_keep]), "unseen_classes": None,
            "class_embedding": "glove-6b-50d subgroup names", "dropped_classes": dropped}


def _npz_array(z: Any, path: Path, key: str) -> np.ndarray:
    if key not in z.files:
        raise DataError(f"{path}: no array {key!r} (expected {NPZ_LAYOUT})")
    return z[key]


def npz_sbir_data(path: str | Path) -> dict[str, Any]:
    """The ``--data`` layout (:data:`NPZ_LAYOUT`), checked; DataError naming the file and the field at fault.

    Without ``class_embeddings`` the class names are embedded with GloVe 6B
    50-d (the mean of their words); a name without any GloVe word is an error
    that names it (give ``class_embeddings`` then).
    """
    from visem.data.paths import reading, require_file

    path = require_file(path, "an .npz file of sketch and image features")
    with reading(path, "an .npz archive"), np.load(path, allow_pickle=False) as z:
        arrays = {k: _npz_array(z, path, k) for k in NPZ_KEYS}
        class_emb = z["class_embeddings"] if "class_embeddings" in z.files else None
    out: dict[str, Any] = {}
    for mod in ("sketch", "image"):
        x, y = arrays[f"{mod}_features"], arrays[f"{mod}_labels"]
        if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "fiu":
            raise DataError(f"{path}: {mod}_features must be a non-empty numeric (N, D) array, got {x.dtype} {x.shape}")
        if not np.isfinite(x).all():
            raise DataError(f"{path}: {mod}_features holds NaN or infinite values")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
            raise DataError(f"{path}: {mod}_labels must be integers, one per row of {mod}_features "
                            f"({x.shape[0]}), got {y.dtype} {y.shape}")
        out[mod], out[f"{mod}_label"] = x.astype(np.float32), y.astype(np.int64)
    names = [str(n) for n in arrays["class_names"].reshape(-1)]
    if len(set(names)) != len(names) or not names:
        raise DataError(f"{path}: class_names must be distinct (and at least one), got {len(names)} names")
    c = len(names)
    for mod in ("sketch", "image"):
        bad = out[f"{mod}_label"][(out[f"{mod}_label"] < 0) | (out[f"{mod}_label"] >= c)]
        if bad.size:
            raise DataError(f"{path}: {mod}_labels holds {int(bad[0])}, outside the {c} class_names")
    unseen_raw = arrays["unseen_classes"].reshape(-1)
    if unseen_raw.dtype.kind in "iu":
        unseen = np.unique(unseen_raw.astype(np.int64))
        if unseen.size and (unseen.min() < 0 or unseen.max() >= c):
            raise DataError(f"{path}: unseen_classes holds indices outside the {c} class_names")
    else:
        lookup = {n: i for i, n in enumerate(names)}
        missing = [str(n) for n in unseen_raw if str(n) not in lookup]
        if missing:
            raise DataError(f"{path}: unseen_classes names {missing[:5]} that are not in class_names")
        unseen = np.unique([lookup[str(n)] for n in unseen_raw]).astype(np.int64)
    sk_classes, im_classes = set(out["sketch_label"].tolist()), set(out["image_label"].tolist())
    for u in unseen.tolist():
        if u not in sk_classes or u not in im_classes:
            raise DataError(f"{path}: unseen class {names[u]!r} has no sketch or no image (every unseen class "
                            "needs both: its sketches are queries, its images the relevant items)")
    seen = sorted((sk_classes & im_classes) - set(unseen.tolist()))
    if not unseen.size or not seen:
        raise DataError(f"{path}: needs at least one unseen class and one seen class with sketches and images "
                        f"(got {unseen.size} unseen, {len(seen)} seen)")
    if class_emb is not None:
        class_emb = np.asarray(class_emb, dtype=np.float32)
        if class_emb.shape[0] != c or class_emb.ndim != 2 or not np.isfinite(class_emb).all():
            raise DataError(f"{path}: class_embeddings must be a finite ({c}, A) array, got {class_emb.shape}")
        source = "class_embeddings of the file"
    else:
        from visem.features.text import glove_phrases

        pv = glove_phrases([n.replace("_", " ").replace("-", " ") for n in names], mode="mean", all_oov="zero")
        class_emb = np.asarray(pv.vectors, dtype=np.float32)
        empty = [names[i] for i in range(c) if not np.abs(class_emb[i]).sum()]
        if empty:
            raise DataError(f"{path}: class names without any GloVe word: {empty[:5]} (give class_embeddings)")
        source = "glove-6b-50d class names"
    out.update({"class_emb": class_emb, "class_names": names, "unseen_classes": unseen, "sketch_path": None,
                "image_path": None, "class_embedding": source, "dropped_classes": []})
    return out


# --------------------------------------------------------------------------
# splits and pairs
# --------------------------------------------------------------------------
@dataclass
class SBIRSplit:
    """Sketches and images of the seen classes for training, of the unseen classes for testing.

    Labels are global class ids (rows of ``class_emb``); ``test_*_rows`` index
    the data's rows (for the figures). Features are z-scored with the training
    statistics of each modality.
    """

    train_sketch: Tensor
    train_sketch_label: Tensor
    train_image: Tensor
    train_image_label: Tensor
    test_sketch: Tensor
    test_sketch_label: Tensor
    test_image: Tensor
    test_image_label: Tensor
    class_emb: Tensor
    seen: Tensor
    unseen: Tensor
    test_sketch_rows: np.ndarray
    test_image_rows: np.ndarray


def make_sbir_split(data: Mapping[str, Any], seed: int = 0, unseen_fraction: float = 0.25,
                    max_class_share: float | None = 0.15) -> SBIRSplit:
    """Seen / unseen classes (the data's ``unseen_classes``, else a seeded ``unseen_fraction``); balanced gallery.

    Classes are those with at least one sketch and one image. The unseen
    images are capped (:func:`cap_class_share`, seeded) so that no class holds
    more than ``max_class_share`` of the gallery (``None``: no cap); every
    sketch of an unseen class is a query.
    """
    ls, li = np.asarray(data["sketch_label"]), np.asarray(data["image_label"])
    present = np.intersect1d(np.unique(ls), np.unique(li))
    given = data.get("unseen_classes")
    seen, unseen = choose_unseen(present, seed, unseen_fraction, None if given is None else list(given))
    te_s = np.flatnonzero(np.isin(ls, unseen))
    te_i = np.flatnonzero(np.isin(li, unseen))
    if max_class_share is not None:
        te_i = te_i[cap_class_share(li[te_i], max_class_share, seed)]
    tr_s, tr_i = np.flatnonzero(np.isin(ls, seen)), np.flatnonzero(np.isin(li, seen))
    xs, xi = torch.from_numpy(np.asarray(data["sketch"])), torch.from_numpy(np.asarray(data["image"]))
    ms, ss = xs[tr_s].mean(0), floored_std(xs[tr_s])
    mi, si = xi[tr_i].mean(0), floored_std(xi[tr_i])
    t = torch.from_numpy
    return SBIRSplit(
        train_sketch=(xs[tr_s] - ms) / ss, train_sketch_label=t(ls[tr_s]), train_image=(xi[tr_i] - mi) / si,
        train_image_label=t(li[tr_i]), test_sketch=(xs[te_s] - ms) / ss, test_sketch_label=t(ls[te_s]),
        test_image=(xi[te_i] - mi) / si, test_image_label=t(li[te_i]),
        class_emb=t(np.asarray(data["class_emb"], dtype=np.float32)), seen=t(seen), unseen=t(unseen),
        test_sketch_rows=te_s, test_image_rows=te_i)


def class_pairs(sketch_label: np.ndarray, image_label: np.ndarray, seed: int, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Same-class training pairs ``(sketch rows, image rows)``, seeded.

    Each round pairs every sketch with a random image of its class and every
    image with a random sketch of its class, so every training item of either
    modality appears in every round. Seed 004 Eq. 3 reconstructs one
    modality's instance from "a different instance ... of the same class":
    pairs share the class, not the object. Every class needs both modalities.
    """
    rng = np.random.default_rng(seed)
    sketch_label, image_label = np.asarray(sketch_label), np.asarray(image_label)

    def partners(query: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """For each entry of ``query``, a random index of ``pool`` with the same label."""
        order = np.argsort(pool, kind="stable")
        classes, start, count = np.unique(pool[order], return_index=True, return_counts=True)
        at = np.searchsorted(classes, query)
        if (at >= len(classes)).any() or (classes[np.minimum(at, len(classes) - 1)] != query).any():
            raise ValueError("class_pairs: a class has sketches but no images, or images but no sketches")
        return order[start[at] + (rng.random(len(query)) * count[at]).astype(np.int64)]

    s_out, i_out = [], []
    for _ in range(int(rounds)):
        s_out += [np.arange(len(sketch_label)), partners(image_label, sketch_label)]
        i_out += [partners(sketch_label, image_label), np.arange(len(image_label))]
    return np.concatenate(s_out), np.concatenate(i_out)


# --------------------------------------------------------------------------
# training and scoring
# --------------------------------------------------------------------------
def train_sbir(name: str, params: Mapping[str, Any] | None, split: SBIRSplit, train: TrainConfig,
               pair_rounds: int = 2, run_dir: Path | None = None) -> tuple[Any, dict[str, dict[str, float]]]:
    """Train a registered SBIR model on the seen-class pairs; fit its binary read-out; ``(model, term shares)``."""
    torch.manual_seed(train.seed)
    seen = split.seen
    remap = torch.full((split.class_emb.shape[0],), -1, dtype=torch.long)
    remap[seen] = torch.arange(len(seen))
    s_idx, i_idx = class_pairs(split.train_sketch_label.numpy(), split.train_image_label.numpy(), train.seed,
                               pair_rounds)
    data = {"sketch": split.train_sketch[s_idx], "image": split.train_image[i_idx],
            "label": remap[split.train_sketch_label[s_idx]]}
    dims = {"image_dim": split.train_image.shape[1], "sketch_dim": split.train_sketch.shape[1],
            "class_dim": split.class_emb.shape[1], "n_classes": len(seen)}
    model = build_model(name, dict(params or {}), dims=dims)
    static = {"class_emb": split.class_emb[seen]}
    shares: dict[str, dict[str, float]] = {}
    if train.steps > 0:
        trainer = Trainer(model, BatchSampler(data, train.batch_size, train.seed), dataclasses.replace(train, progress=False),
                          run_dir, static=static, share_probe=True)
        trainer.fit()
        shares = trainer.shares
    model.eval()
    model.fit_readout(split.train_sketch, split.train_image, seed=train.seed)
    return model, shares


def sbir_scores(model: Any, split: SBIRSplit, levels: int = PR_LEVELS) -> dict[str, dict[str, Any]]:
    """``{"real" | "binary": {"map", "p_at_100", "pr"}}`` of a trained model on the split's unseen classes.

    ``real``: the embeddings by cosine (not for hashing models); ``binary``:
    the model's codes by Hamming distance (hashing models, and real-valued
    models with a fitted read-out). ``pr``: Figure 3's interpolated precision
    at ``levels`` recall levels.
    """
    ls, li = split.test_sketch_label, split.test_image_label
    out: dict[str, dict[str, Any]] = {}
    if not model.native_binary:
        s, i = model.embed_both(split.test_sketch, split.test_image)
        s, i = torch.nn.functional.normalize(s.double(), dim=1), torch.nn.functional.normalize(i.double(), dim=1)
        out["real"] = {**sbir_metrics(s, i, ls, li), "pr": precision_recall_curve(s, i, ls, li, levels)[1].tolist()}
    if model.native_binary or model.readout is not None:
        s, i = model.binary_codes(split.test_sketch, split.test_image)
        out["binary"] = {**sbir_metrics(s, i, ls, li, binary=True),
                         "pr": precision_recall_curve(s, i, ls, li, levels)[1].tolist()}
    return out


def random_floor(split: SBIRSplit, seed: int = 0, levels: int = PR_LEVELS) -> dict[str, Any]:
    """MAP / P@100 / PR of random embeddings of the split's test items: the floor its class sizes allow."""
    g = torch.Generator().manual_seed(seed)
    s, i = torch.randn(len(split.test_sketch), 8, generator=g), torch.randn(len(split.test_image), 8, generator=g)
    ls, li = split.test_sketch_label, split.test_image_label
    return {**sbir_metrics(s, i, ls, li), "pr": precision_recall_curve(s, i, ls, li, levels)[1].tolist()}


# --------------------------------------------------------------------------
# the runs
# --------------------------------------------------------------------------
# LCALE at seed 004 Sec. 4.1's weights and latent size, one hidden layer of 256 (a CPU budget, as zscmr-emoji);
# every model: 64-d embeddings or 64 bits, hidden layers of 256, the same steps, batch and learning rate.
_LCALE = {"latent_dim": 64, "hidden": [256], "reg_hidden": [256]}
#: label -> (registered model, its parameters, table rows it produces: (model, setting, binary))
SBIR_RUNS: dict[str, tuple[str, dict[str, Any], list[tuple[str, str, bool]]]] = {
    "lcale": ("lcale-sbir", _LCALE, [("lcale", "all", False), ("lcale (binary)", "all", True)]),
    "lcale:wo L_CR": ("lcale-sbir", {**_LCALE, "use_cr": False}, [("lcale", "wo L_CR", False)]),
    "lcale:wo L_CA1": ("lcale-sbir", {**_LCALE, "use_ca1": False}, [("lcale", "wo L_CA1", False)]),
    "lcale:wo L_CA2": ("lcale-sbir", {**_LCALE, "use_ca2": False}, [("lcale", "wo L_CA2", False)]),
    "lcale:wo L_CYC": ("lcale-sbir", {**_LCALE, "use_cyc": False}, [("lcale", "wo L_CYC", False)]),
    "gn-triplet": ("gn-triplet", {"embed_dim": 64, "hidden": [256]}, [("gn-triplet", "all", False)]),
    "frwgan": ("frwgan", {"hidden": 256}, [("frwgan", "all", False)]),
    "gdh": ("gdh", {"bits": 64, "hidden": [256]}, [("gdh (binary)", "all", True)]),
    "zsih": ("zsih", {"bits": 64, "hidden": [256], "kron_dim": 32, "gcn_hidden": 256}, [("zsih (binary)", "all", True)]),
    "zs-sbir": ("zs-sbir", {"latent_dim": 64, "hidden": [256], "reg_hidden": [256]}, [("zs-sbir", "all", False)]),
    "zs-sbir:aae": ("zs-sbir", {"latent_dim": 64, "hidden": [256], "reg_hidden": [256], "variant": "aae"},
                    [("zs-sbir", "aae", False)]),
    "sem-pcyc": ("sem-pcyc", {"dim_out": 64, "hidden": 256}, [("sem-pcyc", "all", False), ("sem-pcyc (binary)", "all", True)]),
}

#: seed 004 Table 3 and Table 4 (Sketchy column), MAP and P@100 (fractions)
SEED004_SBIR: list[dict[str, Any]] = [
    {"model": "gn-triplet", "setting": "all", "map": 0.204, "p_at_100": 0.296},
    {"model": "frwgan", "setting": "all", "map": 0.127, "p_at_100": 0.169},
    {"model": "gdh (binary)", "setting": "all", "map": 0.187, "p_at_100": 0.259},
    {"model": "zsih (binary)", "setting": "all", "map": 0.258, "p_at_100": 0.342},
    {"model": "zs-sbir", "setting": "all", "map": 0.196, "p_at_100": 0.284},
    {"model": "sem-pcyc (binary)", "setting": "all", "map": 0.344, "p_at_100": 0.399},
    {"model": "sem-pcyc", "setting": "all", "map": 0.349, "p_at_100": 0.463},
    {"model": "lcale (binary)", "setting": "all", "map": 0.397, "p_at_100": 0.485},
    {"model": "lcale", "setting": "all", "map": 0.476, "p_at_100": 0.583},
    {"model": "lcale", "setting": "wo L_CR", "map": 0.422, "p_at_100": 0.441},
    {"model": "lcale", "setting": "wo L_CA1", "map": 0.454, "p_at_100": 0.561},
    {"model": "lcale", "setting": "wo L_CA2", "map": 0.395, "p_at_100": 0.536},
    {"model": "lcale", "setting": "wo L_CYC", "map": 0.458, "p_at_100": 0.567},
]


def split_fingerprint(split: SBIRSplit) -> str:
    """A digest of everything a run reads from ``split`` (classes, features, labels): the cell cache's key."""
    h = hashlib.sha256()
    for f in dataclasses.fields(split):
        v = getattr(split, f.name)
        h.update(f.name.encode())
        h.update(v.numpy().tobytes() if isinstance(v, Tensor) else np.asarray(v).tobytes())
    return h.hexdigest()[:16]


def _sbir_job(split: SBIRSplit, split_seed: int, label: str, model: str, params: dict[str, Any], lr: float,
              steps: int, batch_size: int, pair_rounds: int, figures: bool,
              cache_dir: str | None = None) -> dict[str, Any]:
    """One (run, split) cell, in a worker process; cached as JSON in ``cache_dir`` (a stopped run resumes)."""

    def compute() -> dict[str, Any]:
        tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=split_seed, log_every=10**9,
                         checkpoint_every=10**9, progress=False)
        t0 = time.process_time()
        m, shares = train_sbir(model, params, split, tc, pair_rounds)
        out: dict[str, Any] = {"scores": sbir_scores(m, split), "shares": shares,
                               "cpu_seconds": time.process_time() - t0}
        if figures:
            from visem.experiments.sbir_figures import figure_payload

            out["figures"] = figure_payload(m, split)
        return out

    if cache_dir is None:
        return compute()
    from visem.experiments.parallel import cached_json

    key = json.dumps([model, params, lr, steps, batch_size, pair_rounds, split_seed, figures,
                      split_fingerprint(split)], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
    return cached_json(Path(cache_dir) / f"{safe}-seed{split_seed}-{digest}.json", compute)


def runs_from_settings(s: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, registered model, parameters)`` of the settings' ``runs`` with ``model.NAME`` overrides."""
    out = []
    for label in s["runs"]:
        if label not in SBIR_RUNS:
            raise ValueError(f"unknown run {label!r}; known: {', '.join(SBIR_RUNS)}")
        name, params, _ = SBIR_RUNS[label]
        out.append((label, name, {**params, **s.get("model", {}).get(name, {})}))
    return out


def _summarise(per_split: dict[tuple[str, str, bool], list[dict[str, float]]]) -> list[dict[str, Any]]:
    rows = []
    for (model, setting, binary), cells in per_split.items():
        stats = mean_std([{"map": c["map"], "p_at_100": c["p_at_100"]} for c in cells])
        rows.append({"model": model, "setting": setting, **stats, "binary": binary})
    return rows


def paired_claims(per_split: Mapping[tuple[str, str, bool], Sequence[Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-split MAP differences behind seed 004's claims: LCALE against each baseline and each ablation.

    ``"A - B"``: mean, std, n and ``wins`` (splits where A is ahead), A the
    LCALE row of B's kind (``lcale (binary)`` against the binary rows).
    """
    maps = {k: [c["map"] for c in v] for k, v in per_split.items()}
    full, binary = ("lcale", "all", False), ("lcale (binary)", "all", True)
    out = {}
    for key, vals in maps.items():
        ref = binary if key[2] else full
        if key == ref or ref not in maps:
            continue
        name = key[0] if key[1] == "all" else f"{key[0]} {key[1]}"
        out[f"{ref[0]} - {name}"] = paired_difference(maps[ref], vals)
    return out


def run_zs_sbir(splits: Sequence[SBIRSplit], runs: Sequence[tuple[str, str, dict[str, Any]]], steps: int,
                batch_size: int, lr: float, seed: int = 0, pair_rounds: int = 2, workers: int | None = None,
                progress: bool = False, figure_run: str | None = "lcale",
                cache_dir: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (mean ± std over ``splits``, split ``i`` seeded ``seed + i``) of every run, the floors, and extras.

    ``extra``: per-split MAP of every row, the floor of each split, paired
    differences, mean term shares, mean PR curves, and the figure payload of
    ``figure_run`` on split 0. ``cache_dir``: each (run, split) cell's result
    is kept there as JSON, keyed by its settings and the split's contents, so
    a stopped run repeats only its unfinished cells.
    """
    from visem.experiments.parallel import run_parallel
    from visem.experiments.retrieval import mean_shares

    jobs = [{"split": sp, "split_seed": seed + i, "label": label, "model": name, "params": p, "lr": lr, "steps": steps,
             "batch_size": batch_size, "pair_rounds": pair_rounds, "figures": label == figure_run and i == 0,
             "cache_dir": None if cache_dir is None else str(cache_dir)}
            for label, name, p in runs for i, sp in enumerate(splits)]
    results = run_parallel(_sbir_job, jobs, workers=workers, progress=progress)
    per_split: dict[tuple[str, str, bool], list[dict[str, float]]] = {}
    pr: dict[str, list[float]] = {}
    shares, cpu, payload = {}, {}, None
    for k, (label, _, _) in enumerate(runs):
        part = results[k * len(splits):(k + 1) * len(splits)]
        for model, setting, binary in SBIR_RUNS[label][2]:
            kind = "binary" if binary else "real"
            per_split[(model, setting, binary)] = [{x: r["scores"][kind][x] for x in ("map", "p_at_100")} for r in part]
            pr[f"{model}:{setting}"] = np.mean([r["scores"][kind]["pr"] for r in part], axis=0).tolist()
        shares[label] = mean_shares([r["shares"] for r in part if r["shares"]])
        cpu[label] = float(np.mean([r["cpu_seconds"] for r in part]))
        payload = payload or next((r["figures"] for r in part if "figures" in r), None)
    rows = _summarise(per_split)
    floors = [random_floor(sp, seed + i) for i, sp in enumerate(splits)]
    rows.append({"model": "random", "setting": "floor", **mean_std([{x: f[x] for x in ("map", "p_at_100")}
                                                                    for f in floors]), "binary": False})
    for i, f in enumerate(floors):
        rows.append({"model": "random", "setting": f"floor, split {i}", "map": f["map"], "p_at_100": f["p_at_100"],
                     "n_runs": 1, "binary": False})
    pr["random:floor"] = np.mean([f["pr"] for f in floors], axis=0).tolist()
    extra = {"map_per_split": {f"{m}:{st}": [c["map"] for c in v] for (m, st, _), v in per_split.items()},
             "p_at_100_per_split": {f"{m}:{st}": [c["p_at_100"] for c in v] for (m, st, _), v in per_split.items()},
             "floor_per_split": [{x: f[x] for x in ("map", "p_at_100")} for f in floors],
             "paired_map": paired_claims(per_split), "term_shares": shares, "cpu_seconds_per_run": cpu,
             "pr_curves": {"recall": np.linspace(0, 1, PR_LEVELS).tolist(), "precision": pr}}
    return rows, {**extra, "figure_payload": payload}


def split_summary(splits: Sequence[SBIRSplit], class_names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for sp in splits:
        _, counts = np.unique(sp.test_image_label.numpy(), return_counts=True)
        out.append({"seen": sp.seen.tolist(), "unseen": sp.unseen.tolist(),
                    "unseen_names": [class_names[c] for c in sp.unseen.tolist()],
                    "n_train_sketches": len(sp.train_sketch), "n_train_images": len(sp.train_image),
                    "n_test_sketches": len(sp.test_sketch), "n_test_images": len(sp.test_image),
                    "largest_unseen_class_share": float(counts.max() / counts.sum())})
    return out


#: the budget of ``zs-sbir-emoji`` (raise any of it with --set)
SBIR_DEFAULTS: dict[str, Any] = {
    "splits": 5,
    "workers": None,
    "unseen_fraction": 0.25,
    "max_class_share": 0.15,
    "pair_rounds": 2,
    "runs": [label for label in SBIR_RUNS if label != "zs-sbir:aae"],
    "train": {"steps": 300, "batch_size": 128, "lr": 1e-3},
    "model": {name: {} for name in dict.fromkeys(v[0] for v in SBIR_RUNS.values())},
    "figures": True,
    "max_classes": None,  # only the first N subgroups of the built-in data (the quick run: 40)
}
SBIR_QUICK: dict[str, Any] = {
    "splits": 2, "workers": 1, "train": {"steps": 20}, "max_classes": 40,
    "model": {"lcale-sbir": {"hidden": [32], "reg_hidden": [32]}, "zs-sbir": {"n_samples": 5},
              "sem-pcyc": {"dim_out": 16}, "gdh": {"hidden": [32]}, "zsih": {"hidden": [32], "kron_dim": 8}},
}


def run_zs_sbir_emoji(out_dir: Any, quick: bool = False, seed: int = 0, progress: bool = False,
                      data: Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """LCALE, its Table 4 ablations and the six Table 3 baselines on zero-shot SBIR (emoji sketches, or ``--data``)."""
    from visem.config import merge
    from visem.distributed import is_main
    from visem.experiments import settings as resolve_settings

    t0 = time.perf_counter()
    s = resolve_settings(merge(SBIR_DEFAULTS, SBIR_QUICK) if quick else SBIR_DEFAULTS, overrides, "zs-sbir-emoji")
    if data is not None:
        d = npz_sbir_data(data)
        kind = "features of the --data file"
    else:
        kind = "pixels" if quick else "efficientnet"
        d = emoji_sbir_data(kind, s["max_classes"])
    n = int(s["splits"])
    if n < 1:
        raise ValueError(f"splits must be >= 1, got {n}")
    # a file's own split is fixed: its runs differ by the training seed, and its gallery is kept whole unless
    # --set max_class_share=F asks for the cap (the built-in data is balanced by default)
    cap = s["max_class_share"] if data is None or "max_class_share" in (overrides or {}) else None
    splits = [make_sbir_split(d, seed=seed + i, unseen_fraction=float(s["unseen_fraction"]), max_class_share=cap)
              for i in range(n)]
    runs = runs_from_settings(s)
    t = s["train"]
    rows, extra = run_zs_sbir(splits, runs, int(t["steps"]), int(t["batch_size"]), float(t["lr"]), seed,
                              int(s["pair_rounds"]), s["workers"], progress,
                              figure_run="lcale" if s["figures"] and "lcale" in s["runs"] else None,
                              cache_dir=Path(out_dir) / "cells")
    payload = extra.pop("figure_payload")
    figures: dict[str, str] = {}
    if s["figures"] and is_main():  # rank 0 alone draws and writes under torchrun
        from visem.experiments.sbir_figures import write_figures

        figures = write_figures(Path(out_dir), extra["pr_curves"], payload, splits[0], d, quick=quick)
    config = {"dataset": "emoji-sketch" if data is None else Path(data).name, "data": str(data) if data else None,
              "features": kind, "class_embedding": d["class_embedding"], "max_class_share_applied": cap, "dropped_classes": d["dropped_classes"],
              "class_names": d["class_names"], "settings": s, "seed": seed,
              "splits": split_summary(splits, d["class_names"]), "figures": figures,
              "protocol": "sketch queries of the unseen classes against their images; relevance = same class; MAP "
                          "over all results and P@100; real-valued embeddings by cosine, binary codes by Hamming "
                          "distance; ties count against the query", **extra,
              "wall_seconds": time.perf_counter() - t0,
              "paper_note": "paper values: seed 004 Tables 3 and 4 on Sketchy (VGG-16 + attention, 100 / 25 classes)"}
    return {"experiment": "zs-sbir-emoji", "config": config, "rows": rows, "paper": SEED004_SBIR}


def _register() -> None:
    from visem.experiments import register_experiment

    register_experiment(
        "zs-sbir-emoji",
        description="zero-shot sketch-based image retrieval (Symbola sketches -> emoji): LCALE, LCALE (binary), "
                    "Table 4 ablations, GN Triplet, FRWGAN, GDH, ZSIH, ZS-SBIR, SEM-PCYC; 5 balanced splits",
        paper="seed 004 (LCALE) Sec. 4.3, Tables 3-4, Figures 3-5",
        data="optional", data_layout=NPZ_LAYOUT,
    )(run_zs_sbir_emoji)


_register()
