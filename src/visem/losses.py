"""Training losses of visem, each a pure function of tensors.

Every function takes embeddings (or distribution parameters) that the caller
computed, and returns a tensor that autograd can differentiate; no function
calls a model, holds state or normalises its inputs behind the caller's back.
The docstring of each loss is a small design note: the formula, the paper and
equation it comes from (the seeds are indexed in ``shared/seeds/README.md``),
the shapes it expects and a short example.

Conventions shared by all functions:

* Inputs are validated eagerly. A wrong number of dimensions, mismatched
  shapes or a non-finite value raise :class:`ValueError` naming the argument
  and its shape. (The finiteness check reads one boolean back from the
  device, i.e. it synchronises a GPU stream once per call.)
* Reductions are stated in each docstring. Losses return a 0-d tensor unless
  documented as per-sample.

Functions
---------
ranking_loss        bidirectional hinge triplet loss (seed 001 Eq. 8; seed 003 Eq. 2)
mmd                 squared maximum mean discrepancy, Gaussian kernels (seed 001 Eq. 9-10; seed 004 Eq. 7)
median_bandwidth    the median heuristic's kernel bandwidth for mmd
kl_diag_gaussians   KL(q || p) between diagonal Gaussians (seed 004 Eq. 1-2; seed 002 Eq. 2)
wasserstein2_diag   2-Wasserstein distance between diagonal Gaussians (seed 004 Eq. 5)
grad_reverse        gradient reversal layer (seed 003 Sec. 3.3, after Ganin & Lempitsky)
grl_schedule        the DANN schedule 2 / (1 + exp(-10 p)) - 1 (seed 003 Sec. 4.3)
contractive_penalty squared Frobenius norm of a one-layer encoder's Jacobian (ReViSE, seed 000)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "contractive_penalty",
    "grad_reverse",
    "grl_schedule",
    "kl_diag_gaussians",
    "lsgan_loss",
    "median_bandwidth",
    "mmd",
    "ranking_hinges",
    "ranking_loss",
    "ranking_loss_from_scores",
    "wasserstein2_diag",
]


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------
def _check_tensor(name: str, x: Any, ndim: int | None = None) -> Tensor:
    """Return ``x`` if it is a finite floating tensor with ``ndim`` dims."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values (shape {tuple(x.shape)})")
    return x


def _check_broadcast(**tensors: Tensor) -> None:
    """Raise ValueError if the named tensors do not broadcast together."""
    try:
        torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        desc = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from None


# --------------------------------------------------------------------------
# ranking loss
# --------------------------------------------------------------------------
def ranking_loss(img: Tensor, txt: Tensor, margin: float = 0.2, hardest: bool = False,
                 reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    r"""Bidirectional hinge triplet ranking loss on the in-batch score matrix.

    Row ``k`` of ``img`` and row ``k`` of ``txt`` form a matching pair; every
    other row of the batch is a negative. With ``S = img @ txt.T`` (dot
    products of the inputs as given; pass L2-normalised embeddings to get the
    cosine similarity of seed 001 Eq. 7) and ``[x]_+ = max(0, x)``:

    * ``hardest=False``, sum over all negatives (seed 001 Eq. 8)::

        l_k = sum_{j != k} [margin - S_kk + S_kj]_+     (image k -> negative captions)
            + sum_{i != k} [margin - S_kk + S_ik]_+     (caption k -> negative images)

    * ``hardest=True``, hardest negative in each direction (seed 003 Eq. 2,
      VSE++ "max of hinges")::

        l_k = max_{j != k} [margin - S_kk + S_kj]_+ + max_{i != k} [margin - S_kk + S_ik]_+

    Reduction over the ``B`` pairs of the batch:

    * ``"sum"`` (default): ``sum_k l_k``, what VSE++'s and SCAN's reference
      code returns (``cost_s.sum() + cost_im.sum()``) and what seed 001
      Eq. 11-12 write (per-pair terms summed over the data). The weights
      that papers put beside this loss (seed 003's six GRL weights, seed
      001's MMD) assume it.
    * ``"mean"``: ``mean_k l_k``, the ``1/L`` printed in seed 003 Eq. 2. It
      divides the ranking gradient by ``B`` against every per-batch term next
      to it (an MMD, a discriminator's mean log-likelihood).

    Args:
        img: ``(B, D)`` image embeddings, ``B >= 2``.
        txt: ``(B, D)`` text embeddings, row-aligned with ``img``.
        margin: the margin ``alpha`` (0.2 in seeds 001 and 003).
        hardest: use the hardest negative only (VSE++) instead of all.
        reduction: ``"sum"`` or ``"mean"`` over the pairs.

    Returns:
        0-d tensor, both directions' hinges reduced over the ``B`` pairs.

    Example:
        >>> img = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
        >>> txt = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
        >>> ranking_loss(img, txt, margin=0.2, hardest=True).shape
        torch.Size([])
    """
    _check_tensor("img", img, 2)
    _check_tensor("txt", txt, 2)
    if img.shape != txt.shape:
        raise ValueError(
            f"img and txt must have the same shape (row-aligned pairs), "
            f"got img {tuple(img.shape)} and txt {tuple(txt.shape)}"
        )
    if img.shape[0] < 2:
        raise ValueError(f"ranking_loss needs a batch of at least 2 pairs, got img {tuple(img.shape)}")
    return ranking_loss_from_scores(img @ txt.T, margin=margin, hardest=hardest, reduction=reduction)


def ranking_loss_from_scores(scores: Tensor, margin: float = 0.2, hardest: bool = False,
                             reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """:func:`ranking_loss` on a precomputed ``(B, B)`` score matrix (diagonal = pairs).

    For models whose pair score is not a dot product of two embeddings (SCAN's
    cross attention); same formula, ``reduction`` and ``hardest`` switch.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    _check_tensor("scores", scores, 2)
    if scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"scores must be a square (B, B) matrix with B >= 2, got {tuple(scores.shape)}")
    per_pair = ranking_hinges(scores, scores.T, margin=margin, hardest=hardest)
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


def ranking_hinges(scores_i2t: Tensor, scores_t2i: Tensor, offset: int = 0, margin: float = 0.2,
                   hardest: bool = False) -> Tensor:
    """The per-pair terms ``l_k`` of :func:`ranking_loss` for ``b`` pairs against a gallery of ``G``.

    The rectangular form of the loss, for data-parallel training where each
    process holds ``b`` of the ``G`` pairs of the global batch (open_clip's
    "local loss"): ``scores_i2t[k, j]`` scores this process's image ``k``
    against caption ``j`` of the whole batch, ``scores_t2i[k, i]`` its
    caption ``k`` against image ``i``, and pair ``k`` sits at gallery
    position ``offset + k``. With ``b = G`` and ``offset = 0``,
    ``ranking_hinges(S, S.T)`` is the per-pair vector of the square loss,
    so ``sum`` / ``mean`` of it is :func:`ranking_loss_from_scores`.

    Returns:
        ``(b,)`` tensor: image ``k`` against its negative captions plus
        caption ``k`` against its negative images (summed, or the hardest
        of each with ``hardest=True``).
    """
    _check_tensor("scores_i2t", scores_i2t, 2)
    _check_tensor("scores_t2i", scores_t2i, 2)
    if scores_i2t.shape != scores_t2i.shape:
        raise ValueError(f"scores_i2t {tuple(scores_i2t.shape)} and scores_t2i {tuple(scores_t2i.shape)} "
                         "must both be (pairs here, pairs in the batch)")
    b, g = scores_i2t.shape
    if not 0 <= offset <= g - b or g < 2:
        raise ValueError(f"{b} pairs at offset {offset} do not fit a gallery of {g} (need >= 2)")
    cols = torch.arange(b, device=scores_i2t.device) + offset
    own = torch.zeros(b, g, dtype=torch.bool, device=scores_i2t.device)
    own[torch.arange(b, device=own.device), cols] = True
    pos_i = scores_i2t.gather(1, cols[:, None])
    pos_t = scores_t2i.gather(1, cols[:, None])
    # image k as anchor, caption j as negative; caption k as anchor, image i as negative
    cost_txt = (margin + scores_i2t - pos_i).clamp(min=0).masked_fill(own, 0.0)
    cost_img = (margin + scores_t2i - pos_t).clamp(min=0).masked_fill(own, 0.0)
    if hardest:  # hinges are >= 0, so the zeroed positive never wins over a negative
        return cost_txt.amax(dim=1) + cost_img.amax(dim=1)
    return cost_txt.sum(dim=1) + cost_img.sum(dim=1)


# --------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------
def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``(n, m)``, clamped at 0."""
    aa = a.pow(2).sum(dim=1, keepdim=True)
    bb = b.pow(2).sum(dim=1, keepdim=True)
    return (aa + bb.T - 2.0 * (a @ b.T)).clamp(min=0.0)


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    r"""The median heuristic's Gaussian bandwidth for :func:`mmd` of ``x`` against ``y`` (Gretton et al. 2012).

    ``sigma = sqrt(median_{a != b} ||a - b||^2 / 2)`` over every pair of
    distinct rows of ``[x; y]`` (the lower median when their number is even), computed without gradient (the bandwidth is a
    setting, not a parameter), so ``exp(-d^2 / (2 sigma^2))`` is ``exp(-1)``
    at the median distance: the kernel neither saturates at 1 nor vanishes,
    whatever the scale of the samples. Returns a float > 0 (1.0 when every
    row is equal).
    """
    _check_tensor("x", x, 2)
    _check_tensor("y", y, 2)
    with torch.no_grad():
        z = torch.cat([x, y]).double()
        d2 = _sq_dists(z, z)
        off = d2[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
        med = float(off.median()) if off.numel() else 0.0
    return math.sqrt(med / 2.0) if med > 0 else 1.0


def mmd(x: Tensor, y: Tensor, sigmas: Sequence[float] = (1.0,), unbiased: bool = False) -> Tensor:
    r"""Squared maximum mean discrepancy with (a sum of) Gaussian kernels.

    Seed 001 Eq. 9 (and seed 004 Eq. 7) define
    ``MMD^2 = || E_p[k(x, .)] - E_q[k(y, .)] ||^2_H``; with the Gaussian kernel
    of seed 001 Eq. 10, ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``, summed
    over the bandwidths in ``sigmas`` (a sum of kernels is a kernel, so this is
    also the sum of the per-bandwidth MMDs). The estimate from samples is

    * biased (V-statistic, default)::

        mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j)

    * unbiased (U-statistic, ``unbiased=True``): the first two means skip the
      diagonal ``i = i'`` (divide by ``n (n - 1)`` and ``m (m - 1)``); it can
      be slightly negative and needs ``n, m >= 2``.

    Seed 004 writes the kernel as ``exp(-s ||a - b||^2)``; its ``s`` is
    ``1 / (2 sigma^2)`` here, i.e. ``sigma = 1 / sqrt(2 s)``. Seed 001 uses
    ``sigma = 1``.

    Squared distances use ``|a|^2 + |b|^2 - 2 a.b`` clamped at 0, so memory is
    ``O(n m)`` rather than ``O(n m d)``; its cancellation error is about
    ``eps * |a|^2`` (use float64 when that matters).

    Args:
        x: ``(n, d)`` samples of the first distribution (e.g. image codes).
        y: ``(m, d)`` samples of the second; ``n != m`` is allowed.
        sigmas: one or more positive bandwidths.
        unbiased: drop the diagonal terms of the within-sample means.

    Returns:
        0-d tensor.

    Example:
        >>> x, y = torch.randn(32, 8), torch.randn(20, 8) + 1.0
        >>> float(mmd(x, y, sigmas=(0.5, 1.0, 2.0))) > 0
        True
    """
    _check_tensor("x", x, 2)
    _check_tensor("y", y, 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same feature dimension, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"x and y must be non-empty, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    sig = [float(s) for s in sigmas]
    if not sig or any(not math.isfinite(s) or s <= 0 for s in sig):
        raise ValueError(f"sigmas must be a non-empty sequence of positive numbers, got {tuple(sigmas)}")
    n, m = x.shape[0], y.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(
            f"the unbiased MMD needs at least 2 samples on each side, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )

    def kernel(d2: Tensor) -> Tensor:
        return sum(torch.exp(-d2 / (2.0 * s * s)) for s in sig)  # type: ignore[return-value]

    k_xx = kernel(_sq_dists(x, x))
    k_yy = kernel(_sq_dists(y, y))
    k_xy = kernel(_sq_dists(x, y))
    if unbiased:
        xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
        yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    else:
        xx = k_xx.mean()
        yy = k_yy.mean()
    return xx + yy - 2.0 * k_xy.mean()


# --------------------------------------------------------------------------
# Gaussian divergences
# --------------------------------------------------------------------------
def kl_diag_gaussians(
    mu_q: Tensor,
    logvar_q: Tensor,
    mu_p: Tensor | None = None,
    logvar_p: Tensor | None = None,
) -> Tensor:
    r"""KL(q || p) between diagonal Gaussians, summed over the last dimension.

    With ``q = N(mu_q, diag(exp(logvar_q)))`` and
    ``p = N(mu_p, diag(exp(logvar_p)))``::

        KL = 1/2 sum_k [ logvar_p - logvar_q
                         + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1 ]

    This is the KL term of the VAE objective (seed 004 Eq. 1-2, with
    ``p = N(0, I)``) and of PSE's label-conditioned prior (seed 002 Eq. 2,
    with ``p`` from the label encoder). ``mu_p`` defaults to 0 and
    ``logvar_p`` to 0 (unit variance), independently of each other.

    Args:
        mu_q, logvar_q: ``(..., K)`` parameters of ``q``.
        mu_p, logvar_p: parameters of ``p``, broadcastable against ``mu_q``.

    Returns:
        ``(...)`` tensor, the KL of each sample (the broadcast leading shape).

    Example:
        >>> mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
        >>> kl_diag_gaussians(mu, logvar)
        tensor([0., 0., 0., 0.])
    """
    _check_tensor("mu_q", mu_q)
    _check_tensor("logvar_q", logvar_q)
    named = {"mu_q": mu_q, "logvar_q": logvar_q}
    if mu_p is not None:
        named["mu_p"] = _check_tensor("mu_p", mu_p)
    if logvar_p is not None:
        named["logvar_p"] = _check_tensor("logvar_p", logvar_p)
    if mu_q.dim() == 0:
        raise ValueError(f"mu_q must have at least 1 dimension, got shape {tuple(mu_q.shape)}")
    _check_broadcast(**named)
    diff2 = (mu_q - mu_p).pow(2) if mu_p is not None else mu_q.pow(2)
    if logvar_p is None:
        terms = -logvar_q + logvar_q.exp() + diff2 - 1.0
    else:
        # exp(logvar_q - logvar_p) rather than exp(logvar_q) / exp(logvar_p):
        # no overflow for large log-variances, and KL(q || q) is exactly 0.
        dlv = logvar_p - logvar_q
        terms = dlv + torch.exp(-dlv) + diff2 * torch.exp(-logvar_p) - 1.0
    return 0.5 * terms.sum(dim=-1)


def wasserstein2_diag(mu_1: Tensor, logvar_1: Tensor, mu_2: Tensor, logvar_2: Tensor) -> Tensor:
    r"""2-Wasserstein distance between diagonal Gaussians (not squared).

    For ``N(mu_1, diag(sigma_1^2))`` and ``N(mu_2, diag(sigma_2^2))`` with
    ``sigma = exp(logvar / 2)``, the covariances commute and seed 004 Eq. 4
    reduces to Eq. 5::

        W_2 = sqrt( ||mu_1 - mu_2||^2 + ||sigma_1 - sigma_2||^2 )

    Seed 004 Eq. 6 sums these distances (image vs class, text vs class).

    Gradient at zero distance: ``sqrt`` has an infinite derivative at 0. The
    square root is taken with the "double where" guard: where the squared
    distance is 0 the output is exactly 0 and its gradient is 0 (a valid
    subgradient of the norm); elsewhere the value and gradient are exact. No
    epsilon biases the value.

    Args:
        mu_1, logvar_1, mu_2, logvar_2: ``(..., K)`` tensors that broadcast.

    Returns:
        ``(...)`` tensor, one distance per sample.

    Example:
        >>> mu, lv = torch.zeros(2, 4), torch.zeros(2, 4)
        >>> wasserstein2_diag(mu, lv, mu + 3.0, lv)
        tensor([6., 6.])
    """
    for name, t in (("mu_1", mu_1), ("logvar_1", logvar_1), ("mu_2", mu_2), ("logvar_2", logvar_2)):
        _check_tensor(name, t)
        if t.dim() == 0:
            raise ValueError(f"{name} must have at least 1 dimension, got shape {tuple(t.shape)}")
    _check_broadcast(mu_1=mu_1, logvar_1=logvar_1, mu_2=mu_2, logvar_2=logvar_2)
    sq = (mu_1 - mu_2).pow(2) + (torch.exp(0.5 * logvar_1) - torch.exp(0.5 * logvar_2)).pow(2)
    d2 = sq.sum(dim=-1)
    positive = d2 > 0
    safe = torch.where(positive, d2, torch.ones_like(d2))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(d2))


# --------------------------------------------------------------------------
# gradient reversal
# --------------------------------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output * (-ctx.scale), None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    r"""Gradient reversal layer: identity forward, ``-scale * grad`` backward.

    Seed 003 (Sec. 3.3, Eq. 4-10) trains its six domain discriminators through
    a GRL (Ganin & Lempitsky 2015): the discriminator minimises its loss while
    the encoders below the GRL receive the reversed gradient and so maximise
    it (the min-max of seed 003 Eq. 10). ``scale`` is the ``gamma`` of seed 003
    Sec. 4.3, usually :func:`grl_schedule` of the training progress.

    Args:
        x: any tensor.
        scale: non-negative, finite multiplier of the reversed gradient.

    Returns:
        A tensor equal to ``x`` (a view); gradients flowing back through it are
        multiplied by ``-scale``.

    Example:
        >>> x = torch.ones(3, requires_grad=True)
        >>> grad_reverse(x, 0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000, -0.5000])
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    s = float(scale)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    return _GradReverse.apply(x, s)


def lsgan_loss(pred: Tensor, real: bool) -> Tensor:
    r"""Least-squares GAN loss: the mean of ``(pred - 1)^2`` (``real``) or of ``pred^2`` (fake).

    Mao et al. 2017 (LSGAN, Eq. 2 with targets ``a = 0``, ``b = c = 1``), the
    adversarial loss of GDH's and SEM-PCYC's published code: a discriminator
    calls it with ``real`` for real inputs and not for generated ones, a
    generator with ``real`` for its own outputs. Mean over every element.

    Example:
        >>> float(lsgan_loss(torch.tensor([1.0, 0.0]), real=True))
        0.5
    """
    return torch.nn.functional.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def grl_schedule(p: float, gamma: float = 10.0) -> float:
    r"""DANN's GRL coefficient ``2 / (1 + exp(-gamma p)) - 1``.

    Seed 003 Sec. 4.3 sets the reversal weight to this with ``gamma = 10`` (its
    ``eta``) and ``p`` rising linearly from 0 to 1 over training; it grows
    from 0 at the start to about 0.9999 at the end, so early, noisy
    discriminator gradients barely reach the encoders.

    Args:
        p: training progress in ``[0, 1]``.
        gamma: steepness (10 in seed 003 and DANN).

    Returns:
        The coefficient, a float in ``[0, 1)``.

    Example:
        >>> grl_schedule(0.0), round(grl_schedule(1.0), 4)
        (0.0, 0.9999)
    """
    pf = float(p)
    if not (0.0 <= pf <= 1.0):
        raise ValueError(f"p (training progress) must be in [0, 1], got {p!r}")
    return 2.0 / (1.0 + math.exp(-float(gamma) * pf)) - 1.0


# --------------------------------------------------------------------------
# contractive penalty
# --------------------------------------------------------------------------
def contractive_penalty(
    h: Tensor,
    weight: Tensor,
    activation: Literal["sigmoid", "tanh"] = "sigmoid",
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""Squared Frobenius norm of the Jacobian of ``h = act(W x + b)``.

    ReViSE (seed 000) regularises its visual auto-encoder with the contractive
    penalty of Rifai et al. (2011), ``||J_h(x)||_F^2`` with
    ``J_ji = dh_j / dx_i = act'(a_j) W_ji``. For an element-wise activation it
    has the closed form::

        ||J||_F^2 = sum_j act'(a_j)^2 * sum_i W_ji^2

    where ``act'`` is written in terms of the output: ``h (1 - h)`` for the
    sigmoid and ``1 - h^2`` for tanh. Only ``h`` and ``W`` are needed, so the
    caller passes the encoder output (keep it in the graph so the penalty
    trains both ``W`` and ``b``).

    Args:
        h: ``(B, H)`` encoder outputs ``act(x @ W.T + b)``.
        weight: ``(H, D)`` encoder weight (``torch.nn.Linear.weight`` layout).
        activation: ``"sigmoid"`` or ``"tanh"``, the one that produced ``h``.
        reduction: ``"mean"`` over the batch (default), ``"sum"``, or
            ``"none"`` for the ``(B,)`` per-sample values.

    Returns:
        0-d tensor, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> enc = torch.nn.Linear(10, 4)
        >>> x = torch.randn(5, 10)
        >>> contractive_penalty(torch.sigmoid(enc(x)), enc.weight).shape
        torch.Size([])
    """
    _check_tensor("h", h, 2)
    _check_tensor("weight", weight, 2)
    if weight.shape[0] != h.shape[1]:
        raise ValueError(
            f"weight must be (H, D) with H = h.shape[1], got h {tuple(h.shape)} and weight {tuple(weight.shape)}"
        )
    if activation == "sigmoid":
        dh = h * (1.0 - h)
    elif activation == "tanh":
        dh = 1.0 - h.pow(2)
    else:
        raise ValueError(f"activation must be 'sigmoid' or 'tanh', got {activation!r}")
    per_sample = dh.pow(2) @ weight.pow(2).sum(dim=1)
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
