"""Shared machinery of the image-text retrieval reproductions (seeds 001 and 003).

The experiments themselves live in :mod:`visem.experiments.cross_style`
(``emoji-cross-style``, seed 001) and :mod:`visem.experiments.sparse`
(``emoji-sparse`` and the sparse grid of ``retrieval-precomp``, seed 003).
This module holds what they share:

* :class:`Corpus` -- images (pooled and region features), their domain and
  concept, captions and tags; :func:`emoji_corpus` (both emoji styles,
  EfficientNet-Lite0 features) and :func:`synthetic_corpus` (tests).
* :func:`split_concepts` -- held-out concepts (test) and, inside the
  training concepts, validation concepts for model selection.
* :class:`Budget` -- steps, batch size, learning rate, weight decay and
  model overrides per model, built from an experiment's settings
  (``visem reproduce NAME --set train.MODEL.steps=...``).
* :func:`train_model` -- one training run: seeded, resumable, the model
  selected by validation rsum when the budget says so (never the test set),
  each weighted term's share of the encoders' gradient recorded at the start
  and the end (:mod:`visem.train.shares`).
* :func:`pool_regions`, :func:`region_pca` -- the fixed maps applied to grid
  region features before the models' trainable projections.
* :func:`random_floor`, :func:`imagenet_tag_scores` -- the floor row and the
  offline stand-in for seed 003's pretrained taggers (``s_g``).
* :func:`aggregate` -- mean and sample std over seeds per table row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from visem.experiments.stats import mean_std
from visem.features.text import TextTable
from visem.metrics import retrieval_recall
from visem.models import build_model
from visem.train.trainer import TrainConfig, Trainer

# keys that name a row rather than measure it (the rest are metrics averaged over seeds)
ROW_KEYS = ("model", "setting", "dataset")


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
@dataclass
class Corpus:
    """Images (pooled and grid features), their domain and concept, captions and tags.

    ``caption_image[j]`` is the image of caption ``j``; ``tags[i]`` the tag
    list of image ``i``.
    """

    pooled: np.ndarray  # (N, Dp) float32
    grid: np.ndarray | None  # (N, R, Dg) float16/32, None when not needed
    domain: np.ndarray  # (N,) str
    concept: np.ndarray  # (N,) int
    captions: list[str]
    caption_image: np.ndarray  # (M,) int64
    tags: list[list[str]]
    glove: bool = True  # initialise word embeddings from GloVe

    def __post_init__(self) -> None:
        n = len(self.pooled)
        for name, arr in (("grid", self.grid), ("domain", self.domain), ("concept", self.concept), ("tags", self.tags)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"corpus: {name} has {len(arr)} rows, pooled has {n}")
        if len(self.captions) != len(self.caption_image):
            raise ValueError(f"corpus: {len(self.captions)} captions but {len(self.caption_image)} caption_image entries")

    def subset(self, images: np.ndarray) -> "Corpus":
        """The corpus restricted to ``images`` (re-indexed in that order)."""
        images = np.asarray(images, dtype=np.int64)
        remap = -np.ones(len(self.pooled), dtype=np.int64)
        remap[images] = np.arange(len(images))
        keep = np.flatnonzero(remap[self.caption_image] >= 0)
        grid = self.grid[images] if self.grid is not None else None
        return Corpus(self.pooled[images], grid, self.domain[images], self.concept[images],
                      [self.captions[j] for j in keep], remap[self.caption_image[keep]],
                      [self.tags[i] for i in images], self.glove)

    def with_grid(self, grid: np.ndarray | None) -> "Corpus":
        return Corpus(self.pooled, grid, self.domain, self.concept, self.captions, self.caption_image,
                      self.tags, self.glove)


def emoji_corpus(grid: bool = True, progress: bool = False, limit: int | None = None) -> Corpus:
    """Both emoji styles with EfficientNet-Lite0 pooled (and 7 x 7 grid) features (computed once, cached).

    ``limit``: only the first ``limit`` rows of the emoji table (Google style
    first), for quick looks and tests.
    """
    from visem.data import load
    from visem.features import compute_features

    data = load("emoji")
    table = data.table
    pooled = compute_features("emoji", "efficientnet", progress=progress, limit=limit)
    grid_res = compute_features("emoji", "efficientnet-grid", progress=progress, limit=limit) if grid else None
    n = len(pooled.array)
    for res in (pooled, grid_res):
        if res is None:
            continue
        concepts = res.meta.get("concepts")
        if concepts is not None and list(concepts) != table["concept"].tolist()[:n]:
            raise ValueError(f"{res.path}: cached features are not in the emoji table's row order")
    texts, rows = data.captions()
    keep = np.asarray(rows) < n
    concept_ids = {c: i for i, c in enumerate(dict.fromkeys(table["concept"]))}
    return Corpus(
        pooled=np.asarray(pooled.array, dtype=np.float32),
        grid=np.asarray(grid_res.array) if grid_res is not None else None,
        domain=table["style"].to_numpy().astype(str)[:n],
        concept=np.asarray([concept_ids[c] for c in table["concept"]], dtype=np.int64)[:n],
        captions=[t for t, k in zip(texts, keep) if k],
        caption_image=np.asarray(rows, dtype=np.int64)[keep],
        tags=[list(t) for t in table["tags"]][:n],
    )


def synthetic_corpus(n_concepts: int = 40, seed: int = 0, pooled_dim: int = 24, grid_dim: int = 16,
                     regions: int = 4) -> Corpus:
    """A small emoji-like corpus whose answer is known by construction (tests, smoke runs).

    Each concept has three words from a 60-word vocabulary; its captions are
    two- and three-word subsets, its tags the three words. Images of style
    ``google`` / ``twitter`` are fixed linear images of the mean word code plus
    noise, with a different map per style (the domain shift); grid regions
    are images of the single words.
    """
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(12345)
    words = [f"w{i}" for i in range(60)]
    codes = world.standard_normal((60, 8)).astype(np.float32)
    maps = {d: world.standard_normal((8, pooled_dim)).astype(np.float32) / np.sqrt(8) for d in ("google", "twitter")}
    rmaps = {d: world.standard_normal((8, grid_dim)).astype(np.float32) / np.sqrt(8) for d in ("google", "twitter")}
    pooled, grid, domain, concept, captions, cap_img, tags = [], [], [], [], [], [], []
    concept_words = [rng.choice(60, size=3, replace=False) for _ in range(n_concepts)]
    for d in ("google", "twitter"):
        for c, ws in enumerate(concept_words):
            i = len(pooled)
            pooled.append(codes[ws].mean(0) @ maps[d] + 0.1 * rng.standard_normal(pooled_dim))
            reg = [codes[w] @ rmaps[d] for w in ws] + [0.1 * rng.standard_normal(grid_dim)] * (regions - 3)
            grid.append(np.stack(reg[:regions]) + 0.05 * rng.standard_normal((regions, grid_dim)))
            domain.append(d)
            concept.append(c)
            tags.append([words[w] for w in ws])
            for cap in (f"{words[ws[0]]} {words[ws[1]]} {words[ws[2]]}", f"{words[ws[1]]} {words[ws[2]]}"):
                captions.append(cap)
                cap_img.append(i)
    return Corpus(np.asarray(pooled, np.float32), np.asarray(grid, np.float32), np.asarray(domain),
                  np.asarray(concept, np.int64), captions, np.asarray(cap_img, np.int64), tags, glove=False)


def split_concepts(concept: np.ndarray, test_fraction: float, seed: int,
                   val_fraction: float = 0.0) -> tuple[np.ndarray, ...]:
    """Disjoint concept ids: a seeded ``test_fraction`` held out for testing, the rest for training.

    With ``val_fraction > 0`` a seeded ``val_fraction`` of all concepts is
    also taken out of training for model selection and
    ``(train, test, val)`` is returned; else ``(train, test)``.
    """
    ids = np.unique(concept)
    perm = np.random.default_rng(seed).permutation(ids)
    n_test = max(1, int(round(test_fraction * len(ids))))
    test, rest = perm[:n_test], perm[n_test:]
    if val_fraction <= 0:
        return np.sort(rest), np.sort(test)
    n_val = max(1, int(round(val_fraction * len(ids))))
    if n_val >= len(rest):
        raise ValueError(f"val_fraction={val_fraction} leaves no training concept ({len(ids)} concepts)")
    return np.sort(rest[n_val:]), np.sort(test), np.sort(rest[:n_val])


def pairs_index(images: np.ndarray, captions: np.ndarray) -> dict[str, Tensor]:
    return {"img": torch.as_tensor(images, dtype=torch.long), "cap": torch.as_tensor(captions, dtype=torch.long)}


def pool_regions(grid: np.ndarray, side: int) -> np.ndarray:
    """``(N, side * side, D)`` float32: a square ``(N, S * S, D)`` grid average-pooled to ``side x side`` cells.

    Adaptive average pooling (cells may overlap by a row when ``side`` does
    not divide ``S``), the fixed map that trades region detail for speed.
    """
    n, r, d = grid.shape
    s = int(round(r ** 0.5))
    if s * s != r:
        raise ValueError(f"pool_regions needs a square grid of regions, got {r}")
    if not 1 <= side <= s:
        raise ValueError(f"regions must be in [1, {s}] for a {s} x {s} grid, got {side}")
    if side == s:
        return np.asarray(grid, dtype=np.float32)
    out = np.empty((n, side * side, d), dtype=np.float32)
    for a in range(0, n, 256):
        x = torch.as_tensor(np.asarray(grid[a:a + 256], dtype=np.float32)).view(-1, s, s, d).permute(0, 3, 1, 2)
        y = torch.nn.functional.adaptive_avg_pool2d(x, side)
        out[a:a + 256] = y.permute(0, 2, 3, 1).reshape(-1, side * side, d).numpy()
    return out


def region_pca(grid: np.ndarray, fit_images: np.ndarray, k: int, seed: int = 0,
               max_rows: int = 50_000) -> np.ndarray:
    """``(N, R, k)`` float32 projection of region features onto their top ``k`` principal components.

    Fitted (mean and components) on the regions of ``fit_images`` only (at most
    ``max_rows`` of them, drawn at random), applied to every image. A fixed
    linear map before the models' trainable region projection, to cut the
    cost of that projection on CPU.
    """
    n, r, d = grid.shape
    if not 0 < k <= d:
        raise ValueError(f"grid_pca must be in [1, {d}], got {k}")
    rows = grid[fit_images].reshape(-1, d)
    pick = np.random.default_rng(seed).permutation(len(rows))[:max_rows]
    x = torch.as_tensor(np.asarray(rows[pick], dtype=np.float32)).double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / max(1, len(x) - 1)
    _, vecs = torch.linalg.eigh(cov)
    comps = vecs[:, -k:].flip(1).float()  # (d, k), largest variance first
    out = np.empty((n, r, k), dtype=np.float32)
    for s in range(0, n, 512):
        block = torch.from_numpy(np.array(grid[s:s + 512], dtype=np.float32))
        out[s:s + 512] = ((block - mean.float()) @ comps).numpy()
    return out


def save_corpus(corpus: Corpus, folder: Path) -> Path:
    """The corpus as memory-mappable arrays + JSON (:func:`load_corpus`), read by every worker process."""
    from visem.io import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "pooled.npy", np.asarray(corpus.pooled, dtype=np.float32))
    if corpus.grid is not None:
        np.save(folder / "grid.npy", np.asarray(corpus.grid, dtype=np.float32))
    np.save(folder / "concept.npy", corpus.concept)
    np.save(folder / "caption_image.npy", corpus.caption_image)
    atomic_write_json(folder / "corpus.json", {"domain": corpus.domain.tolist(), "captions": corpus.captions,
                                                "tags": corpus.tags, "glove": corpus.glove})
    return folder


def load_corpus(folder: Path) -> Corpus:
    meta = json.loads((folder / "corpus.json").read_text())
    grid = np.load(folder / "grid.npy", mmap_mode="r") if (folder / "grid.npy").is_file() else None
    return Corpus(np.load(folder / "pooled.npy"), grid, np.asarray(meta["domain"]), np.load(folder / "concept.npy"),
                  meta["captions"], np.load(folder / "caption_image.npy"), meta["tags"], meta["glove"])


# --------------------------------------------------------------------------
# budgets
# --------------------------------------------------------------------------
@dataclass
class Budget:
    """Steps, batch sizes, learning rates and model overrides of one experiment run, per model key.

    The learning rate is cut by 10 at ``lr_decay_at`` of each model's
    training, or at ``train.MODEL.lr_decay_at`` where a model's schedule
    puts it elsewhere (``model_lr_decay_at``: DPC's two stages).

    ``val_fraction > 0`` with ``validate_every > 0``: a validation split of
    the training concepts selects each model by its rsum every
    ``validate_every`` steps (seed 003 Sec. 4.3); otherwise the model of the
    last step is kept.
    """

    steps: dict[str, int]
    batch_size: dict[str, int]
    lr: dict[str, float]
    model: dict[str, dict[str, Any]] = field(default_factory=dict)
    weight_decay: dict[str, float] = field(default_factory=dict)
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    validate_every: int = 0
    regions: int | None = None  # pool a square region grid to regions x regions cells
    grid_pca: int | None = None  # project grid regions onto this many principal components (fit on training images)
    grad_clip: float | None = 2.0
    lr_decay_at: float = 2 / 3  # the rate is cut by 10 from this fraction of training on
    model_lr_decay_at: dict[str, float] = field(default_factory=dict)  # per model (train.MODEL.lr_decay_at)
    max_len: int = 30  # captions are cut to this many tokens
    log_every: int = 50
    progress: bool = False

    @classmethod
    def from_settings(cls, s: Mapping[str, Any], progress: bool = False) -> "Budget":
        """A budget from an experiment's resolved settings (``train.MODEL.*``, ``model.MODEL``, the rest)."""
        train = s["train"]
        keys = ("test_fraction", "val_fraction", "validate_every", "regions", "grid_pca", "grad_clip",
                "lr_decay_at", "max_len", "log_every")
        return cls(steps={m: int(t["steps"]) for m, t in train.items()},
                   batch_size={m: int(t["batch_size"]) for m, t in train.items()},
                   lr={m: float(t["lr"]) for m, t in train.items()},
                   weight_decay={m: float(t.get("weight_decay", 0.0)) for m, t in train.items()},
                   model_lr_decay_at={m: float(t["lr_decay_at"]) for m, t in train.items() if "lr_decay_at" in t},
                   model={m: dict(v) for m, v in s.get("model", {}).items()},
                   progress=progress, **{k: s[k] for k in keys if k in s})


def train_model(model, sampler, budget: Budget, key: str, run_dir: Path, seed: int,
                validate: Callable[[Any], float] | None = None) -> dict[str, Any]:
    """Train ``model`` with ``budget``'s settings for ``key``; returns ``{"shares", "best"}``.

    ``validate(model) -> score`` (higher is better; validation data only)
    selects the model every ``budget.validate_every`` steps. Each weighted
    term's share of the encoders' gradient is measured on the first batch
    before and after training.
    """
    steps = budget.steps[key]
    decay_at = budget.model_lr_decay_at.get(key, budget.lr_decay_at)
    cfg = TrainConfig(steps=steps, batch_size=budget.batch_size[key], lr=budget.lr[key],
                      weight_decay=budget.weight_decay.get(key, 0.0),
                      lr_decay_step=max(1, int(steps * decay_at)), lr_decay=0.1, grad_clip=budget.grad_clip,
                      seed=seed, log_every=min(budget.log_every, steps), checkpoint_every=steps,
                      progress=budget.progress)
    select = None
    if validate is not None and budget.validate_every > 0:
        select = (validate, min(budget.validate_every, steps))
    trainer = Trainer(model, sampler, cfg, run_dir, share_probe=True, select=select)
    trainer.fit()
    return {"shares": trainer.shares, "best": trainer.best}


def build_for(name: str, budget: Budget, key: str, dims: dict[str, int], text: TextTable, glove: bool,
              seed: int = 0, **extra):
    """Registered model ``name`` with ``budget.model[key]`` and ``extra``, seeded, GloVe words if ``glove``."""
    torch.manual_seed(seed)
    model = build_model(name, {**budget.model.get(key, {}), **extra}, dims=dims)
    if glove:
        model.load_word_vectors(text.word_vectors())
    return model


def eval_set(corpus: Corpus, images: np.ndarray, text: TextTable, regions: bool) -> dict[str, Any]:
    """Held-out images (pooled or region features) with their captions as token ids."""
    sub = corpus.subset(images)
    feats = sub.grid if regions else sub.pooled
    return {"image": torch.as_tensor(np.asarray(feats, dtype=np.float32)), "text": text.encode(sub.captions),
            "txt_to_img": torch.as_tensor(sub.caption_image), "captions": sub.captions}


def metrics_of(model, data: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in model.evaluate({k: data[k] for k in ("image", "text", "txt_to_img")}).items()}


def save_partial(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rows so far, in ``out_dir/rows.partial.json`` (a long run that is stopped keeps them)."""
    from visem.distributed import is_main
    from visem.io import atomic_write_json

    if not is_main():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "rows.partial.json", rows)


# --------------------------------------------------------------------------
# baselines without training: the floor and s_g
# --------------------------------------------------------------------------
def random_floor(n_images: int, txt_to_img: Any, seed: int = 0, dim: int = 64) -> dict[str, float]:
    """R@K of random embeddings (Gaussian, ``dim``-d) on a gallery: the row any model must beat."""
    g = torch.Generator().manual_seed(seed)
    t2i = torch.as_tensor(np.asarray(txt_to_img))
    return retrieval_recall(torch.randn(n_images, dim, generator=g, dtype=torch.float64),
                            torch.randn(len(t2i), dim, generator=g, dtype=torch.float64), t2i)


def imagenet_tag_scores(pooled: np.ndarray) -> tuple[list[list[str]], list[dict[str, float]]]:
    """Image-level semantics from a pretrained tagger, the offline stand-in for seed 003's ``s_g`` (Sec. 4.2).

    EfficientNet-Lite0's own ImageNet head on the pooled features
    (:func:`visem.features.image.imagenet_probabilities`); the concepts are
    every comma-separated name of the 1,000 classes (``"tabby, tabby cat"``
    gives two), each scored with its class's softmax probability (the
    normalised scores of the paper; a name shared by several classes keeps
    the largest). Returns the concept names and ``{name: score}`` of each
    image, as :class:`visem.models.tag_match.TagMatcher` takes them.
    """
    from visem.data.imagenet import imagenet_classes
    from visem.features.image import imagenet_probabilities

    names = [[n.strip() for n in c.split(",") if n.strip()] for c in imagenet_classes()]
    probs = imagenet_probabilities(np.asarray(pooled, dtype=np.float32))
    vocab = sorted({n for ns in names for n in ns})
    tags, scores = [], []
    for p in probs:
        sc: dict[str, float] = {}
        for ns, v in zip(names, p):
            for n in ns:
                if v > sc.get(n, -1.0):
                    sc[n] = float(v)
        tags.append(vocab)
        scores.append(sc)
    return tags, scores


def synonyms_or_none() -> Callable[[str], set[str]] | None:
    """WordNet synonyms when the WordNet database is available, else exact matching."""
    from visem.models.tag_match import wordnet_synonyms

    try:
        wordnet_synonyms("dog")
    except Exception:  # noqa: BLE001  (no WordNet files: the baseline falls back to exact tokens)
        return None
    return wordnet_synonyms


# --------------------------------------------------------------------------
# tables over seeds
# --------------------------------------------------------------------------
def aggregate(rows: Sequence[Mapping[str, Any]], order: Sequence[tuple] | None = None) -> list[dict[str, Any]]:
    """One row per ``(model, setting, dataset)``: the metrics' mean and sample std over the seeds' rows.

    Rows keep the order in which their key first appears. Keys other than
    :data:`ROW_KEYS` must be numbers.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in ROW_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        metrics = [{k: float(v) for k, v in r.items() if k not in ROW_KEYS} for r in rs]
        out.append({**{k: v for k, v in zip(ROW_KEYS, key) if v is not None}, **mean_std(metrics)})
    return out


def paired(rows_by_seed: Mapping[int, Sequence[Mapping[str, Any]]], comparisons: Sequence[tuple[str, str]],
           key: str = "rsum") -> dict[str, dict[str, float]]:
    """Paired differences ``A - B`` of ``key`` over the seeds (:func:`visem.experiments.stats.paired_difference`).

    ``rows_by_seed``: each seed's rows; ``comparisons``: ``("MODEL@SETTING",
    "MODEL@SETTING")`` pairs, skipped where a seed lacks either row.
    """
    from visem.experiments.stats import paired_difference

    out = {}
    for a, b in comparisons:
        va, vb = [], []
        for rows in rows_by_seed.values():
            got = {f"{r['model']}@{r['setting']}": r[key] for r in rows}
            if a in got and b in got:
                va.append(got[a])
                vb.append(got[b])
        if va:
            out[f"{a} - {b}"] = paired_difference(va, vb)
    return out


def mean_shares(per_seed: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """``{"start"|"end": {term: mean share over seeds}}`` of the :func:`train_model` shares of several seeds.

    A probe where no term had a gradient (every share 0: a hinge met by all
    the probe batch's pairs) has no shares to average and is left out.
    """
    out: dict[str, dict[str, float]] = {}
    for when in ("start", "end"):
        found = [s[when] for s in per_seed if when in s and sum(s[when].values()) > 0]
        if found:
            out[when] = {k: float(np.mean([f[k] for f in found])) for k in found[0]}
    return out


def budget_dict(budget: Budget) -> dict[str, Any]:
    return asdict(budget)
