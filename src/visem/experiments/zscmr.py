"""Zero-shot cross-modal retrieval (seed 004 protocol): ``zscmr-emoji`` and the helpers of ``zscmr-mat``.

* :class:`CMRSplit` -- image-text pairs of seen classes for training, every
  image and text of the unseen classes for testing; :func:`make_cmr_split`
  draws the classes.
* :func:`train_cmr` / :func:`cmr_metrics` -- train a registered cross-modal
  model on the seen-class pairs; image-to-text and text-to-image MAP over the
  unseen classes (relevance = same class) and P@100, fractions.
* :func:`run_cmr_models` -- every run of ``_CMR_RUNS`` over several splits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from visem.experiments.stats import as_tensor, floored_std, mean_std
from visem.models.cmr import cross_modal_map
from visem.models.registry import build_model
from visem.train.sampler import BatchSampler
from visem.train.trainer import TrainConfig, Trainer

_t = as_tensor


# --------------------------------------------------------------------------
# zero-shot cross-modal retrieval
# --------------------------------------------------------------------------
@dataclass
class CMRSplit:
    """Image-text pairs of seen classes for training, of unseen classes for testing."""

    train_image: Tensor
    train_text: Tensor
    train_label: Tensor  # global class ids
    test_image: Tensor
    test_text: Tensor
    test_image_label: Tensor
    test_text_label: Tensor
    class_emb: Tensor
    seen: Tensor
    unseen: Tensor


def make_cmr_split(image: Any, text: Any, label: Any, class_emb: Any, unseen_fraction: float = 0.25,
                   seed: int = 0) -> CMRSplit:
    """Seeded split of the classes into seen / unseen; pairs follow their class."""
    x, t, y = _t(image, torch.float32), _t(text, torch.float32), _t(label, torch.long)
    s = _t(class_emb, torch.float32)
    present = torch.unique(y)
    gen = torch.Generator().manual_seed(seed)
    perm = present[torch.randperm(len(present), generator=gen)]
    n_u = max(1, int(round(unseen_fraction * len(present))))
    unseen, seen = perm[:n_u].sort().values, perm[n_u:].sort().values
    te = torch.isin(y, unseen)
    return CMRSplit(x[~te], t[~te], y[~te], x[te], t[te], y[te], y[te], s, seen, unseen)


def train_cmr(name: str, params: Mapping[str, Any] | None, split: CMRSplit, train: TrainConfig):
    """Train a registered cross-modal model on the seen-class pairs; returns the model."""
    torch.manual_seed(train.seed)
    classes = split.seen
    remap = torch.full((split.class_emb.shape[0],), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    data = {"image": split.train_image, "text": split.train_text, "label": remap[split.train_label]}
    dims = {"image_dim": split.train_image.shape[1], "text_dim": split.train_text.shape[1],
            "class_dim": split.class_emb.shape[1], "n_classes": len(classes)}
    model = build_model(name, dict(params or {}), dims=dims)
    static = {"class_emb": split.class_emb[classes]}
    sampler = BatchSampler(data, train.batch_size, train.seed)
    if train.steps > 0:
        Trainer(model, sampler, dataclasses.replace(train, progress=False), static=static).fit()
    if hasattr(model, "finalize"):
        model.finalize({**data, **static})
    model.eval()
    return model


def cmr_metrics(model: Any, split: CMRSplit) -> dict[str, float]:
    """Img2Txt / Txt2Img / average MAP and P@100 over the unseen classes (fractions)."""
    with torch.no_grad():
        img = model.embed_image(split.test_image)
        txt = model.embed_text(split.test_text)
    return cross_modal_map(img, txt, split.test_image_label, split.test_text_label)

# --------------------------------------------------------------------------
# zero-shot cross-modal retrieval on emoji
# --------------------------------------------------------------------------
def emoji_cmr_data(style: str = "google", image_kind: str = "efficientnet") -> dict[str, np.ndarray]:
    """Emoji of one style as image-caption pairs, subgroups as classes, GloVe of the subgroup names.

    One pair per caption (an emoji has up to three). Subgroups whose name has
    no GloVe word (an all-zero class embedding) are left out. ``image_kind``
    ``"pixels"`` (the quick variant) average-pools the 64 px RGB images to
    8 x 8 x 3 values.
    """
    from visem.features import compute_features

    img = compute_features("emoji", image_kind, style=style)
    image = img.array.astype(np.float32)
    if image_kind == "pixels":
        image = image.reshape(len(image), 8, 8, 8, 8, 3).mean(axis=(2, 4)).reshape(len(image), -1)
    txt = compute_features("emoji", "minilm", style=style)
    cls = compute_features("emoji", "glove-classes", style=style).array.astype(np.float32)
    labels = np.asarray(img.meta["labels"], dtype=np.int64)
    rows = np.asarray(txt.meta["caption_row"], dtype=np.int64)
    keep_cls = np.abs(cls).sum(1) > 0
    keep_img = keep_cls[labels]
    keep_txt = keep_img[rows]
    return {
        "image": image,
        "image_label": labels,
        "text": txt.array.astype(np.float32),
        "text_row": rows,
        "class_emb": cls,
        "keep_image": keep_img,
        "keep_text": keep_txt,
    }


def make_emoji_cmr_split(data: Mapping[str, np.ndarray], seed: int = 0, unseen_fraction: float = 0.25) -> CMRSplit:
    """Seeded seen / unseen split of the subgroups; training pairs (image, caption) of seen classes.

    Test: every image and every caption of the unseen classes (relevance =
    same subgroup). Features are z-scored with the training pairs' statistics.
    """
    labels = data["image_label"]
    present = np.unique(labels[data["keep_image"]])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(present)
    n_u = int(round(unseen_fraction * len(present)))
    unseen, seen = np.sort(perm[:n_u]), np.sort(perm[n_u:])
    rows = data["text_row"]
    txt_label = labels[rows]
    tr_txt = np.isin(txt_label, seen) & data["keep_text"]
    te_img = np.isin(labels, unseen) & data["keep_image"]
    te_txt = np.isin(txt_label, unseen) & data["keep_text"]
    xi, xt = torch.from_numpy(data["image"]), torch.from_numpy(data["text"])
    tri, trt = xi[rows[tr_txt]], xt[tr_txt]
    mi, si = tri.mean(0), floored_std(tri)
    mt, st = trt.mean(0), floored_std(trt)
    return CMRSplit(
        train_image=(tri - mi) / si, train_text=(trt - mt) / st, train_label=torch.from_numpy(txt_label[tr_txt]),
        test_image=(xi[te_img] - mi) / si, test_text=(xt[te_txt] - mt) / st,
        test_image_label=torch.from_numpy(labels[te_img]), test_text_label=torch.from_numpy(txt_label[te_txt]),
        class_emb=torch.from_numpy(data["class_emb"]), seen=torch.from_numpy(seen), unseen=torch.from_numpy(unseen),
    )


# LCALE's hyper-parameters of seed 004 Sec. 4.1 (alpha 1, beta 0.1, lambda 0.1, gamma 0.01, latent 64); the
# hidden layers [4096, 2048] of 4096-d inputs scaled down to one layer of 256 for the 1280-d / 384-d features
# here (a CPU budget). Seed 004 trains with lr 1e-4 for an unstated number of epochs; within a budget of 600
# steps every neural model here uses 1e-3 (chosen before any run, the same for all models).
_LCALE = {"latent_dim": 64, "hidden": [256], "reg_hidden": [256]}
_CMR_RUNS: list[tuple[str, str, dict[str, Any], float]] = [
    ("lcale", "all", _LCALE, 1e-3),
    ("lcale", "wo L_CR", {**_LCALE, "use_cr": False}, 1e-3),
    ("lcale", "wo L_CA1", {**_LCALE, "use_ca1": False}, 1e-3),
    ("lcale", "wo L_CA2", {**_LCALE, "use_ca2": False}, 1e-3),
    ("lcale", "wo L_CYC", {**_LCALE, "use_cyc": False}, 1e-3),
    ("cada-vae-cmr", "all", {"latent_dim": 64, "hidden_image": [256], "hidden_side": [256]}, 1e-3),
    ("dcca", "all", {"hidden": [256], "out_dim": 32, "reg": 1e-3}, 1e-3),
    ("devise-cmr", "all", {}, 1e-3),
]

# seed 004's numbers, on other data sets (context only: no row of visem's shares their dataset key)
_SEED004 = [
    {"model": "dcca", "setting": "all", "dataset": "wikipedia (seed 004 Table 2)", "i2t_map": 0.282, "t2i_map": 0.266, "avg_map": 0.274},
    {"model": "lcale", "setting": "all", "dataset": "wikipedia (seed 004 Table 2)", "i2t_map": 0.367, "t2i_map": 0.357, "avg_map": 0.362},
    {"model": "lcale", "setting": "wo L_CR", "dataset": "wikipedia (seed 004 Table 4)", "i2t_map": 0.261, "t2i_map": 0.240, "avg_map": 0.250},
    {"model": "lcale", "setting": "wo L_CA1", "dataset": "wikipedia (seed 004 Table 4)", "i2t_map": 0.337, "t2i_map": 0.329, "avg_map": 0.333},
    {"model": "lcale", "setting": "wo L_CA2", "dataset": "wikipedia (seed 004 Table 4)", "i2t_map": 0.353, "t2i_map": 0.341, "avg_map": 0.347},
    {"model": "lcale", "setting": "wo L_CYC", "dataset": "wikipedia (seed 004 Table 4)", "i2t_map": 0.344, "t2i_map": 0.334, "avg_map": 0.339},
    {"model": "lcale", "setting": "all", "dataset": "sketchy (seed 004 Table 3)", "p_at_100": 0.583},
]


def standardize_cmr(split: CMRSplit) -> CMRSplit:
    """Z-score image and text features with the training pairs' mean / (floored) std only."""
    mi, si = split.train_image.mean(0), floored_std(split.train_image)
    mt, st = split.train_text.mean(0), floored_std(split.train_text)
    return dataclasses.replace(split, train_image=(split.train_image - mi) / si, test_image=(split.test_image - mi) / si,
                               train_text=(split.train_text - mt) / st, test_text=(split.test_text - mt) / st)


def run_cmr_models(make_split: Callable[[int], CMRSplit], dataset: str, n_splits: int, steps: int,
                   quick: bool = False, seed: int = 0,
                   runs: Sequence[tuple[str, str, dict[str, Any], float]] = _CMR_RUNS) -> list[dict[str, Any]]:
    """Rows of every ``(model, setting)`` of ``runs`` trained on ``make_split(seed + i)``, ``i < n_splits``.

    One row per run (the mean and ``_std`` over the splits when
    ``n_splits > 1``), then the floor: random embeddings of the first split's
    test items (``model="random"``, ``setting="floor"``).
    """
    splits = [make_split(seed + i) for i in range(n_splits)]
    rows = []
    for model, setting, params, lr in runs:
        results = []
        for i, split in enumerate(splits):
            tc = TrainConfig(steps=steps, batch_size=128, lr=lr, seed=seed + i, log_every=10**9,
                             checkpoint_every=10**9, progress=False)
            p = dict(params)
            if quick and model == "lcale":
                p.update(hidden=[64], reg_hidden=[64])
            m = train_cmr(model, p, split, tc)
            results.append(cmr_metrics(m, split))
        summary = results[0] if n_splits == 1 else mean_std(results)
        rows.append({"model": model, "setting": setting, "dataset": dataset, **summary})
    # the floor: random embeddings (when the unseen classes are very unequal in size, it is not small)
    split = splits[0]
    g = torch.Generator().manual_seed(seed)
    floor = cross_modal_map(torch.randn(len(split.test_image), 8, generator=g),
                            torch.randn(len(split.test_text), 8, generator=g),
                            split.test_image_label, split.test_text_label)
    rows.append({"model": "random", "setting": "floor", "dataset": dataset, **floor})
    return rows


def run_zscmr_emoji(out_dir: Any, quick: bool = False, seed: int = 0, progress: bool = False,
                    image_kind: str | None = None) -> dict[str, Any]:
    """LCALE, its ablations and baselines on zero-shot emoji image-caption retrieval."""
    kind = image_kind or ("pixels" if quick else "efficientnet")
    data = emoji_cmr_data("google", kind)
    n_splits = 1
    steps = 20 if quick else 600
    rows = run_cmr_models(lambda sd: make_emoji_cmr_split(data, seed=sd), "emoji-google", n_splits, steps,
                          quick=quick, seed=seed)
    config = {"style": "google", "image_features": kind, "text_features": "all-MiniLM-L6-v2 captions",
              "class_embedding": "glove-6b-50d subgroup names", "seen_unseen": "75%/25% of subgroups",
              "splits": n_splits, "train_steps": steps, "batch_size": 128,
              "runs": [{"model": m, "setting": s, "params": p, "lr": lr} for m, s, p, lr in _CMR_RUNS], "seed": seed}
    return {"experiment": "zscmr-emoji", "config": config, "rows": rows, "paper": _SEED004}



def _register() -> None:
    from visem.experiments import register_experiment

    register_experiment(
        "zscmr-emoji",
        description="zero-shot cross-modal retrieval on emoji (subgroups as classes): LCALE, ablations, baselines",
        paper="seed 004 (LCALE) protocol",
    )(run_zscmr_emoji)


_register()
