"""VSE++ (Faghri, Fleet, Kiros, Fidler 2018): the baseline of seeds 001 and 003.

Image: a precomputed CNN feature (``image_dim``) through one linear layer and
L2 normalisation (VSE++'s ``EncoderImagePrecomp``). Text: word embeddings and
a one-layer GRU whose state at the last token, L2-normalised, is the caption
embedding (``EncoderText``). Score: cosine similarity. Loss: the bidirectional
hinge triplet loss on the in-batch score matrix with the sum of violations
(VSE0, ``hardest=False``) or the hardest negative (VSE++'s "max of hinges",
``hardest=True``, seed 003 Eq. 2), :func:`visem.losses.ranking_loss`.

Choices: the hinge is summed over the batch (``reduction="sum"``), as VSE++'s
``ContrastiveLoss`` returns it; with gradients clipped at 2.0 (VSE++'s
``grad_clip``) the reduction decides how often the clip acts, so it is not a
mere rescaling. The word dimension defaults to 50 (GloVe 50d initialisation;
VSE++ learns 300-d embeddings from U(-0.1, 0.1), ``word_dim=300,
glove=False`` in the precomp experiment) and the joint space to 1024 as in
VSE++. ``text_encoder="minilm"`` replaces the GRU by all-MiniLM-L6-v2 and a
trained projection of its sentence vector
(:mod:`visem.models.pretrained_text`; not in the paper: an open vocabulary
for search indexes built from few captions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.models.base import PairRankingLoss, RetrievalModel
from visem.models.registry import register_model
from visem.models.text import check_text, recurrent_or_pretrained
from visem.metrics import retrieval_recall


def random_token_ids(n: int, vocab_size: int, max_len: int, generator: torch.Generator) -> Tensor:
    """``(n, max_len)`` random captions of random lengths 1..max_len (ids >= 2), pad after."""
    ids = torch.randint(2, vocab_size, (n, max_len), generator=generator)
    lengths = torch.randint(1, max_len + 1, (n,), generator=generator)
    ids[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0
    return ids


def check_features(name: str, x: Tensor, dim: int, ndim: int = 2) -> Tensor:
    """Validate a floating ``(B, dim)`` (or ``(B, N, dim)`` for ``ndim=3``) feature tensor."""
    if not isinstance(x, Tensor) or x.dim() != ndim or x.shape[-1] != dim or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        want = "(B, N, %d)" % dim if ndim == 3 else "(B, %d)" % dim
        raise ValueError(f"{name} must be a float tensor of shape {want}, got {shape}")
    return x


class TokenRetrievalModel(RetrievalModel):
    """A retrieval model whose texts are token ids: chunked embedding at evaluation.

    ``training_kind`` names the batches :meth:`loss` reads (``pairs``:
    ``image``/``text``); ``region_features`` is true when images are region
    sets ``(B, R, image_dim)`` rather than vectors. The search index reads both.
    """

    training_kind: str = "pairs"
    region_features: bool = False
    eval_chunk: int = 512

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        """One Adam; a fine-tuned pretrained text tower (``text_lr > 0``) gets its own learning rate."""
        from visem.models.base import adam
        from visem.models.pretrained_text import MiniLMTextEncoder

        tower = [p for m in self.modules() if isinstance(m, MiniLMTextEncoder) for p in m.backbone_parameters()]
        if not tower:
            return super().make_optimizers(lr, weight_decay)
        ids = {id(p) for p in tower}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [adam([{"params": rest}, {"params": tower, "lr": self.config.text_lr}], lr=lr,
                     weight_decay=weight_decay)]

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        was_training = self.training
        self.eval()
        try:
            img = torch.cat([self.embed_image(x) for x in data["image"].split(self.eval_chunk)])
            txt = torch.cat([self.embed_text(t) for t in data["text"].split(self.eval_chunk)])
        finally:
            self.train(was_training)
        return retrieval_recall(img, txt, data["txt_to_img"])


@dataclass
class VSEPPConfig:
    image_dim: int | None = None
    vocab_size: int | None = None
    word_dim: int = 50
    embed_dim: int = 1024
    margin: float = 0.2
    hardest: bool = True
    reduction: str = "sum"  # of the hinge over the batch: "sum" (VSE++'s code) or "mean"
    max_len: int = 12  # length of example_batch captions (data may use any length)
    text_encoder: str = "gru"  # or "minilm": all-MiniLM-L6-v2 + trained projection (visem.models.pretrained_text)
    text_lr: float = 0.0  # > 0: fine-tune MiniLM at this learning rate; 0: frozen


@register_model("vsepp", config=VSEPPConfig, family="retrieval", paper="Faghri et al. 2018 (VSE++), baseline of seeds 001 and 003")
class VSEPP(PairRankingLoss, TokenRetrievalModel):
    """VSE++: linear image projection, GRU caption encoder, hardest-negative hinge loss."""

    def __init__(self, config: VSEPPConfig) -> None:
        super().__init__(config)
        if config.vocab_size is None and config.text_encoder != "minilm":
            raise ValueError("vsepp needs vocab_size (set model.vocab_size or train on data with a vocabulary)")
        self.img_proj = nn.Linear(config.image_dim, config.embed_dim)
        self.text_encoder = recurrent_or_pretrained(config, config.embed_dim, rnn="gru")
        # VSE++ initialises the image FC with Xavier-uniform scaled to the fan sizes
        r = (6.0 / (config.image_dim + config.embed_dim)) ** 0.5
        nn.init.uniform_(self.img_proj.weight, -r, r)
        nn.init.zeros_(self.img_proj.bias)

    def load_word_vectors(self, table: Tensor) -> None:
        self.text_encoder.load_word_vectors(table)

    def embed_image(self, image: Tensor) -> Tensor:
        check_features("image", image, self.config.image_dim)
        return F.normalize(self.img_proj(image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        check_text("text", text, self.config)
        _, last = self.text_encoder(text)
        return F.normalize(last, dim=-1)

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "image": torch.randn(n, self.config.image_dim, generator=generator),
            "text": random_token_ids(n, self.config.vocab_size, self.config.max_len, generator),
        }
