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
L2-normalised embeddings for the cosine similarity), with float64
precision whatever the input dtype (products of float32 inputs are exact in
float64). **Ties count against the query**: an item tied with the correct
one is ranked before it. For R@K the rank of the correct item is
``1 + #{wrong items with score >= correct score}``; for MAP and P@k, gallery
items with equal scores are ordered irrelevant-first (the pessimistic order).
Random tie-breaking (argsort) would make a degenerate model, e.g. one mapping
everything to the same point, look good; the pessimistic rule gives it the
worst rank.

A tie must survive rounding: two identical images get bit-identical scores
with a caption only if both come from one computation (an elementwise dot
product and the same dot product inside a matrix product differ in the last
bits, and a BLAS need not give two identical rows of one product the same
bits either). So:

* ``retrieval_recall`` scores blocks in float32 and compares each entry
  with a rigorous rounding bound around the correct score (Higham's
  ``gamma_h |x| |y|``, see :class:`_BlockScorer`): entries beyond it are
  decided outright; those within it are rescored one by one, first with
  float32 products summed in float64 (a bound about 100x tighter, which
  decides nearly all of them), and the near-ties left with the exact float64
  score of one fixed computation (:class:`_ExactScorer`), which also gives
  the correct scores they are compared with. Ranks are those of the float64
  scores; identical vectors always tie.
* MAP and P@k score each query against the *distinct* gallery rows in
  float64 (identical gallery embeddings share one column, so they tie by
  construction); ties are exact equalities of those scores.

Scores of *different* vectors that agree to within float64 rounding (~1e-16
relative) may come out in either order.

Chunking and cost
-----------------
No function builds the full query x gallery score matrix.
``retrieval_recall`` works on blocks of 256 images x ``chunk_size`` captions
(float32, 512 KB at the default 512; whatever the number of images and
captions), in one pass per block: the product, two comparisons per direction
(against the low and the high bound, into int8 masks), one count per
direction, and one scan of the band masks (8 entries per int64 word) for the
entries within the bounds (on CUDA its ``nonzero`` is the one
synchronisation per block). The correct pairs need no knock-out: the bounds
keep them out of the counts and they are dropped from the rechecks. After
each strip of captions the number of products a block is summed from (1, 2,
4 or 8 slices of the dimension: shorter rounding chains, tighter bounds,
fewer rechecks) is chosen for the next strip from this one's rechecks. The
MAP / precision functions work on ``chunk_size x n_gallery`` row strips (MAP
needs each query's full ranking): full MAP sorts only each query's relevant
items and places the others by binary search (``searchsorted``; one sort of
the row when a query has over 1,024 relevant items), MAP@k and P@k take one
``topk`` per query. Results do not depend on ``chunk_size``.

``bench/RESULTS.md`` has the current table (``make bench``; CPU seconds, one
thread, ratios interleaved in one process). COCO-5K (5,000 x 25,000, d 1024,
both directions) against the bare float32 score matrix ``img @ txt.T``, on 2
cores shared with other work (load average 8-12): 1.25x on independent
random unit vectors (medians of interleaved runs: 1.245 and 1.26 in two
measurements; the correct scores inside the bulk of the wrong ones, ~120,000
entries within the bounds to screen, ~460 near-ties rescored exactly) and
1.12-1.14x on paired captions (a noisy copy of their image, ~11,000 to
screen); the layout before it, 1.38x and 1.22x in the same runs. The
products in blocks alone cost 0.9-0.95x the bare matrix; the rest is the
comparisons and counts (about 0.1x), the screening (about 1 us per entry on
an idle core, 4 under load) and Python per block. A few MB added.

30,000 x 30,000 label retrieval (d 512), measured earlier under load average 5-8,
against float32 products + one sort of every row (72-78 s): full MAP 95 s
single-label (50 classes), 126 s multi-label (24 labels, ~4,000 relevant
items per query: the sort path); MAP@100 39 s; P@100 29-30 s; at most 0.7 GB
added (256-query chunks).

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

import math
import sys
from collections.abc import Callable, Sequence
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
    # binary codes and precision-recall curves (zero-shot SBIR, seed 004 Table 3 and Figure 3)
    "hamming_distance",
    "precision_recall_curve",
]

DEFAULT_CHUNK_SIZE = 512
"""Captions per score block of retrieval_recall (and the most images; a block
has at most 256)."""
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


def _as_embeddings(name: str, x: ArrayLike, device: torch.device | None = None) -> Tensor:
    """2-D finite floating tensor, without a copy where the input already is one.

    float32 and float64 are kept as given; float16 / bfloat16 become float32
    and integers / bools float64 (both exact). The check for NaN and
    infinity runs here, on the embeddings, never on score matrices.
    """
    t = _to_tensor(name, x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(t.shape)}")
    if t.dtype in (torch.float32, torch.float64):
        dtype = t.dtype
    elif t.dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    elif t.dtype in _INT_DTYPES or t.dtype == torch.bool:
        dtype = torch.float64
    else:
        raise ValueError(f"{name} must be numeric, got dtype {t.dtype}")
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    # One cheap pass: a row sum is finite unless the row holds a NaN or an
    # infinity (or sums past the float range, which the exact check clears).
    suspect = torch.nonzero(~torch.isfinite(t.sum(dim=1))).squeeze(1)
    if suspect.numel():
        bad = suspect[~torch.isfinite(t[suspect]).all(dim=1)]
        if bad.numel():
            raise ValueError(
                f"{name} contains NaN or infinite values (first in row {int(bad[0])}, shape {tuple(t.shape)})"
            )
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
# exact scores and rounding bounds
# --------------------------------------------------------------------------
_U32 = 2.0**-24  # unit roundoff of float32
_U64 = 2.0**-53  # unit roundoff of float64
_SUM_MAX_DIM = 8192
"""Up to this dimension the CPU sums a float64 row of products in one fixed
order whatever the batch (measured up to 4096 with 1 and 2 threads; torch
splits a single row across threads only past 32,768 elements); beyond it, and
on other devices, exact scores use an explicit pairwise tree."""
_BLOCK_ROWS = 256
"""Images per score block of retrieval_recall: a 256 x 512 float32 block
(512 KB) and its int8 masks (512 KB) stay in a core's L2 cache between the
product and the counts."""
_SLICE_CHOICES = (1, 2, 4, 8)
"""Products per score block retrieval_recall may sum (over that many slices
of the dimension, each at least 128 wide): more slices, a shorter chain of
roundings, a tighter bound, fewer rechecks."""
_SLICE_COST_NS = 0.35
"""CPU nanoseconds one extra slice adds per score (the extra product's
overhead and one addition pass; measured 0.2-0.5 at 256 x 512, d 1024)."""
_RECHECK_COST_NS = 1200.0
"""CPU nanoseconds of one screened recheck at d 1024 (float32 products summed
in float64, gathers included: measured 1.0 us on an idle core, up to 4 under
load); scaled by d / 1024."""
_SEARCH_MAX_RELEVANT = 1024
"""Full MAP places the irrelevant items among the sorted relevant ones by
binary search while a query has at most this many relevant items (the sorted
row of them stays in cache); past it, one stable sort of the row is cheaper."""
_RECHECK_BATCH = 1 << 16
"""Entries near the bounds are rechecked in batches of at most about this
many (and at the end of each strip of captions, whose rows are then still
in cache)."""
_DEDUP_PAIRS = 1 << 16
"""Above this many pairs, exact scores are computed once per distinct
(image row, caption row) content: tie-heavy inputs (a collapsed model) put
every entry within the rounding bound."""


def _gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative error bound of n roundings."""
    return n * u / (1.0 - n * u)


def _float32_products_are_ieee(device: torch.device) -> bool:
    """Whether float32 matrix products on ``device`` round every operation in float32.

    ``torch.set_float32_matmul_precision("high")`` (TF32) or ``"medium"``
    (bfloat16) make them coarser than the bounds below assume; such
    settings send the scoring to float64 instead.
    """
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        if getattr(matmul, "allow_tf32", False):
            return False
        return getattr(matmul, "fp32_precision", "none") in ("none", "ieee")
    if device.type == "cpu":
        mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
        return getattr(mkldnn, "fp32_precision", "none") in ("none", "ieee")
    return False


class _ExactScorer:
    """float64 dot products ``x[rows[k]] . y[cols[k]]``, the same bits for the same vectors.

    The products are float64 (exact for float32 inputs) and each pair's sum
    is formed in one fixed order that depends neither on the batch nor on
    where the rows sit, so two identical images (or captions) always get
    identical scores: this is what makes "ties count against the query"
    hold under rounding.
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        d = x.shape[1]
        self.pairwise = x.device.type != "cpu" or d > _SUM_MAX_DIM
        self.width = 1 << max(0, (d - 1).bit_length()) if self.pairwise else d
        self.batch = max(1, (1 << 16) // max(self.width, 1))  # 512 KB of float64 products per batch
        self._unique: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def __call__(self, rows: Tensor, cols: Tensor) -> Tensor:
        if rows.numel() > _DEDUP_PAIRS:
            return self._dedup(rows, cols)
        return self._dots(rows, cols)

    def _dots(self, rows: Tensor, cols: Tensor) -> Tensor:
        n, d = rows.numel(), self.x.shape[1]
        out = torch.empty(n, dtype=torch.float64, device=self.x.device)
        for s in range(0, n, self.batch):
            e = min(s + self.batch, n)
            # float64 products: exact for float32 embeddings.
            p = self.x.index_select(0, rows[s:e]).to(torch.float64).mul_(self.y.index_select(0, cols[s:e]))
            if not self.pairwise:
                torch.sum(p, dim=1, out=out[s:e])
                continue
            if self.width > d:  # zero padding to a power of two
                p = torch.nn.functional.pad(p, (0, self.width - d))
            w = self.width
            while w > 1:  # a fixed tree of IEEE additions: the same on every device
                w //= 2
                p = p[:, :w] + p[:, w:]
            out[s:e] = p[:, 0]
        return out

    def _dedup(self, rows: Tensor, cols: Tensor) -> Tensor:
        if self._unique is None:
            ux = torch.unique(self.x, dim=0, return_inverse=True)[1]
            uy = torch.unique(self.y, dim=0, return_inverse=True)[1]
            rep_x = torch.empty(int(ux.max()) + 1, dtype=torch.int64, device=ux.device)
            rep_y = torch.empty(int(uy.max()) + 1, dtype=torch.int64, device=uy.device)
            rep_x.scatter_(0, ux, torch.arange(ux.numel(), device=ux.device))
            rep_y.scatter_(0, uy, torch.arange(uy.numel(), device=uy.device))
            self._unique = (ux, uy, rep_x, rep_y)
        ux, uy, rep_x, rep_y = self._unique
        key = ux[rows] * rep_y.numel() + uy[cols]
        keys, inverse = torch.unique(key, return_inverse=True)
        vx, vy = keys // rep_y.numel(), keys % rep_y.numel()
        return self._dots(rep_x[vx], rep_y[vy])[inverse]


def _down32(v: Tensor) -> Tensor:
    """Largest float32 <= each float64 value."""
    f = v.to(torch.float32)
    return torch.where(f.to(torch.float64) > v, torch.nextafter(f, torch.full_like(f, -math.inf)), f)


def _next_up(v: Tensor) -> Tensor:
    """The next float above each value (``x > v`` iff ``x >= _next_up(v)``)."""
    return torch.nextafter(v, torch.full_like(v, math.inf))


def _up32(v: Tensor) -> Tensor:
    """Smallest float32 >= each float64 value."""
    f = v.to(torch.float32)
    return torch.where(f.to(torch.float64) < v, torch.nextafter(f, torch.full_like(f, math.inf)), f)


class _BlockScorer:
    """Score blocks ``img[a:a+ci] @ txt[b:b+ct].T`` in float32 (or float64) with a rounding bound.

    A float32 block may be the sum of ``slices`` products over slices of the
    embedding dimension. Whatever order the BLAS sums in, every computed
    score is then within a bound of the exact float64 score of
    :class:`_ExactScorer`:

    ``|E_ij - r_ij| <= beta * |x_i| * |y_j| + alpha``, with
    ``beta = gamma_h(u32) + c_in + gamma_{d+1}(u64)`` and ``h = d / slices +
    slices + 1`` the longest chain of roundings a product goes through
    (Higham, *Accuracy and Stability of Numerical Algorithms*, Sec. 3.1:
    a sum formed by any binary tree of depth h has error at most
    ``gamma_h * sum |x_k y_k| <= gamma_h |x| |y|``); ``c_in = 2 u32 + u32^2``
    where float64 embeddings are rounded to float32 first, else 0; ``alpha``
    covers underflow. ``s`` slices cut h from d + 1 to about d / s, and with
    it the entries to recheck exactly, for s - 1 extra additions per block
    (:data:`_SLICE_CHOICES`, chosen as the scoring goes).

    The scores fall back to float64 (one slice, u64) when float32 products
    are not IEEE on this device (TF32 / bfloat16 settings) or the norms are
    so large or small that float32 would overflow or underflow.
    """

    def __init__(self, img: Tensor, txt: Tensor, rows: int, chunk: int) -> None:
        d = img.shape[1]
        nx = torch.linalg.vector_norm(img, dim=1).to(torch.float64)
        ny = torch.linalg.vector_norm(txt, dim=1).to(torch.float64)
        eps = torch.finfo(torch.float32 if torch.float32 in (img.dtype, txt.dtype) else torch.float64).eps
        inflate = 1.0 + _gamma(d + 2, eps)  # the norms themselves carry rounding
        self.nx, self.ny = nx * inflate, ny * inflate
        nx_max, ny_max = float(self.nx.max()), float(self.ny.max())
        fits32 = 2.0**-40 < nx_max * ny_max < 2.0**100 and max(nx_max, ny_max) < 2.0**60
        self.fp32 = fits32 and _float32_products_are_ieee(img.device)
        self.dtype = torch.float32 if self.fp32 else torch.float64
        self.slice_choices = tuple(
            s for s in _SLICE_CHOICES if s == 1 or (self.fp32 and d % s == 0 and d // s >= 128)
        )
        rounded = self.fp32 and (img.dtype != torch.float32 or txt.dtype != torch.float32)
        self._c_in = 2 * _U32 + _U32**2 if rounded else 0.0
        self._d = d
        self.alpha = 2.0**-148 * (d + 8 + math.sqrt(d) * (nx_max + ny_max)) if self.fp32 else 2.0**-1070 * (d + 8)
        self._x, self._y = img.to(self.dtype), txt.to(self.dtype)
        self._rows = rows
        self._cells = min(rows, img.shape[0]) * min(chunk, txt.shape[0])
        self._out = torch.empty(self._cells, dtype=self.dtype, device=img.device)
        self._part: Tensor | None = None
        self._x_parts: dict[int, list[list[Tensor]]] = {}

    def beta(self, slices: int) -> float:
        """Relative bound of a block summed from ``slices`` products."""
        if self.fp32:
            h = self._d // slices + slices + 1 if slices > 1 else self._d + 1
            base = _gamma(h, _U32) + self._c_in
        else:
            base = _gamma(self._d + 1, _U64)
        return base * (1 + 2.0**-20) + _gamma(self._d + 1, _U64)

    def thresholds(self, score: Tensor, bound: Tensor) -> tuple[Tensor, Tensor]:
        """(lo, hi) in the score dtype with lo <= score - bound and hi >= score + bound."""
        lo, hi = score - bound, score + bound
        if self.fp32:
            return _down32(lo), _up32(hi)
        return torch.nextafter(lo, torch.full_like(lo, -math.inf)), torch.nextafter(hi, torch.full_like(hi, math.inf))

    def strip(self, b: int, ct: int, slices: int) -> Callable[[int], Tensor]:
        """The blocks of captions ``b:b+ct``: a function of the image block ``k`` (rows ``k*rows:(k+1)*rows``).

        Each block is summed from ``slices`` products into a buffer that the
        next call reuses.
        """
        w = self._d // slices
        ys = [self._y[b : b + ct, s * w : (s + 1) * w].T for s in range(slices)]
        if slices not in self._x_parts:
            self._x_parts[slices] = [
                [xb[:, s * w : (s + 1) * w] for s in range(slices)] for xb in self._x.split(self._rows)
            ]
        xs = self._x_parts[slices]
        outs = [self._out[: x[0].shape[0] * ct].view(-1, ct) for x in xs]
        if slices > 1 and self._part is None:
            self._part = torch.empty_like(self._out)
        parts = [self._part[: x[0].shape[0] * ct].view(-1, ct) for x in xs] if slices > 1 else []

        def block(k: int) -> Tensor:
            x, out = xs[k], outs[k]
            torch.mm(x[0], ys[0], out=out)
            for s in range(1, slices):  # a chain of slices - 1 additions
                torch.mm(x[s], ys[s], out=parts[k])
                out.add_(parts[k])
            return out

        return block


def _approx_dots(x: Tensor, y: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x[rows[k]] . y[cols[k]]`` of float32 embeddings: float32 products summed in float64.

    Within ``_APPROX_REL * |x| |y| + d * 2**-140`` of the exact score of
    :class:`_ExactScorer` (each product rounds once, by at most u32 relative
    or 2**-150 where it underflows; both float64 sums add gamma_d(u64)).
    """
    n, d = rows.numel(), x.shape[1]
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    step = max(1, (1 << 16) // max(d, 1))
    for s in range(0, n, step):
        e = min(s + step, n)
        torch.sum(x.index_select(0, rows[s:e]).mul_(y.index_select(0, cols[s:e])), dim=1, dtype=torch.float64, out=out[s:e])
    return out


def _approx_rel(d: int) -> float:
    """Relative bound of :func:`_approx_dots` against the exact scores (both float64 sums counted)."""
    return (_U32 + 3 * _gamma(d, _U64)) * (1 + 2.0**-20)


def _approx_positive_scores(img: Tensor, txt: Tensor, t2i: Tensor) -> tuple[Tensor, float]:
    """Each caption's score with its image and a relative error bound, cheaply.

    float32 embeddings: :func:`_approx_dots`; otherwise the exact scores
    themselves (bound 0). Thresholds and the first screening of the rechecks
    use these; the final rechecks compare exact scores.
    """
    n, d = txt.shape
    cols = torch.arange(n, device=txt.device)
    if img.dtype != torch.float32 or txt.dtype != torch.float32:
        return _ExactScorer(img, txt)(t2i, cols), 0.0
    return _approx_dots(img, txt, t2i, cols), _approx_rel(d)


def _byte_shift(t: int) -> int:
    """Bit offset, within an int64 word, of the word's byte ``t`` in memory order."""
    return 8 * (7 - t) if sys.byteorder == "big" else 8 * t


def _decode_band(found: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Flat indices of the non-zero entries of int8 masks read as int64 words.

    ``found`` holds the (global) indices ``w`` of the non-zero words and
    their values; byte ``t`` of word ``w`` is entry ``8 w + t`` of the flat
    masks.
    """
    words = torch.cat([w for w, _ in found])
    values = torch.cat([v for _, v in found])
    hits = [8 * words[((values >> _byte_shift(t)) & 0xFF) != 0] + t for t in range(8)]
    return torch.cat(hits).sort().values


class _Rechecks:
    """Entries within the bounds, rescored and counted where they beat (or tie) the correct score.

    Each entry is an (image, caption) pair and a direction: the caption's
    query (text to image: compared with the caption's correct score) or the
    image's (image to text: with the best score of its own captions).

    float32 embeddings are first screened with :func:`_approx_dots`, whose
    bound (``_approx_rel``, about u32) is some 100x tighter than a block's:
    an entry whose approximate score is further than both bounds from the
    approximate correct score is decided by it. The rest (near-ties) are
    rescored exactly and compared with the exact correct scores of the same
    :class:`_ExactScorer`, computed once each and only where needed, so a
    tie is a tie.
    """

    def __init__(
        self,
        exact: _ExactScorer,
        t2i: Tensor,
        beaten: tuple[Tensor, Tensor],
        screen: tuple[Tensor, Tensor, Tensor, Tensor] | None,
    ) -> None:
        self.exact, self.t2i = exact, t2i
        self.beaten_img, self.beaten_txt = beaten
        # (approx_img, approx_txt, nx, ny) for the float32 screening, else None.
        self.screen = screen
        device = t2i.device
        self.exact_txt = torch.full((t2i.numel(),), math.nan, dtype=torch.float64, device=device)
        self.exact_img = torch.full((self.beaten_img.numel(),), -math.inf, dtype=torch.float64, device=device)
        self.img_done = torch.zeros(self.beaten_img.numel(), dtype=torch.bool, device=device)
        self.pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self.n_pending = 0
        self.n_total = 0
        self.n_exact = 0

    def add(self, rows: Tensor, cols: Tensor, by_img: Tensor) -> None:
        # A caption with its own image is no wrong item; the bounds keep such
        # pairs from being counted outright, so they are dropped here.
        wrong = torch.nonzero(self.t2i[cols] != rows).squeeze(1)
        rows, cols, by_img = rows[wrong], cols[wrong], by_img[wrong]
        self.pending.append((rows, cols, by_img))
        self.n_pending += rows.numel()
        self.n_total += rows.numel()
        if self.n_pending >= _RECHECK_BATCH:
            self.flush()

    def _txt(self, cols: Tensor) -> Tensor:
        todo = cols[torch.isnan(self.exact_txt[cols])].unique()
        if todo.numel():
            self.exact_txt[todo] = self.exact(self.t2i[todo], todo)
        return self.exact_txt[cols]

    def _img(self, rows: Tensor) -> Tensor:
        todo = rows[~self.img_done[rows]].unique()
        if todo.numel():
            caps = torch.nonzero(torch.isin(self.t2i, todo)).squeeze(1)
            self.exact_img.scatter_reduce_(0, self.t2i[caps], self._txt(caps), reduce="amax", include_self=True)
            self.img_done[todo] = True
        return self.exact_img[rows]

    def _count(self, rows: Tensor, cols: Tensor, by_img: Tensor, beats: Tensor) -> None:
        self.beaten_txt.index_add_(0, cols, (beats & ~by_img).to(torch.float64))
        self.beaten_img.index_add_(0, rows, (beats & by_img).to(torch.float64))

    def _screened(self, rows: Tensor, cols: Tensor, by_img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Count the entries the approximate scores decide; return the others."""
        approx_img, approx_txt, nx, ny = self.screen
        x, y = self.exact.x, self.exact.y
        rel, tiny = _approx_rel(x.shape[1]), x.shape[1] * 2.0**-140
        score = _approx_dots(x, y, rows, cols)
        correct = torch.where(by_img, approx_img[rows], approx_txt[cols])
        # |score - E| <= rel |x_i| |y_j| + tiny; the correct score's bound uses
        # its own image's norm (text to image) or the largest caption norm (image to text).
        other = torch.where(by_img, ny.max(), nx[self.t2i[cols]])
        margin = (rel * (nx[rows] * ny[cols] + torch.where(by_img, nx[rows], ny[cols]) * other) + 2 * tiny) * (
            1 + 2.0**-20
        )
        diff = score - correct
        self._count(rows, cols, by_img, diff > margin)
        near = torch.nonzero(diff.abs() <= margin).squeeze(1)
        return rows[near], cols[near], by_img[near]

    def flush(self) -> None:
        if not self.pending:
            return
        rows, cols, by_img = (torch.cat(t) for t in zip(*self.pending))
        self.pending.clear()
        self.n_pending = 0
        if self.screen is not None:
            rows, cols, by_img = self._screened(rows, cols, by_img)
            if rows.numel() == 0:
                return
        self.n_exact += rows.numel()
        # An entry near both bounds comes twice; its exact score is computed once.
        n = self.t2i.numel()
        key, inverse = torch.unique(rows * n + cols, return_inverse=True)
        scores = self.exact(torch.div(key, n, rounding_mode="floor"), key % n)[inverse]
        correct = torch.empty_like(scores)
        mine = torch.nonzero(~by_img).squeeze(1)
        correct[mine] = self._txt(cols[mine])
        mine = torch.nonzero(by_img).squeeze(1)
        correct[mine] = self._img(rows[mine])
        self._count(rows, cols, by_img, scores >= correct)


def _retrieval_ranks(img: Tensor, txt: Tensor, t2i: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """1-based pessimistic ranks: (per image for i2t, per caption for t2i).

    One pass per score block: the block comes out of the (float32) product
    and each entry is compared with the bounds around its caption's and its
    image's correct score (one comparison per direction against [lo, hi],
    into int8 masks; one count per direction of the entries above hi; one
    scan of the band masks lo <= score <= hi). Entries above a bound are
    counted outright, those below it are not, and the few within it go to
    :class:`_Rechecks` (screened with float32 products summed in float64,
    near-ties rescored exactly with the computation that gives the correct
    scores, so a tie is a tie). A caption's own image (and an image's own
    captions) always lies within or below its bounds, never above, so it is
    not counted and is dropped from the rechecks: no knock-out pass.

    The bound of an entry uses its caption's norm with the largest image norm
    of its block (and its image's norm with the largest caption norm of its
    strip). After each strip of captions the number of slices for the next
    one is chosen from this strip's rechecks: ``s`` slices shrink the bound,
    and so the expected rechecks, by ``beta(s) / beta(now)`` for
    ``(s - 1)`` extra additions per score (:data:`_SLICE_COST_NS`,
    :data:`_RECHECK_COST_NS`). Only the time depends on this choice.
    """
    device = img.device
    n_img, n_txt = img.shape[0], txt.shape[0]
    t2i = t2i.to(device)
    rows, chunk = min(chunk_size, _BLOCK_ROWS, n_img), min(chunk_size, n_txt)
    scorer = _BlockScorer(img, txt, rows, chunk)
    n_blocks = -(-n_img // rows)

    # Bounds around each caption's score with its own image (text to
    # image) and each image's best caption score (image to text).
    approx_txt, rel_err = _approx_positive_scores(img, txt, t2i)
    approx_img = torch.full((n_img,), -math.inf, dtype=torch.float64, device=device)
    approx_img.scatter_reduce_(0, t2i, approx_txt, reduce="amax", include_self=True)
    nx_max, ny_max = float(scorer.nx.max()), float(scorer.ny.max())
    nx_blocks = torch.nn.functional.pad(scorer.nx, (0, n_blocks * rows - n_img)).view(n_blocks, rows).amax(dim=1)

    beaten_img = torch.zeros(n_img, dtype=torch.float64, device=device)
    beaten_txt = torch.zeros(n_txt, dtype=torch.float64, device=device)
    screen = (approx_img, approx_txt, scorer.nx, scorer.ny) if rel_err > 0 else None
    rechecks = _Rechecks(_ExactScorer(img, txt), t2i, (beaten_img, beaten_txt), screen)
    # int8 masks of a block: [>= lo per caption, >= lo per image, > hi per caption, > hi per
    # image]; the first two become the band masks (lo <= score <= hi), scanned 8 bytes at a
    # time (rows padded to whole int64 words; the padding stays 0).
    masks = torch.zeros(4 * rows * (-(-chunk // 8) * 8), dtype=torch.int8, device=device)
    sizes = sorted({min(rows, n_img - a) for a in range(0, n_img, rows)})
    above_img = torch.empty(n_img, dtype=torch.int32, device=device)
    above_img_k = above_img.split(rows)
    slices, recheck_ns = 1, _RECHECK_COST_NS * img.shape[1] / 1024
    width = width_of = 0
    for b in range(0, n_txt, chunk):
        ct = min(chunk, n_txt - b)
        beta = scorer.beta(slices)
        ny = scorer.ny[b : b + ct]
        # Thresholds [lo, next float above hi] (x > hi iff x >= that): per block of
        # images and caption (2, 1, ct) each, per image (2, ci, 1) per block.
        lo, hi = scorer.thresholds(
            approx_txt[b : b + ct].expand(n_blocks, ct),
            ny * (beta * nx_blocks[:, None] + rel_err * nx_max) + 2 * scorer.alpha,
        )
        txt_thr = torch.stack((lo, _next_up(hi)), dim=1)[:, :, None, :].unbind(0)
        lo, hi = scorer.thresholds(approx_img, scorer.nx * (beta * float(ny.max()) + rel_err * ny_max) + 2 * scorer.alpha)
        img_thr = torch.stack((lo, _next_up(hi)))[:, :, None].split(rows, dim=1)
        if ct != width_of:
            width_of, width = ct, -(-ct // 8) * 8
            masks.zero_()
        m_full = masks[: 4 * rows * width].view(4, rows, width)
        m = m_full[:, :, :ct]
        views = {ci: (m[0::2, :ci], m[1::2, :ci], m[2, :ci], m[3, :ci], m[:2, :ci], m[2:, :ci]) for ci in sizes}
        band_words = m_full[:2].reshape(-1).view(torch.int64)
        above_txt = torch.empty(n_blocks, ct, dtype=torch.int32, device=device)
        above_txt_k = above_txt.unbind(0)
        found: list[tuple[Tensor, Tensor]] = []
        block_of = scorer.strip(b, ct, slices)
        for k in range(n_blocks):
            block = block_of(k)
            ci = block.shape[0]
            by_txt, by_img, gt_txt, gt_img, ge, gt = views[ci]
            torch.ge(block, txt_thr[k], out=by_txt)
            torch.ge(block, img_thr[k], out=by_img)
            torch.sum(gt_txt, dim=0, dtype=torch.int32, out=above_txt_k[k])
            torch.sum(gt_img, dim=1, dtype=torch.int32, out=above_img_k[k])
            ge.sub_(gt)
            if ci < rows:
                m[:2, ci:].zero_()
            words = torch.nonzero(band_words).squeeze(1)
            found.append((words + k * band_words.numel(), band_words[words]))
        beaten_txt[b : b + ct] += above_txt.sum(dim=0)
        beaten_img += above_img
        # Entries within the bounds: decode (block, word, which part) into (image, caption, direction).
        near = _decode_band(found)
        k, e = torch.div(near, 2 * rows * width, rounding_mode="floor"), near % (2 * rows * width)
        by_img = e >= rows * width
        e = e % (rows * width)
        near_before = rechecks.n_total
        rechecks.add(k * rows + torch.div(e, width, rounding_mode="floor"), e % width + b, by_img)
        rechecks.flush()
        # Slices for the next strip, from this strip's rechecks.
        near = rechecks.n_total - near_before
        cells = ct * n_img
        rel_now = beta + rel_err
        slices = min(
            scorer.slice_choices,
            key=lambda s: cells * (s - 1) * _SLICE_COST_NS + near * (scorer.beta(s) + rel_err) / rel_now * recheck_ns,
        )
    return (beaten_img.to(torch.int64) + 1).cpu(), (beaten_txt.to(torch.int64) + 1).cpu()


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
    img = _as_embeddings("img_emb", img_emb)
    txt = _as_embeddings("txt_emb", txt_emb, device=img.device)
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
    0-based ranks ``r0``) and ``meanr = mean(ranks)``. The scores are the
    float64 dot products; identical embeddings tie however the products
    round (module docstring, "Scores and ties"). Blocks are scored in
    float32 and only entries within a rigorous rounding bound of the correct
    score are rescored (near-ties exactly), so the cost is close to that of
    the score matrix alone and no float64 copy of the embeddings is made.

    Args:
        img_emb: ``(N, D)`` image embeddings.
        txt_emb: ``(M, D)`` caption embeddings.
        txt_to_img: ``(M,)`` integers, ``txt_to_img[j]`` = index of caption
            ``j``'s image. Every image needs at least one caption.
        ks: the K of R@K.
        chunk_size: captions per score block (blocks have
            ``min(chunk_size, 256)`` images); the ranks do not depend on it.

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
    q = _as_embeddings("query_emb", query_emb)
    g = _as_embeddings("gallery_emb", gallery_emb, device=q.device)
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
    # Counts of shared labels are small integers: exact in float32.
    return ((ql != 0).to(torch.float32) @ (gl != 0).to(torch.float32).T) > 0


def _distinct_rows(x: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(distinct rows, inverse)`` of a 2-D tensor, or None when all rows differ.

    A cheap fingerprint first (a fixed random weighting of each row, summed
    along the row in float64: identical rows give identical sums, distinct
    ones practically never do); the exact ``torch.unique`` sort runs only
    when two fingerprints agree.
    """
    if x.shape[0] < 2:
        return None
    w = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(x.device) + 0.5
    step = max(1, (1 << 20) // x.shape[1])  # 8 MB of float64 at a time
    prints = torch.cat([(x[s : s + step].to(torch.float64) * w).sum(dim=1) for s in range(0, x.shape[0], step)])
    if torch.unique(prints).numel() == x.shape[0]:
        return None
    distinct, inverse = torch.unique(x, dim=0, return_inverse=True)
    return None if distinct.shape[0] == x.shape[0] else (distinct, inverse)


class _GalleryScorer:
    """float64 scores of query rows against the gallery, one column per distinct gallery row.

    Identical gallery embeddings are scored once and the column is repeated,
    so they tie exactly whatever the BLAS does with rows at different
    positions (a float32 matrix-vector product here gives identical rows
    different last bits).
    """

    def __init__(self, g: Tensor) -> None:
        g64 = g.to(torch.float64)
        dup = _distinct_rows(g64)
        self.g, self.inverse = (g64, None) if dup is None else dup

    def __call__(self, q: Tensor) -> Tensor:
        s = q.to(torch.float64) @ self.g.T
        return s if self.inverse is None else s.index_select(1, self.inverse)


def _ap_full_ranking(scores: Tensor, rel: Tensor, n_rel: Tensor, k: int | None) -> Tensor:
    """Per-query AP from the whole ranking (AP@k with ``k``), without sorting the gallery.

    Only the relevant items are sorted; every irrelevant item is placed among
    them by binary search (``searchsorted``, ``right=True``: an irrelevant
    item scoring the same as a relevant one goes before it). With the
    relevant scores ascending, ``ahead[a]`` irrelevant items precede the
    relevant item of ascending index ``a``, which is the ``n = R - a``-th
    relevant one, at rank ``n + ahead[a]``. ``scores`` is overwritten.
    """
    c, device = scores.shape[0], scores.device
    r_max = int(n_rel.max()) if c else 0
    if r_max == 0:
        return torch.zeros(c, dtype=torch.float64, device=device)
    rows, cols = torch.nonzero(rel, as_tuple=True)  # row-major: each row's relevant items in order
    start = torch.cumsum(n_rel, 0) - n_rel
    slot = torch.arange(rows.numel(), device=device) - start[rows]
    ascending = torch.full((c, r_max), math.inf, dtype=torch.float64, device=device)
    ascending[rows, slot] = scores[rows, cols]
    ascending = torch.sort(ascending, dim=1).values  # padding (+inf) stays at the end
    scores.masked_fill_(rel, -math.inf)  # relevant items fall in bin 0, which precedes nothing
    place = torch.searchsorted(ascending, scores, right=True)  # #relevant scores <= the item's
    counts = torch.zeros(c, r_max + 1, dtype=torch.float64, device=device)
    counts.scatter_add_(1, place, torch.ones((), dtype=torch.float64, device=device).expand_as(scores))
    ahead = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # ahead[a] = #irrelevant with place > a
    n = n_rel[:, None].to(torch.float64) - torch.arange(r_max, device=device, dtype=torch.float64)
    valid = n > 0
    rank = n + ahead
    prec = torch.where(valid, n / rank, torch.zeros((), dtype=torch.float64, device=device))
    if k is None:
        return prec.sum(dim=1) / n_rel.clamp(min=1).to(torch.float64)
    found = valid & (rank <= k)
    n_found = found.sum(dim=1).to(torch.float64)
    return torch.where(n_found > 0, (prec * found).sum(dim=1) / n_found.clamp(min=1), torch.zeros_like(n_found))


def _ap_sorted(scores: Tensor, rel: Tensor, n_rel: Tensor, k: int | None) -> Tensor:
    """Per-query AP (AP@k with ``k``) from one sort of each row.

    For queries with many relevant items, where placing the others by
    binary search costs more than a sort. Rows with tied scores (rare for
    continuous embeddings) are sorted again after a stable partition,
    irrelevant items before relevant ones (by prefix counts), so that the
    stable descending sort keeps the irrelevant item first among equal
    scores.
    """
    values, order = torch.sort(scores, dim=1, descending=True)
    hits = torch.gather(rel, 1, order)
    del order
    tied = torch.nonzero((values[:, 1:] == values[:, :-1]).any(dim=1)).squeeze(1)
    del values
    if tied.numel():
        r = rel[tied]
        n_irr = (~r).sum(dim=1, keepdim=True)
        target = torch.where(r, n_irr + r.cumsum(dim=1) - 1, (~r).cumsum(dim=1) - 1)
        parted = torch.empty_like(scores[tied]).scatter_(1, target, scores[tied])
        hits[tied] = torch.sort(parted, dim=1, descending=True, stable=True).indices >= n_irr
    if k is not None:
        hits = hits[:, :k]
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64, device=scores.device)
    prec_sum = hits.cumsum(dim=1, dtype=torch.float64).div_(ranks).mul_(hits).sum(dim=1)
    denom = (n_rel if k is None else hits.sum(dim=1)).to(torch.float64)
    return torch.where(denom > 0, prec_sum / denom.clamp(min=1), torch.zeros_like(prec_sum))


def _top_k(scores: Tensor, rel: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The pessimistic top ``k`` of each row from one ``topk``, without a full pass where possible.

    With ``v`` the k-th largest score, every item above ``v`` is in the top
    k; the remaining ``k - n_above`` slots go to items scoring exactly ``v``,
    irrelevant ones first. Items at ``v`` outside topk's answer exist only
    where the (k+1)-th score equals ``v``; only those rows are counted over
    the whole gallery.

    Returns (values, relevance of the top k as topk ordered them, mask of
    those above ``v``, n_above, irrelevant items at ``v``).
    """
    n_g = scores.shape[1]
    take = min(k + 1, n_g)
    values, index = torch.topk(scores, take, dim=1, largest=True, sorted=True)
    top_rel = torch.gather(rel, 1, index)
    v = values[:, k - 1 : k]
    head, head_rel = values[:, :k], top_rel[:, :k]
    above = head > v
    n_above = above.sum(dim=1)
    irr_at_v = ((~above) & ~head_rel).sum(dim=1)
    if take > k:
        spill = torch.nonzero(values[:, k] == v[:, 0]).squeeze(1)
        if spill.numel():
            at_v = scores[spill] == v[spill]
            irr_at_v[spill] = (at_v & ~rel[spill]).sum(dim=1)
    return head, head_rel, above, n_above, irr_at_v


def _ap_top_k(scores: Tensor, rel: Tensor, k: int) -> Tensor:
    """Per-query AP@k (DSCMR's ``fx_calc_map_label``) from :func:`_top_k`."""
    head, head_rel, above, n_above, irr_at_v = _top_k(scores, rel, k)
    # Items above v in the pessimistic order: by score, irrelevant first among
    # equal scores (a stable sort by relevance, then a stable one by score).
    key = torch.where(above, head, torch.full_like(head, -math.inf))
    by_rel = torch.argsort(head_rel.to(torch.int8), dim=1, stable=True)
    by_score = torch.argsort(torch.gather(key, 1, by_rel), dim=1, descending=True, stable=True)
    ordered = torch.gather(torch.gather(head_rel, 1, by_rel), 1, by_score)
    slot = torch.arange(k, device=scores.device)
    first_relevant_at_v = n_above + torch.minimum(irr_at_v, k - n_above)
    hits = torch.where(slot < n_above[:, None], ordered, slot >= first_relevant_at_v[:, None])
    found = hits.cumsum(dim=1, dtype=torch.float64)
    prec_sum = (found / (slot + 1).to(torch.float64) * hits).sum(dim=1)
    n_found = hits.sum(dim=1).to(torch.float64)
    return torch.where(n_found > 0, prec_sum / n_found.clamp(min=1), torch.zeros_like(n_found))


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
    count against the query); identical gallery embeddings always tie. A
    query with no relevant item in the whole gallery raises ValueError
    naming it, unless ``skip_empty=True``, which leaves such queries out of
    the mean.

    Full MAP sorts only each query's relevant items and places the others
    among them by binary search; MAP@k (``k`` up to half the gallery) takes
    one ``topk`` per query.

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
    use_topk = k is not None and top <= n_g // 2
    scorer = _GalleryScorer(g)
    aps: list[Tensor] = []
    for a in range(0, q.shape[0], cs):
        rel = _relevance(ql[a : a + cs], gl)
        n_rel = rel.sum(dim=1)
        empty = n_rel == 0
        if bool(empty.any()) and not skip_empty:
            i = a + int(torch.nonzero(empty)[0, 0])
            raise ValueError(
                f"query {i} has no relevant item in the gallery (query_labels[{i}]); "
                f"pass skip_empty=True to leave such queries out"
            )
        scores = scorer(q[a : a + cs])
        k_full = None if k is None else top
        if use_topk:
            ap = _ap_top_k(scores, rel, top)
        elif int(n_rel.max()) <= _SEARCH_MAX_RELEVANT:
            ap = _ap_full_ranking(scores, rel, n_rel, k_full)
        else:
            ap = _ap_sorted(scores, rel, n_rel, k_full)
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
    relevance and the tie rule (irrelevant-first among equal scores,
    identical gallery embeddings tie) are those of
    :func:`mean_average_precision`. Queries without any relevant item simply
    score 0. ``k`` may not exceed the gallery size. No sort: one ``topk`` per
    query.

    Returns:
        P@k as a fraction in [0, 1].
    """
    cs = _check_chunk(chunk_size)
    q, g, ql, gl = _validate_label_retrieval(query_emb, gallery_emb, query_labels, gallery_labels)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > g.shape[0]:
        raise ValueError(f"k = {k} exceeds the gallery size (gallery_emb {tuple(g.shape)})")
    k = int(k)
    scorer = _GalleryScorer(g)
    hits: list[Tensor] = []
    for a in range(0, q.shape[0], cs):
        rel = _relevance(ql[a : a + cs], gl)
        _, head_rel, above, n_above, irr_at_v = _top_k(scorer(q[a : a + cs]), rel, k)
        # Relevant items above v, then the slots at v left after the irrelevant ones.
        hits.append((above & head_rel).sum(dim=1) + (k - n_above - torch.minimum(irr_at_v, k - n_above)))
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


def retrieval_recall_scores(scores: ArrayLike, txt_to_img: ArrayLike, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """:func:`retrieval_recall` from a given ``(M captions, N images)`` score matrix.

    For scores that are not dot products of two embeddings (a dense score
    fused with a lexical one, :mod:`visem.search.lexical`). The same
    protocol and the same rule for ties (against the query): a caption's
    rank is ``1 + #{other images with score >= its image's score}``; an
    image's rank is ``1 + #{captions of other images with score >= the best
    score among its own captions}`` (the column of the matrix). The matrix
    is taken as given (float64), so ties are exact equalities of its
    entries. Every image needs at least one caption.

    Example:
        >>> retrieval_recall_scores(np.eye(3), [0, 1, 2])["t2i_r1"]
        100.0
    """
    ks_t = _check_ks(ks)
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    if s.dim() != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (captions, images) matrix, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores hold NaN or inf")
    t2i = _as_int("txt_to_img", txt_to_img)
    m, n = s.shape
    if t2i.shape[0] != m:
        raise ValueError(f"txt_to_img must have one entry per caption (row): got {tuple(t2i.shape)} for scores {(m, n)}")
    if bool(((t2i < 0) | (t2i >= n)).any()):
        raise ValueError(f"txt_to_img points outside the {n} images")
    counts = torch.bincount(t2i, minlength=n)
    if bool((counts == 0).any()):
        raise ValueError(f"image {int(torch.nonzero(counts == 0)[0, 0])} has no caption in txt_to_img")
    rows = torch.arange(m)
    correct = s[rows, t2i]
    ranks_t2i = 1 + (s >= correct[:, None]).sum(1) - 1  # the correct image itself is >= and is not counted
    own = t2i[:, None] == torch.arange(n)[None, :]  # (M, N): caption j belongs to image i
    best = torch.where(own, s, torch.full_like(s, -torch.inf)).max(0).values  # (N,)
    ranks_i2t = 1 + ((s >= best[None, :]) & ~own).sum(0)
    return _summarise(ranks_i2t, ranks_t2i, ks_t)


# --------------------------------------------------------------------------
# binary codes (Hamming ranking) and precision-recall curves
# --------------------------------------------------------------------------
def _as_codes(name: str, x: ArrayLike) -> Tensor:
    """``{-1, +1}`` float64 codes from ``{-1, +1}``, ``{0, 1}`` or bool arrays (ValueError otherwise)."""
    t = _to_tensor(name, x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, bits), got shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if bool(((t != 1) & (t != -1)).any()):
        if bool(((t != 1) & (t != 0)).any()):
            raise ValueError(f"{name} must hold binary codes ({{-1, 1}} or {{0, 1}}), got other values")
        t = 2 * t - 1
    return t


def hamming_distance(query_codes: ArrayLike, gallery_codes: ArrayLike) -> Tensor:
    """Hamming distances ``(n_query, n_gallery)`` (int64) between binary codes.

    Codes are ``{-1, +1}``, ``{0, 1}`` or bool rows of equal width ``m``. For
    ``{-1, +1}`` codes ``q . g = m - 2 * hamming(q, g)``, so **ranking by the
    dot product of ``{-1, +1}`` codes is ranking by Hamming distance**: pass
    such codes to :func:`mean_average_precision` and :func:`precision_at_k`
    and equal distances are exact ties (small integers in float64), counted
    against the query like every tie there. This function gives the distances
    themselves (for inspection and tests).

    Example:
        >>> hamming_distance([[1, -1, 1]], [[1, 1, 1], [-1, 1, -1]]).tolist()
        [[1, 3]]
    """
    q = _as_codes("query_codes", query_codes)
    g = _as_codes("gallery_codes", gallery_codes).to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_codes and gallery_codes must have the same width, got {tuple(q.shape)} and {tuple(g.shape)}")
    return ((q.shape[1] - q @ g.T) / 2).round().to(torch.int64)


def precision_recall_curve(
    query_emb: ArrayLike,
    gallery_emb: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    recall_levels: Sequence[float] | int = 11,
    chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision at fixed recall levels (seed 004 Figure 3), fractions.

    Each query ranks the whole gallery by dot product (pass ``{-1, +1}``
    codes to rank by Hamming distance, L2-normalised embeddings for cosine),
    equal scores ordered irrelevant-first as in :func:`mean_average_precision`.
    At rank ``r`` precision is ``hits(r) / r`` and recall ``hits(r) / R``; the
    interpolated precision at recall level ``t`` is the highest precision at
    any rank whose recall is at least ``t`` (the PASCAL VOC / TREC
    convention), averaged over the queries. ``recall_levels``: the levels, or
    their number spread evenly over ``[0, 1]`` (11: 0, 0.1, ..., 1). Queries
    without any relevant item raise ValueError naming them.

    Returns:
        ``(recall_levels, precision)``, two float64 arrays of equal length.
    """
    cs = _check_chunk(chunk_size)
    q, g, ql, gl = _validate_label_retrieval(query_emb, gallery_emb, query_labels, gallery_labels)
    levels = np.linspace(0.0, 1.0, int(recall_levels)) if isinstance(recall_levels, int) else np.asarray(
        recall_levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or (levels < 0).any() or (levels > 1).any():
        raise ValueError(f"recall_levels must be a count or values in [0, 1], got {recall_levels!r}")
    lv = torch.as_tensor(levels, dtype=torch.float64, device=q.device)
    scorer = _GalleryScorer(g)
    total = torch.zeros(len(levels), dtype=torch.float64, device=q.device)
    ranks = torch.arange(1, g.shape[0] + 1, dtype=torch.float64, device=q.device)
    for a in range(0, q.shape[0], cs):
        rel = _relevance(ql[a : a + cs], gl)
        n_rel = rel.sum(dim=1)
        if bool((n_rel == 0).any()):
            i = a + int(torch.nonzero(n_rel == 0)[0, 0])
            raise ValueError(f"query {i} has no relevant item in the gallery (query_labels[{i}])")
        scores = scorer(q[a : a + cs])
        # pessimistic order: a stable sort by relevance (irrelevant first), then a stable one by score
        by_rel = torch.argsort(rel.to(torch.int8), dim=1, stable=True)
        order = torch.gather(by_rel, 1, torch.argsort(torch.gather(scores, 1, by_rel), dim=1, descending=True,
                                                      stable=True))
        hits = torch.gather(rel, 1, order).cumsum(dim=1, dtype=torch.float64)
        precision = hits / ranks
        recall = hits / n_rel[:, None].to(torch.float64)
        # best precision at recall >= t: a running maximum from the end, read at the first rank reaching t
        best_after = precision.flip(1).cummax(dim=1).values.flip(1)
        first = torch.searchsorted(recall.contiguous(), lv.expand(len(recall), -1).contiguous(), right=False)
        total += torch.gather(best_after, 1, first.clamp(max=g.shape[0] - 1)).sum(dim=0)
    return levels, (total / q.shape[0]).cpu().numpy()
