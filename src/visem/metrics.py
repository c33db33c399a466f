"""Evaluation metrics of visem, exact to the seed papers' protocols.

Units
-----
* Recalls (R@K) and accuracies are in **percent** (0-100), as every seed
  table prints them; so are ``rsum`` and the GZSL harmonic mean (of percent
  accuracies).
* Mean average precision and precision@k are **fractions** in [0, 1], as
  seed 004 prints them (Tables 2-4).
* BLEU is on sacrebleu's 0-100 scale (seed 001 Table 2 prints 0-1: divide
  by 100 to compare).
* Median and mean ranks are 1-based ranks.

Scores and ties
---------------
Every retrieval score is the dot product of the embeddings as given (pass
L2-normalised embeddings for the cosine similarity). Scores are computed in
float64 whatever the input dtype (products of float32 inputs are then exact),
and ties are exact equalities of those float64 scores. **Ties count against
the query**: an item tied with the correct one is ranked before it. For R@K the rank of the correct item is
``1 + #{wrong items with score >= correct score}``; for MAP and P@k, gallery
items with equal scores are ordered irrelevant-first (the pessimistic order).
Random tie-breaking (argsort) would make a degenerate model, e.g. one mapping
everything to the same point, look good; the pessimistic rule gives it the
worst rank.

Chunking
--------
No function builds the full query x gallery score matrix. ``retrieval_recall``
works on ``chunk_size x chunk_size`` blocks (chunked over images and
captions; a 1024 x 1024 float64 block is 8 MB, whatever the number of
images and captions), and the MAP / precision functions on
``chunk_size x n_gallery`` row strips (MAP needs each query's full ranking).
Ranks do not depend on ``chunk_size``, except where two scores differ by
less than float64 rounding (~1e-16 relative), since BLAS may sum the
products of differently shaped blocks in a different order.

Cost on 2 CPU cores (float64): COCO 5K (5,000 x 25,000, d = 1024) takes
about 20 s; MAP sorts every query's gallery, about 15 s for 2,048 queries
x 30,000 gallery items. P@k needs no sort (a top-k per query).

Inputs
------
Embeddings and labels may be numpy arrays or torch tensors (any device;
computation happens on the embeddings' device). Bad input -- wrong
dimensions, mismatched sizes, NaN or infinite embeddings, a caption pointing
at no image, an image without captions, a query without relevant items, a
class without samples -- raises :class:`ValueError` naming the argument and
the offending index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "bleu",
    "coco_1k_recall",
    "gzsl_harmonic",
    "mean_average_precision",
    "per_class_accuracy",
    "precision_at_k",
    "retrieval_recall",
]

DEFAULT_CHUNK_SIZE = 1024
"""Rows (and columns) of the image-caption score blocks of retrieval_recall."""
DEFAULT_LABEL_CHUNK_SIZE = 256
"""Query rows per chunk of the MAP / precision functions; each chunk holds
about 30 bytes per (query, gallery item): 256 x 30,000 needs ~230 MB."""

ArrayLike = Any  # numpy array, torch tensor or nested sequence

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


# --------------------------------------------------------------------------
# input conversion and validation
# --------------------------------------------------------------------------
def _to_tensor(name: str, x: ArrayLike) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.ascontiguousarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a numeric array or tensor: {err}") from None


def _as_float(name: str, x: ArrayLike, device: torch.device | None = None) -> Tensor:
    """2-D finite float64 tensor from a numpy array or torch tensor."""
    t = _to_tensor(name, x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in _INT_DTYPES or t.dtype == torch.bool):
        raise ValueError(f"{name} must be numeric, got dtype {t.dtype}")
    t = t.to(device=device if device is not None else t.device, dtype=torch.float64)
    bad = ~torch.isfinite(t).all(dim=1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"{name} contains NaN or infinite values (first in row {row}, shape {tuple(t.shape)})")
    return t


def _as_int(name: str, x: ArrayLike, ndim: Sequence[int] = (1,), allow_bool: bool = False) -> Tensor:
    """int64 tensor on the CPU from integers (or bools, for multi-hot labels)."""
    t = _to_tensor(name, x).cpu()
    if t.dim() not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool:
        if not allow_bool:
            raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
        return t.to(torch.int64)
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise ValueError(f"{name} must hold integers, got non-integer {t.dtype} values")
        return t.to(torch.int64)
    if t.dtype not in _INT_DTYPES:
        raise ValueError(f"{name} must be an integer array, got dtype {t.dtype}")
    return t.to(torch.int64)


def _check_chunk(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out) or len(set(out)) != len(out):
        raise ValueError(f"ks must be distinct positive integers, got {tuple(ks)!r}")
    return out


# --------------------------------------------------------------------------
# image-text retrieval recall
# --------------------------------------------------------------------------
def _retrieval_ranks(img: Tensor, txt: Tensor, t2i: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """1-based pessimistic ranks: (per image for i2t, per caption for t2i)."""
    n_img, n_txt = img.shape[0], txt.shape[0]
    device = img.device
    t2i = t2i.to(device)
    # Score of each caption with its own image; the best of an image's
    # captions is the correct score for image-to-text retrieval.
    pos_txt = torch.empty(n_txt, dtype=torch.float64, device=device)
    for b in range(0, n_txt, chunk_size):
        pos_txt[b : b + chunk_size] = (img[t2i[b : b + chunk_size]] * txt[b : b + chunk_size]).sum(dim=1)
    pos_img = torch.full((n_img,), -torch.inf, dtype=torch.float64, device=device)
    pos_img.scatter_reduce_(0, t2i, pos_txt, reduce="amax", include_self=True)

    beaten_img = torch.zeros(n_img, dtype=torch.int64, device=device)
    beaten_txt = torch.zeros(n_txt, dtype=torch.int64, device=device)
    for a in range(0, n_img, chunk_size):
        img_blk = img[a : a + chunk_size]
        a_end = a + img_blk.shape[0]
        for b in range(0, n_txt, chunk_size):
            block = img_blk @ txt[b : b + chunk_size].T  # (ci, ct), a fresh tensor
            # Knock out the correct pairs so that only wrong items are counted.
            own = t2i[b : b + chunk_size]
            cols = torch.nonzero((own >= a) & (own < a_end)).squeeze(1)
            block[own[cols] - a, cols] = -torch.inf
            beaten_img[a:a_end] += (block >= pos_img[a:a_end, None]).sum(dim=1)
            beaten_txt[b : b + chunk_size] += (block >= pos_txt[None, b : b + chunk_size]).sum(dim=0)
    return (beaten_img + 1).cpu(), (beaten_txt + 1).cpu()


def _summarise(ranks_i2t: Tensor, ranks_t2i: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix, ranks in (("i2t", ranks_i2t), ("t2i", ranks_t2i)):
        r = ranks.numpy()
        for k in ks:
            out[f"{prefix}_r{k}"] = 100.0 * float(np.mean(r <= k))
        out[f"{prefix}_medr"] = float(np.floor(np.median(r)))
        out[f"{prefix}_meanr"] = float(np.mean(r))
    out["rsum"] = sum(out[f"{p}_r{k}"] for p in ("i2t", "t2i") for k in ks)
    return out


def _validate_retrieval(img_emb: ArrayLike, txt_emb: ArrayLike, txt_to_img: ArrayLike) -> tuple[Tensor, Tensor, Tensor]:
    img = _as_float("img_emb", img_emb)
    txt = _as_float("txt_emb", txt_emb, device=img.device)
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"img_emb and txt_emb must have the same embedding dimension, "
            f"got img_emb {tuple(img.shape)} and txt_emb {tuple(txt.shape)}"
        )
    if img.shape[0] == 0 or txt.shape[0] == 0:
        raise ValueError(f"need at least one image and one caption, got img_emb {tuple(img.shape)} and txt_emb {tuple(txt.shape)}")
    t2i = _as_int("txt_to_img", txt_to_img)
    if t2i.shape[0] != txt.shape[0]:
        raise ValueError(
            f"txt_to_img must have one entry per caption: got shape {tuple(t2i.shape)} for txt_emb {tuple(txt.shape)}"
        )
    out_of_range = (t2i < 0) | (t2i >= img.shape[0])
    if bool(out_of_range.any()):
        j = int(torch.nonzero(out_of_range)[0, 0])
        raise ValueError(
            f"txt_to_img[{j}] = {int(t2i[j])} points at no image (img_emb has {img.shape[0]} rows)"
        )
    counts = torch.bincount(t2i, minlength=img.shape[0])
    if bool((counts == 0).any()):
        i = int(torch.nonzero(counts == 0)[0, 0])
        raise ValueError(f"image {i} has no caption in txt_to_img; every image needs at least one")
    return img, txt, t2i


def retrieval_recall(
    img_emb: ArrayLike,
    txt_emb: ArrayLike,
    txt_to_img: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """Image-text retrieval R@K, median and mean rank (Flickr30K / COCO protocol).

    The protocol of VSE++ (cited by seed 003 Sec. 4.1) and seed 001 Sec. 4.4:
    R@K is the percentage of queries with at least one correct item in the
    top K.

    * Image to text (caption retrieval): the rank of an image query is the
      rank of the best-ranked of its captions (any number per image, 5 in
      Flickr30K/COCO).
    * Text to image (image retrieval): the rank of a caption query is the rank
      of its one image.

    Ranks are 1-based and ties count against the query:
    ``rank = 1 + #{wrong items with score >= correct score}``, where for image
    to text the correct score is the best score among the image's captions
    and the wrong items are the captions of other images.
    ``medr = floor(median(ranks))`` (VSE++'s ``floor(median(r0)) + 1`` with
    0-based ranks ``r0``) and ``meanr = mean(ranks)``.

    Args:
        img_emb: ``(N, D)`` image embeddings.
        txt_emb: ``(M, D)`` caption embeddings.
        txt_to_img: ``(M,)`` integers, ``txt_to_img[j]`` = index of caption
            ``j``'s image. Every image needs at least one caption.
        ks: the K of R@K.
        chunk_size: side of the square score blocks computed at a time.

    Returns:
        ``{"i2t_r1", ..., "t2i_r1", ..., "i2t_medr", "t2i_medr",
        "i2t_meanr", "t2i_meanr", "rsum"}`` with one ``*_r{k}`` key per
        ``k`` in ``ks``; recalls in percent, ``rsum`` = sum of all recalls.

    Example:
        >>> x = np.eye(3)
        >>> retrieval_recall(x, x, [0, 1, 2])["i2t_r1"]
        100.0
    """
    ks_t = _check_ks(ks)
    cs = _check_chunk(chunk_size)
    img, txt, t2i = _validate_retrieval(img_emb, txt_emb, txt_to_img)
    ranks_i2t, ranks_t2i = _retrieval_ranks(img, txt, t2i, cs)
    return _summarise(ranks_i2t, ranks_t2i, ks_t)


def coco_1k_recall(
    img_emb: ArrayLike,
    txt_emb: ArrayLike,
    txt_to_img: ArrayLike,
    n_folds: int = 5,
    fold_size: int = 1000,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """MS-COCO 1K test protocol: :func:`retrieval_recall` averaged over folds.

    The 5,000 test images are cut into ``n_folds`` folds of ``fold_size``
    consecutive images; fold ``f`` holds images
    ``[f * fold_size, (f + 1) * fold_size)`` and exactly the captions that
    point at them (in their original order). Each fold is evaluated on its
    own and every value of the result dict -- recalls, ``rsum``, ``medr``
    and ``meanr`` -- is the plain mean over the folds (as VSE++'s
    ``evalrank(fold5=True)``), so the averaged ``medr`` may be fractional.

    ``img_emb`` must have exactly ``n_folds * fold_size`` rows.

    Returns:
        The same keys as :func:`retrieval_recall`.
    """
    ks_t = _check_ks(ks)
    cs = _check_chunk(chunk_size)
    if int(n_folds) < 1 or int(fold_size) < 1:
        raise ValueError(f"n_folds and fold_size must be positive, got {n_folds!r} and {fold_size!r}")
    img, txt, t2i = _validate_retrieval(img_emb, txt_emb, txt_to_img)
    if img.shape[0] != n_folds * fold_size:
        raise ValueError(
            f"img_emb must have n_folds * fold_size = {n_folds * fold_size} rows for the 1K protocol, "
            f"got shape {tuple(img.shape)}"
        )
    folds: list[dict[str, float]] = []
    for f in range(n_folds):
        lo, hi = f * fold_size, (f + 1) * fold_size
        sel = torch.nonzero((t2i >= lo) & (t2i < hi)).squeeze(1)
        r_i2t, r_t2i = _retrieval_ranks(img[lo:hi], txt[sel.to(txt.device)], t2i[sel] - lo, cs)
        folds.append(_summarise(r_i2t, r_t2i, ks_t))
    return {key: float(np.mean([fold[key] for fold in folds])) for key in folds[0]}


# --------------------------------------------------------------------------
# label-based retrieval: MAP and precision@k
# --------------------------------------------------------------------------
def _validate_label_retrieval(
    query_emb: ArrayLike, gallery_emb: ArrayLike, query_labels: ArrayLike, gallery_labels: ArrayLike
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q = _as_float("query_emb", query_emb)
    g = _as_float("gallery_emb", gallery_emb, device=q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"query_emb and gallery_emb must have the same embedding dimension, "
            f"got query_emb {tuple(q.shape)} and gallery_emb {tuple(g.shape)}"
        )
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError(f"need at least one query and one gallery item, got query_emb {tuple(q.shape)} and gallery_emb {tuple(g.shape)}")
    ql = _as_int("query_labels", query_labels, ndim=(1, 2), allow_bool=True)
    gl = _as_int("gallery_labels", gallery_labels, ndim=(1, 2), allow_bool=True)
    if ql.shape[0] != q.shape[0]:
        raise ValueError(f"query_labels must have one row per query: got shape {tuple(ql.shape)} for query_emb {tuple(q.shape)}")
    if gl.shape[0] != g.shape[0]:
        raise ValueError(
            f"gallery_labels must have one row per gallery item: got shape {tuple(gl.shape)} for gallery_emb {tuple(g.shape)}"
        )
    if ql.dim() != gl.dim() or (ql.dim() == 2 and ql.shape[1] != gl.shape[1]):
        raise ValueError(
            f"query_labels and gallery_labels must both be 1-D class ids or both 2-D multi-hot rows of equal width, "
            f"got query_labels {tuple(ql.shape)} and gallery_labels {tuple(gl.shape)}"
        )
    return q, g, ql.to(q.device), gl.to(q.device)


def _relevance(ql: Tensor, gl: Tensor) -> Tensor:
    """(nq, ng) bool: same class (1-D labels) or >= 1 shared label (multi-hot)."""
    if ql.dim() == 1:
        return ql[:, None] == gl[None, :]
    return ((ql != 0).to(torch.float64) @ (gl != 0).to(torch.float64).T) > 0


def _ranked_relevance(q: Tensor, g: Tensor, rel: Tensor) -> Tensor:
    """(c, n_gallery) relevance of the gallery in ranked order, ties irrelevant-first."""
    scores = q @ g.T
    values, order = torch.sort(scores, dim=1, descending=True)
    ranked = torch.gather(rel, 1, order)
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1)
    if bool(tied.any()):
        # Rows with tied scores (rare for continuous embeddings): sort by
        # relevance ascending, then stably by score descending, so among equal
        # scores the irrelevant items keep their place in front.
        rows = torch.nonzero(tied).squeeze(1)
        by_rel = torch.argsort(rel[rows].to(torch.int8), dim=1, stable=True)
        tied_scores = torch.gather(scores[rows], 1, by_rel)
        tied_order = torch.sort(tied_scores, dim=1, descending=True, stable=True).indices
        ranked[rows] = torch.gather(torch.gather(rel[rows], 1, by_rel), 1, tied_order)
    return ranked


def _query_chunks(
    q: Tensor, g: Tensor, ql: Tensor, gl: Tensor, chunk_size: int
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield (first query index, query rows, relevance to the gallery) per chunk."""
    for a in range(0, q.shape[0], chunk_size):
        yield a, q[a : a + chunk_size], _relevance(ql[a : a + chunk_size], gl)


def mean_average_precision(
    query_emb: ArrayLike,
    gallery_emb: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    k: int | None = None,
    chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE,
    skip_empty: bool = False,
) -> float:
    """Mean average precision of label-based cross-modal retrieval (fraction).

    The MAP of seed 004 (Tables 2-4, "computed from all returned results"):
    each query ranks the whole gallery by dot product; a gallery item is
    relevant when it has the query's class (1-D integer labels) or, for 2-D
    multi-hot label rows (NUS-WIDE; any non-zero entry, or ``True``, marks a
    label), shares at least one label.

    ``AP = (1 / R) * sum_{r <= K, item r relevant} precision@r``:

    * ``k=None``: ``K`` = the gallery size and ``R`` = all relevant items.
    * ``k`` given (MAP@k): ``K = k`` and ``R`` = the relevant items found in
      the top ``k``; AP is 0 when there are none (DSCMR's
      ``fx_calc_map_label``).

    Ties: gallery items with equal scores are ranked irrelevant-first (ties
    count against the query). A query with no relevant item in the whole
    gallery raises ValueError naming it, unless ``skip_empty=True``, which
    leaves such queries out of the mean.

    Returns:
        MAP as a fraction in [0, 1].

    Example:
        >>> q = np.array([[1.0, 0.0]]); g = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
        >>> mean_average_precision(q, g, [0], [1, 0, 0])  # relevant at ranks 2, 3
        0.5833333333333333
    """
    cs = _check_chunk(chunk_size)
    q, g, ql, gl = _validate_label_retrieval(query_emb, gallery_emb, query_labels, gallery_labels)
    n_g = g.shape[0]
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    top = n_g if k is None else min(int(k), n_g)
    ranks = torch.arange(1, top + 1, dtype=torch.float64, device=q.device)
    aps: list[Tensor] = []
    for a, q_chunk, rel in _query_chunks(q, g, ql, gl, cs):
        n_rel = rel.sum(dim=1)
        empty = n_rel == 0
        if bool(empty.any()) and not skip_empty:
            i = a + int(torch.nonzero(empty)[0, 0])
            raise ValueError(
                f"query {i} has no relevant item in the gallery (query_labels[{i}]); "
                f"pass skip_empty=True to leave such queries out"
            )
        hits = _ranked_relevance(q_chunk, g, rel)[:, :top]
        found = hits.cumsum(dim=1, dtype=torch.float64)
        prec_sum = found.div_(ranks).mul_(hits).sum(dim=1)  # sum of precision@r at relevant r
        denom = hits.sum(dim=1) if k is not None else n_rel
        denom = denom.to(torch.float64)
        ap = torch.where(denom > 0, prec_sum / denom.clamp(min=1), torch.zeros_like(prec_sum))
        aps.append(ap[~empty])
    all_ap = torch.cat(aps)
    if all_ap.numel() == 0:
        raise ValueError("no query has a relevant item in the gallery (all skipped by skip_empty=True)")
    return float(all_ap.mean())


def precision_at_k(
    query_emb: ArrayLike,
    gallery_emb: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    k: int = 100,
    chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE,
) -> float:
    """Mean precision in the top ``k`` (seed 004 Table 3, P@100), a fraction.

    ``P@k = #{relevant items among the first k} / k``, averaged over queries;
    relevance and the tie rule (irrelevant-first among equal scores) are those
    of :func:`mean_average_precision`. Queries without any relevant item
    simply score 0. ``k`` may not exceed the gallery size.

    Returns:
        P@k as a fraction in [0, 1].
    """
    cs = _check_chunk(chunk_size)
    q, g, ql, gl = _validate_label_retrieval(query_emb, gallery_emb, query_labels, gallery_labels)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > g.shape[0]:
        raise ValueError(f"k = {k} exceeds the gallery size (gallery_emb {tuple(g.shape)})")
    hits: list[Tensor] = []
    for _, q_chunk, rel in _query_chunks(q, g, ql, gl, cs):
        # No sort needed: with v the k-th largest score, the items above v are
        # all in the top k; the remaining slots go to items scoring exactly v,
        # irrelevant ones first.
        scores = q_chunk @ g.T
        kth = torch.topk(scores, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
        above = scores > kth
        n_above = above.sum(dim=1)
        rel_above = (above & rel).sum(dim=1)
        irrel_at = ((scores == kth) & ~rel).sum(dim=1)
        hits.append(rel_above + (k - n_above - irrel_at).clamp(min=0))
    return float(torch.cat(hits).to(torch.float64).mean() / k)


# --------------------------------------------------------------------------
# zero-shot recognition
# --------------------------------------------------------------------------
def per_class_accuracy(pred: ArrayLike, target: ArrayLike, classes: ArrayLike | None = None) -> float:
    """Mean over classes of per-class top-1 accuracy, in percent.

    The standard zero-shot metric (ReViSE, seed 000; the GZSL protocol):
    ``(1 / |C|) * sum_{c in C} #{i: target_i = c, pred_i = c} / #{i: target_i = c}``.
    ``classes`` defaults to the classes present in ``target``; a listed class
    with no sample raises ValueError naming it. Samples of classes not in
    ``classes`` are ignored (so GZSL seen / unseen accuracies are two calls
    with the two class lists, predictions made over all classes).

    Args:
        pred: ``(n,)`` predicted class ids (take the argmax of scores first).
        target: ``(n,)`` true class ids.
        classes: the classes to average over.

    Example:
        >>> round(per_class_accuracy([0, 0, 1, 1], [0, 0, 0, 1]), 4)  # (2/3 + 1/1) / 2
        83.3333
    """
    p = _as_int("pred", pred)
    t = _as_int("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {tuple(p.shape)} and target {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("target is empty")
    cls = torch.unique(t) if classes is None else _as_int("classes", classes)
    if cls.numel() == 0:
        raise ValueError("classes is empty")
    if classes is not None and torch.unique(cls).numel() != cls.numel():
        raise ValueError("classes contains duplicates")
    accs = []
    for c in cls.tolist():
        mask = t == c
        n = int(mask.sum())
        if n == 0:
            raise ValueError(f"class {c} listed in classes has no sample in target")
        accs.append(float((p[mask] == c).sum()) / n)
    return 100.0 * float(np.mean(accs))


def gzsl_harmonic(acc_seen: float, acc_unseen: float) -> float:
    """Harmonic mean ``2 s u / (s + u)`` of seen and unseen accuracy; 0 if both are 0.

    Units follow the inputs (percent in, percent out).
    """
    s, u = float(acc_seen), float(acc_unseen)
    for name, v in (("acc_seen", s), ("acc_unseen", u)):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if s + u == 0:
        return 0.0
    return 2.0 * s * u / (s + u)


# --------------------------------------------------------------------------
# caption reconstruction
# --------------------------------------------------------------------------
def bleu(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    n: int = 4,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> float:
    """Corpus BLEU@n through sacrebleu, on its 0-100 scale.

    BLEU@n (seed 001 Table 2) is BLEU with ``max_ngram_order=n``: the
    geometric mean of the modified 1..n-gram precisions times the brevity
    penalty, sacrebleu's defaults otherwise (``smooth_method="exp"``).

    ``references[i]`` lists the references of ``hypotheses[i]``; the number may
    differ between hypotheses (sacrebleu's transposed streams are padded with
    ``None``, which it skips). Tokenization: sacrebleu's ``"13a"`` by default
    (the mteval tokenizer: splits punctuation, keeps case); pass
    ``tokenize="none"`` for text that is already tokenized (e.g. a decoder's
    space-joined tokens) and ``lowercase=True`` to ignore case.

    Example:
        >>> round(bleu(["a cat sits on the mat"], [["a cat sits on the mat"]], n=2), 6)
        100.0
    """
    import sacrebleu  # imported here: only BLEU needs it

    hyps = list(hypotheses)
    refs = [list(r) if not isinstance(r, str) else None for r in references]
    if len(refs) != len(hyps):
        raise ValueError(f"references must have one list per hypothesis, got {len(refs)} for {len(hyps)} hypotheses")
    if not hyps:
        raise ValueError("hypotheses is empty")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    for i, h in enumerate(hyps):
        if not isinstance(h, str):
            raise ValueError(f"hypotheses[{i}] must be a string, got {type(h).__name__}")
    for i, r in enumerate(refs):
        if r is None:
            raise ValueError(f"references[{i}] must be a list of strings, got a single string")
        if not r:
            raise ValueError(f"references[{i}] is empty; every hypothesis needs at least one reference")
        if not all(isinstance(s, str) for s in r):
            raise ValueError(f"references[{i}] must contain only strings")
    width = max(len(r) for r in refs)  # type: ignore[arg-type]
    streams = [[r[s] if s < len(r) else None for r in refs] for s in range(width)]  # type: ignore[index,arg-type]
    metric = sacrebleu.BLEU(max_ngram_order=int(n), tokenize=tokenize, lowercase=lowercase)
    return float(metric.corpus_score(hyps, streams).score)
