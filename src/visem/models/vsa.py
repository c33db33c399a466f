"""VSA-AE-MMD (seed 001, Carraggi et al. 2018) and its two ablations.

Cross-domain visual-semantic alignment: a paired *source* domain and an
unpaired *target* domain (its images and captions are both seen in training,
their pairing is not).

* Visual auto-encoder (Eq. 4-6): ``h_i = tanh(W_e Phi(i) + b_e)``,
  ``i_hat = W_d h_i + b_d``, loss ``|i_hat - Phi(i)|^2``.
* Textual auto-encoder (Eq. 1-3): :class:`visem.models.text.ConvTextAutoEncoder`
  with ``N = 3`` layers, filter ``z = 4``, strides ``(2, 2, 1)``, codes of
  500 dimensions, unit-norm word embeddings and the cosine-softmax word
  likelihood with temperature ``tau``.
* Similarity (Eq. 7): cosine of the codes ``h_i``, ``h_c``.
* Ranking (Eq. 8): the bidirectional hinge triplet loss summed over all
  in-batch negatives, margin 0.2, on the source pairs only.
* MMD (Eq. 9-10): Gaussian-kernel MMD (sigma 1) between the visual codes and
  the textual codes of source *and* target.
* Joint loss (Eq. 11-12): ``L = L_AE(source) + L_AE(target) + L_MMD + L_SH``.

Registered as three fixed variants with one config (Sec. 4.4):
``vsa-ae-mmd`` (the full model), ``vsa-ae`` (no MMD) and ``vsa-e-mmd`` (no
decoders: no reconstruction terms and no decoder parameters).

Choices where the paper is vague (documented in ``docs/retrieval.md``):

* MMD and the ranking loss act on the L2-normalised codes (the space of
  Eq. 7, where the paper says the codes lie on the unit ball). On raw
  500-d tanh codes the sigma-1 kernel is ~0 for every pair and MMD has no
  gradient.
* Reduction. Eq. 11 sums the per-sample auto-encoder terms over the data and
  Eq. 8's hinge is per pair, while MMD (Eq. 9) is one statistic of the whole
  batch. Summed over the batch (``reduction="sum"``, Eq. 11 as printed) the
  MMD carries 0.07% of the encoders' gradient at the end of training on
  emoji (batch 32): switched off, while seed 001's Table 1 has it lift
  DeepFashion R@1 from 1.1 to 13.5. Averaged over the batch
  (``reduction="mean"``, the default) every per-sample term is divided by
  ``B`` and the MMD carries 1.7%, the ranking 25%; this is the reading under
  which Eq. 12's unit weights let MMD act (``docs/retrieval.md`` measures
  both readings over five seeds). ``rank_weight``, ``mmd_weight``,
  ``img_rec_weight`` and ``txt_rec_weight`` (all 1 as in Eq. 12) allow
  re-weighting.
* ``tau = 0.01`` and conv channels ``(300, 600)``: Zhang et al.'s values
  (seed 001 cites them for the temperature and the architecture).
* Word embeddings 50-d (GloVe 50d initialisation; the paper uses 300-d),
  captions padded or cut to ``max_len = 30`` tokens (``T(0)``; Eq. 1 gives
  ``30 -> 14 -> 6 -> 1``).

``text_encoder="minilm"`` (not in the paper): the textual encoder is
all-MiniLM-L6-v2 with a trained linear projection of its sentence vector to
the ``hidden_dim`` code (:mod:`visem.models.pretrained_text`). A word-level
decoder (Eq. 2-3) has no vocabulary of its own there, so the textual
auto-encoder reconstructs MiniLM's 384-d sentence vector through a linear
decoder with the squared error, the form of the visual auto-encoder
(Eq. 5-6); the other terms are unchanged.

Batches: ``src.image`` ``(B, image_dim)``, ``src.text`` ``(B, L)`` token ids
(row-aligned pairs), ``tgt.image`` and ``tgt.text`` (unpaired, any sizes), as
:class:`visem.train.MultiSampler` names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.distributed import batch_sum, gather
from visem.losses import mmd
from visem.models.base import Objective, batch_ranking_loss
from visem.models.registry import register_model
from visem.models.text import ConvTextAutoEncoder, check_text, check_text_encoder
from visem.models.vsepp import TokenRetrievalModel, check_features, random_token_ids


@dataclass
class VSAConfig:
    image_dim: int | None = None
    vocab_size: int | None = None
    word_dim: int = 50
    hidden_dim: int = 500
    channels: tuple[int, ...] = (300, 600)
    filter_size: int = 4
    strides: tuple[int, ...] = (2, 2, 1)
    max_len: int = 30
    temperature: float = 0.01
    margin: float = 0.2
    sigma: float = 1.0
    reduction: str = "mean"  # per-sample terms over the batch: "mean" (MMD acts) or "sum" (Eq. 11 as printed)
    rank_weight: float = 1.0
    mmd_weight: float = 1.0
    img_rec_weight: float = 1.0
    txt_rec_weight: float = 1.0
    text_encoder: str = "gru"  # "gru": the conv auto-encoder of Eq. 1-3; "minilm": see the module docstring
    text_lr: float = 0.0  # > 0: fine-tune MiniLM at this learning rate; 0: frozen


class VSABase(TokenRetrievalModel):
    """Visual FC auto-encoder + conv text auto-encoder, codes compared by cosine."""

    training_kind = "domains"  # batches: src.image/src.text (paired) and tgt.image/tgt.text (unpaired)
    use_mmd: bool = True
    use_decoders: bool = True

    def __init__(self, config: VSAConfig) -> None:
        super().__init__(config)
        check_text_encoder(config)
        self.pretrained_text = config.text_encoder == "minilm"
        if config.vocab_size is None and not self.pretrained_text:
            raise ValueError(f"{type(self).__name__} needs vocab_size")
        self.img_enc = nn.Linear(config.image_dim, config.hidden_dim)
        self.img_dec = nn.Linear(config.hidden_dim, config.image_dim) if self.use_decoders else None
        if self.pretrained_text:
            from visem.models.pretrained_text import MINILM_DIM, MiniLMTextEncoder

            self.text_tower = MiniLMTextEncoder(config.hidden_dim, finetune=config.text_lr > 0)
            self.text_dec = nn.Linear(config.hidden_dim, MINILM_DIM) if self.use_decoders else None
        else:
            self.text_ae = ConvTextAutoEncoder(
                config.vocab_size, config.word_dim, config.max_len, config.hidden_dim, config.channels,
                config.filter_size, config.strides, config.temperature, decoder=self.use_decoders,
            )

    def load_word_vectors(self, table: Tensor) -> None:
        if not self.pretrained_text:
            self.text_ae.load_word_vectors(table)

    # -- codes ------------------------------------------------------------
    def image_code(self, image: Tensor) -> Tensor:
        """Eq. 4: ``h_i = tanh(W_e Phi(i) + b_e)``."""
        check_features("image", image, self.config.image_dim)
        return torch.tanh(self.img_enc(image))

    def text_code(self, text: Tensor) -> Tensor:
        text = check_text("text", text, self.config)
        if self.pretrained_text:
            return self.text_tower(text)[1]
        return self.text_ae.encode(text)

    def text_reconstruction(self, text: Tensor, h: Tensor) -> Tensor:
        """Eq. 3 per caption (``(B,)``), or with MiniLM the squared error of the decoded sentence vector."""
        if self.pretrained_text:
            return (self.text_dec(h) - self.text_tower.sentence(text)).pow(2).sum(dim=-1)
        return self.text_ae.reconstruction_loss(text, h)

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize(self.image_code(image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize(self.text_code(text), dim=-1)

    # -- losses -----------------------------------------------------------
    def image_reconstruction(self, image: Tensor, h: Tensor) -> Tensor:
        """Eq. 5-6 per sample: ``|W_d h_i + b_d - Phi(i)|^2``."""
        return (self.img_dec(h) - image).pow(2).sum(dim=-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 12: ``L_AE (Eq. 11, source + target) + L_MMD (Eq. 9) + L_SH (Eq. 8, source pairs)``."""
        c = self.config
        red = batch_sum if c.reduction == "sum" else (lambda x: x.mean())  # noqa: E731
        hi_s, hc_s = self.image_code(batch["src.image"]), self.text_code(batch["src.text"])
        hi_t, hc_t = self.image_code(batch["tgt.image"]), self.text_code(batch["tgt.text"])
        ei_s, ec_s = F.normalize(hi_s, dim=-1), F.normalize(hc_s, dim=-1)
        terms = {"ranking": batch_ranking_loss(ei_s, ec_s, margin=c.margin, hardest=False, reduction=c.reduction)}
        weights = {"ranking": c.rank_weight}
        if self.use_mmd:
            vis = torch.cat([gather(ei_s), gather(F.normalize(hi_t, dim=-1))])
            txt = torch.cat([gather(ec_s), gather(F.normalize(hc_t, dim=-1))])
            terms["mmd"] = mmd(vis, txt, sigmas=(c.sigma,))
            weights["mmd"] = c.mmd_weight
        if self.use_decoders:
            terms["rec_image"] = red(self.image_reconstruction(batch["src.image"], hi_s)) + \
                red(self.image_reconstruction(batch["tgt.image"], hi_t))
            terms["rec_text"] = red(self.text_reconstruction(batch["src.text"], hc_s)) + \
                red(self.text_reconstruction(batch["tgt.text"], hc_t))
            weights["rec_image"] = c.img_rec_weight
            weights["rec_text"] = c.txt_rec_weight
        return Objective(terms, weights)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The image encoder, the word embeddings and the conv text encoder (not the decoders)."""
        if self.pretrained_text:
            return [*self.img_enc.parameters(), *self.text_tower.proj.parameters(),
                    *self.text_tower.backbone_parameters()]
        return [*self.img_enc.parameters(), *self.text_ae.embed.parameters(),
                *self.text_ae.encoder_layers.parameters()]

    @torch.no_grad()
    def reconstruct_text(self, text: Tensor) -> Tensor:
        """``(B, max_len)`` word ids decoded from the codes of ``text`` (Sec. 4.5)."""
        if not self.use_decoders or self.pretrained_text:
            raise ValueError(f"{self.registry_name} has no word decoder (no decoders, or a MiniLM text tower) "
                             "and cannot reconstruct text")
        return self.text_ae.reconstruct(check_text("text", text, self.config))

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        c = self.config
        return {
            "src.image": torch.randn(n, c.image_dim, generator=generator),
            "src.text": random_token_ids(n, c.vocab_size, c.max_len, generator),
            "tgt.image": torch.randn(n, c.image_dim, generator=generator) + 0.5,
            "tgt.text": random_token_ids(n, c.vocab_size, c.max_len, generator),
        }


_PAPER = "seed 001 (Carraggi et al. 2018)"


@register_model("vsa-ae-mmd", config=VSAConfig, family="retrieval", paper=_PAPER + ", Eq. 1-12")
class VSAAEMMD(VSABase):
    """VSA-AE-MMD: visual + conv text auto-encoders, source hinge ranking, source+target MMD."""


@register_model("vsa-ae", config=VSAConfig, family="retrieval", paper=_PAPER + ", ablation without MMD")
class VSAAE(VSABase):
    """VSA-AE: VSA-AE-MMD without the MMD alignment term (seed 001 Sec. 4.4 baseline)."""

    use_mmd = False


@register_model("vsa-e-mmd", config=VSAConfig, family="retrieval", paper=_PAPER + ", ablation without decoders")
class VSAEMMD(VSABase):
    """VSA-E-MMD: VSA-AE-MMD without decoders, so without reconstruction losses (seed 001 Sec. 4.4)."""

    use_decoders = False


VARIANTS: Sequence[str] = ("vsa-ae", "vsa-e-mmd", "vsa-ae-mmd")
