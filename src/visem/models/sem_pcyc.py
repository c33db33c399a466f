"""SEM-PCYC (Dutta & Akata, *Semantically Tied Paired Cycle Consistency for Zero-Shot Sketch-based Image
Retrieval*, CVPR 2019): "SEM-PCYC" and "SEM-PCYC (binary)" of seed 004 Table 3.

Each visual branch (sketch, image) maps its features into a common semantic
space with a generator, adversarially against the class side information, and
back (paired cycle consistency); a classification loss keeps the mapped
features discriminative; the side information is compressed by an
auto-encoder whose hidden layer is the semantic space. Read from the authors'
code (``AnjanDutta/sem-pcyc``, ``src/models.py``, ``src/options.py``,
``src/test.py``, ``src/itq.py``), which trains on **fixed** pretrained
sketch / image features (``finetune=False``), as visem does:

* generators ``sk->se``, ``im->se``, ``se->sk``, ``se->im``: two hidden layers
  of ``(in + out) / 2`` units, LeakyReLU(0.2), dropout 0.5;
* discriminators on the semantic space, the sketch and the image features:
  Gaussian input noise (std 0.3), two hidden layers of ``in / 2``,
  LeakyReLU(0.2), least-squares GAN losses;
* side-information auto-encoder: one ReLU layer each way, ``sem_dim -> dim_out``,
  trained on ``MSE + 0.001 sum_j ||W_:,j||_2 / B`` (a group-sparsity
  "feature selection" of the side information), SGD at 100 times the
  learning rate;
* three linear classifiers (semantic, sketch, image), **frozen at their
  random initialisation** (``requires_grad = False`` in the reference);
* generator loss, with ``lambda_se = lambda_im = lambda_sk = 10``::

      adv = LS(D_se(im->se), 1) + LS(D_se(sk->se), 1) + LS(D_im(se->im), 1) + LS(D_sk(se->sk), 1)
      cyc = 10 L1(se->im(im->se(x_im)), x_im) + 10 L1(se->sk(sk->se(x_sk)), x_sk)
            + 10 (L1(sk->se(se->sk(e)), e) + L1(im->se(se->im(e)), e))
      cls = 10 (CE(C_se(im->se), y) + CE(C_se(sk->se), y)) + 10 CE(C_sk(se->sk), y) + 10 CE(C_im(se->im), y)
      reg = 10 (MSE(im->se, sk->se) + MSE(sk->se, im->se)) + 10 MSE(se->im, x_im) + 10 MSE(se->sk, x_sk)
      loss = 1 adv + 1 cyc + 1 cls + 0.1 reg

  (``e`` the encoded side information, held fixed; L1 / MSE / CE averaged as
  PyTorch's defaults), Adam at the learning rate;
* discriminator loss ``0.25 (2 LS(D_se(e), 1) + LS(D_se(im->se), 0) + LS(D_se(sk->se), 0))
  + 0.5 (LS(D_sk(x_sk), 1) + LS(D_sk(se->sk), 0)) + 0.5 (LS(D_im(x_im), 1) + LS(D_im(se->im), 0))``,
  SGD (momentum 0.9) at the learning rate.

Retrieval embeds sketches by ``sk->se`` and images by ``im->se``. **SEM-PCYC
(binary)**: iterative quantisation (:class:`visem.models.hashing.ITQ`) of the
embeddings, ``dim_out`` bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.distributed import gather
from visem.losses import lsgan_loss
from visem.models.base import Objective, Phase, adam
from visem.models.registry import register_model
from visem.models.sbir import SketchImageModel

__all__ = ["SEMPCYC", "SEMPCYCConfig"]


class _Noise(nn.Module):
    """Additive Gaussian noise in training (the reference's ``GaussianNoiseLayer``)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


def _generator(d_in: int, d_out: int, dropout: float, hidden: int | None = None) -> nn.Sequential:
    h = hidden or (d_in + d_out) // 2
    return nn.Sequential(nn.Linear(d_in, h), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                         nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(h, d_out))


def _discriminator(d_in: int, noise: float, hidden: int | None = None) -> nn.Sequential:
    h = hidden or max(1, d_in // 2)
    return nn.Sequential(_Noise(noise), nn.Linear(d_in, h), nn.LeakyReLU(0.2), nn.Linear(h, h), nn.LeakyReLU(0.2),
                         nn.Linear(h, 1))


@dataclass
class SEMPCYCConfig:
    image_dim: int | None = None
    sketch_dim: int | None = None
    class_dim: int | None = None
    n_classes: int | None = None
    dim_out: int = 16  # the semantic space; 64 bits in seed 004's binary comparison (reference default 128)
    hidden: int | None = None  # None: the reference's (in + out) / 2 (generators) and in / 2 (discriminators)
    lambda_se: float = 10.0
    lambda_im: float = 10.0
    lambda_sk: float = 10.0
    gen_adv: float = 1.0
    gen_cyc: float = 1.0
    gen_cls: float = 1.0
    gen_reg: float = 0.1
    disc_se: float = 0.25
    disc_sk: float = 0.5
    disc_im: float = 0.5
    ae_regular: float = 0.001
    dropout: float = 0.5
    disc_noise: float = 0.3
    binary: str = "itq"  # SEM-PCYC (binary): ITQ of the embeddings, as the reference's test.py


@register_model("sem-pcyc", config=SEMPCYCConfig, family="sbir",
                paper="Dutta & Akata CVPR 2019 (SEM-PCYC), seed 004 Table 3")
class SEMPCYC(SketchImageModel):
    """SEM-PCYC: paired cycle-consistent generators to a semantic space tied to the class side information.

    **What visem does differently.** No BatchNorm (the reference has it in
    every generator and discriminator; visem's models keep batch statistics
    out, so that a data-parallel run is the one-process run). One side
    information (the class embedding given, e.g. GloVe of the class name)
    where the reference concatenates word2vec and a WordNet path embedding
    before its auto-encoder. Retrieval by cosine where the reference ranks by
    Euclidean distance (seed 004's protocol is the same for every model). ITQ is
    fitted on the training embeddings (the reference fits it on the test
    sketches, centring each set on its own mean). The reference runs the
    three updates on one forward pass; here each phase recomputes it with the
    parameters the previous phase left (as LCALE's Algorithm 1).
    """

    def __init__(self, config: SEMPCYCConfig) -> None:
        super().__init__(config)
        k, c = config.dim_out, config.class_dim
        d_i, d_s, p = config.image_dim, config.sketch_dim, config.dropout
        h = config.hidden
        self.sk2se, self.im2se = _generator(d_s, k, p, h), _generator(d_i, k, p, h)
        self.se2sk, self.se2im = _generator(k, d_s, p, h), _generator(k, d_i, p, h)
        self.d_se = _discriminator(k, config.disc_noise, h and min(h, max(1, k // 2)))
        self.d_sk = _discriminator(d_s, config.disc_noise, h)
        self.d_im = _discriminator(d_i, config.disc_noise, h)
        self.ae_enc = nn.Sequential(nn.Linear(c, k), nn.ReLU())
        self.ae_dec = nn.Sequential(nn.Linear(k, c), nn.ReLU())
        self.cls_se = nn.Linear(k, config.n_classes, bias=False)
        self.cls_sk = nn.Linear(d_s, config.n_classes, bias=False)
        self.cls_im = nn.Linear(d_i, config.n_classes, bias=False)
        for layer in (self.cls_se, self.cls_sk, self.cls_im):
            layer.weight.requires_grad_(False)

    def embed_sketch(self, sketch: Tensor) -> Tensor:
        return self.sk2se(sketch)

    def embed_image(self, image: Tensor) -> Tensor:
        return self.im2se(image)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.sk2se.parameters(), *self.im2se.parameters()]

    def _semantics(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["class_emb"][batch["label"].long()]

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """The generators' loss (``adv``, ``cyc``, ``cls``, ``reg``) with the encoded side information fixed."""
        cfg = self.config
        sk, im, y = batch["sketch"], batch["image"], batch["label"].long()
        with torch.no_grad():
            e = self.ae_enc(self._semantics(batch))
        im2se, sk2se = self.im2se(im), self.sk2se(sk)
        se2im, se2sk = self.se2im(e), self.se2sk(e)
        adv = (lsgan_loss(self.d_se(im2se), True) + lsgan_loss(self.d_se(sk2se), True)
               + lsgan_loss(self.d_im(se2im), True) + lsgan_loss(self.d_sk(se2sk), True))
        cyc = (cfg.lambda_im * F.l1_loss(self.se2im(im2se), im) + cfg.lambda_sk * F.l1_loss(self.se2sk(sk2se), sk)
               + cfg.lambda_se * (F.l1_loss(self.sk2se(se2sk), e) + F.l1_loss(self.im2se(se2im), e)))
        cls = (cfg.lambda_se * (F.cross_entropy(self.cls_se(im2se), y) + F.cross_entropy(self.cls_se(sk2se), y))
               + cfg.lambda_sk * F.cross_entropy(self.cls_sk(se2sk), y)
               + cfg.lambda_im * F.cross_entropy(self.cls_im(se2im), y))
        reg = (cfg.lambda_se * (F.mse_loss(im2se, sk2se) + F.mse_loss(sk2se, im2se))
               + cfg.lambda_im * F.mse_loss(se2im, im) + cfg.lambda_sk * F.mse_loss(se2sk, sk))
        return Objective({"adv": adv, "cyc": cyc, "cls": cls, "reg": reg},
                         {"adv": cfg.gen_adv, "cyc": cfg.gen_cyc, "cls": cfg.gen_cls, "reg": cfg.gen_reg})

    def _autoencoder_loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        s = self._semantics(batch)
        rec = F.mse_loss(self.ae_dec(self.ae_enc(s)), s)
        group = self.ae_enc[0].weight.norm(p=2, dim=0).sum()
        n = gather(s[:, :1]).shape[0]  # the reference divides by the batch size: the global one under DDP
        return rec + self.config.ae_regular * group / n

    def _discriminator_loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        cfg = self.config
        sk, im = batch["sketch"], batch["image"]
        with torch.no_grad():
            e = self.ae_enc(self._semantics(batch))
            im2se, sk2se, se2im, se2sk = self.im2se(im), self.sk2se(sk), self.se2im(e), self.se2sk(e)
        d_se = (2 * lsgan_loss(self.d_se(e), True) + lsgan_loss(self.d_se(im2se), False)
                + lsgan_loss(self.d_se(sk2se), False))
        d_sk = lsgan_loss(self.d_sk(sk), True) + lsgan_loss(self.d_sk(se2sk), False)
        d_im = lsgan_loss(self.d_im(im), True) + lsgan_loss(self.d_im(se2im), False)
        return cfg.disc_se * d_se + cfg.disc_sk * d_sk + cfg.disc_im * d_im

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        """Generators: Adam (lr); discriminators: SGD (lr, momentum 0.9); auto-encoder: SGD (100 lr, momentum 0.9)."""
        gens = [*self.sk2se.parameters(), *self.im2se.parameters(), *self.se2sk.parameters(),
                *self.se2im.parameters()]
        discs = [*self.d_se.parameters(), *self.d_sk.parameters(), *self.d_im.parameters()]
        ae = [*self.ae_enc.parameters(), *self.ae_dec.parameters()]
        return [adam(gens, lr=lr, weight_decay=weight_decay),
                torch.optim.SGD(discs, lr=lr, momentum=0.9, weight_decay=weight_decay),
                torch.optim.SGD(ae, lr=100 * lr, momentum=0.9, weight_decay=weight_decay)]

    def phases(self) -> tuple[Phase, ...]:
        """The reference's order: auto-encoder, generators, discriminators."""
        return (Phase("autoencoder", (2,), log=False), Phase("generator", (0,)), Phase("discriminator", (1,), log=False))

    def forward(self, batch: Mapping[str, Tensor], progress: float = 0.0, phase: str = "generator") -> dict[str, Tensor]:
        if phase in ("main", "generator"):
            return self.loss(batch, progress)
        if phase == "autoencoder":
            return {"loss": self._autoencoder_loss(batch)}
        if phase == "discriminator":
            return {"loss": self._discriminator_loss(batch)}
        raise ValueError(f"sem-pcyc has no training phase {phase!r}")
