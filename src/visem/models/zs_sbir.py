"""ZS-SBIR (Yelamarthi, Reddy, Mishra, Mittal, *A Zero-Shot Framework for Sketch Based Image Retrieval*,
ECCV 2018): the conditional generative model seed 004 Table 3 lists as "ZS-SBIR".

The model generates image features from a sketch: a conditional VAE (or, in
the paper's second variant, a conditional adversarial auto-encoder) whose
encoder sees the image and the sketch features, whose decoder rebuilds the
image features from a latent code and the sketch, and whose generated image
features must also regress the sketch back (the "reconstruction of the
sketch" regulariser that forces the decoder to use its condition). Retrieval
averages the image features generated from many prior samples for a query
sketch and ranks the gallery images' features by cosine. Read from the
authors' code (``trainCVAE_pre.py``): MSE reconstruction averaged over the
feature dimensions, KL summed over the latent dimensions, the sketch
regulariser as MSE with weight 10, ``tanh`` on the encoder's mean and log
variance, 100 samples per query, Adam (lr 2e-4, beta1 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.models.base import Objective, Phase, adam
from visem.models.layers import mlp
from visem.models.registry import register_model
from visem.models.sbir import SketchImageModel

__all__ = ["ZSSBIR", "ZSSBIRConfig"]

VARIANTS = ("cvae", "aae")


@dataclass
class ZSSBIRConfig:
    image_dim: int | None = None
    sketch_dim: int | None = None
    latent_dim: int = 16  # 1024 in the reference code
    hidden: tuple[int, ...] = (32,)  # encoder (4096, 2048), decoder (2048,) in the reference (4096-d VGG features)
    reg_hidden: tuple[int, ...] = (32,)  # (2048,) in the reference
    reg_weight: float = 10.0  # the sketch-reconstruction regulariser
    variant: str = "cvae"  # "cvae" (the paper's best) or "aae"
    adv_weight: float = 1.0  # AAE: the encoder's adversarial term
    n_samples: int = 100  # prior samples averaged per query sketch
    seed: int = 0  # of the retrieval-time prior samples


@register_model("zs-sbir", config=ZSSBIRConfig, family="sbir",
                paper="Yelamarthi et al. ECCV 2018 (ZS-SBIR, CVAE / AAE), seed 004 Table 3")
class ZSSBIR(SketchImageModel):
    """ZS-SBIR: a sketch-conditioned generative model of image features; retrieval by generated features.

    CVAE (``variant="cvae"``), per sample, averaged over the batch::

        (mu, logvar) = tanh-headed E(x_img, x_sk);  z = mu + eps * exp(logvar / 2)
        x_hat = D(z, x_sk)
        rec   = mean_d (x_img - x_hat)^2
        kl    = sum_k KL(N(mu, exp(logvar)) || N(0, 1))
        reg   = mean_d (x_sk - R(x_hat))^2
        loss  = rec + kl + reg_weight * reg

    AAE (``variant="aae"``): ``z = E(x_img, x_sk)`` deterministic, a
    discriminator tells ``z`` from ``N(0, I)`` samples (binary cross-entropy,
    its own phase), and the encoder's term ``adv`` (fool it) replaces ``kl``.

    Retrieval: a sketch is embedded as the mean of ``D(z_j, x_sk)`` over
    ``n_samples`` prior draws (the same seeded draws for every sketch), an
    image by its own features; cosine. **What visem does differently**: the
    reference's ReLU output layers (for non-negative VGG fc7 features) are
    linear here (the features are z-scored), and it trains on Sketchy's
    sketch-photo pairs of the same object; visem's pairs share the class (the
    ``--data`` layout has no object pairs).
    """

    def __init__(self, config: ZSSBIRConfig) -> None:
        super().__init__(config)
        if config.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {config.variant!r}")
        k, h = config.latent_dim, tuple(config.hidden)
        out = 2 * k if config.variant == "cvae" else k
        self.encoder = mlp([config.image_dim + config.sketch_dim, *h, out])
        self.decoder = mlp([k + config.sketch_dim, *h[-1:], config.image_dim])
        self.regressor = mlp([config.image_dim, *config.reg_hidden, config.sketch_dim])
        self.disc = mlp([k, *h, 1]) if config.variant == "aae" else None

    # -- the model ---------------------------------------------------------------------------
    def _encode(self, image: Tensor, sketch: Tensor) -> tuple[Tensor, Tensor | None]:
        e = self.encoder(torch.cat([image, sketch], dim=1))
        if self.config.variant == "aae":
            return e, None
        mu, logvar = e.chunk(2, dim=1)
        return torch.tanh(mu), torch.tanh(logvar)

    def generate(self, z: Tensor, sketch: Tensor) -> Tensor:
        return self.decoder(torch.cat([z, sketch], dim=1))

    def embed_sketch(self, sketch: Tensor) -> Tensor:
        g = torch.Generator(device=sketch.device).manual_seed(self.config.seed)
        zs = torch.randn(self.config.n_samples, self.config.latent_dim, generator=g, device=sketch.device,
                         dtype=sketch.dtype)
        out = torch.zeros(sketch.shape[0], self.config.image_dim, device=sketch.device, dtype=sketch.dtype)
        for z in zs:
            out += self.generate(z.expand(sketch.shape[0], -1), sketch)
        return out / len(zs)

    def embed_image(self, image: Tensor) -> Tensor:
        return image

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    # -- training ----------------------------------------------------------------------------
    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        cfg = self.config
        x, s = batch["image"], batch["sketch"]
        mu, logvar = self._encode(x, s)
        if cfg.variant == "cvae":
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        x_hat = self.generate(z, s)
        terms = {"rec": (x - x_hat).pow(2).mean(1).mean(), "reg": (s - self.regressor(x_hat)).pow(2).mean(1).mean()}
        weights = {"reg": cfg.reg_weight}
        if cfg.variant == "cvae":
            terms["kl"] = (0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(1)).mean()
        else:
            logits = self.disc(z)
            terms["adv"] = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            weights["adv"] = cfg.adv_weight
        return Objective(terms, weights)

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        gen = [*self.encoder.parameters(), *self.decoder.parameters(), *self.regressor.parameters()]
        opts = [adam(gen, lr=lr, weight_decay=weight_decay, betas=(0.5, 0.999))]
        if self.disc is not None:
            opts.append(adam(self.disc.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.5, 0.999)))
        return opts

    def phases(self) -> tuple[Phase, ...]:
        if self.config.variant == "cvae":
            return (Phase("main", (0,)),)
        return (Phase("main", (0,)), Phase("discriminator", (1,), log=False))

    def forward(self, batch: Mapping[str, Tensor], progress: float = 0.0, phase: str = "main") -> dict[str, Tensor]:
        if phase == "main":
            return self.loss(batch, progress)
        if phase == "discriminator" and self.disc is not None:
            with torch.no_grad():
                z, _ = self._encode(batch["image"], batch["sketch"])
            real, fake = self.disc(torch.randn_like(z)), self.disc(z)
            loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                    + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            return {"loss": loss}
        raise ValueError(f"zs-sbir ({self.config.variant}) has no training phase {phase!r}")
