"""Aligned VAEs for zero-shot recognition and zero-shot cross-modal retrieval.

* ``lcale`` -- LCALE (seed 004, Lin et al. AAAI 2020): three VAEs (image,
  text, class embedding) in one latent space (Eq. 2), cross-reconstruction
  (Eq. 3), 2-Wasserstein alignment of each modality with the class embedding
  (Eq. 5-6), MMD between image and text latents (Eq. 7), cycle-consistency
  regressors (Eq. 8), trained with the alternating encoder / decoder /
  regressor updates of Algorithm 1. ``use_cr``, ``use_ca1``, ``use_ca2`` and
  ``use_cyc`` switch terms off for the ablations of Table 4.
* ``cada-vae`` -- CADA-VAE (Schonfeld et al. CVPR 2019, which LCALE extends):
  an image VAE and a class-embedding VAE with cross-reconstruction and
  distribution alignment, then a softmax classifier on latent samples, for
  (generalised) zero- and few-shot recognition. ``cada-vae-cmr`` is the same
  model with the text modality in place of the class embedding, for
  zero-shot cross-modal retrieval.
* ``dcca`` -- deep CCA (Andrew et al. 2013; Yan & Mikolajczyk 2015 for
  image-text), seed 004 Table 2's first baseline.

Cross-modal batches hold ``image`` ``(B, image_dim)``, ``text``
``(B, text_dim)`` (row-aligned pairs of one class), ``label`` ``(B,)`` (row
of ``class_emb``) and ``class_emb`` ``(C, class_dim)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.losses import kl_diag_gaussians, mmd, wasserstein2_diag
from visem.metrics import mean_average_precision, precision_at_k
from visem.models.base import RetrievalModel, check_finite
from visem.models.layers import mlp
from visem.models.registry import register_model
from visem.models.zeroshot import ZeroShotModel

__all__ = [
    "CADAVAE",
    "CADAVAECMR",
    "DCCA",
    "LCALE",
    "VAE",
    "cross_modal_map",
    "dcca_correlation",
]


def cross_modal_map(img_emb: Tensor, txt_emb: Tensor, img_label: Tensor, txt_label: Tensor,
                    k: int = 100) -> dict[str, float]:
    """Zero-shot cross-modal retrieval scores of seed 004 (fractions).

    Relevance is "same class"; MAP is computed over all returned results
    (:func:`visem.metrics.mean_average_precision` with ``k=None``).
    ``p_at_100`` is the mean of the two directions' P@k (``k`` capped at the
    gallery size); seed 004 reports P@100 only for sketch-to-image.
    """
    i2t = mean_average_precision(img_emb, txt_emb, img_label, txt_label)
    t2i = mean_average_precision(txt_emb, img_emb, txt_label, img_label)
    p1 = precision_at_k(img_emb, txt_emb, img_label, txt_label, k=min(k, txt_emb.shape[0]))
    p2 = precision_at_k(txt_emb, img_emb, txt_label, img_label, k=min(k, img_emb.shape[0]))
    return {"i2t_map": i2t, "t2i_map": t2i, "avg_map": (i2t + t2i) / 2, "p_at_100": (p1 + p2) / 2}


class VAE(nn.Module):
    """A Gaussian VAE: MLP encoder to ``(mu, logvar)``, MLP decoder back."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.encoder = mlp([in_dim, *hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), in_dim])
        self.latent_dim = latent_dim

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def sample(self, mu: Tensor, logvar: Tensor) -> Tensor:
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def _sq(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample squared L2 distance, averaged over the batch."""
    return (a - b).pow(2).sum(dim=-1).mean()


# --------------------------------------------------------------------------
# LCALE
# --------------------------------------------------------------------------
@dataclass
class LCALEConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    class_dim: int | None = None
    latent_dim: int = 16  # 64 in seed 004 Sec. 4.1
    hidden: tuple[int, ...] = (32,)  # (4096, 2048) in seed 004 for 4096-d inputs
    reg_hidden: tuple[int, ...] = (32,)  # (4096, 4096) in seed 004
    alpha: float = 1.0  # L_CR
    beta: float = 0.1  # L_CA1
    lam: float = 0.1  # L_CA2
    gamma: float = 0.01  # L_CYC
    mmd_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    use_cr: bool = True
    use_ca1: bool = True
    use_ca2: bool = True
    use_cyc: bool = True


@register_model("lcale", config=LCALEConfig, family="zeroshot",
                paper="seed 004 (LCALE, Lin et al. AAAI 2020)")
class LCALE(RetrievalModel):
    """LCALE: three aligned VAEs (image, text, class embedding) for zero-shot cross-modal retrieval.

    With ``z_m ~ q(z | x_m)`` for ``m`` in ``{v, t, c}`` (``x_c`` the class
    embedding of the pair's class) and all squared norms per sample, averaged
    over the batch:

    * ``vae``  (Eq. 2): ``sum_m ||x_m - D_m(z_m)||^2 + KL(q(z|x_m) || N(0, I))``
      (the Gaussian log-likelihood up to constants, as squared error);
    * ``cr``   (Eq. 3): ``sum_m sum_{n != m} ||x_n - D_n(z_m)||^2``;
    * ``ca1``  (Eq. 5-6): ``W_2(q_v, q_c) + W_2(q_t, q_c)``
      (:func:`visem.losses.wasserstein2_diag`, not squared);
    * ``ca2``  (Eq. 7): ``MMD^2(z_v, z_t)``, Gaussian kernels summed over
      ``mmd_sigmas`` (seed 004 gives no bandwidth; its ``exp(-s d^2)`` is
      ``sigma = 1 / sqrt(2 s)``);
    * ``cyc``  (Eq. 8): ``||x_c - R_v(D_v(z_v))||^2 + ||x_c - R_t(D_t(z_t))||^2``.

    ``loss = vae + alpha cr + beta ca1 + lam ca2 + gamma cyc`` (Eq. 9) with
    seed 004 Sec. 4.1's weights (1, 0.1, 0.1, 0.01). :meth:`train_step` is
    Algorithm 1: the encoders step on the gradient of Eq. 9, then the
    decoders on Eq. 9 recomputed with the new encoders, then the regressors
    on ``gamma cyc``. Retrieval embeds images and texts by their posterior
    means ``mu_v``, ``mu_t`` and ranks by dot product.
    """

    def __init__(self, config: LCALEConfig) -> None:
        super().__init__(config)
        h, k = tuple(config.hidden), config.latent_dim
        self.vae_v = VAE(config.image_dim, h, k)
        self.vae_t = VAE(config.text_dim, h, k)
        self.vae_c = VAE(config.class_dim, h, k)
        self.reg_v = mlp([config.image_dim, *config.reg_hidden, config.class_dim])
        self.reg_t = mlp([config.text_dim, *config.reg_hidden, config.class_dim])

    def embed_image(self, image: Tensor) -> Tensor:
        return self.vae_v.encode(image)[0]

    def embed_text(self, text: Tensor) -> Tensor:
        return self.vae_t.encode(text)[0]

    def embed_class(self, class_emb: Tensor) -> Tensor:
        return self.vae_c.encode(class_emb)[0]

    def loss(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> dict[str, Tensor]:
        cfg = self.config
        xs = {"v": batch["image"], "t": batch["text"], "c": batch["class_emb"][batch["label"].long()]}
        vaes = {"v": self.vae_v, "t": self.vae_t, "c": self.vae_c}
        stats = {m: vaes[m].encode(xs[m]) for m in xs}
        z = {m: vaes[m].sample(*stats[m]) for m in xs}
        dec = {m: vaes[m].decoder(z[m]) for m in xs}
        zero = torch.zeros((), device=xs["v"].device)
        vae = sum(_sq(xs[m], dec[m]) + kl_diag_gaussians(*stats[m]).mean() for m in xs)
        cr = sum(_sq(xs[n], vaes[n].decoder(z[m])) for m in xs for n in xs if n != m) if cfg.use_cr else zero
        if cfg.use_ca1:
            ca1 = (wasserstein2_diag(*stats["v"], *stats["c"]) + wasserstein2_diag(*stats["t"], *stats["c"])).mean()
        else:
            ca1 = zero
        ca2 = mmd(z["v"], z["t"], sigmas=cfg.mmd_sigmas) if cfg.use_ca2 else zero
        if cfg.use_cyc:
            cyc = _sq(xs["c"], self.reg_v(dec["v"])) + _sq(xs["c"], self.reg_t(dec["t"]))
        else:
            cyc = zero
        total = vae + cfg.alpha * cr + cfg.beta * ca1 + cfg.lam * ca2 + cfg.gamma * cyc
        return {"loss": total, "vae": vae.detach(), "cr": cr.detach(), "ca1": ca1.detach(),
                "ca2": ca2.detach(), "cyc": cyc.detach()}

    def _groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        vaes = (self.vae_v, self.vae_t, self.vae_c)
        enc = [p for v in vaes for p in v.encoder.parameters()]
        dec = [p for v in vaes for p in v.decoder.parameters()]
        reg = [*self.reg_v.parameters(), *self.reg_t.parameters()]
        return enc, dec, reg

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(g, lr=lr, weight_decay=weight_decay) for g in self._groups()]

    def train_step(self, batch: Mapping[str, Tensor], optimizers: list[torch.optim.Optimizer],
                   progress: float = 0.0, grad_clip: float | None = None) -> dict[str, Tensor]:
        """Algorithm 1 of seed 004: encoders, then decoders, then regressors."""
        groups = self._groups()
        first: dict[str, Tensor] = {}
        for i, (params, opt) in enumerate(zip(groups[:2], optimizers[:2])):
            self.zero_grad(set_to_none=True)
            terms = self.loss(batch, progress)
            check_finite(terms)
            if i == 0:
                first = terms
            terms["loss"].backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
        if self.config.use_cyc:
            self.zero_grad(set_to_none=True)
            cyc = self._cyc_only(batch)
            check_finite({"cyc": cyc})
            cyc.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(groups[2], grad_clip)
            optimizers[2].step()
        return first

    def _cyc_only(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``gamma * L_CYC`` with the VAEs detached (the regressors' objective in Alg. 1 line 5)."""
        x_c = batch["class_emb"][batch["label"].long()]
        with torch.no_grad():
            d_v = self.vae_v.decoder(self.vae_v.sample(*self.vae_v.encode(batch["image"])))
            d_t = self.vae_t.decoder(self.vae_t.sample(*self.vae_t.encode(batch["text"])))
        return self.config.gamma * (_sq(x_c, self.reg_v(d_v)) + _sq(x_c, self.reg_t(d_t)))

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Cross-modal MAP / P@100 on ``image``, ``text``, ``image_label``, ``text_label``."""
        return _eval_cmr(self, data)

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return _cmr_example(self.config, n, generator)


def _eval_cmr(model: RetrievalModel, data: Mapping[str, Tensor]) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        img = model.embed_image(data["image"])
        txt = model.embed_text(data["text"])
    finally:
        model.train(was)
    return cross_modal_map(img, txt, data["image_label"], data["text_label"])


def _cmr_example(cfg: object, n: int, generator: torch.Generator) -> dict[str, Tensor]:
    c = 4
    batch = {
        "image": torch.randn(n, cfg.image_dim, generator=generator),
        "text": torch.randn(n, cfg.text_dim, generator=generator),
        "label": torch.randint(0, c, (n,), generator=generator),
    }
    if hasattr(cfg, "class_dim"):
        batch["class_emb"] = torch.randn(c, cfg.class_dim, generator=generator)
    return batch


# --------------------------------------------------------------------------
# CADA-VAE
# --------------------------------------------------------------------------
def _ramp(progress: float, start: float, end: float, value: float) -> float:
    """Linear warm-up from 0 at ``start`` to ``value`` at ``end`` (fractions of training)."""
    if progress <= start:
        return 0.0
    return value * min(1.0, (progress - start) / max(end - start, 1e-12))


@dataclass
class CADAVAEConfig:
    image_dim: int | None = None
    class_dim: int | None = None
    latent_dim: int = 16  # 64 in the reference code
    hidden_image: tuple[int, ...] = (32,)  # (1560,) encoder / (1660,) decoder in the reference
    hidden_side: tuple[int, ...] = (32,)  # (1450,) / (665,) in the reference
    beta: float = 0.25  # KL weight, warmed up over progress [0, 0.93]
    cross_weight: float = 2.37  # cross-reconstruction, warmed up over [0.21, 0.75]
    distance_weight: float = 8.13  # distribution alignment, warmed up over [0.06, 0.22]
    img_samples: int = 200  # latent samples per class with training images, for the classifier
    side_samples: int = 400  # latent samples per class known only by its side information
    cls_epochs: int = 20
    cls_lr: float = 1e-3
    cls_batch: int = 32
    seed: int = 0


class _CADABase(ZeroShotModel):
    """Shared CADA-VAE objective: two VAEs, cross-reconstruction, Wasserstein alignment."""

    side_key = "class"

    def __init__(self, config: CADAVAEConfig, side_dim: int) -> None:
        super().__init__(config)
        self.vae_v = VAE(config.image_dim, tuple(config.hidden_image), config.latent_dim)
        self.vae_s = VAE(side_dim, tuple(config.hidden_side), config.latent_dim)
        self._train_latent: tuple[Tensor, Tensor, Tensor] | None = None

    def _side(self, batch: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def loss(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> dict[str, Tensor]:
        """CADA-VAE (Schonfeld et al. 2019, Eq. 2-5 and its reference code).

        ``vae = sum_m |x_m - D_m(z_m)|_1 - f_kl * sum_m KL`` reversed in sign
        (L1 reconstruction summed over features, as the reference code),
        ``cr = |x_v - D_v(z_s)|_1 + |x_s - D_s(z_v)|_1``, ``da`` the
        2-Wasserstein distance between the two posteriors; per sample, averaged
        over the batch. ``loss = vae + f_kl kl + f_cr cr + f_da da`` with the
        reference code's linear warm-ups of the three weights (epochs 0-93,
        21-75 and 6-22 of 100, here fractions of training).
        """
        cfg = self.config
        x_v, x_s = batch["image"], self._side(batch)
        mu_v, lv_v = self.vae_v.encode(x_v)
        mu_s, lv_s = self.vae_s.encode(x_s)
        z_v, z_s = self.vae_v.sample(mu_v, lv_v), self.vae_s.sample(mu_s, lv_s)
        rec = ((x_v - self.vae_v.decoder(z_v)).abs().sum(-1) + (x_s - self.vae_s.decoder(z_s)).abs().sum(-1)).mean()
        kl = (kl_diag_gaussians(mu_v, lv_v) + kl_diag_gaussians(mu_s, lv_s)).mean()
        cr = ((x_v - self.vae_v.decoder(z_s)).abs().sum(-1) + (x_s - self.vae_s.decoder(z_v)).abs().sum(-1)).mean()
        da = wasserstein2_diag(mu_v, lv_v, mu_s, lv_s).mean()
        f_kl = _ramp(progress, 0.0, 0.93, cfg.beta)
        f_cr = _ramp(progress, 0.21, 0.75, cfg.cross_weight)
        f_da = _ramp(progress, 0.06, 0.22, cfg.distance_weight)
        total = rec + f_kl * kl + f_cr * cr + f_da * da
        return {"loss": total, "rec": rec.detach(), "kl": kl.detach(), "cr": cr.detach(), "da": da.detach()}


@register_model("cada-vae", config=CADAVAEConfig, family="zeroshot",
                paper="Schonfeld et al. CVPR 2019 (CADA-VAE), extended by seed 004")
class CADAVAE(_CADABase):
    """CADA-VAE: image and class-embedding VAEs aligned in latent space, softmax classifier on latents.

    Training is :meth:`_CADABase.loss`. For recognition (:meth:`class_scores`)
    a linear softmax classifier is trained on latent samples, as the
    reference code: ``img_samples`` draws ``z ~ q(z | x)`` per class from the
    training images of the candidate classes that have any (stored by
    :meth:`finalize`), and ``side_samples`` draws ``z ~ q(z | s_c)`` per
    candidate class with no training image (the unseen classes), for
    ``cls_epochs`` epochs. The reference code keeps the classifier epoch with
    the best test harmonic mean; visem trains a fixed number of epochs.
    ``embed_image`` / ``embed_class`` are the posterior means (used for
    retrieval with the class embedding as query).
    """

    def __init__(self, config: CADAVAEConfig) -> None:
        super().__init__(config, config.class_dim)
        self._classifier_cache: dict[tuple, nn.Linear] = {}

    def _side(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["class_emb"][batch["label"].long()]

    def embed_image(self, image: Tensor) -> Tensor:
        return self.vae_v.encode(image)[0]

    def embed_class(self, class_emb: Tensor) -> Tensor:
        return self.vae_s.encode(class_emb)[0]

    @torch.no_grad()
    def finalize(self, train: Mapping[str, Tensor]) -> None:
        """Store the training images' latent posteriors with their global class ids."""
        ids = train.get("class_ids")
        label = train["label"].long()
        glob = ids[label] if ids is not None else label
        mu, logvar = self.vae_v.encode(train["image"])
        self._train_latent = (mu, logvar, glob)
        self._classifier_cache = {}

    def _fit_classifier(self, class_emb: Tensor, class_ids: Tensor) -> nn.Linear:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        feats, labels = [], []
        with torch.no_grad():
            mu_s, lv_s = self.vae_s.encode(class_emb)
        for j, cid in enumerate(class_ids.tolist()):
            if self._train_latent is not None and bool((self._train_latent[2] == cid).any()):
                mu, lv, _ = (t[self._train_latent[2] == cid] for t in self._train_latent)
                pick = torch.randint(0, mu.shape[0], (cfg.img_samples,), generator=gen)
                mu, lv = mu[pick], lv[pick]
            else:
                mu = mu_s[j].expand(cfg.side_samples, -1)
                lv = lv_s[j].expand(cfg.side_samples, -1)
            eps = torch.randn(mu.shape, generator=gen)
            feats.append(mu + eps * torch.exp(0.5 * lv))
            labels.append(torch.full((mu.shape[0],), j, dtype=torch.long))
        x, y = torch.cat(feats).detach(), torch.cat(labels)
        clf = nn.Linear(cfg.latent_dim, class_emb.shape[0])
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            clf.reset_parameters()
        with torch.enable_grad():
            opt = torch.optim.Adam(clf.parameters(), lr=cfg.cls_lr, betas=(0.5, 0.999))
            for _ in range(cfg.cls_epochs):
                perm = torch.randperm(x.shape[0], generator=gen)
                for a in range(0, x.shape[0], cfg.cls_batch):
                    idx = perm[a : a + cfg.cls_batch]
                    opt.zero_grad()
                    F.cross_entropy(clf(x[idx]), y[idx]).backward()
                    opt.step()
        return clf

    def class_scores(self, image: Tensor, class_emb: Tensor, class_ids: Tensor | None = None) -> Tensor:
        if class_ids is None:
            class_ids = torch.arange(class_emb.shape[0])
        key = (tuple(class_ids.tolist()), class_emb.shape, float(class_emb.sum()))
        if key not in self._classifier_cache:
            self._classifier_cache[key] = self._fit_classifier(class_emb, class_ids)
        return self._classifier_cache[key](self.vae_v.encode(image)[0])


@dataclass
class CADAVAECMRConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    latent_dim: int = 16
    hidden_image: tuple[int, ...] = (32,)
    hidden_side: tuple[int, ...] = (32,)
    beta: float = 0.25
    cross_weight: float = 2.37
    distance_weight: float = 8.13


@register_model("cada-vae-cmr", config=CADAVAECMRConfig, family="zeroshot",
                paper="Schonfeld et al. CVPR 2019 (CADA-VAE) on image-text pairs, seed 004's base model")
class CADAVAECMR(_CADABase, RetrievalModel):
    """CADA-VAE on image-text pairs: the two-modality model that LCALE extends.

    The objective of :meth:`_CADABase.loss` with the text VAE in place of the
    class-embedding VAE (no class embedding, no MMD, no cycle term);
    retrieval by the posterior means.
    """

    def __init__(self, config: CADAVAECMRConfig) -> None:
        super().__init__(config, config.text_dim)

    def _side(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["text"]

    def embed_image(self, image: Tensor) -> Tensor:
        return self.vae_v.encode(image)[0]

    def embed_text(self, text: Tensor) -> Tensor:
        return self.vae_s.encode(text)[0]

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        return _eval_cmr(self, data)

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return _cmr_example(self.config, n, generator)


# --------------------------------------------------------------------------
# DCCA
# --------------------------------------------------------------------------
def _inv_sqrt(cov: Tensor, eps: float) -> Tensor:
    w, v = torch.linalg.eigh(cov)
    w = w.clamp(min=eps)
    return v @ torch.diag(w.rsqrt()) @ v.T


def dcca_correlation(h1: Tensor, h2: Tensor, reg: float = 1e-3, eps: float = 1e-9,
                     return_maps: bool = False):
    r"""Total canonical correlation of two views (Andrew et al. 2013, Sec. 3).

    With centred ``H1``, ``H2`` (``(m, o)``), ``S11 = H1^T H1 / (m - 1) + reg I``,
    ``S22`` likewise, ``S12 = H1^T H2 / (m - 1)`` and
    ``T = S11^{-1/2} S12 S22^{-1/2}``, the correlation is the sum of the
    singular values of ``T`` (its trace norm; all ``o`` components). With
    ``return_maps`` also returns the projections ``S11^{-1/2} U`` and
    ``S22^{-1/2} V`` onto the canonical directions, and the two means.
    """
    if h1.dim() != 2 or h2.dim() != 2 or h1.shape[0] != h2.shape[0]:
        raise ValueError(f"h1 and h2 must be (m, o) with equal m, got {tuple(h1.shape)} and {tuple(h2.shape)}")
    m = h1.shape[0]
    if m < 2:
        raise ValueError(f"DCCA needs at least 2 samples, got h1 {tuple(h1.shape)}")
    m1, m2 = h1.mean(0), h2.mean(0)
    a, b = h1 - m1, h2 - m2
    s11 = a.T @ a / (m - 1) + reg * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    s22 = b.T @ b / (m - 1) + reg * torch.eye(b.shape[1], dtype=b.dtype, device=b.device)
    s12 = a.T @ b / (m - 1)
    r1, r2 = _inv_sqrt(s11, eps), _inv_sqrt(s22, eps)
    t = r1 @ s12 @ r2
    if not return_maps:
        return torch.linalg.svdvals(t).sum()
    u, sv, vh = torch.linalg.svd(t, full_matrices=False)
    return sv.sum(), r1 @ u, r2 @ vh.T, m1, m2


@dataclass
class DCCAConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    hidden: tuple[int, ...] = (32,)
    out_dim: int = 4
    reg: float = 1e-3


@register_model("dcca", config=DCCAConfig, family="zeroshot",
                paper="Andrew et al. ICML 2013 / Yan & Mikolajczyk CVPR 2015 (DCCA), seed 004 Table 2 baseline")
class DCCA(RetrievalModel):
    """Deep CCA: two MLPs trained to maximise the total canonical correlation of their outputs.

    The loss is ``-dcca_correlation(f(x), g(t))`` on each batch (minibatch
    DCCA, as the common PyTorch ports; Andrew et al. use full-batch L-BFGS).
    :meth:`finalize` runs linear CCA on the training outputs and retrieval
    then compares the canonical projections by cosine; without it the raw
    outputs are used. Labels and class embeddings are not used.
    """

    def __init__(self, config: DCCAConfig) -> None:
        super().__init__(config)
        self.f = mlp([config.image_dim, *config.hidden, config.out_dim])
        self.g = mlp([config.text_dim, *config.hidden, config.out_dim])
        self.register_buffer("proj1", torch.eye(config.out_dim))
        self.register_buffer("proj2", torch.eye(config.out_dim))
        self.register_buffer("mean1", torch.zeros(config.out_dim))
        self.register_buffer("mean2", torch.zeros(config.out_dim))

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize((self.f(image) - self.mean1) @ self.proj1, dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize((self.g(text) - self.mean2) @ self.proj2, dim=-1)

    def loss(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> dict[str, Tensor]:
        corr = dcca_correlation(self.f(batch["image"]), self.g(batch["text"]), self.config.reg)
        return {"loss": -corr, "correlation": corr.detach()}

    @torch.no_grad()
    def finalize(self, train: Mapping[str, Tensor]) -> None:
        h1, h2 = self.f(train["image"]).double(), self.g(train["text"]).double()
        _, p1, p2, m1, m2 = dcca_correlation(h1, h2, self.config.reg, return_maps=True)
        self.proj1.copy_(p1.float())
        self.proj2.copy_(p2.float())
        self.mean1.copy_(m1.float())
        self.mean2.copy_(m2.float())

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        return _eval_cmr(self, data)

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return _cmr_example(self.config, n, generator)
