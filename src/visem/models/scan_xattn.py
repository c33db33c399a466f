"""SCAN, stacked cross attention (Lee, Chen, Hua, Hu, He 2018).

Seed 003's strongest baseline (Tables 1-4). Registered as ``scan-xattn`` so
that it is not confused with the SCAN baseline of seed 002 (Higgins et al.'s
symbol-concept association network).

Regions ``v_i`` (``(N, image_dim)`` features through a linear layer,
L2-normalised) and words ``e_j`` (word embeddings + bidirectional GRU, the
two directions averaged, L2-normalised) are matched by cross attention:

* **t2i** (text-to-image attention, words attend to regions):
  ``s_ij = cos(v_i, e_j)``, ``s_bar_ij = [s_ij]_+ / sqrt(sum_j [s_ij]_+^2)``
  (normalised over the words), ``alpha_ij = softmax_i(lambda_1 s_bar_ij)``,
  ``a_j = sum_i alpha_ij v_i`` and ``R_j = cos(e_j, a_j)``.
* **i2t** (regions attend to words): the same with the roles swapped
  (normalisation over the regions, softmax over the words).
* Pooling of the ``R``'s into the image-caption score ``S(I, T)``: LogSumExp
  ``log(sum exp(lambda_2 R)) / lambda_2`` or the average.

Loss: hinge triplet with the hardest in-batch negative, margin 0.2 (VSE++).
Scores are not dot products of fixed embeddings, so evaluation computes the
image x caption score matrix in blocks and ranks it with
:func:`visem.metrics.retrieval_recall` (see :func:`recall_from_scores`).

Defaults follow the SCAN paper's best single models: t2i with LSE,
``lambda_1 = 9``, ``lambda_2 = 6``; i2t with ``lambda_1 = 4`` and
``lambda_2 = 5`` (Flickr30K; 20 on MS-COCO). ``lambda_softmax`` /
``lambda_lse`` left unset take the direction's value. SCAN's leaky-ReLU
(0.1) on ``s_ij`` before the normalisation follows its code, and the hinge
is summed over the batch as its ``ContrastiveLoss`` returns it
(``reduction="sum"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.distributed import gather, gathered_rows
from visem.losses import ranking_hinges, ranking_loss_from_scores
from visem.metrics import retrieval_recall
from visem.models.base import EmbeddingModel, Objective, paired_eval_data
from visem.models.registry import register_model
from visem.models.text import RNNTextEncoder, check_ids, token_mask
from visem.models.vsepp import check_features, random_token_ids


def recall_from_scores(scores: Tensor, txt_to_img: Tensor) -> dict[str, float]:
    """:func:`visem.metrics.retrieval_recall` of an ``(n_images, n_captions)`` score matrix.

    ``retrieval_recall`` scores with dot products: with one-hot image
    embeddings ``I`` and caption embeddings ``scores.T`` the dot products are
    exactly ``scores``, so the ranks (and the tie rule) are the metric's own.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (n_images, n_captions), got {tuple(scores.shape)}")
    eye = torch.eye(scores.shape[0], dtype=scores.dtype, device=scores.device)
    return retrieval_recall(eye, scores.T.contiguous(), txt_to_img)


@dataclass
class SCANConfig:
    image_dim: int | None = None
    vocab_size: int | None = None
    word_dim: int = 50
    embed_dim: int = 1024
    direction: str = "t2i"  # "t2i" or "i2t"
    pooling: str = "lse"  # "lse" or "avg"
    lambda_softmax: float | None = None  # 9 for t2i, 4 for i2t (SCAN's best single models)
    lambda_lse: float | None = None  # 6 for t2i, 5 for i2t (Flickr30K; 20 on MS-COCO)
    leaky: float = 0.1
    margin: float = 0.2
    hardest: bool = True
    reduction: str = "sum"  # of the hinge over the batch: "sum" (SCAN's code) or "mean"
    eval_block: int = 128
    n_regions: int = 6  # regions per image in example_batch
    max_len: int = 10  # caption length in example_batch


#: SCAN's best single-model temperatures per direction: (lambda_softmax, lambda_lse) on Flickr30K
DIRECTION_LAMBDAS = {"t2i": (9.0, 6.0), "i2t": (4.0, 5.0)}


def _l2norm(x: Tensor, dim: int, eps: float = 1e-8) -> Tensor:
    return x / (x.norm(dim=dim, keepdim=True) + eps)


@register_model("scan-xattn", config=SCANConfig, family="retrieval",
                paper="Lee et al. 2018 (stacked cross attention), baseline of seed 003")
class SCANXAttn(EmbeddingModel):
    """SCAN stacked cross attention between image regions and words, hardest-negative hinge."""

    def __init__(self, config: SCANConfig) -> None:
        super().__init__(config)
        c = config
        if c.vocab_size is None:
            raise ValueError("scan-xattn needs vocab_size")
        if c.direction not in ("t2i", "i2t"):
            raise ValueError(f"direction must be 't2i' or 'i2t', got {c.direction!r}")
        if c.pooling not in ("lse", "avg"):
            raise ValueError(f"pooling must be 'lse' or 'avg', got {c.pooling!r}")
        lam_sm, lam_lse = DIRECTION_LAMBDAS[c.direction]
        self.lambda_softmax = lam_sm if c.lambda_softmax is None else float(c.lambda_softmax)
        self.lambda_lse = lam_lse if c.lambda_lse is None else float(c.lambda_lse)
        self.region_proj = nn.Linear(c.image_dim, c.embed_dim)
        r = (6.0 / (c.image_dim + c.embed_dim)) ** 0.5
        nn.init.uniform_(self.region_proj.weight, -r, r)
        nn.init.zeros_(self.region_proj.bias)
        self.text_encoder = RNNTextEncoder(c.vocab_size, c.word_dim, c.embed_dim, rnn="gru", bidirectional=True)

    def load_word_vectors(self, table: Tensor) -> None:
        self.text_encoder.load_word_vectors(table)

    def encode_regions(self, image: Tensor) -> Tensor:
        check_features("image", image, self.config.image_dim, ndim=3)
        return _l2norm(self.region_proj(image), -1)

    def encode_words(self, text: Tensor) -> tuple[Tensor, Tensor]:
        check_ids("text", text, self.config.vocab_size)
        out, _ = self.text_encoder(text)
        return _l2norm(out, -1), token_mask(text)

    def scores(self, regions: Tensor, words: Tensor, mask: Tensor) -> Tensor:
        """``(n_img, n_txt)`` SCAN similarities of encoded regions and words.

        ``regions`` ``(I, N, D)``, ``words`` ``(T, M, D)``, ``mask`` ``(T, M)``.
        """
        c = self.config
        maskf = mask.to(words.dtype)  # (T, M)
        # cosine of every region with every word: (I, T, N, M)
        raw = torch.einsum("ind,tmd->itnm", regions, words)
        sim = F.leaky_relu(raw, c.leaky)
        # The attended vectors are never materialised ((I, T, M, D) is too big):
        # with a = sum_i alpha_i x_i, e.a = sum_i alpha_i (x_i.e) and
        # |a|^2 = alpha^T G alpha for the Gram matrix G of the attended set.
        if c.direction == "t2i":
            # words attend to regions; normalise over words, softmax over regions
            sim = _l2norm(sim * maskf[None, :, None, :], dim=3)
            attn = torch.softmax(self.lambda_softmax * sim, dim=2)  # (I, T, N, M), over regions
            dot = (attn * raw).sum(dim=2)  # (I, T, M): e_j . a_j
            gram = regions @ regions.transpose(1, 2)  # (I, N, N)
            sq = (attn * torch.einsum("inp,itpm->itnm", gram, attn)).sum(dim=2)
            rel = dot / (sq.clamp(min=1e-12).sqrt())  # |e_j| = 1 for real words
            rel_mask = maskf[None].expand_as(rel)
        else:
            # regions attend to words; normalise over regions, softmax over real words
            sim = _l2norm(sim, dim=2)
            logits = (self.lambda_softmax * sim).masked_fill(~mask[None, :, None, :], float("-inf"))
            attn = torch.softmax(logits, dim=3)  # (I, T, N, M), over words
            dot = (attn * raw).sum(dim=3)  # (I, T, N): v_i . a_i
            gram = words @ words.transpose(1, 2)  # (T, M, M)
            sq = (attn * torch.einsum("tmq,itnq->itnm", gram, attn)).sum(dim=3)
            rel = dot / (sq.clamp(min=1e-12).sqrt())
            rel_mask = torch.ones_like(rel)
        if c.pooling == "lse":
            lse = (self.lambda_lse * rel).masked_fill(rel_mask == 0, float("-inf")).logsumexp(dim=-1)
            return lse / self.lambda_lse
        return (rel * rel_mask).sum(-1) / rel_mask.sum(-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        regions = self.encode_regions(batch["image"])
        words, mask = self.encode_words(batch["text"])
        c = self.config
        regions_g, offset = gathered_rows(regions)
        if regions_g is regions:
            s = self.scores(regions, words, mask)
            return Objective({"ranking": ranking_loss_from_scores(s, c.margin, c.hardest, reduction=c.reduction)})
        # data-parallel: this rank's images against every caption, its captions against every image
        words_g, mask_g = gather(words), gather(mask.to(torch.uint8)).bool()
        per = gather(ranking_hinges(self.scores(regions, words_g, mask_g), self.scores(regions_g, words, mask).T,
                                    offset, margin=c.margin, hardest=c.hardest))
        return Objective({"ranking": per.sum() if c.reduction == "sum" else per.mean()})

    @torch.no_grad()
    def score_matrix(self, image: Tensor, text: Tensor) -> Tensor:
        """``(n_img, n_txt)`` scores of all images against all captions, in blocks."""
        was_training = self.training
        self.eval()
        try:
            blk = self.config.eval_block
            regions = torch.cat([self.encode_regions(x) for x in image.split(blk)])
            rows = []
            for r in regions.split(blk):
                cols = []
                for t in text.split(blk):
                    words, mask = self.encode_words(t)
                    cols.append(self.scores(r, words, mask))
                rows.append(torch.cat(cols, dim=1))
        finally:
            self.train(was_training)
        return torch.cat(rows)

    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        return recall_from_scores(self.score_matrix(data["image"], data["text"]), data["txt_to_img"])

    def example_eval_data(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return paired_eval_data(self.example_batch(n, generator))

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        c = self.config
        return {
            "image": torch.randn(n, c.n_regions, c.image_dim, generator=generator),
            "text": random_token_ids(n, c.vocab_size, c.max_len, generator),
        }
