"""CADA-VAE (Schonfeld et al. CVPR 2019): the two-VAE model that LCALE (seed 004) extends.

* ``cada-vae`` -- an image VAE and a class-embedding VAE with
  cross-reconstruction and distribution alignment, then a softmax
  classifier on latent samples, for (generalised) zero- and few-shot
  recognition.
* ``cada-vae-cmr`` -- the same model with the text modality in place of the
  class embedding, for zero-shot cross-modal retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.losses import kl_diag_gaussians, wasserstein2_diag
from visem.models.base import Objective
from visem.models.cmr import CrossModalModel
from visem.models.layers import VAE
from visem.models.registry import register_model
from visem.models.zeroshot import ZeroShotModel

__all__ = ["CADAVAE", "CADAVAECMR", "CADAVAEConfig", "CADAVAECMRConfig"]


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
    img_samples: int = 200  # latent samples per seen class (from its training images), for the classifier
    side_samples: int = 400  # latent samples per class known only by its side information
    novel_img_samples: int = 200  # few-shot: image-latent samples per novel class (from its shots)
    novel_side_samples: int = 200  # few-shot: side-information-latent samples per novel class
    few_shot: Literal["reference", "shots-in-vae"] = "reference"
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

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
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
        return Objective({"rec": rec, "kl": kl, "cr": cr, "da": da}, {"kl": f_kl, "cr": f_cr, "da": f_da})

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.vae_v.encoder.parameters(), *self.vae_s.encoder.parameters()]


@register_model("cada-vae", config=CADAVAEConfig, family="zeroshot",
                paper="Schonfeld et al. CVPR 2019 (CADA-VAE), extended by seed 004")
class CADAVAE(_CADABase):
    """CADA-VAE: image and class-embedding VAEs aligned in latent space, softmax classifier on latents.

    Training is :meth:`_CADABase.objective`. For recognition (:meth:`class_scores`)
    a linear softmax classifier is trained on latent samples, as the
    reference code (``edgarschnfld/CADA-VAE-PyTorch``, ``vaemodel.py``
    ``train_classifier`` and ``single_experiment.py``'s ``samples_per_class``):
    ``img_samples`` draws ``z ~ q(z | x)`` per seen class from its training
    images (stored by :meth:`finalize`), ``side_samples`` draws
    ``z ~ q(z | s_c)`` per candidate class with no training image (the
    unseen classes), for ``cls_epochs`` epochs.

    **Few-shot** (``few_shot="reference"``, the reference protocol): the
    VAEs learn from the seen classes' images only (:attr:`novel_shots_in_training`
    is False, so :func:`visem.experiments.zsl.train_zsl` keeps the shots out
    of gradient training); the shots reach the classifier: each novel class
    gets ``novel_img_samples`` image-latent samples from its shots and
    ``novel_side_samples`` side-information-latent samples (the reference's
    ``(200, 0, 200, 200)``). ``few_shot="shots-in-vae"`` is visem's earlier
    variant: the shots join the VAEs' training images and the novel classes
    get image-latent samples only, like seen classes.

    The reference code keeps the classifier epoch with the best test
    harmonic mean; visem trains a fixed number of epochs.
    ``embed_image`` / ``embed_class`` are the posterior means (used for
    retrieval with the class embedding as query).
    """

    def __init__(self, config: CADAVAEConfig) -> None:
        super().__init__(config, config.class_dim)
        if config.few_shot not in ("reference", "shots-in-vae"):
            raise ValueError(f"few_shot must be 'reference' or 'shots-in-vae', got {config.few_shot!r}")
        self._classifier_cache: dict[tuple, nn.Linear] = {}
        self._novel: set[int] = set()

    @property
    def novel_shots_in_training(self) -> bool:
        """Whether the novel classes' shots train the VAEs (False in the reference protocol)."""
        return self.config.few_shot == "shots-in-vae"

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
        novel = train.get("novel_classes")
        rows = ids if ids is not None else torch.arange(train["class_emb"].shape[0], device=label.device)
        self._novel = set(rows[novel.bool()].tolist()) if novel is not None else set()
        self._classifier_cache = {}

    @torch.no_grad()
    def classifier_data(self, class_emb: Tensor, class_ids: Tensor,
                        gen: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The classifier's training set: ``(z, row in class_emb, source)``, source 0 = image, 1 = side latent.

        Per candidate class: ``img_samples`` image latents for a seen class, ``side_samples``
        side-information latents for a class without training images, and in the reference
        few-shot protocol ``novel_img_samples`` + ``novel_side_samples`` of both for a novel class.
        """
        cfg = self.config
        gen = gen if gen is not None else torch.Generator().manual_seed(cfg.seed)
        feats, labels, sources = [], [], []
        mu_s, lv_s = self.vae_s.encode(class_emb)
        for j, cid in enumerate(class_ids.tolist()):
            has_images = self._train_latent is not None and bool((self._train_latent[2] == cid).any())
            reference_novel = has_images and cid in self._novel and cfg.few_shot == "reference"
            n_img = cfg.novel_img_samples if reference_novel else (cfg.img_samples if has_images else 0)
            n_side = cfg.novel_side_samples if reference_novel else (0 if has_images else cfg.side_samples)
            mus, lvs = [], []
            if n_img:
                mu, lv, _ = (t[self._train_latent[2] == cid] for t in self._train_latent)
                pick = torch.randint(0, mu.shape[0], (n_img,), generator=gen).to(mu.device)
                mus.append(mu[pick]), lvs.append(lv[pick])
            if n_side:
                mus.append(mu_s[j].expand(n_side, -1)), lvs.append(lv_s[j].expand(n_side, -1))
            mu, lv = torch.cat(mus), torch.cat(lvs)
            eps = torch.randn(mu.shape, generator=gen).to(mu.device)  # drawn on the CPU: the same on any device
            feats.append(mu + eps * torch.exp(0.5 * lv))
            labels.append(torch.full((mu.shape[0],), j, dtype=torch.long, device=mu.device))
            sources.append(torch.cat([torch.zeros(n_img, dtype=torch.long), torch.ones(n_side, dtype=torch.long)]))
        return torch.cat(feats), torch.cat(labels), torch.cat(sources)

    def _fit_classifier(self, class_emb: Tensor, class_ids: Tensor) -> nn.Linear:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        x, y, _ = self.classifier_data(class_emb, class_ids, gen)
        clf = nn.Linear(cfg.latent_dim, class_emb.shape[0])
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            clf.reset_parameters()
        clf.to(x.device)
        with torch.enable_grad():
            opt = torch.optim.Adam(clf.parameters(), lr=cfg.cls_lr, betas=(0.5, 0.999))
            for _ in range(cfg.cls_epochs):
                perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
                for a in range(0, x.shape[0], cfg.cls_batch):
                    idx = perm[a : a + cfg.cls_batch]
                    opt.zero_grad()
                    F.cross_entropy(clf(x[idx]), y[idx]).backward()
                    opt.step()
        return clf

    def class_scores(self, image: Tensor, class_emb: Tensor, class_ids: Tensor | None = None) -> Tensor:
        if class_ids is None:
            class_ids = torch.arange(class_emb.shape[0], device=class_emb.device)
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
class CADAVAECMR(_CADABase, CrossModalModel):
    """CADA-VAE on image-text pairs: the two-modality model that LCALE extends.

    The objective of :meth:`_CADABase.objective` with the text VAE in place of the
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

    evaluate = CrossModalModel.evaluate
    example_batch = CrossModalModel.example_batch
