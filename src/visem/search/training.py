"""Training an index's model: the batches each training kind draws, the step budget, the trainer run.

Kinds (:func:`visem.search.methods.method_kind`): ``pairs`` draws
(image, caption) pairs (or, with no captions, (image, pseudo caption));
``pseudo`` draws A3VSE's ``pair.*`` batches and ``pseudo.*`` batches of
uncaptioned images with their pseudo captions; ``domains`` draws VSA's
paired ``src.*`` batches and unpaired ``tgt.*`` images and texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FeatureTable", "TrainingData", "default_steps", "make_sampler", "train_model"]


class FeatureTable:
    """Stored feature rows as the samplers index them: ``table[LongTensor]`` -> a float tensor of those rows.

    Each training batch reads its rows from the feature store
    (:class:`visem.features.cache.StoreRows`), so the training set's
    features never sit in memory whole.
    """

    def __init__(self, rows: Any):
        self.rows = rows
        self.shape = tuple(rows.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> Any:
        import numpy as np
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.rows[np.asarray(idx)]))


@dataclass
class TrainingData:
    """What the samplers draw from, row-aligned.

    ``feats``: image feature table (a :class:`FeatureTable` or a tensor),
    this collection's ``n_own`` images first, then a source index's; ``cap_ids``: token ids of every caption (this
    collection's ``n_own_captions`` first); ``cap_img``: each caption's row
    in ``feats``; ``pseudo_ids``: one pseudo caption per own image;
    ``uncaptioned``: own images with no caption.
    """

    feats: Any
    n_own: int
    cap_ids: Any
    cap_img: Any
    n_own_captions: int
    pseudo_ids: Any
    uncaptioned: Any


DEFAULT_EPOCHS = 15.0
MIN_STEPS = 300


def default_steps(n_items: int, batch_size: int, epochs: float | None = None) -> int:
    """``epochs`` passes over the training items (default 15), at least 300 steps.

    Proportional to the collection with no upper cap: 1M captioned images at
    batch 64 default to 234,375 steps; pass fewer ``epochs`` (or ``steps``)
    for a quicker, coarser model.
    """
    e = DEFAULT_EPOCHS if epochs is None else epochs
    return int(max(MIN_STEPS if epochs is None else 1, math.ceil(e * n_items / max(1, batch_size))))


def make_sampler(kind: str, method: str, data: TrainingData, batch_size: int, seed: int) -> tuple[Any, int]:
    """``(sampler, number of training items)`` for a training kind."""
    import numpy as np
    import torch

    from visem.distributed import world_size
    from visem.train.sampler import IndexSampler, MultiSampler

    bs = batch_size
    feats, n_own, cap_ids, pseudo_ids = data.feats, data.n_own, data.cap_ids, data.pseudo_ids
    n_caps = data.n_own_captions
    own_cap_img = data.cap_img[:n_caps]

    def pairs(img: np.ndarray, cap: np.ndarray) -> dict[str, torch.Tensor]:
        return {"img": torch.as_tensor(img, dtype=torch.long), "cap": torch.as_tensor(cap, dtype=torch.long)}

    if kind == "pairs":
        if n_caps >= 2:
            n_items = n_caps
            sampler: Any = IndexSampler(pairs(own_cap_img, np.arange(n_caps)),
                                        {"image": ("img", feats), "text": ("cap", cap_ids)}, bs, seed)
        else:  # no captions at all: pseudo captions are the pairs
            n_items = n_own
            sampler = IndexSampler({"img": torch.arange(n_own)}, {"image": ("img", feats), "text": ("img", pseudo_ids)},
                                   bs, seed)
    elif kind == "pseudo":
        if n_caps < 2:
            raise ValueError(f"{method} needs at least two captions (found {n_caps}); leave --method unset")
        # pseudo pairs: the uncaptioned images (every image when fewer than two are uncaptioned)
        unl = data.uncaptioned if len(data.uncaptioned) >= 2 else np.arange(n_own)
        n_items = n_caps + len(unl)
        sampler = MultiSampler({
            "pair": IndexSampler(pairs(own_cap_img, np.arange(n_caps)),
                                 {"pair.image": ("img", feats), "pair.text": ("cap", cap_ids)},
                                 bs, seed),
            "pseudo": IndexSampler({"img": torch.as_tensor(unl)},
                                   {"pseudo.image": ("img", feats), "pseudo.text": ("img", pseudo_ids)},
                                   bs, seed + 1)}, prefix=False)
    else:  # domains: paired = this collection's pairs and the source's; target = this collection unpaired
        src_cap = np.arange(len(data.cap_img))
        if not len(src_cap):
            raise ValueError(f"{method} needs captions in the source index or the caption file")
        tgt_text = np.arange(n_caps) if n_caps else None
        n_items = len(src_cap) + n_own
        b = min(bs, len(src_cap), n_own)  # one batch size for the three groups
        b -= b % world_size() if b >= world_size() else 0  # and one every process can take an equal share of
        tgt_t = (IndexSampler({"cap": torch.as_tensor(tgt_text)}, {"tgt.text": ("cap", cap_ids)}, b, seed + 2)
                 if tgt_text is not None else
                 IndexSampler({"img": torch.arange(n_own)}, {"tgt.text": ("img", pseudo_ids)}, b, seed + 2))
        sampler = MultiSampler({
            "src": IndexSampler(pairs(data.cap_img, src_cap), {"src.image": ("img", feats), "src.text": ("cap", cap_ids)},
                                b, seed),
            "tgt_img": IndexSampler({"img": torch.arange(n_own)}, {"tgt.image": ("img", feats)}, b, seed + 1),
            "tgt_txt": tgt_t}, prefix=False)
    return sampler, n_items


def train_model(method: str, params: dict[str, Any], dims: dict[str, int], word_vectors: Any, sampler: Any,
                steps: int, options: Any, workdir: Path) -> Any:
    """Build ``method`` with ``params``, initialise its word embeddings, train ``steps`` steps; the model in eval mode.

    Checkpoints go to ``workdir`` (a stopped run resumes from the last one).
    Adam at ``options.lr`` cut by 10 after two thirds of the steps, gradients
    clipped at 2.
    """
    import torch

    from visem.models import build_model
    from visem.search.methods import model_params
    from visem.train.trainer import TrainConfig, Trainer

    torch.manual_seed(options.seed)
    model = build_model(method, model_params(method, params), dims=dims)
    model.load_word_vectors(word_vectors)
    cfg = TrainConfig(steps=steps, batch_size=options.batch_size, lr=options.lr,
                      lr_decay_step=max(1, int(steps * 2 / 3)), lr_decay=0.1, grad_clip=2.0, seed=options.seed,
                      log_every=max(1, min(50, steps)), checkpoint_every=max(25, steps // 10),
                      progress=options.progress)
    Trainer(model, sampler, cfg, workdir).fit()
    model.eval()
    return model
