"""Protocol samplers: pure functions of label / pairing arrays and an explicit seed.

Every function returns int64 index arrays (sorted) into the arrays it was
given, never copies of data, and the same inputs and seed always give the same
result (``numpy.random.default_rng(seed)``).

* :func:`zero_shot_split` - seen / unseen classes (disjoint), a validation split
  carved from the seen classes, inductive or transductive (ReViSE, LCALE).
* :func:`few_shot_split` - ``k`` labelled images per novel class join training.
* :func:`sparse_corpus` - keep a fraction of the training images and ``n`` of
  their captions each; the other images stay unpaired (A3VSE, seed 003 4.1).
* :func:`domain_split` - paired source domain, unpaired target domain with the
  pairing withheld (VSA-AE-MMD, seed 001).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ZeroShotSplit",
    "zero_shot_split",
    "FewShotSplit",
    "few_shot_split",
    "SparseCorpus",
    "sparse_corpus",
    "DomainSplit",
    "domain_split",
]


def _ints(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def _count(n_total: int, n: int | None, fraction: float | None, what: str, minimum: int = 0) -> int:
    if n is not None and fraction is not None:
        raise ValueError(f"give n_{what} or {what}_fraction, not both")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{what}_fraction must be in [0, 1], got {fraction}")
        n = int(round(fraction * n_total))
        n = max(n, minimum) if fraction > 0 else 0
    n = 0 if n is None else int(n)
    if not 0 <= n <= n_total:
        raise ValueError(f"n_{what}={n} is outside 0..{n_total}")
    return n


# ---------------------------------------------------------------- zero-shot
@dataclass(frozen=True)
class ZeroShotSplit:
    """Class and image partition for zero-shot learning.

    Classes: ``train_classes`` + ``val_classes`` = the seen classes,
    ``unseen_classes`` disjoint from both. Images (indices into ``labels``):
    ``train_idx`` (train classes, minus ``test_seen_idx``), ``val_idx`` (val
    classes; for model selection - merge with :attr:`trainval_idx` for the
    final fit), ``test_idx`` (all images of unseen classes), ``test_seen_idx``
    (held-out images of seen classes for generalised ZSL; empty by default).
    ``unlabelled_idx``: the test images a transductive method may see without
    labels (== ``test_idx``); empty in the inductive setting. Side information
    of unseen classes (attributes, word vectors) is always available.
    """

    train_classes: np.ndarray
    val_classes: np.ndarray
    unseen_classes: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    test_seen_idx: np.ndarray
    unlabelled_idx: np.ndarray
    transductive: bool
    seed: int

    @property
    def seen_classes(self) -> np.ndarray:
        return np.union1d(self.train_classes, self.val_classes)

    @property
    def trainval_idx(self) -> np.ndarray:
        return np.union1d(self.train_idx, self.val_idx)


def zero_shot_split(
    labels,
    *,
    unseen=None,
    n_unseen: int | None = None,
    unseen_fraction: float | None = None,
    val=None,
    n_val: int | None = None,
    val_fraction: float | None = None,
    test_seen_fraction: float = 0.0,
    transductive: bool = False,
    classes=None,
    seed: int = 0,
) -> ZeroShotSplit:
    """Split classes into seen / unseen and carve validation classes from the seen ones.

    ``labels``: int (N,) class id per image. Unseen classes: an explicit list
    ``unseen``, or a seeded draw of ``n_unseen`` classes or ``unseen_fraction``
    of them (at least one). Validation classes likewise (``val`` / ``n_val`` /
    ``val_fraction``; default none), drawn from the seen classes only.
    ``classes``: all class ids (default: those present in ``labels``), so that
    classes without images can be unseen. ``test_seen_fraction``: fraction of
    each train class's images held out as ``test_seen_idx`` (generalised ZSL).
    """
    labels = _ints(labels, "labels")
    all_classes = np.unique(labels) if classes is None else np.unique(_ints(classes, "classes"))
    rng = np.random.default_rng(seed)
    if unseen is not None:
        if n_unseen is not None or unseen_fraction is not None:
            raise ValueError("give unseen, n_unseen or unseen_fraction, only one")
        unseen_c = np.unique(_ints(unseen, "unseen"))
        if not np.isin(unseen_c, all_classes).all():
            raise ValueError(f"unseen classes {np.setdiff1d(unseen_c, all_classes).tolist()} are not among the classes")
    else:
        if n_unseen is None and unseen_fraction is None:
            raise ValueError("give unseen, n_unseen or unseen_fraction")
        k = _count(all_classes.size, n_unseen, unseen_fraction, "unseen", minimum=1)
        unseen_c = np.sort(rng.choice(all_classes, size=k, replace=False))
    seen_c = np.setdiff1d(all_classes, unseen_c)
    if val is not None:
        if n_val is not None or val_fraction is not None:
            raise ValueError("give val, n_val or val_fraction, only one")
        val_c = np.unique(_ints(val, "val"))
        if not np.isin(val_c, seen_c).all():
            raise ValueError(f"validation classes {np.setdiff1d(val_c, seen_c).tolist()} are not seen classes")
    else:
        k = _count(seen_c.size, n_val, val_fraction, "val", minimum=1)
        val_c = np.sort(rng.choice(seen_c, size=k, replace=False)) if k else np.empty(0, np.int64)
    train_c = np.setdiff1d(seen_c, val_c)
    if train_c.size == 0:
        raise ValueError("no training classes left after removing unseen and validation classes")

    idx = np.arange(labels.size, dtype=np.int64)
    train_all = idx[np.isin(labels, train_c)]
    test_seen = np.empty(0, np.int64)
    if test_seen_fraction:
        if not 0 < test_seen_fraction < 1:
            raise ValueError(f"test_seen_fraction must be in [0, 1), got {test_seen_fraction}")
        held = []
        for c in train_c:
            members = idx[labels == c]
            k = int(round(test_seen_fraction * members.size))
            if k:
                held.append(rng.choice(members, size=k, replace=False))
        test_seen = np.sort(np.concatenate(held)) if held else test_seen
    test = idx[np.isin(labels, unseen_c)]
    return ZeroShotSplit(
        train_classes=train_c.astype(np.int64),
        val_classes=val_c.astype(np.int64),
        unseen_classes=unseen_c.astype(np.int64),
        train_idx=np.setdiff1d(train_all, test_seen),
        val_idx=idx[np.isin(labels, val_c)],
        test_idx=test,
        test_seen_idx=test_seen,
        unlabelled_idx=test.copy() if transductive else np.empty(0, np.int64),
        transductive=bool(transductive),
        seed=int(seed),
    )


# ----------------------------------------------------------------- few-shot
@dataclass(frozen=True)
class FewShotSplit:
    """``shot_idx``: the ``k`` labelled images per novel class; ``train_idx`` =
    the given training images + the shots; ``test_idx`` = the pool minus the shots."""

    train_idx: np.ndarray
    shot_idx: np.ndarray
    test_idx: np.ndarray
    novel_classes: np.ndarray
    k: int
    seed: int


def few_shot_split(labels, novel_classes, k: int, *, train_idx=None, pool_idx=None, seed: int = 0) -> FewShotSplit:
    """Draw ``k`` labelled images of every novel class from ``pool_idx`` and add them to training.

    ``pool_idx``: the candidate images (default: every image of a novel class),
    e.g. ``ZeroShotSplit.test_idx``. ``train_idx``: the existing training
    images (default none). Raises if a novel class has fewer than ``k`` images
    in the pool.
    """
    labels = _ints(labels, "labels")
    novel = np.unique(_ints(novel_classes, "novel_classes"))
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    idx = np.arange(labels.size, dtype=np.int64)
    pool = idx[np.isin(labels, novel)] if pool_idx is None else np.unique(_ints(pool_idx, "pool_idx"))
    train = np.empty(0, np.int64) if train_idx is None else np.unique(_ints(train_idx, "train_idx"))
    if np.intersect1d(train, pool).size:
        raise ValueError("train_idx and pool_idx overlap")
    rng = np.random.default_rng(seed)
    shots = []
    for c in novel:
        members = pool[labels[pool] == c]
        if members.size < k:
            raise ValueError(f"novel class {int(c)} has {members.size} images in the pool, fewer than k={k}")
        if k:
            shots.append(rng.choice(members, size=k, replace=False))
    shot = np.sort(np.concatenate(shots)) if shots else np.empty(0, np.int64)
    return FewShotSplit(
        train_idx=np.union1d(train, shot),
        shot_idx=shot,
        test_idx=np.setdiff1d(pool, shot),
        novel_classes=novel.astype(np.int64),
        k=int(k),
        seed=int(seed),
    )


# ------------------------------------------------------------ sparse corpus
@dataclass(frozen=True)
class SparseCorpus:
    """A sparse parallel corpus: ``paired_images`` with ``paired_captions``
    (indices into the caption array; ``caption_image[paired_captions]`` gives
    each one's image), ``unpaired_images`` with no annotation, and the
    ``withheld_captions`` that are not used at all."""

    paired_images: np.ndarray
    paired_captions: np.ndarray
    unpaired_images: np.ndarray
    withheld_captions: np.ndarray
    image_fraction: float
    captions_per_image: int
    seed: int

    def pairs(self, caption_image) -> np.ndarray:
        """int64 (P, 2) rows of (image, caption)."""
        ci = np.asarray(caption_image)
        return np.stack([ci[self.paired_captions], self.paired_captions], axis=1).astype(np.int64)


def sparse_corpus(
    caption_image,
    image_fraction: float,
    captions_per_image: int,
    *,
    images=None,
    seed: int = 0,
) -> SparseCorpus:
    """Keep ``image_fraction`` of the training images, each with ``captions_per_image`` of its captions.

    ``caption_image``: int (M,) image index of every caption. ``images``: the
    training image indices (default: every image with a caption). Following
    A3VSE 4.1 the images are shuffled once and the first ``round(a * N)`` kept,
    and each image's captions are ranked by one random draw, so with the same
    seed a smaller fraction or fewer captions is always a subset of a larger
    one. Images with fewer captions than asked keep all of theirs.
    """
    ci = _ints(caption_image, "caption_image")
    if not 0.0 <= image_fraction <= 1.0:
        raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction}")
    if captions_per_image < 0:
        raise ValueError(f"captions_per_image must be >= 0, got {captions_per_image}")
    imgs = np.unique(ci) if images is None else np.unique(_ints(images, "images"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(imgs)
    cap_rank = rng.random(ci.size)
    n_keep = int(round(image_fraction * imgs.size))
    kept = np.sort(order[:n_keep])
    cand = np.flatnonzero(np.isin(ci, kept))
    # rank captions within their image: sort by (image, random key)
    cand = cand[np.lexsort((cap_rank[cand], ci[cand]))]
    first_of_image = np.r_[True, ci[cand][1:] != ci[cand][:-1]]
    starts = np.flatnonzero(first_of_image)
    pos = np.arange(cand.size) - np.repeat(starts, np.diff(np.r_[starts, cand.size]))
    paired_caps = np.sort(cand[pos < captions_per_image])
    in_train = np.flatnonzero(np.isin(ci, imgs))
    return SparseCorpus(
        paired_images=kept.astype(np.int64),
        paired_captions=paired_caps.astype(np.int64),
        unpaired_images=np.setdiff1d(imgs, kept).astype(np.int64),
        withheld_captions=np.setdiff1d(in_train, paired_caps).astype(np.int64),
        image_fraction=float(image_fraction),
        captions_per_image=int(captions_per_image),
        seed=int(seed),
    )


# ------------------------------------------------------------------ domains
@dataclass(frozen=True)
class DomainSplit:
    """Source domain paired, target domain unpaired.

    ``source_images`` / ``source_captions`` and their known ``source_pairs``
    (P, 2) of (image, caption) for training. ``target_images`` and
    ``target_captions`` are each in an independent seeded random order so that
    no pairing can be read from their positions; ``target_pairs`` is the
    withheld ground truth, for evaluation only.
    """

    source_images: np.ndarray
    source_captions: np.ndarray
    source_pairs: np.ndarray
    target_images: np.ndarray
    target_captions: np.ndarray
    target_pairs: np.ndarray
    seed: int


def domain_split(image_domain, caption_image, source, target, *, seed: int = 0) -> DomainSplit:
    """Split images and captions by domain: ``image_domain`` (N,) gives each image's domain.

    ``source`` / ``target``: a domain value or a list of them (disjoint).
    ``caption_image``: int (M,) image index of every caption; a caption belongs
    to its image's domain.
    """
    dom = np.asarray(image_domain)
    ci = _ints(caption_image, "caption_image")
    if ci.size and (ci.min() < 0 or ci.max() >= dom.size):
        raise ValueError("caption_image refers to images outside image_domain")
    src = np.atleast_1d(np.asarray(source, dtype=dom.dtype))
    tgt = np.atleast_1d(np.asarray(target, dtype=dom.dtype))
    if np.intersect1d(src, tgt).size:
        raise ValueError(f"source and target domains overlap: {np.intersect1d(src, tgt).tolist()}")
    idx = np.arange(dom.size, dtype=np.int64)
    s_img = idx[np.isin(dom, src)]
    t_img = idx[np.isin(dom, tgt)]
    caps = np.arange(ci.size, dtype=np.int64)
    s_cap = caps[np.isin(ci, s_img)]
    t_cap = caps[np.isin(ci, t_img)]
    rng = np.random.default_rng(seed)
    return DomainSplit(
        source_images=s_img,
        source_captions=s_cap,
        source_pairs=np.stack([ci[s_cap], s_cap], axis=1),
        target_images=rng.permutation(t_img),
        target_captions=rng.permutation(t_cap),
        target_pairs=np.stack([ci[t_cap], t_cap], axis=1),
        seed=int(seed),
    )
