"""Zero-shot recognition by compatibility with class side information.

Every model here scores an image ``x`` against a class ``c`` described by a
side-information vector ``s_c`` (attributes, or the word vector of the class
name) with a compatibility ``F(x, s_c)``, and predicts the best-scoring class
among the candidates. Unseen classes need only their ``s_c``.

* ``revise`` -- ReViSE (seed 000, Tsai, Huang & Salakhutdinov, ICCV 2017):
  a contractive auto-encoder on image features and an auto-encoder on class
  side information whose codes share one space, a hinge ranking loss between
  an image's code and its class's code, a Gaussian MMD between the visual and
  textual codes, and the unsupervised-data adaptation (self-training on the
  model's own predictions for unlabelled images).
* ``devise`` -- DeViSE (Frome et al. 2013): a linear map from image features
  into the class-embedding space, hinge rank loss against the other classes.
* ``eszsl`` -- ESZSL (Romera-Paredes & Torr 2015), closed form.
* ``sae`` -- semantic auto-encoder (Kodirov, Xiang & Gong 2017), closed form
  (a Sylvester equation).
* ``devise-cmr`` -- the DeViSE-style baseline of zero-shot cross-modal
  retrieval: images and texts each mapped linearly into the class-embedding
  space.

Batches of the zero-shot models hold ``image`` ``(B, image_dim)``, ``label``
``(B,)`` (row indices into ``class_emb``) and ``class_emb``
``(C, class_dim)`` (the side information of the classes the model may
predict; a static tensor in the trainer). Transductive training adds
``unlabeled`` ``(U, image_dim)`` (unlabelled images) and optionally
``unlabeled_classes`` ``(C,)`` bool, the classes those images may belong to,
and ``labeled_classes`` ``(C,)`` bool, the classes that have labelled images
(the negatives a labelled image is ranked against).

:meth:`ZeroShotModel.prepare` runs once before gradient training (input
statistics) and :meth:`ZeroShotModel.finalize` once after it, both with the
whole training set.

The closed-form models (ESZSL, SAE) also define their objective as
:meth:`loss`, so gradient training works and the tests can check that the
closed-form solution is a stationary point of that objective;
:meth:`ZeroShotModel.finalize` solves it exactly on the whole training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.distributed import batch_sum, gather
from visem.losses import contractive_penalty, mmd
from visem.metrics import per_class_accuracy
from visem.models.base import EmbeddingModel, Objective
from visem.models.cmr import CrossModalModel
from visem.models.registry import register_model

__all__ = [
    "DeViSE",
    "DeViSECMR",
    "ESZSL",
    "ReViSE",
    "SAE",
    "ZeroShotModel",
    "class_hinge_loss",
    "eszsl_solve",
    "sae_solve",
    "sylvester_solve",
]


# --------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------
def class_hinge_loss(scores: Tensor, label: Tensor, margin: float = 0.1, candidates: Tensor | None = None,
                     reduction: Literal["mean", "sum", "none"] = "mean") -> Tensor:
    r"""Hinge rank loss of each sample's class against every other candidate class.

    DeViSE (Frome et al. 2013, Eq. 1) and ReViSE's supervised term (seed 000)::

        l_i = sum_{j != y_i, j in candidates} [margin - S[i, y_i] + S[i, j]]_+

    averaged (``reduction="mean"``) or summed (``"sum"``) over the batch, or
    per sample (``"none"``).

    Args:
        scores: ``(B, C)`` compatibility of each sample with each class.
        label: ``(B,)`` integer class index of each sample, in ``[0, C)``.
        margin: the margin (0.1 in DeViSE).
        candidates: optional ``(C,)`` bool mask of the classes the samples
            are ranked against (default: all); every label must be one.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"``.

    Returns:
        0-d tensor, or ``(B,)`` with ``reduction="none"``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, C), got shape {tuple(scores.shape)}")
    if label.dim() != 1 or label.shape[0] != scores.shape[0]:
        raise ValueError(f"label must be (B,) with B = {scores.shape[0]}, got shape {tuple(label.shape)}")
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= scores.shape[1]):
        raise ValueError(f"label values must lie in [0, {scores.shape[1]}), got range "
                         f"[{int(label.min())}, {int(label.max())}]")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    pos = scores.gather(1, label[:, None])
    cost = (margin - pos + scores).clamp(min=0)
    off = F.one_hot(label, scores.shape[1]).bool()
    if candidates is not None:
        candidates = candidates.bool()
        if candidates.shape != (scores.shape[1],):
            raise ValueError(f"candidates must be ({scores.shape[1]},) bool, got shape {tuple(candidates.shape)}")
        if label.numel() and not bool(candidates[label].all()):
            raise ValueError("every label must be one of the candidate classes")
        off = off | ~candidates[None, :]
    per_sample = cost.masked_fill(off, 0.0).sum(dim=1)
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def _check_batch(batch: Mapping[str, Tensor], image_dim: int, class_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    for key in ("image", "label", "class_emb"):
        if key not in batch:
            raise ValueError(f"zero-shot batch needs {key!r}; got keys {sorted(batch)}")
    x, y, s = batch["image"], batch["label"], batch["class_emb"]
    if x.dim() != 2 or x.shape[1] != image_dim:
        raise ValueError(f"image must be (B, {image_dim}), got shape {tuple(x.shape)}")
    if s.dim() != 2 or s.shape[1] != class_dim:
        raise ValueError(f"class_emb must be (C, {class_dim}), got shape {tuple(s.shape)}")
    return x, y.long(), s


class ZeroShotModel(EmbeddingModel):
    """Base of compatibility models: ``score(x, c) = embed_image(x) . embed_class(s_c)``.

    Subclasses implement :meth:`embed_image` and :meth:`embed_class`;
    :meth:`finalize` runs after gradient training on the whole training set
    (closed-form solvers, post-hoc classifiers) and is a no-op by default.
    """

    def embed_image(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def embed_class(self, class_emb: Tensor) -> Tensor:
        raise NotImplementedError

    def class_scores(self, image: Tensor, class_emb: Tensor, class_ids: Tensor | None = None) -> Tensor:
        """``(N, C)`` compatibility of each image with each candidate class.

        ``class_ids`` (global ids of the candidate rows) matter only to models
        that remember per-class training data (CADA-VAE's classifier).
        """
        return self.embed_image(image) @ self.embed_class(class_emb).T

    @torch.no_grad()
    def predict(self, image: Tensor, class_emb: Tensor, class_ids: Tensor | None = None) -> Tensor:
        """Row index into ``class_emb`` of the best class of each image."""
        was = self.training
        self.eval()
        try:
            return self.class_scores(image, class_emb, class_ids).argmax(dim=1)
        finally:
            self.train(was)

    def prepare(self, train: Mapping[str, Tensor]) -> None:
        """Called once before gradient training with the whole training set (input statistics); no-op by default."""

    def finalize(self, train: Mapping[str, Tensor]) -> None:
        """Called once after gradient training with the whole training set."""

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Per-class mean top-1 (percent) of ``data['image']`` among ``data['class_emb']``."""
        pred = self.predict(data["image"], data["class_emb"], data.get("class_ids"))
        return {"accuracy": per_class_accuracy(pred, data["label"])}

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        c = getattr(self.config, "n_classes", None) or 4
        return {
            "image": torch.randn(n, self.config.image_dim, generator=generator),
            "label": torch.randint(0, c, (n,), generator=generator),
            "class_emb": torch.randn(c, self.config.class_dim, generator=generator),
        }


# --------------------------------------------------------------------------
# ReViSE
# --------------------------------------------------------------------------
@dataclass
class ReViSEConfig:
    image_dim: int | None = None
    class_dim: int | None = None
    code_dim: int = 32
    activation: Literal["sigmoid", "tanh"] = "sigmoid"
    margin: float = 0.1
    rec_weight: float = 0.01  # alpha: both reconstructions (squared errors summed over dimensions)
    contractive_weight: float = 0.1  # lambda of the contractive penalty
    mmd_weight: float = 10.0  # beta: one MMD per batch against per-sample terms summed over the batch
    mmd_sigmas: tuple[float, ...] = (0.5, 1.0, 2.0)
    standardize_side: bool = True  # centre + scale the side information with the training classes' statistics
    adapt_weight: float = 0.0  # > 0 turns on the unsupervised-data adaptation
    adapt_start: float = 0.5  # fraction of training after which it starts
    reduction: Literal["sum", "mean"] = "sum"  # "mean": per-element means (the reading visem used before)


@register_model("revise", config=ReViSEConfig, family="zeroshot",
                paper="seed 000 (ReViSE, Tsai et al. ICCV 2017)")
class ReViSE(ZeroShotModel):
    r"""ReViSE: contractive visual AE + textual AE, hinge ranking, MMD, self-training adaptation.

    Seed 000 (``000_ad0c7029bf7aca8c.txt``) is cut before its method
    section: the terms below follow the method as ``shared/seeds/README.md``
    summarises it; the seed copy gives no equation numbers and no weights,
    so the reductions and the weights are visem's choices, written out here
    and measured in ``docs/zeroshot.md`` ("Term shares").

    Per image ``x_i`` of the batch (the labelled images, and in the
    transductive setting the unlabelled ones ``u_k`` too, since the visual
    auto-encoder learns from both):

    * visual contractive auto-encoder (Rifai et al. 2011):
      ``h = act(W_v x + b_v)``, linear decoder ``x' = D_v h``;
      ``rec_v = sum_i ||x_i - x'_i||^2`` (squared error summed over the
      feature dimensions) and ``contractive = sum_i ||J_h(x_i)||_F^2``
      (:func:`visem.losses.contractive_penalty`), the pairing of Rifai et
      al.'s ``J_CAE = sum_x L(x, g(f(x))) + lambda ||J_f(x)||_F^2``;
    * textual auto-encoder on the side information, same shape, no
      contractive term: each labelled image pairs with its class's side
      information, ``rec_t = sum_i ||s_{y_i} - s'_{y_i}||^2``;
    * supervised term: hinge ranking of the compatibility (the inner product
      of the codes) of each labelled image with its class against every
      other class that has labelled images (``labeled_classes``; in the
      transductive setting the unseen classes are *not* negatives of the
      labelled images), ``sup = sum_i sum_{j != y_i} [margin - h_i.t_{y_i}
      + h_i.t_j]_+`` (:func:`class_hinge_loss`);
    * ``mmd``: one Gaussian-kernel MMD per batch (:func:`visem.losses.mmd`,
      bandwidths ``mmd_sigmas``) between the visual codes of every image of
      the batch (labelled and unlabelled) and the textual codes of the
      classes of ``class_emb``, each class once;
    * ``adapt`` (the unsupervised-data adaptation): from ``adapt_start`` of
      training on, the current model labels each unlabelled image among
      ``unlabeled_classes`` (:meth:`pseudo_labels`) and these labels enter
      the same hinge, ranked against those classes. The labels are
      recomputed at every step, so prediction and adaptation iterate.

    ``loss = sup + rec_weight (rec_v + rec_t) + contractive_weight
    contractive + mmd_weight mmd + adapt_weight adapt``.

    **Reductions.** Every per-sample term is summed over the batch, the
    reconstructions over their dimensions, and the MMD is one statistic of
    the batch (as an objective written as sums over the data reads); the
    weights assume exactly that: ``mmd_weight`` weighs one MMD against
    sums over ``B`` images, ``rec_weight`` a sum over the feature
    dimensions. ``reduction="mean"`` gives the per-element means visem used
    before (each term a batch mean, reconstructions a mean over dimensions);
    with it the MMD carried most of the encoders' gradient and collapsed the
    visual codes onto the textual ones (see ``docs/zeroshot.md``).

    **Side information** is centred and scaled by one number (its root mean
    square after centring) with the statistics of the training classes
    (:meth:`prepare`), as the image features are z-scored: raw attribute
    vectors (Xian et al.'s are l2-normalised, entries near 0.1) otherwise
    leave every class code at ``act(b_t)`` and the textual reconstruction
    without gradient. Without :meth:`prepare` the side information is used
    as given.
    """

    def __init__(self, config: ReViSEConfig) -> None:
        super().__init__(config)
        if config.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {config.reduction!r}")
        h = config.code_dim
        self.enc_v = nn.Linear(config.image_dim, h)
        self.dec_v = nn.Linear(h, config.image_dim)
        self.enc_t = nn.Linear(config.class_dim, h)
        self.dec_t = nn.Linear(h, config.class_dim)
        self.register_buffer("side_mean", torch.zeros(config.class_dim))
        self.register_buffer("side_scale", torch.ones(()))

    def _act(self, a: Tensor) -> Tensor:
        return torch.sigmoid(a) if self.config.activation == "sigmoid" else torch.tanh(a)

    @torch.no_grad()
    def prepare(self, train: Mapping[str, Tensor]) -> None:
        """Fit the side-information centring and scale on the training classes (``standardize_side``).

        ``train["class_emb"]`` rows of the classes with labelled images
        (``train["labeled_classes"]`` when given, else every row).
        """
        if not self.config.standardize_side:
            return
        s = train["class_emb"]
        keep = train.get("labeled_classes")
        if keep is not None:
            s = s[keep.bool()]
        mean = s.mean(0)
        rms = float((s - mean).pow(2).mean().sqrt())
        self.side_mean.copy_(mean)
        self.side_scale.fill_(rms if rms > 1e-12 else 1.0)

    def _side(self, class_emb: Tensor) -> Tensor:
        return (class_emb - self.side_mean) / self.side_scale

    def embed_image(self, image: Tensor) -> Tensor:
        return self._act(self.enc_v(image))

    def embed_class(self, class_emb: Tensor) -> Tensor:
        return self._act(self.enc_t(self._side(class_emb)))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.enc_v.parameters(), *self.enc_t.parameters()]

    @torch.no_grad()
    def pseudo_labels(self, image: Tensor, label: Tensor, class_emb: Tensor,
                      candidates: Tensor | None = None) -> Tensor:
        """Labels for the adaptation: ``label`` where ``label >= 0``, else the model's prediction.

        ``label = -1`` marks an unlabelled image. Predictions are the best
        class of ``class_emb`` (among ``candidates``, a ``(C,)`` bool mask,
        when given). Labelled images are never relabelled.
        """
        scores = self.embed_image(image) @ self.embed_class(class_emb).T
        if candidates is not None:
            scores = scores.masked_fill(~candidates.bool()[None, :], float("-inf"))
        pred = scores.argmax(dim=1)
        label = label.long()
        return torch.where(label >= 0, label, pred)

    def _reduce(self, per_sample: Tensor) -> Tensor:
        """Summed over the (global) batch, or averaged, as ``config.reduction`` says."""
        return batch_sum(per_sample) if self.config.reduction == "sum" else per_sample.mean()

    def _sq_error(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-row squared error: summed over dimensions (``"sum"``) or averaged (``"mean"``)."""
        e = (a - b).pow(2)
        return e.sum(-1) if self.config.reduction == "sum" else e.mean(-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        cfg = self.config
        x, y, s = _check_batch(batch, cfg.image_dim, cfg.class_dim)
        c = s.shape[0]
        labeled = _class_mask(batch, "labeled_classes", c, s.device)
        u = batch.get("unlabeled")
        n_u = 0 if u is None else int(u.shape[0])
        if n_u and (u.dim() != 2 or u.shape[1] != cfg.image_dim):
            raise ValueError(f"unlabeled must be (U, {cfg.image_dim}), got shape {tuple(u.shape)}")
        xv = torch.cat([x, u]) if n_u else x
        h_all = self.embed_image(xv)  # visual codes of labelled + unlabelled images
        h_v, h_u = h_all[: x.shape[0]], h_all[x.shape[0]:]
        rec_v = self._reduce(self._sq_error(self.dec_v(h_all), xv))
        contr = self._reduce(contractive_penalty(h_all, self.enc_v.weight, cfg.activation, reduction="none"))
        s_in = self._side(s)
        h_t = self._act(self.enc_t(s_in))
        err_t = self._sq_error(self.dec_t(h_t), s_in)  # (C,)
        rec_t = self._reduce(err_t[y])  # each labelled image with its class's side information
        sup = self._reduce(class_hinge_loss(h_v @ h_t.T, y, cfg.margin, candidates=labeled, reduction="none"))
        dist = mmd(gather(h_all), h_t, sigmas=cfg.mmd_sigmas)  # one MMD over the global batch
        adapt, w_adapt = torch.zeros((), device=x.device, dtype=x.dtype), 0.0
        if n_u and cfg.adapt_weight > 0 and progress >= cfg.adapt_start:
            cand = _class_mask(batch, "unlabeled_classes", c, s.device)
            scores_u = h_u @ h_t.T
            with torch.no_grad():
                pseudo = scores_u.masked_fill(~cand[None, :], float("-inf")).argmax(dim=1)
            adapt = self._reduce(class_hinge_loss(scores_u, pseudo, cfg.margin, candidates=cand, reduction="none"))
            w_adapt = cfg.adapt_weight
        return Objective(
            {"sup": sup, "rec_v": rec_v, "rec_t": rec_t, "contractive": contr, "mmd": dist, "adapt": adapt},
            {"rec_v": cfg.rec_weight, "rec_t": cfg.rec_weight, "contractive": cfg.contractive_weight,
             "mmd": cfg.mmd_weight, "adapt": w_adapt})

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        batch = super().example_batch(n, generator)
        batch["unlabeled"] = torch.randn(n, self.config.image_dim, generator=generator)
        return batch


def _class_mask(batch: Mapping[str, Tensor], key: str, n_classes: int, device: torch.device) -> Tensor:
    """``batch[key]`` as a ``(C,)`` bool mask of classes (every class when absent)."""
    m = batch.get(key)
    if m is None:
        return torch.ones(n_classes, dtype=torch.bool, device=device)
    if m.shape != (n_classes,):
        raise ValueError(f"{key} must be a ({n_classes},) bool mask over class_emb's rows, got shape {tuple(m.shape)}")
    if not bool(m.bool().any()):
        raise ValueError(f"{key} marks no class")
    return m.bool()


# --------------------------------------------------------------------------
# DeViSE
# --------------------------------------------------------------------------
@dataclass
class DeViSEConfig:
    image_dim: int | None = None
    class_dim: int | None = None
    margin: float = 0.1


@register_model("devise", config=DeViSEConfig, family="zeroshot", paper="Frome et al. NeurIPS 2013 (DeViSE)")
class DeViSE(ZeroShotModel):
    """DeViSE: linear map of image features into the class-embedding space, hinge rank loss.

    ``score(x, c) = (M x) . s_c / ||s_c||`` (DeViSE normalises the word
    vectors to unit length); the loss is :func:`class_hinge_loss` with margin
    0.1 against every other class of the batch's ``class_emb`` (DeViSE Eq. 1).
    DeViSE fine-tunes the CNN below the map; visem keeps the image features
    fixed, as the zero-shot papers that use it as a baseline do.
    """

    def __init__(self, config: DeViSEConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.image_dim, config.class_dim, bias=False)

    def embed_image(self, image: Tensor) -> Tensor:
        return self.proj(image)

    def embed_class(self, class_emb: Tensor) -> Tensor:
        return F.normalize(class_emb, dim=-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        x, y, s = _check_batch(batch, self.config.image_dim, self.config.class_dim)
        return Objective({"hinge": class_hinge_loss(self.class_scores(x, s), y, self.config.margin)})


@dataclass
class DeViSECMRConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    class_dim: int | None = None
    margin: float = 0.1


@register_model("devise-cmr", config=DeViSECMRConfig, family="zeroshot",
                paper="Frome et al. 2013 (DeViSE), as a seed 004 zero-shot retrieval baseline")
class DeViSECMR(CrossModalModel):
    """DeViSE-style cross-modal baseline: images and texts mapped linearly onto class embeddings.

    Each modality has its own linear map into the class-embedding space and
    the DeViSE hinge rank loss (:func:`class_hinge_loss`, margin 0.1) against
    the unit-normalised class embeddings of ``class_emb``; retrieval ranks by
    the cosine of the two mapped vectors. Batches hold ``image``, ``text``
    (row-aligned pairs), ``label`` and ``class_emb``.
    """

    def __init__(self, config: DeViSECMRConfig) -> None:
        super().__init__(config)
        self.img_proj = nn.Linear(config.image_dim, config.class_dim, bias=False)
        self.txt_proj = nn.Linear(config.text_dim, config.class_dim, bias=False)

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize(self.img_proj(image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize(self.txt_proj(text), dim=-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        s = F.normalize(batch["class_emb"], dim=-1)
        y = batch["label"].long()
        hi = class_hinge_loss(self.img_proj(batch["image"]) @ s.T, y, self.config.margin)
        ht = class_hinge_loss(self.txt_proj(batch["text"]) @ s.T, y, self.config.margin)
        return Objective({"hinge_image": hi, "hinge_text": ht})


# --------------------------------------------------------------------------
# closed-form models
# --------------------------------------------------------------------------
def eszsl_solve(x: Tensor, y: Tensor, s: Tensor, gamma: float, lam: float) -> Tensor:
    r"""ESZSL's closed form ``V = (X^T X + gamma I)^-1 X^T Y S (S^T S + lam I)^-1``.

    Romera-Paredes & Torr (2015), Eq. 9, in visem's row layout: ``x``
    ``(N, d)`` features, ``y`` ``(N, C)`` targets in ``{-1, 1}``, ``s``
    ``(C, a)`` class side information; returns ``V`` ``(d, a)``. It minimises
    ``||X V S^T - Y||^2 + gamma ||V S^T||^2 + lam ||X V||^2 + gamma lam ||V||^2``
    (:meth:`ESZSL.eszsl_objective`).
    """
    x, y, s = x.double(), y.double(), s.double()
    d, a = x.shape[1], s.shape[1]
    left = x.T @ x + gamma * torch.eye(d, dtype=x.dtype, device=x.device)
    right = s.T @ s + lam * torch.eye(a, dtype=x.dtype, device=x.device)
    v = torch.linalg.solve(left, x.T @ y @ s)
    return torch.linalg.solve(right.T, v.T).T  # v @ right^-1


def sylvester_solve(a: Tensor, b: Tensor, c: Tensor, rcond: float = 1e-10) -> Tensor:
    """Solve ``A W + W B = C`` for symmetric positive semi-definite ``A`` and ``B``.

    With ``A = U diag(p) U^T`` and ``B = V diag(q) V^T``,
    ``W = U [(U^T C V) / (p_i + q_j)] V^T``. Where ``p_i + q_j`` is (near) zero
    the component is set to 0 (the minimum-norm solution).
    """
    p, u = torch.linalg.eigh(a)
    q, v = torch.linalg.eigh(b)
    denom = p[:, None] + q[None, :]
    rhs = u.T @ c @ v
    scale = max(float(denom.abs().max()), 1e-300)
    safe = denom.abs() > rcond * scale
    w = torch.where(safe, rhs / torch.where(safe, denom, torch.ones_like(denom)), torch.zeros_like(rhs))
    return u @ w @ v.T


def sae_solve(x: Tensor, s: Tensor, lam: float) -> Tensor:
    r"""SAE's closed form: ``W`` ``(k, d)`` from ``S^T S W + lam W X^T X = (1 + lam) S^T X``.

    Kodirov et al. (2017), Eq. 6-8 in visem's row layout: ``x`` ``(N, d)``
    features, ``s`` ``(N, k)`` the side information of each sample's class.
    It minimises ``||X - S W||^2 + lam ||X W^T - S||^2`` (:meth:`SAE.sae_objective`).
    """
    x, s = x.double(), s.double()
    return sylvester_solve(s.T @ s, lam * (x.T @ x), (1.0 + lam) * (s.T @ x))


def _signed_onehot(y: Tensor, c: int, dtype: torch.dtype) -> Tensor:
    return 2.0 * F.one_hot(y.long(), c).to(dtype) - 1.0


@dataclass
class ESZSLConfig:
    image_dim: int | None = None
    class_dim: int | None = None
    gamma: float = 1.0
    lam: float = 1.0


@register_model("eszsl", config=ESZSLConfig, family="zeroshot",
                paper="Romera-Paredes & Torr, ICML 2015 (ESZSL)")
class ESZSL(ZeroShotModel):
    """ESZSL: bilinear compatibility ``x^T V s_c`` fitted in closed form.

    :meth:`loss` is the ESZSL objective (Romera-Paredes & Torr 2015, Eq. 5
    with ``beta = gamma lam``) on the batch, summed, not averaged, so that
    :func:`eszsl_solve` is exactly its minimiser; :meth:`finalize` sets ``V``
    to that minimiser on the whole training set. ``gamma`` and ``lam`` are to
    be chosen on a validation split (the paper searches ``10^-3 .. 10^3``).
    """

    def __init__(self, config: ESZSLConfig) -> None:
        super().__init__(config)
        self.V = nn.Parameter(0.01 * torch.randn(config.image_dim, config.class_dim))

    def embed_image(self, image: Tensor) -> Tensor:
        return image @ self.V

    def embed_class(self, class_emb: Tensor) -> Tensor:
        return class_emb

    def eszsl_objective(self, x: Tensor, y: Tensor, s: Tensor) -> Tensor:
        cfg = self.config
        v = self.V.to(x.dtype)
        vs = v @ s.T
        yy = _signed_onehot(y, s.shape[0], x.dtype)
        per_sample = (x @ vs - yy).pow(2).sum(-1) + cfg.lam * (x @ v).pow(2).sum(-1)
        return batch_sum(per_sample) + cfg.gamma * vs.pow(2).sum() + cfg.gamma * cfg.lam * v.pow(2).sum()

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        x, y, s = _check_batch(batch, self.config.image_dim, self.config.class_dim)
        return Objective({"eszsl": self.eszsl_objective(x, y, s)})

    @torch.no_grad()
    def finalize(self, train: Mapping[str, Tensor]) -> None:
        x, y, s = _check_batch(train, self.config.image_dim, self.config.class_dim)
        v = eszsl_solve(x, _signed_onehot(y, s.shape[0], torch.float64), s, self.config.gamma, self.config.lam)
        self.V.copy_(v.to(self.V.dtype))


@dataclass
class SAEConfig:
    image_dim: int | None = None
    class_dim: int | None = None
    lam: float = 1.0
    direction: Literal["v2s", "s2v"] = "v2s"


@register_model("sae", config=SAEConfig, family="zeroshot",
                paper="Kodirov, Xiang & Gong, CVPR 2017 (SAE)")
class SAE(ZeroShotModel):
    """Semantic auto-encoder: a linear encoder ``W`` to the class space whose transpose decodes back.

    :meth:`loss` is the SAE objective ``||X - S W||^2 + lam ||X W^T - S||^2``
    (Kodirov et al. 2017, Eq. 4, summed) with ``S`` the side information of
    each sample's class; :meth:`finalize` solves it exactly
    (:func:`sae_solve`, a Sylvester equation). Prediction by cosine
    similarity, as the reference code: ``direction="v2s"`` compares ``W x``
    with ``s_c`` (the paper's main setting), ``"s2v"`` compares ``x`` with
    ``W^T s_c``. ``lam`` is chosen on a validation split.
    """

    def __init__(self, config: SAEConfig) -> None:
        super().__init__(config)
        self.W = nn.Parameter(0.01 * torch.randn(config.class_dim, config.image_dim))

    def embed_image(self, image: Tensor) -> Tensor:
        if self.config.direction == "v2s":
            return F.normalize(image @ self.W.T, dim=-1)
        return F.normalize(image, dim=-1)

    def embed_class(self, class_emb: Tensor) -> Tensor:
        if self.config.direction == "v2s":
            return F.normalize(class_emb, dim=-1)
        return F.normalize(class_emb @ self.W, dim=-1)

    def sae_objective(self, x: Tensor, s_per_sample: Tensor) -> Tensor:
        w = self.W.to(x.dtype)
        return batch_sum((x - s_per_sample @ w).pow(2).sum(-1)
                         + self.config.lam * (x @ w.T - s_per_sample).pow(2).sum(-1))

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        x, y, s = _check_batch(batch, self.config.image_dim, self.config.class_dim)
        return Objective({"sae": self.sae_objective(x, s[y])})

    @torch.no_grad()
    def finalize(self, train: Mapping[str, Tensor]) -> None:
        x, y, s = _check_batch(train, self.config.image_dim, self.config.class_dim)
        self.W.copy_(sae_solve(x, s[y], self.config.lam).to(self.W.dtype))
