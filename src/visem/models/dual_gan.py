"""Dual GANs between each modality and the class-embedding space: DANZCR (IJCAI 2018) and DADN (TCSVT 2019).

Chi and Peng's two zero-shot cross-media retrieval models, seed 004 Table 2's
strongest baselines. For each modality ``m`` (image, text) two GANs form dual
processes:

* the *forward* GAN generates a common embedding ``G_m(x_m)`` in the space
  of the class (word) embeddings; its discriminator ``D^f_m`` tells the
  generated embeddings from the class embeddings of the batch's classes;
* the *reverse* GAN reconstructs the modality's feature ``R_m(G_m(x_m))``
  from the common embedding; its discriminator ``D^r_m`` tells
  reconstructions from real features.

Retrieval compares ``G_v(v)`` and ``G_t(t)`` by cosine in the class-embedding
space, which is what carries the model to unseen classes. Training steps
are two phases: the four discriminators, then the four generators
(:meth:`DANZCR.phases`).

* ``danzcr`` -- the dual GANs with the semantic classification and the
  reconstruction (cycle) terms.
* ``dadn`` -- adds the distribution matching of DADN (MMD between the
  common embeddings and the class embeddings) and its inter-media metric
  constraints (paired inter-media loss and quadruplet loss).

Batches are those of :mod:`visem.models.cmr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.distributed import gather
from visem.losses import median_bandwidth, mmd
from visem.models.acmr import pairwise_sq_dists
from visem.models.base import Objective, Phase, adam
from visem.models.cmr import CrossModalModel
from visem.models.layers import mlp
from visem.models.registry import register_model

__all__ = ["DADN", "DADNConfig", "DANZCR", "DANZCRConfig", "quadruplet_loss"]

_MODALITIES = ("image", "text")


def _gan_loss(logits: Tensor, real: bool) -> Tensor:
    """Binary cross-entropy of a discriminator's logits against "real" (1) or "generated" (0), batch mean."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def quadruplet_loss(anchor: Tensor, other: Tensor, anchor_label: Tensor, other_label: Tensor,
                    margin1: float = 0.4, margin2: float = 0.2) -> Tensor:
    r"""Cross-media quadruplet loss (Chen et al. CVPR 2017, "Beyond triplet loss"), hardest in-batch negatives.

    For an anchor ``a_i`` (one modality) with its paired item ``p_i`` (row
    ``i`` of ``other``) and squared Euclidean distances ``d``::

        [d(a_i, p_i) - d(a_i, n_1) + margin1]_+  +  [d(a_i, p_i) - d(n_1, n_2) + margin2]_+

    ``n_1`` is the closest item of ``other`` whose class is not ``a_i``'s
    (online hard mining), ``n_2`` the item of the anchors' modality closest
    to ``n_1`` whose class is neither ``a_i``'s nor ``n_1``'s: the second term
    pushes two *other* classes apart further than the anchor is from its
    positive (Chen et al.'s inter-class constraint). Averaged over the
    anchors; an anchor without such a negative (pair) contributes 0 to that
    term.
    """
    big = torch.finfo(anchor.dtype).max / 4
    d = pairwise_sq_dists(anchor, other)  # (i, j): anchor i vs other j
    pos = d.diagonal()
    neg1 = anchor_label[:, None] != other_label[None, :]
    hard1, n1 = torch.where(neg1, d, torch.full_like(d, big)).min(1)
    has1 = neg1.any(1)
    t1 = torch.where(has1, F.relu(pos - hard1 + margin1), torch.zeros_like(pos))
    row = d.T[n1]  # (i, k): other item n_1(i) vs anchor-modality item k
    ok2 = ((anchor_label[None, :] != anchor_label[:, None]) & (anchor_label[None, :] != other_label[n1][:, None])
           & has1[:, None])
    hard2 = torch.where(ok2, row, torch.full_like(row, big)).min(1).values
    t2 = torch.where(ok2.any(1), F.relu(pos - hard2 + margin2), torch.zeros_like(pos))
    return (t1 + t2).mean()


@dataclass
class DANZCRConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    class_dim: int | None = None
    hidden: tuple[int, ...] = (32,)  # generators' hidden layers
    disc_hidden: tuple[int, ...] = (32,)  # discriminators' hidden layers
    sem_weight: float = 1.0  # semantic classification against the seen classes' embeddings
    rec_weight: float = 1.0  # feature reconstruction through the common embedding
    adv_weight: float = 1.0  # the generators' adversarial terms (forward + reverse GANs)


@register_model("danzcr", config=DANZCRConfig, family="zeroshot",
                paper="Chi & Peng IJCAI 2018 (DANZCR), seed 004 Table 2 baseline")
class DANZCR(CrossModalModel):
    """DANZCR: dual adversarial networks, modality <-> class-embedding space, for zero-shot cross-media retrieval.

    Chi and Peng (IJCAI 2018). For ``m`` in (image, text), generators
    ``G_m`` (features -> class-embedding space) and ``R_m`` (class-embedding
    space -> features), discriminators ``D^f_m`` (on embeddings) and
    ``D^r_m`` (on features). With ``s_y`` the class embedding of the pair's
    class and ``S`` the seen classes' embeddings (``class_emb``), the
    generators minimise

    * ``sem``: ``sum_m CE(softmax(G_m(x_m) S^T), y)``, the common embedding
      classified among the seen classes by its inner product with their
      embeddings (a classifier whose weights are the class embeddings, so it
      extends to unseen classes);
    * ``rec``: ``sum_m ||x_m - R_m(G_m(x_m))||^2`` (averaged over the feature
      dimensions), the cycle of the dual processes;
    * ``adv``: ``sum_m -log D^f_m(G_m(x_m)) - log D^r_m(R_m(G_m(x_m)))``
      (the non-saturating generator loss of Goodfellow et al.);

    ``loss = sem_weight sem + rec_weight rec + adv_weight adv``; the
    discriminators minimise the cross-entropy of real (``s_y``, ``x_m``)
    against generated (``G_m(x_m)``, ``R_m(G_m(x_m))``, detached). One step:
    phase ``"discriminators"`` (optimiser 1), then ``"generators"``
    (optimiser 0); Adam with ``beta1 = 0.5`` (the GAN convention). Every term
    is a per-sample mean over the batch.

    The paper's full text was not at hand when this was written: the
    structure follows its title and seed 004 (the class-embedding space as
    the common space learnt by GANs, dual processes with reconstruction), and
    the GAN form (standard, not Wasserstein), the semantic term, the weights
    (all 1) and the layer sizes are visem's choices, checked by the gradient
    shares (``docs/zeroshot.md``, "DANZCR").
    """

    def __init__(self, config: DANZCRConfig) -> None:
        super().__init__(config)
        h, dh, a = tuple(config.hidden), tuple(config.disc_hidden), config.class_dim
        dims = {"image": config.image_dim, "text": config.text_dim}
        self.gen = nn.ModuleDict({m: mlp([dims[m], *h, a]) for m in _MODALITIES})
        self.rec = nn.ModuleDict({m: mlp([a, *h, dims[m]]) for m in _MODALITIES})
        self.disc_f = nn.ModuleDict({m: mlp([a, *dh, 1]) for m in _MODALITIES})
        self.disc_r = nn.ModuleDict({m: mlp([dims[m], *dh, 1]) for m in _MODALITIES})

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize(self.gen["image"](image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize(self.gen["text"](text), dim=-1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.gen.parameters())

    def _generated(self, batch: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        e = {m: self.gen[m](batch[m]) for m in _MODALITIES}
        return e, {m: self.rec[m](e[m]) for m in _MODALITIES}

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        c = self.config
        y = batch["label"].long()
        s = batch["class_emb"]
        e, r = self._generated(batch)
        sem = sum(F.cross_entropy(e[m] @ s.T, y) for m in _MODALITIES)
        rec = sum((r[m] - batch[m]).pow(2).mean(-1).mean() for m in _MODALITIES)
        adv = sum(_gan_loss(self.disc_f[m](e[m]), True) + _gan_loss(self.disc_r[m](r[m]), True) for m in _MODALITIES)
        obj = Objective({"sem": sem, "rec": rec, "adv": adv},
                        {"sem": c.sem_weight, "rec": c.rec_weight, "adv": c.adv_weight})
        self._extra_terms(obj, batch, e)
        return obj

    def _extra_terms(self, obj: Objective, batch: Mapping[str, Tensor], e: Mapping[str, Tensor]) -> None:
        """DADN's additions (none here)."""

    def discriminator_loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The four discriminators' cross-entropy, real vs generated (detached)."""
        with torch.no_grad():
            e, r = self._generated(batch)
        real_emb = batch["class_emb"][batch["label"].long()]
        return sum(_gan_loss(self.disc_f[m](real_emb), True) + _gan_loss(self.disc_f[m](e[m]), False)
                   + _gan_loss(self.disc_r[m](batch[m]), True) + _gan_loss(self.disc_r[m](r[m]), False)
                   for m in _MODALITIES)

    def _groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return ([*self.gen.parameters(), *self.rec.parameters()],
                [*self.disc_f.parameters(), *self.disc_r.parameters()])

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        return [adam(g, lr=lr, weight_decay=weight_decay, betas=(0.5, 0.999)) for g in self._groups()]

    def phases(self) -> tuple[Phase, ...]:
        return (Phase("discriminators", (1,), log=False), Phase("generators", (0,)))

    def forward(self, batch: Mapping[str, Tensor], progress: float = 0.0, phase: str = "generators") -> dict[str, Tensor]:
        """The loss dict of one phase (``"main"`` is the generators' phase)."""
        if phase in ("main", "generators"):
            return self.objective(batch, progress).log()
        if phase == "discriminators":
            return {"loss": self.discriminator_loss(batch)}
        raise ValueError(f"{type(self).__name__} has no training phase {phase!r}")


@dataclass
class DADNConfig(DANZCRConfig):
    mmd_weight: float = 1.0  # distribution matching: MMD(common embeddings, class embeddings)
    mmd_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)  # multiples of the median-heuristic bandwidth
    inter_weight: float = 1.0  # inter-media loss: paired image / text embeddings
    quad_weight: float = 1.0  # quadruplet loss
    margin1: float = 0.4  # quadruplet margins on squared distances of unit vectors
    margin2: float = 0.2


@register_model("dadn", config=DADNConfig, family="zeroshot",
                paper="Chi & Peng IEEE TCSVT 2019 (DADN), seed 004 Table 2 baseline")
class DADN(DANZCR):
    """DADN: DANZCR's dual GANs plus distribution matching (MMD) and inter-media metric constraints.

    Chi and Peng (TCSVT 2019) add to the generators' objective of
    :class:`DANZCR`:

    * ``mmd``, distribution matching: the squared MMD between the common
      embeddings of both modalities (``[G_v(v); G_t(t)]``) and the class
      embeddings of the batch's pairs, one statistic per batch, Gaussian
      kernels at ``mmd_sigmas`` times the median-heuristic bandwidth of the
      batch (:func:`visem.losses.median_bandwidth`, as LCALE's Eq. 7 here);
    * ``inter``, the inter-media loss: ``||g_v - g_t||^2`` of each pair's
      unit-normalised common embeddings, batch mean;
    * ``quad``, the quadruplet loss (:func:`quadruplet_loss`) on the
      unit-normalised embeddings, image anchors against texts and text
      anchors against images (margins 0.4 and 0.2 on squared distances).

    ``loss = DANZCR's + mmd_weight mmd + inter_weight inter + quad_weight
    quad``. The MMD and the quadruplet look across the batch and are computed
    on gathered tensors. As for DANZCR the paper's full text was not at hand:
    the terms follow its abstract (dual GANs, distribution matching by MMD
    with the category word-embeddings, an inter-media loss and a quadruplet
    loss), and their forms, margins and weights (all 1) are visem's choices,
    checked by the gradient shares (``docs/zeroshot.md``, "DADN").
    """

    def _extra_terms(self, obj: Objective, batch: Mapping[str, Tensor], e: Mapping[str, Tensor]) -> None:
        c = self.config
        y = gather(batch["label"].long())
        ev, et = gather(e["image"]), gather(e["text"])
        common = torch.cat([ev, et])
        real = batch["class_emb"][y]
        scale = median_bandwidth(common, real)
        obj.terms["mmd"] = mmd(common, real, sigmas=tuple(scale * s for s in c.mmd_sigmas))
        gv, gt = F.normalize(ev, dim=-1), F.normalize(et, dim=-1)
        obj.terms["inter"] = (gv - gt).pow(2).sum(-1).mean()
        obj.terms["quad"] = (quadruplet_loss(gv, gt, y, y, c.margin1, c.margin2)
                             + quadruplet_loss(gt, gv, y, y, c.margin1, c.margin2))
        obj.weights.update({"mmd": c.mmd_weight, "inter": c.inter_weight, "quad": c.quad_weight})
