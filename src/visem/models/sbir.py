"""Shared pieces of the zero-shot sketch-based image retrieval models (seed 004's second task).

Batches hold row-aligned pairs of one class: ``sketch`` ``(B, sketch_dim)``,
``image`` ``(B, image_dim)`` (a sketch and an image of the same class, not
necessarily of the same object: seed 004 Eq. 3 decodes "a different instance
... of the same class"), ``label`` ``(B,)`` (row of ``class_emb`` / index of
the seen class) and the static ``class_emb`` ``(C, class_dim)`` of the seen
classes. Held-out data for :meth:`SketchImageModel.evaluate` holds
``sketch``, ``image``, ``sketch_label``, ``image_label``.

Evaluation (:func:`sbir_metrics`, seed 004 Sec. 4.3): sketches of the unseen
classes query the images of the unseen classes, relevance = same class; MAP
over the whole ranking and P@100 (fractions). Real-valued embeddings are
compared by cosine; binary codes (``{-1, +1}``) by Hamming distance. Ties
count against the query (:mod:`visem.metrics`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from visem.metrics import mean_average_precision, precision_at_k
from visem.models.base import EmbeddingModel
from visem.models.hashing import ITQ, SignCodes, sign_codes

__all__ = ["SketchImageModel", "sbir_metrics", "READOUTS"]

#: binary read-outs of real-valued embeddings (``config.binary``)
READOUTS = ("sign", "itq")


def sbir_metrics(sketch_emb: Tensor, image_emb: Tensor, sketch_label: Any, image_label: Any, binary: bool = False,
                 k: int = 100) -> dict[str, float]:
    """Sketch-to-image MAP (all results) and P@k (``k`` capped at the gallery size), fractions.

    ``binary``: the embeddings are ``{-1, +1}`` codes, ranked by Hamming
    distance (their dot product, see :func:`visem.metrics.hamming_distance`);
    otherwise they are L2-normalised and ranked by cosine.
    """
    if binary:
        q, g = sign_codes(sketch_emb), sign_codes(image_emb)
        if not (torch.equal(q, sketch_emb.to(q.dtype)) and torch.equal(g, image_emb.to(g.dtype))):
            raise ValueError("binary=True needs {-1, +1} codes")
    else:
        q, g = F.normalize(sketch_emb.double(), dim=1), F.normalize(image_emb.double(), dim=1)
    return {"map": mean_average_precision(q, g, sketch_label, image_label),
            "p_at_100": precision_at_k(q, g, sketch_label, image_label, k=min(k, g.shape[0]))}


class SketchImageModel(EmbeddingModel):
    """A model embedding sketch and image *features* into one space, trained on same-class pairs.

    Subclasses implement :meth:`embed_sketch` and :meth:`embed_image`. Hashing
    models set ``native_binary = True``: their embeddings are ``{-1, +1}``
    codes. A real-valued model whose config has ``binary`` (``"sign"`` or
    ``"itq"``) also reports binary codes of its embeddings
    (:meth:`fit_readout` on training data, then :meth:`binary_codes`).
    """

    native_binary = False

    # ``embed_sketch(sketch) -> (B, d)`` and ``embed_image(image) -> (B, d)`` are the subclasses' (no stubs
    # here: a stub would shadow the methods a model takes from a second base, e.g. LCALE's embed_image)

    @torch.no_grad()
    def embed_both(self, sketch: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings of held-out sketches and images in eval mode (the training mode is restored)."""
        was = self.training
        self.eval()
        try:
            return self.embed_sketch(sketch), self.embed_image(image)
        finally:
            self.train(was)

    # -- binary read-out of real-valued embeddings -------------------------------------------------
    @property
    def readout(self) -> str | None:
        """``"sign"``, ``"itq"`` or None: how :meth:`binary_codes` quantises the embeddings."""
        return None if self.native_binary else getattr(self.config, "binary", None)

    def fit_readout(self, sketch: Tensor, image: Tensor, bits: int | None = None, seed: int = 0) -> None:
        """Fit the binary read-out on *training* sketches and images (no test data)."""
        if self.readout is None:
            return
        if self.readout not in READOUTS:
            raise ValueError(f"binary read-out must be one of {READOUTS}, got {self.readout!r}")
        s, i = self.embed_both(sketch, image)
        both = torch.cat([s, i])
        self._quantizer = (SignCodes().fit(both) if self.readout == "sign"
                           else ITQ(bits or both.shape[1], seed=seed).fit(both))

    def binary_codes(self, sketch: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        """``{-1, +1}`` codes of sketches and images (the model's own, or its fitted read-out)."""
        s, i = self.embed_both(sketch, image)
        if self.native_binary:
            return sign_codes(s), sign_codes(i)
        quantizer = getattr(self, "_quantizer", None)
        if quantizer is None:
            raise RuntimeError(f"{type(self).__name__}: call fit_readout() on training data first")
        return quantizer(s), quantizer(i)

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Sketch-to-image MAP / P@100 on held-out ``sketch``, ``image``, ``sketch_label``, ``image_label``.

        Real-valued models report ``map`` / ``p_at_100`` (cosine) and, once a
        read-out is fitted, ``map_binary`` / ``p_at_100_binary`` (Hamming);
        hashing models report their Hamming ``map`` / ``p_at_100``.
        """
        ls, li = data["sketch_label"], data["image_label"]
        if self.native_binary:
            return sbir_metrics(*self.binary_codes(data["sketch"], data["image"]), ls, li, binary=True)
        out = sbir_metrics(*self.embed_both(data["sketch"], data["image"]), ls, li)
        if getattr(self, "_quantizer", None) is not None:
            b = sbir_metrics(*self.binary_codes(data["sketch"], data["image"]), ls, li, binary=True)
            out.update({f"{k}_binary": v for k, v in b.items()})
        return out

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        cfg = self.config
        c = getattr(cfg, "n_classes", None) or 4
        batch = {
            "image": torch.randn(n, cfg.image_dim, generator=generator),
            "sketch": torch.randn(n, cfg.sketch_dim, generator=generator),
            "label": torch.arange(n) % c,
        }
        if getattr(cfg, "class_dim", None):
            batch["class_emb"] = torch.randn(c, cfg.class_dim, generator=generator)
        return batch

    def example_eval_data(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``n`` sketch queries and ``n`` gallery images of 2 classes (every query has a relevant image)."""
        cfg = self.config
        return {"sketch": torch.randn(n, cfg.sketch_dim, generator=generator),
                "image": torch.randn(n, cfg.image_dim, generator=generator),
                "sketch_label": torch.arange(n) % 2, "image_label": torch.arange(n) % 2}
