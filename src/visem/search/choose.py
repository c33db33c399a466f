"""Choosing an index's text tower, method and fusion on a held-out split of the user's own captions.

When the collection has at least :data:`MIN_VALIDATION_IMAGES` captioned
images, a seeded :data:`VALIDATION_FRACTION` of them is held out as images
added after the build would be: they leave the training data altogether
(neither their captions nor pseudo pairs of them are trained on) and their
captions leave the lexical documents (the images keep their tags or pseudo
captions, as an image added by ``index add --captions`` with its tags).
Every
candidate ``(method, text tower)`` is trained on the rest; each held-out
caption then ranks the held-out images by the dense score, by BM25 and by
every fusion of :data:`visem.search.lexical.FUSION_GRID`; the best held-out
rsum picks the candidate and the fusion, and the chosen candidate is trained
again on every caption. With fewer captions, or when the user fixed every
choice (``--method``, ``--text-encoder``, ``--fusion``), the defaults hold
(:data:`DEFAULT_TEXT_ENCODER`, the method of
:func:`visem.search.methods.choose_method`,
:data:`visem.search.lexical.DEFAULT_FUSION`), measured in docs/search.md.

Every decision is reported (``choice`` in the build report): how it was
made, why, and the held-out rows of every candidate.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TEXT_ENCODER", "MIN_VALIDATION_IMAGES", "VALIDATION_FRACTION", "Chosen", "choose_and_train"]

#: captioned images needed before part of them is held out to choose by validation
MIN_VALIDATION_IMAGES = 50
#: share of the captioned images held out (at least 10 images)
VALIDATION_FRACTION = 0.2
#: the text tower when nothing is chosen by validation (docs/search.md, "Measured defaults")
DEFAULT_TEXT_ENCODER = "minilm"
#: text towers tried on the held-out split unless the user fixed one
CANDIDATE_TEXT_ENCODERS = ("gru", "minilm")


@dataclass
class Chosen:
    """What :func:`choose_and_train` returns to the build."""

    model: Any
    side: Any  # visem.search.towers.TextSide of the final model
    method: str
    reason: str
    steps: int
    fusion: dict[str, Any]
    choice: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Data:
    """A collection's images and text, as every fit reads them: feature rows from the store, never held whole."""

    hashes: list[str]  # this collection's images, then a source index's (their content keys in the store)
    crop: float
    encoder: str
    pseudo: list[str]
    src: dict[str, Any] | None
    n_own: int
    states: dict[str, Any] = field(default_factory=dict)  # frozen MiniLM states, shared by the fits

    def rows(self, regions: bool, own_only: bool = False) -> Any:
        """The stored features (grid or pooled) of every image (this collection's first), as rows."""
        from visem.search.features import feature_rows

        keys = self.hashes[: self.n_own] if own_only else self.hashes
        return feature_rows(keys, regions, self.crop, self.encoder)


def _remove(folder: Path) -> None:
    """Remove a training folder: rank 0 does, the other ranks of a ``torchrun`` build wait for it."""
    from visem import distributed

    if distributed.is_main():
        shutil.rmtree(folder, ignore_errors=True)
    distributed.barrier()


def _fit(method: str, encoder: str, captions: list[str], caption_image: np.ndarray, d: _Data, options: Any,
         workdir: Path, notes: list[str], unseen: np.ndarray | None = None):
    """Train ``method`` with text tower ``encoder`` on these captions; ``(model, side, steps, regions)``.

    ``unseen``: images left out of training altogether (no pseudo pair either): the held-out split.
    """
    from visem.search.methods import AUTO_MODEL_DEFAULTS, method_kind
    from visem.search.towers import TextSide
    from visem.search.training import FeatureTable, TrainingData, default_steps, make_sampler, train_model
    from visem.train.checkpoint import CheckpointError

    kind, regions = method_kind(method)
    regions = regions and options.regions
    feats = FeatureTable(d.rows(regions))  # each batch reads its rows from the feature store
    src_caps = d.src["captions"] if d.src else []
    params = {"embed_dim": options.embed_dim, **(AUTO_MODEL_DEFAULTS.get(method, {}) if not options.method else {}),
              **options.model, "text_encoder": encoder}
    side = TextSide.from_texts(encoder, list(captions) + src_caps + d.pseudo,
                               finetune=float(params.get("text_lr", 0.0)) > 0, states=d.states)
    all_caps = list(captions) + src_caps
    cap_img = (np.concatenate([caption_image, d.src["caption_image"] + d.n_own]) if d.src
               else np.asarray(caption_image, dtype=np.int64))
    cap_ids = side.training(all_caps, progress=options.progress)
    uncaptioned = np.setdiff1d(np.arange(d.n_own), caption_image)
    if unseen is not None:
        uncaptioned = np.setdiff1d(uncaptioned, unseen)
    data = TrainingData(feats=feats, n_own=d.n_own, cap_ids=cap_ids, cap_img=cap_img, n_own_captions=len(captions),
                        pseudo_ids=side.training(d.pseudo, progress=options.progress), uncaptioned=uncaptioned)
    sampler, n_items = make_sampler(kind, method, data, options.batch_size, options.seed)
    steps = options.steps or default_steps(n_items, options.batch_size, options.epochs)
    dims = {"image_dim": int(feats.shape[-1]), "vocab_size": side.vocab_size}
    try:
        model = train_model(method, params, dims, side.word_vectors(), sampler, steps, options, workdir)
    except CheckpointError as exc:  # a damaged checkpoint left by a killed build: that stage starts again
        notes.append(f"damaged training checkpoint in {workdir} ({exc}): discarded, training restarted")
        _remove(workdir)
        sampler, _ = make_sampler(kind, method, data, options.batch_size, options.seed)
        model = train_model(method, params, dims, side.word_vectors(), sampler, steps, options, workdir)
    return model, side, steps, regions


def _held_out_scores(model, side, regions: bool, d: _Data, val_images: np.ndarray, val_caps: list[str]) -> np.ndarray:
    """``(captions, images)`` dense cosines of the held-out captions against the held-out images."""
    from visem.search.embedding import embed_images, embed_texts

    img = embed_images(model, d.rows(regions, own_only=True)[np.asarray(val_images)])
    txt = embed_texts(model, side.ids(val_caps))
    return txt.astype(np.float64) @ img.astype(np.float64).T


def choose_and_train(col: Any, options: Any, auto_method: str, auto_reason: str, pseudo: list[str],
                     src: dict[str, Any] | None, workdir: Path) -> Chosen:
    """Pick (by validation when possible) and train the index's model; see the module docstring.

    ``src``: a source index's ``hashes``, ``captions`` and ``caption_image``
    (VSA's paired domain), or ``None``. Features are read from the store
    (the build's scan stored them).
    """
    from visem.features.tokenize import tokenize
    from visem.search.lexical import (
        DEFAULT_FUSION,
        FUSION_GRID,
        LexicalIndex,
        choose_fusion,
        evaluate_fusions,
        fusion_label,
        image_documents,
        normalise,
    )

    notes: list[str] = []
    hashes = list(col.hashes) + (list(src["hashes"]) if src else [])
    d = _Data(hashes, options.crop, options.image_encoder, list(pseudo), src, len(col.names))
    fixed_encoder = options.text_encoder or options.model.get("text_encoder")
    encoders = [fixed_encoder] if fixed_encoder else list(CANDIDATE_TEXT_ENCODERS)
    method = options.method or auto_method
    reason = f"method {options.method} asked for" if options.method else auto_reason
    fusion_grid = [options.fusion] if options.fusion else list(FUSION_GRID)
    captioned = np.unique(col.caption_image)
    can_validate = len(captioned) >= MIN_VALIDATION_IMAGES
    nothing_to_choose = len(encoders) == 1 and len(fusion_grid) == 1
    choice: dict[str, Any] = {"method": method, "image_encoder": options.image_encoder}

    if not options.choose or not can_validate or nothing_to_choose:
        encoder = encoders[0] if fixed_encoder else DEFAULT_TEXT_ENCODER
        fusion = options.fusion or dict(DEFAULT_FUSION)
        if nothing_to_choose:
            why = "every choice was given"
        elif not options.choose:
            why = "validation switched off (--no-choose): documented defaults"
        else:
            why = (f"{len(captioned)} captioned images, fewer than the {MIN_VALIDATION_IMAGES} needed to hold "
                   "some out: documented defaults (docs/search.md)")
        model, side, steps, _ = _fit(method, encoder, list(col.captions), col.caption_image, d, options,
                                     workdir / "train", notes)
        choice.update(how="default" if not nothing_to_choose else "given", why=why, text_encoder=encoder,
                      fusion=fusion, candidates=[])
        return Chosen(model, side, method, reason, steps, fusion, choice, notes)

    # the held-out split: a seeded share of the captioned images, their captions out of training and of the documents
    rng = np.random.default_rng(options.seed)
    n_val = max(10, int(round(VALIDATION_FRACTION * len(captioned))))
    val_images = np.sort(rng.choice(captioned, size=n_val, replace=False))
    is_val = np.isin(col.caption_image, val_images)
    train_caps = [c for c, v in zip(col.captions, is_val) if not v]
    train_img = col.caption_image[~is_val]
    val_caps = [c for c, v in zip(col.captions, is_val) if v]
    remap = {int(i): j for j, i in enumerate(val_images)}
    val_t2i = np.asarray([remap[int(i)] for i in col.caption_image[is_val]])
    docs = image_documents(len(col.names), train_caps, train_img, col.tags, d.pseudo)
    lex = normalise(LexicalIndex(docs).matrix([tokenize(c) for c in val_caps]))[:, val_images]

    rows: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any], str] | None = None
    lexical_row = evaluate_fusions(np.zeros_like(lex), lex, val_t2i, [{"kind": "lexical"}])[0]
    for i, encoder in enumerate(encoders):
        model, side, _, regions = _fit(method, encoder, train_caps, train_img, d, options,
                                       workdir / f"validate-{encoder}", notes, unseen=val_images)
        dense = _held_out_scores(model, side, regions, d, val_images, val_caps)
        fusion, measured = choose_fusion(dense, lex, val_t2i, fusion_grid)
        by_label = {r["label"]: r for r in measured}
        dense_row = by_label.get("dense") or evaluate_fusions(dense, lex, val_t2i, [{"kind": "dense"}])[0]
        fused_row = by_label[fusion_label(fusion)]
        rows.append({"method": method, "text_encoder": encoder, "dense_rsum": dense_row["rsum"],
                     "fusion": fusion, "fused_rsum": fused_row["rsum"],
                     "fusions": {r["label"]: r["rsum"] for r in measured}})
        if best is None or fused_row["rsum"] > best[0]:
            best = (fused_row["rsum"], i, fusion, encoder)
        del model
    assert best is not None
    _, _, fusion, encoder = best
    label = f"{method} + {encoder} text tower, fusion {fusion_label(fusion)}"
    why = (f"best held-out rsum {best[0]:.1f} of {len(rows)} candidate(s) on {len(val_caps)} captions of "
           f"{n_val} held-out captioned images (lexical alone {lexical_row['rsum']:.1f}); retrained on every caption")
    model, side, steps, _ = _fit(method, encoder, list(col.captions), col.caption_image, d, options,
                                 workdir / "train", notes)
    for enc in encoders:
        _remove(workdir / f"validate-{enc}")
    choice.update(how="validation", why=why, chosen=label, text_encoder=encoder, fusion=fusion,
                  validation={"images": int(n_val), "captions": len(val_caps),
                              "lexical_rsum": lexical_row["rsum"]}, candidates=rows)
    return Chosen(model, side, method, reason, steps, fusion, choice, notes)
