"""GDH (Zhang, Shen, Liu, Zhu, Yu, Shao, Shen, Van Gool, *Generative Domain-Migration Hashing for
Sketch-to-Image Retrieval*, ECCV 2018): the binary SBIR baseline of seed 004 Table 3, "GDH (binary)".

GDH migrates sketches into the natural-image domain with a cycle-consistent
GAN and learns one hashing network on natural images and migrated sketches.
Read from the authors' category-level code (``YCJGG/GDH``, ``category/GDH.py``):

* generators ``G_A`` (sketch -> image) and ``G_B`` (image -> sketch), least-squares
  adversarial losses against discriminators ``D_A`` (images) and ``D_B``
  (sketches), L1 cycle losses weighted 10;
* discriminators: ``0.5 (MSE(D(real), 1) + MSE(D(fake), 0))`` each;
* hashing network ``H`` on image-domain features, trained on real images and
  migrated sketches ``G_A(x_s)``::

      hash = (||b_y - H(x_i)||^2 + ||b_y - H(G_A(x_s))||^2 + ||H(x_i) - H(G_A(x_s))||^2) summed, / batch

  with ``b_y`` the binary code of the pair's class;
* codes ``sign(H(x_i))`` for images and ``sign(H(G_A(x_s)))`` for sketches, Hamming ranking;
* Adam (lr 2e-4, beta1 0.5) for all parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.losses import lsgan_loss
from visem.models.base import Objective, Phase, adam
from visem.models.layers import mlp
from visem.models.registry import register_model
from visem.models.sbir import SketchImageModel

__all__ = ["GDH", "GDHConfig"]


@dataclass
class GDHConfig:
    image_dim: int | None = None
    sketch_dim: int | None = None
    n_classes: int | None = None
    bits: int = 16  # 64 in seed 004's comparison
    hidden: tuple[int, ...] = (32,)  # the reference's ResNet generators / PatchGAN discriminators work on pixels
    cyc_weight: float = 10.0  # lambdaA = lambdaB of the reference
    seed: int = 0  # of the class codes


@register_model("gdh", config=GDHConfig, family="sbir",
                paper="Zhang et al. ECCV 2018 (GDH, generative domain-migration hashing), seed 004 Table 3")
class GDH(SketchImageModel):
    """GDH (binary): cycle-GAN sketch-to-image migration and one hashing network on the image domain.

    **What visem does differently.** The reference translates 256 px pictures
    with ResNet generators and an attention mask; on precomputed features the
    migration maps sketch features to image features (MLPs, ``hidden``), the
    discriminators are MLPs, and the hashing network ``H`` is an MLP on image
    features (the reference's ResNet-18 on pictures), without the 50-image
    history pool. **Class codes**: the reference's alternating "D step"
    (``D = (2 Y^T Y + I)^-1 Y^T (B_I + B_S)``) and "B step"
    (``B = sign(Y D + 1e-5 H)``, with ``H`` never filled: zeros) keep the
    codes it starts from, one random ``{-1, +1}`` code per class; visem draws
    those codes once from ``seed`` and keeps them (a buffer), which is what
    the reference's steps amount to.
    """

    native_binary = True

    def __init__(self, config: GDHConfig) -> None:
        super().__init__(config)
        h = tuple(config.hidden)
        self.g_a = mlp([config.sketch_dim, *h, config.image_dim])  # sketch -> image domain
        self.g_b = mlp([config.image_dim, *h, config.sketch_dim])  # image -> sketch domain
        self.d_a = mlp([config.image_dim, *h, 1])
        self.d_b = mlp([config.sketch_dim, *h, 1])
        self.hash = mlp([config.image_dim, *h, config.bits])
        g = torch.Generator().manual_seed(config.seed)
        codes = torch.where(torch.randn(config.n_classes, config.bits, generator=g) >= 0, 1.0, -1.0)
        self.register_buffer("class_codes", codes)

    def embed_sketch(self, sketch: Tensor) -> Tensor:
        return self.hash(self.g_a(sketch))

    def embed_image(self, image: Tensor) -> Tensor:
        return self.hash(image)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.g_a.parameters(), *self.hash.parameters()]

    def _generator_terms(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        s, i = batch["sketch"], batch["image"]
        fake_i, fake_s = self.g_a(s), self.g_b(i)
        adv = lsgan_loss(self.d_a(fake_i), True) + lsgan_loss(self.d_b(fake_s), True)
        cyc = F.l1_loss(self.g_b(fake_i), s) + F.l1_loss(self.g_a(fake_s), i)
        return adv, cyc

    def _hash_term(self, batch: Mapping[str, Tensor]) -> Tensor:
        b = self.class_codes[batch["label"].long()]
        with torch.no_grad():
            fake = self.g_a(batch["sketch"])
        h_real, h_fake = self.hash(batch["image"]), self.hash(fake)
        per = (b - h_real).pow(2).sum(1) + (b - h_fake).pow(2).sum(1) + (h_real - h_fake).pow(2).sum(1)
        return per.mean()

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """The generators' terms (``adv``, ``cyc``) and the hashing network's (``hash``), each as its phase weighs it."""
        adv, cyc = self._generator_terms(batch)
        return Objective({"adv": adv, "cyc": cyc, "hash": self._hash_term(batch)}, {"cyc": self.config.cyc_weight})

    def _discriminator_loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        s, i = batch["sketch"], batch["image"]
        with torch.no_grad():
            fake_i, fake_s = self.g_a(s), self.g_b(i)
        return 0.5 * (lsgan_loss(self.d_a(i), True) + lsgan_loss(self.d_a(fake_i), False)) + \
            0.5 * (lsgan_loss(self.d_b(s), True) + lsgan_loss(self.d_b(fake_s), False))

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        kw = {"lr": lr, "weight_decay": weight_decay, "betas": (0.5, 0.999)}
        return [adam([*self.g_a.parameters(), *self.g_b.parameters()], **kw),
                adam([*self.d_a.parameters(), *self.d_b.parameters()], **kw),
                adam(self.hash.parameters(), **kw)]

    def phases(self) -> tuple[Phase, ...]:
        """The reference's order within a batch: generators, discriminators, hashing network."""
        return (Phase("generator", (0,)), Phase("discriminator", (1,), log=False), Phase("hash", (2,), log=False))

    def forward(self, batch: Mapping[str, Tensor], progress: float = 0.0, phase: str = "generator") -> dict[str, Tensor]:
        if phase in ("main", "generator"):
            adv, cyc = self._generator_terms(batch)
            return {"loss": adv + self.config.cyc_weight * cyc, "adv": adv.detach(), "cyc": cyc.detach()}
        if phase == "discriminator":
            return {"loss": self._discriminator_loss(batch)}
        if phase == "hash":
            return {"loss": self._hash_term(batch)}
        raise ValueError(f"gdh has no training phase {phase!r}")
