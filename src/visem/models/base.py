"""Base classes of visem models: the training and evaluation interface."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from visem.losses import ranking_loss
from visem.metrics import retrieval_recall


class EmbeddingModel(nn.Module):
    """Base class of registered models.

    Subclasses implement :meth:`loss` (a dict of named scalar terms whose key
    ``"loss"`` is the total to minimise) and :meth:`example_batch`. Models
    with several optimisers or alternating updates (LCALE's Algorithm 1,
    adversarial training) override :meth:`make_optimizers` and
    :meth:`train_step`.
    """

    config: Any

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    # -- training -------------------------------------------------------
    def loss(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> dict[str, Tensor]:
        """Named loss terms for one batch; ``progress`` is the fraction of training done."""
        raise NotImplementedError

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)]

    def train_step(
        self,
        batch: Mapping[str, Tensor],
        optimizers: list[torch.optim.Optimizer],
        progress: float = 0.0,
        grad_clip: float | None = None,
    ) -> dict[str, Tensor]:
        """One update. Raises :class:`NonFiniteError` before stepping on NaN/Inf."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        terms = self.loss(batch, progress)
        check_finite(terms)
        terms["loss"].backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        for opt in optimizers:
            opt.step()
        return terms

    # -- evaluation -----------------------------------------------------
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Metrics on held-out ``data`` (keys as the model's task defines them)."""
        raise NotImplementedError(f"{type(self).__name__} does not define evaluate()")

    # -- tests ----------------------------------------------------------
    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """A valid random training batch of ``n`` samples, for registry-walking tests."""
        raise NotImplementedError


class NonFiniteError(FloatingPointError):
    """A loss term became NaN or Inf; the message names the term."""


def check_finite(terms: Mapping[str, Tensor]) -> None:
    bad = [k for k, v in terms.items() if not bool(torch.isfinite(v.detach()).all())]
    if bad:
        vals = ", ".join(f"{k}={terms[k].detach().flatten()[:1].item()}" for k in bad)
        raise NonFiniteError(f"non-finite loss term(s): {vals}")


class RetrievalModel(EmbeddingModel):
    """A model that embeds images and texts into one space scored by dot product.

    Subclasses implement :meth:`embed_image` and :meth:`embed_text`; held-out
    data with ``image``, ``text`` and ``txt_to_img`` tensors is evaluated with
    :func:`visem.metrics.retrieval_recall`.
    """

    def embed_image(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def embed_text(self, text: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        was_training = self.training
        self.eval()
        try:
            img = self.embed_image(data["image"])
            txt = self.embed_text(data["text"])
        finally:
            self.train(was_training)
        return retrieval_recall(img, txt, data["txt_to_img"])


class PairRankingLoss:
    """Mixin: :meth:`loss` is the bidirectional hinge triplet loss on ``image`` / ``text`` pair batches.

    :func:`visem.losses.ranking_loss` with the model's ``config.margin`` and
    ``config.hardest`` (sum of violations, or the hardest negative of VSE++).
    """

    def loss(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> dict[str, Tensor]:
        img = self.embed_image(batch["image"])
        txt = self.embed_text(batch["text"])
        rank = ranking_loss(img, txt, margin=self.config.margin, hardest=self.config.hardest)
        return {"loss": rank, "ranking": rank.detach()}
