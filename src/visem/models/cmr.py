"""Shared pieces of the zero-shot cross-modal retrieval models (seed 004's task).

Cross-modal batches hold ``image`` ``(B, image_dim)``, ``text``
``(B, text_dim)`` (row-aligned pairs of one class), ``label`` ``(B,)`` (row
of ``class_emb``) and ``class_emb`` ``(C, class_dim)``. Held-out data for
:meth:`CrossModalModel.evaluate` holds ``image``, ``text``, ``image_label``
and ``text_label``.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from visem.metrics import mean_average_precision, precision_at_k
from visem.models.base import RetrievalModel

__all__ = ["CrossModalModel", "cross_modal_map"]


def cross_modal_map(img_emb: Tensor, txt_emb: Tensor, img_label: Tensor, txt_label: Tensor,
                    k: int = 100) -> dict[str, float]:
    """Zero-shot cross-modal retrieval scores of seed 004 (fractions).

    Relevance is "same class"; MAP is computed over all returned results
    (:func:`visem.metrics.mean_average_precision` with ``k=None``).
    ``p_at_100`` is the mean of the two directions' P@k (``k`` capped at the
    gallery size); seed 004 reports P@100 only for sketch-to-image.
    """
    i2t = mean_average_precision(img_emb, txt_emb, img_label, txt_label)
    t2i = mean_average_precision(txt_emb, img_emb, txt_label, img_label)
    p1 = precision_at_k(img_emb, txt_emb, img_label, txt_label, k=min(k, txt_emb.shape[0]))
    p2 = precision_at_k(txt_emb, img_emb, txt_label, img_label, k=min(k, img_emb.shape[0]))
    return {"i2t_map": i2t, "t2i_map": t2i, "avg_map": (i2t + t2i) / 2, "p_at_100": (p1 + p2) / 2}


class CrossModalModel(RetrievalModel):
    """A retrieval model of image and text *features* trained on class-labelled pairs.

    Evaluation is :func:`cross_modal_map` of the embeddings (relevance =
    same class); :meth:`example_batch` gives random pairs of 4 classes.
    """

    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Cross-modal MAP / P@100 on ``image``, ``text``, ``image_label``, ``text_label``."""
        return cross_modal_map(*self.embed_pair(data["image"], data["text"]), data["image_label"], data["text_label"])

    def example_eval_data(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        batch = self.example_batch(n, generator)
        return {"image": batch["image"], "text": batch["text"], "image_label": batch["label"],
                "text_label": batch["label"]}

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        cfg, c = self.config, 4
        batch = {
            "image": torch.randn(n, cfg.image_dim, generator=generator),
            "text": torch.randn(n, cfg.text_dim, generator=generator),
            "label": torch.randint(0, c, (n,), generator=generator),
        }
        if getattr(cfg, "class_dim", None):
            batch["class_emb"] = torch.randn(c, cfg.class_dim, generator=generator)
        return batch
