"""DeepSM (Wei et al., IEEE TCYB 47(2), 2017): deep semantic matching, a seed 004 Table 2 baseline.

Wei et al.'s "deep semantic matching" maps each modality, by its own network
trained with the cross-entropy of the class labels, to the *semantic space*
of class probabilities, and ranks the other modality by the similarity of
the two probability vectors there (Sec. "Deep Semantic Matching" of the
paper: a fine-tuned CNN for images, a fully connected network on the text
features for texts, both ending in one output per class). Seed 004 applies it
"directly" to zero-shot retrieval (Sec. 4.2).

Batches are those of :mod:`visem.models.cmr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from visem.models.base import Objective
from visem.models.cmr import CrossModalModel
from visem.models.layers import mlp
from visem.models.registry import register_model

__all__ = ["DeepSM", "DeepSMConfig", "SPACES"]

#: where retrieval compares the two modalities (see :class:`DeepSM`)
SPACES = ("class-embedding", "probabilities")


@dataclass
class DeepSMConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    class_dim: int | None = None
    n_classes: int | None = None  # the seen classes: the outputs of both networks
    hidden: tuple[int, ...] = (32,)  # the CNN / the text network's hidden layers in the paper
    space: str = "class-embedding"  # "class-embedding" (ConSE extension) or "probabilities" (seen classes)


@register_model("deepsm", config=DeepSMConfig, family="zeroshot",
                paper="Wei et al. IEEE TCYB 2017 (deep semantic matching), seed 004 Table 2 baseline")
class DeepSM(CrossModalModel):
    """DeepSM: each modality classified into the seen classes; retrieval in the semantic (class) space.

    Training (Wei et al. 2017, deep semantic matching): an image network
    ``f_v`` and a text network ``f_t``, each ending in one logit per seen
    class, are trained separately with the softmax cross-entropy of the
    pair's class (``ce_image``, ``ce_text``, batch means; the paper's
    single-label loss; its multi-label data sets use a sigmoid loss, which
    visem's single-label protocols never need). The two networks share
    nothing, so the sum of the two losses trains each exactly as alone.

    On precomputed features the image CNN (fine-tuned from ImageNet in the
    paper) becomes an MLP on the fixed image features, as the text network
    already is.

    **Unseen classes.** The semantic space of the paper has one dimension per
    training class, so a test item of an unseen class still gets a
    probability vector over the seen classes. ``space`` says how retrieval
    uses it:

    * ``"class-embedding"`` (the default): the probability vector is mapped
      onto the class embeddings of the seen classes, ``e(x) = sum_c p(c|x)
      s_c`` (the convex combination of ConSE, Norouzi et al. ICLR 2014, over
      all seen classes), and the two modalities are compared by the cosine
      of ``e``. This is how a class-probability model reaches classes it was
      not trained on through their class embeddings, the extension the
      zero-shot retrieval papers use for such baselines; the seen classes'
      embeddings are stored by :meth:`finalize` (the unseen ones are never
      read).
    * ``"probabilities"``: the seen-class probability vectors themselves,
      compared by the normalised (centred) correlation of semantic matching
      (Rasiwasia et al. 2010, whose SM/SCM Wei et al. extend): "directly
      applied" to unseen classes, items of one unseen class match when they
      resemble the same seen classes.
    """

    def __init__(self, config: DeepSMConfig) -> None:
        super().__init__(config)
        if config.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {config.space!r}")
        if config.n_classes is None or config.n_classes < 2:
            raise ValueError(f"DeepSM needs n_classes >= 2 (the seen classes), got {config.n_classes}")
        h = tuple(config.hidden)
        self.f_v = mlp([config.image_dim, *h, config.n_classes])
        self.f_t = mlp([config.text_dim, *h, config.n_classes])
        # the seen classes' embeddings, rows in label order (set by finalize)
        self.register_buffer("class_emb", torch.zeros(config.n_classes, config.class_dim or 1))
        self.register_buffer("has_class_emb", torch.zeros((), dtype=torch.bool))

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        y = batch["label"].long()
        return Objective({"ce_image": F.cross_entropy(self.f_v(batch["image"]), y),
                          "ce_text": F.cross_entropy(self.f_t(batch["text"]), y)})

    @torch.no_grad()
    def finalize(self, train: Mapping[str, Tensor]) -> None:
        """Keep the seen classes' embeddings (``train["class_emb"]``, rows in label order) for the class-embedding space."""
        emb = train.get("class_emb")
        if emb is None:
            return
        if tuple(emb.shape) != tuple(self.class_emb.shape):
            raise ValueError(f"DeepSM.finalize: class_emb has shape {tuple(emb.shape)}, the model has "
                             f"{self.config.n_classes} classes of dim {self.config.class_dim}")
        self.class_emb.copy_(emb)
        self.has_class_emb.fill_(True)

    def _semantic(self, logits: Tensor) -> Tensor:
        p = logits.softmax(dim=-1)
        if self.config.space == "probabilities":
            return F.normalize(p - p.mean(dim=-1, keepdim=True), dim=-1)
        if not bool(self.has_class_emb):
            raise RuntimeError("DeepSM with space='class-embedding' embeds through the seen classes' embeddings: "
                               "call finalize({'class_emb': ...}) after training (train_cmr does)")
        return F.normalize(p @ self.class_emb, dim=-1)

    def embed_image(self, image: Tensor) -> Tensor:
        return self._semantic(self.f_v(image))

    def embed_text(self, text: Tensor) -> Tensor:
        return self._semantic(self.f_t(text))
