"""Linear visual-semantic embedding, the simplest joint-space baseline.

Two linear maps put image and text features into one ``embed_dim`` space where
the score of a pair is the cosine of their codes, trained with the
bidirectional hinge triplet loss (:func:`visem.losses.ranking_loss`: seed 001
Eq. 8 with ``hardest=False``, seed 003 Eq. 2 / VSE++ with ``hardest=True``).
It is the "linear" end of the VSE family (Kiros et al. 2014) and visem's
smoke-test model: it trains in seconds on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.models.base import PairRankingLoss, RetrievalModel
from visem.models.registry import register_model


@dataclass
class LinearVSEConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    embed_dim: int = 64
    margin: float = 0.2
    hardest: bool = False
    reduction: str = "sum"  # of the hinge over the batch: "sum" (VSE++'s code) or "mean"


@register_model("linear-vse", config=LinearVSEConfig, family="retrieval", paper="Kiros et al. 2014 (linear VSE)")
class LinearVSE(PairRankingLoss, RetrievalModel):
    """Linear image and text projections to a cosine joint space, hinge triplet loss."""

    def __init__(self, config: LinearVSEConfig) -> None:
        super().__init__(config)
        self.img_proj = nn.Linear(config.image_dim, config.embed_dim)
        self.txt_proj = nn.Linear(config.text_dim, config.embed_dim)

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize(self.img_proj(image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize(self.txt_proj(text), dim=-1)

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "image": torch.randn(n, self.config.image_dim, generator=generator),
            "text": torch.randn(n, self.config.text_dim, generator=generator),
        }
