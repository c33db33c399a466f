"""Deep CCA (Andrew et al. ICML 2013; Yan & Mikolajczyk CVPR 2015 for image-text), seed 004 Table 2's first baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from visem.distributed import gather
from visem.models.base import Objective
from visem.models.cmr import CrossModalModel
from visem.models.layers import mlp
from visem.models.registry import register_model

__all__ = ["DCCA", "DCCAConfig", "dcca_correlation"]


def _inv_sqrt(cov: Tensor, eps: float) -> Tensor:
    w, v = torch.linalg.eigh(cov)
    w = w.clamp(min=eps)
    return v @ torch.diag(w.rsqrt()) @ v.T


def dcca_correlation(h1: Tensor, h2: Tensor, reg: float = 1e-3, eps: float = 1e-9,
                     return_maps: bool = False):
    r"""Total canonical correlation of two views (Andrew et al. 2013, Sec. 3).

    With centred ``H1``, ``H2`` (``(m, o)``), ``S11 = H1^T H1 / (m - 1) + reg I``,
    ``S22`` likewise, ``S12 = H1^T H2 / (m - 1)`` and
    ``T = S11^{-1/2} S12 S22^{-1/2}``, the correlation is the sum of the
    singular values of ``T`` (its trace norm; all ``o`` components). With
    ``return_maps`` also returns the projections ``S11^{-1/2} U`` and
    ``S22^{-1/2} V`` onto the canonical directions, and the two means.
    """
    if h1.dim() != 2 or h2.dim() != 2 or h1.shape[0] != h2.shape[0]:
        raise ValueError(f"h1 and h2 must be (m, o) with equal m, got {tuple(h1.shape)} and {tuple(h2.shape)}")
    m = h1.shape[0]
    if m < 2:
        raise ValueError(f"DCCA needs at least 2 samples, got h1 {tuple(h1.shape)}")
    m1, m2 = h1.mean(0), h2.mean(0)
    a, b = h1 - m1, h2 - m2
    s11 = a.T @ a / (m - 1) + reg * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    s22 = b.T @ b / (m - 1) + reg * torch.eye(b.shape[1], dtype=b.dtype, device=b.device)
    s12 = a.T @ b / (m - 1)
    r1, r2 = _inv_sqrt(s11, eps), _inv_sqrt(s22, eps)
    t = r1 @ s12 @ r2
    if not return_maps:
        return torch.linalg.svdvals(t).sum()
    u, sv, vh = torch.linalg.svd(t, full_matrices=False)
    return sv.sum(), r1 @ u, r2 @ vh.T, m1, m2


@dataclass
class DCCAConfig:
    image_dim: int | None = None
    text_dim: int | None = None
    hidden: tuple[int, ...] = (32,)
    out_dim: int = 4
    reg: float = 1e-3


@register_model("dcca", config=DCCAConfig, family="zeroshot",
                paper="Andrew et al. ICML 2013 / Yan & Mikolajczyk CVPR 2015 (DCCA), seed 004 Table 2 baseline")
class DCCA(CrossModalModel):
    """Deep CCA: two MLPs trained to maximise the total canonical correlation of their outputs.

    The loss is ``-dcca_correlation(f(x), g(t))`` on each batch (minibatch
    DCCA, as the common PyTorch ports; Andrew et al. use full-batch L-BFGS).
    :meth:`finalize` runs linear CCA on the training outputs and retrieval
    then compares the canonical projections by cosine; without it the raw
    outputs are used. Labels and class embeddings are not used.
    """

    def __init__(self, config: DCCAConfig) -> None:
        super().__init__(config)
        self.f = mlp([config.image_dim, *config.hidden, config.out_dim])
        self.g = mlp([config.text_dim, *config.hidden, config.out_dim])
        self.register_buffer("proj1", torch.eye(config.out_dim))
        self.register_buffer("proj2", torch.eye(config.out_dim))
        self.register_buffer("mean1", torch.zeros(config.out_dim))
        self.register_buffer("mean2", torch.zeros(config.out_dim))

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize((self.f(image) - self.mean1) @ self.proj1, dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize((self.g(text) - self.mean2) @ self.proj2, dim=-1)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        # the correlation of the global batch (one statistic per batch)
        corr = dcca_correlation(gather(self.f(batch["image"])), gather(self.g(batch["text"])), self.config.reg)
        return Objective({"neg_correlation": -corr})

    @torch.no_grad()
    def finalize(self, train: Mapping[str, Tensor]) -> None:
        h1, h2 = self.f(train["image"]).double(), self.g(train["text"]).double()
        _, p1, p2, m1, m2 = dcca_correlation(h1, h2, self.config.reg, return_maps=True)
        self.proj1.copy_(p1.float())
        self.proj2.copy_(p2.float())
        self.mean1.copy_(m1.float())
        self.mean2.copy_(m2.float())
