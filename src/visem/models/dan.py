"""DAN, dual attention networks for image-text matching (Nam, Ha, Kim, CVPR 2017).

Seed 003's baseline [36] (Tables 2 and 4): Nam, Ha, Kim, *Dual Attention
Networks for Multimodal Reasoning and Matching*, CVPR 2017
(arXiv:1611.00471). The paper is not among visem's seed copies, so its
equations are cited by section and written out in full below. It has two
models: **r-DAN** (reasoning, for VQA; Sec. 3.3) steers both attentions
with one *joint* memory ``m^(k) = m^(k-1) + v^(k) * u^(k)``, and **m-DAN**
(matching; Sec. 3.4), the image-text retrieval model seed 003 compares
against, which keeps a *visual* and a *textual* memory apart so that an
image and a sentence are embedded independently of each other. This module
is m-DAN.

* Inputs (Sec. 3.1): image regions ``v_n`` (``(N, image_dim)``: the
  paper's 14 x 14 ResNet-152 grid; visem's region features) used as they
  are, and words through embeddings and a bidirectional LSTM whose two
  directions are summed, ``u_t = h_t^f + h_t^b``.
* Visual attention (Sec. 3.2), step ``k = 1..K``:
  ``h_n = tanh(W_v v_n) * tanh(W_{v,m} m_v^(k-1))``,
  ``alpha_n = softmax_n(W_{v,h} h_n)``,
  ``v^(k) = tanh(P^(k) sum_n alpha_n v_n)``.
* Textual attention (Sec. 3.2): ``h_t = tanh(W_u u_t) * tanh(W_{u,m}
  m_u^(k-1))``, ``alpha_t = softmax_t(W_{u,h} h_t)`` over the caption's
  words, ``u^(k) = sum_t alpha_t u_t``.
* Step 0 and the memories (Sec. 3.3-3.4): ``v^(0) = tanh(P^(0) (1/N)
  sum_n v_n)``, ``u^(0) = (1/T) sum_t u_t``; ``m_v^(0) = v^(0)``,
  ``m_u^(0) = u^(0)``, ``m_v^(k) = m_v^(k-1) + v^(k)``, ``m_u^(k) =
  m_u^(k-1) + u^(k)``. Every step has its own weights.
* Similarity (Sec. 3.4): ``s^(k) = v^(k) . u^(k)``, ``S = sum_{k=0}^K
  s^(k)``, which is the dot product of the inference-time embeddings
  ``z_v = [v^(0); ...; v^(K)]`` and ``z_u = [u^(0); ...; u^(K)]``:
  :meth:`embed_image` and :meth:`embed_text` return those, so retrieval
  ranks dot products.
* Loss (Sec. 3.4): the bidirectional hinge ``sum_(v,u) { sum_{u^-} [m -
  S(v, u) + S(v, u^-)]_+ + sum_{v^-} [m - S(v, u) + S(v^-, u)]_+ }``,
  summed over the pairs (``reduction="sum"``). The paper trains on
  quadruplets, one sampled negative image and sentence per pair; visem
  takes every other pair of the batch as a negative and sums their hinges
  (``hardest=False``: in expectation the one-random-negative loss times
  ``B - 1``; ``hardest=True`` keeps the hardest one, as VSE++). The margin
  is the paper's ``m = 100`` for its 512-d hidden layers. Under
  data-parallel training the negatives are the global batch's
  (:func:`visem.models.base.batch_ranking_loss`).

Choices: the paper omits the bias terms from its equations; the linear maps
here have them. The scores are unbounded dot products of ``(K + 1) *
hidden_dim`` coordinates (``|v| <= 1`` per coordinate, ``|u| <= 2``), so
the margin's meaning depends on the hidden size; experiments with a smaller
``hidden_dim`` than 512 scale the margin with it (``docs/retrieval.md``).
Defaults are the paper's (Sec. 4.1): ``K = 2``, every hidden layer
(embeddings, LSTM, attention) 512-d, margin 100.

Batches: ``image`` ``(B, N, image_dim)`` regions, ``text`` ``(B, L)`` token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from visem.models.base import Objective, batch_ranking_loss
from visem.models.registry import register_model
from visem.models.text import RNNTextEncoder, check_ids, token_mask
from visem.models.vsepp import TokenRetrievalModel, check_features, random_token_ids


@dataclass
class DANConfig:
    image_dim: int | None = None
    vocab_size: int | None = None
    word_dim: int = 512
    hidden_dim: int = 512
    steps: int = 2  # K attention steps after step 0
    margin: float = 100.0
    hardest: bool = False  # the m-DAN loss sums over the negatives
    reduction: str = "sum"  # of the hinge over the batch's pairs (the m-DAN loss sums them)
    n_regions: int = 6  # regions per image in example_batch
    max_len: int = 10  # caption length in example_batch


class _Attention(nn.Module):
    """One step of DAN's attention (Sec. 3.2): the weights of ``x`` given a memory vector."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w_x = nn.Linear(in_dim, hidden_dim)
        self.w_m = nn.Linear(hidden_dim, hidden_dim)
        self.w_h = nn.Linear(hidden_dim, 1)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, M)`` weights over the ``M`` elements of ``x`` ``(B, M, in_dim)`` (masked ones get 0)."""
        h = torch.tanh(self.w_x(x)) * torch.tanh(self.w_m(memory)).unsqueeze(1)
        logits = self.w_h(h).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits.softmax(dim=1)


@register_model("dan", config=DANConfig, family="retrieval",
                paper="Nam, Ha, Kim 2017 (DAN, m-DAN matching model), baseline of seed 003 Tables 2 and 4")
class DAN(TokenRetrievalModel):
    """m-DAN: K steps of visual and textual attention with separate memories, similarity summed over steps."""

    region_features = True  # images are (B, regions, image_dim)

    def __init__(self, config: DANConfig) -> None:
        super().__init__(config)
        c = config
        if c.vocab_size is None:
            raise ValueError("dan needs vocab_size (set model.vocab_size or train on data with a vocabulary)")
        if c.steps < 0:
            raise ValueError(f"steps must be >= 0, got {c.steps}")
        self.text_encoder = RNNTextEncoder(c.vocab_size, c.word_dim, c.hidden_dim, rnn="lstm", bidirectional=True)
        self.P = nn.ModuleList([nn.Linear(c.image_dim, c.hidden_dim) for _ in range(c.steps + 1)])  # P^(0..K)
        self.visual = nn.ModuleList([_Attention(c.image_dim, c.hidden_dim) for _ in range(c.steps)])
        self.textual = nn.ModuleList([_Attention(c.hidden_dim, c.hidden_dim) for _ in range(c.steps)])

    def load_word_vectors(self, table: Tensor) -> None:
        self.text_encoder.load_word_vectors(table)

    def visual_vectors(self, image: Tensor) -> list[Tensor]:
        """``[v^(0), ..., v^(K)]``, each ``(B, hidden_dim)``: step 0, then ``K`` steps of visual attention."""
        check_features("image", image, self.config.image_dim, ndim=3)
        v = [torch.tanh(self.P[0](image.mean(dim=1)))]
        memory = v[0]
        for k, att in enumerate(self.visual, start=1):
            alpha = att(image, memory)
            v.append(torch.tanh(self.P[k](torch.einsum("bn,bnd->bd", alpha, image))))
            memory = memory + v[-1]
        return v

    def textual_vectors(self, text: Tensor) -> list[Tensor]:
        """``[u^(0), ..., u^(K)]``, each ``(B, hidden_dim)``: step 0, then ``K`` steps of textual attention."""
        check_ids("text", text, self.config.vocab_size)
        out, _ = self.text_encoder(text)
        words = 2.0 * out  # RNNTextEncoder averages the two directions; DAN sums them
        mask = token_mask(text)
        maskf = mask.to(words.dtype).unsqueeze(-1)
        u = [(words * maskf).sum(1) / maskf.sum(1)]
        memory = u[0]
        for att in self.textual:
            alpha = att(words, memory, mask)
            u.append(torch.einsum("bt,btd->bd", alpha, words))
            memory = memory + u[-1]
        return u

    def embed_image(self, image: Tensor) -> Tensor:
        """``z_v = [v^(0); ...; v^(K)]``."""
        return torch.cat(self.visual_vectors(image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        """``z_u = [u^(0); ...; u^(K)]``."""
        return torch.cat(self.textual_vectors(text), dim=-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """The m-DAN hinge on the in-batch score matrix ``S = z_v z_u^T`` (``S_ij = sum_k v_i^(k) . u_j^(k)``)."""
        c = self.config
        z_v, z_u = self.embed_image(batch["image"]), self.embed_text(batch["text"])
        return Objective({"ranking": batch_ranking_loss(z_v, z_u, margin=c.margin, hardest=c.hardest,
                                                        reduction=c.reduction)})

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        c = self.config
        return {
            "image": torch.randn(n, c.n_regions, c.image_dim, generator=generator),
            "text": random_token_ids(n, c.vocab_size, c.max_len, generator),
        }
