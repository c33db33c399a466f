"""ZSIH (Shen, Liu, Shen, Shao, *Zero-Shot Sketch-Image Hashing*, CVPR 2018): "ZSIH (binary)" of seed 004 Table 3.

Three networks. Two **binary encoders**, one per modality, output bit
probabilities ``f_i(x_i), f_s(x_s)`` in ``(0, 1)^m`` (codes: ``f > 0.5``).
The third, the **multi-modal network**, fuses a sketch and an image of one
class with a **Kronecker layer**, ``h = relu(P_i x_i) (x) relu(P_s x_s)``
(the outer product flattened), and propagates the fused rows of the batch
through two **graph convolutions** whose adjacency comes from the classes'
word vectors, ``A_jk = exp(-||s_j - s_k||^2 / t)``, normalised
``D^-1/2 A D^-1/2`` (Kipf & Welling): ``q = sigmoid(A relu(A h W_1) W_2)``.
**Stochastic binary neurons** draw the latent code ``b = 1[q > eps]``,
``eps ~ U(0, 1)``, with the straight-through gradient ``db/dq = 1``.
**Generative hashing**: a decoder ``p(s | b) = N(mu(b), diag(sigma^2(b)))``
(``mu``, ``log sigma^2`` linear in ``b``) rebuilds the class's word vector
from the code, a Bernoulli(1/2) prior on ``b``; the encoders learn to output
the codes of the multi-modal network. Per pair, averaged over the batch::

    rec = 1/2 sum_d [(s_d - mu_d(b))^2 / sigma_d^2(b) + log sigma_d^2(b)]   (-log p(s | b) up to a constant)
    kl  = KL(Bernoulli(q) || Bernoulli(1/2))    (summed over the bits)
    enc = ||b - f_i(x_i)||^2 + ||b - f_s(x_s)||^2   (b held fixed)
    loss = rec + kl + enc

Retrieval: the codes ``f(x) > 0.5`` of the binary encoders alone, Hamming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from visem.distributed import gather, gathered_rows
from visem.models.base import Objective
from visem.models.layers import mlp
from visem.models.registry import register_model
from visem.models.sbir import SketchImageModel

__all__ = ["ZSIH", "ZSIHConfig", "graph_normalise"]


@dataclass
class ZSIHConfig:
    image_dim: int | None = None
    sketch_dim: int | None = None
    class_dim: int | None = None
    bits: int = 16  # 64 in seed 004's comparison
    hidden: tuple[int, ...] = (32,)  # binary encoders' hidden layers
    kron_dim: int = 8  # each side's projection before the Kronecker layer (fused: kron_dim^2)
    gcn_hidden: int = 32
    adj_temperature: float = 0.2  # t of A = exp(-||s_j - s_k||^2 / t), on l2-normalised word vectors


def graph_normalise(adj: Tensor) -> Tensor:
    """``D^-1/2 A D^-1/2`` with ``D = diag(A 1)`` (Kipf & Welling's propagation rule, self-loops in ``A``)."""
    d = adj.sum(1).clamp(min=1e-12).rsqrt()
    return d[:, None] * adj * d[None, :]


class _StochasticBinary(torch.autograd.Function):
    """``1[q > eps]`` forward, identity backward (the straight-through gradient of stochastic neurons)."""

    @staticmethod
    def forward(ctx, q: Tensor, eps: Tensor) -> Tensor:  # noqa: D102
        return (q > eps).to(q.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return grad, None


@register_model("zsih", config=ZSIHConfig, family="sbir",
                paper="Shen et al. CVPR 2018 (ZSIH, zero-shot sketch-image hashing), seed 004 Table 3")
class ZSIH(SketchImageModel):
    """ZSIH (binary): binary encoders taught by a Kronecker-fused, graph-convolved generative hashing network.

    **What visem does differently.** ZSIH's encoders are AlexNets with an
    attention layer, trained end to end; on precomputed features they are MLPs
    (``hidden``) with a sigmoid output, and each side of the Kronecker layer is
    a learnt projection of the features to ``kron_dim`` (the outer product of
    two 1,280-d features would have 1.6 million entries). The graph convolution
    looks across the batch, so the fused rows and word vectors are
    :func:`visem.distributed.gather` ed. The word vectors are l2-normalised
    before the adjacency so that ``t`` (``adj_temperature``, 0.2: the same
    class 1, a class at cosine 0.8 about 0.14, an unrelated one under 0.01)
    does not depend on their scale. The decoder's variance is learnt with its
    mean (a fixed unit variance lets the KL term, up to ``bits log 2`` nats,
    outweigh the reconstruction of a 50-d word vector and drive every bit to a
    coin flip).
    """

    native_binary = True

    def __init__(self, config: ZSIHConfig) -> None:
        super().__init__(config)
        h, m = tuple(config.hidden), config.bits
        self.enc_i = mlp([config.image_dim, *h, m])
        self.enc_s = mlp([config.sketch_dim, *h, m])
        self.proj_i = nn.Linear(config.image_dim, config.kron_dim)
        self.proj_s = nn.Linear(config.sketch_dim, config.kron_dim)
        self.gc1 = nn.Linear(config.kron_dim ** 2, config.gcn_hidden)
        self.gc2 = nn.Linear(config.gcn_hidden, m)
        self.dec = nn.Linear(m, 2 * config.class_dim)  # mean and log-variance of p(s | b)

    def embed_sketch(self, sketch: Tensor) -> Tensor:
        return torch.sigmoid(self.enc_s(sketch)) - 0.5  # sign: the code 1[f > 0.5]

    def embed_image(self, image: Tensor) -> Tensor:
        return torch.sigmoid(self.enc_i(image)) - 0.5

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter: the encoders learn from ``enc`` only, the multi-modal network from ``rec`` and ``kl``."""
        return [p for p in self.parameters() if p.requires_grad]

    def code_probabilities(self, image: Tensor, sketch: Tensor, semantics: Tensor) -> Tensor:
        """``q`` of the multi-modal network for row-aligned pairs and their classes' word vectors."""
        fused = torch.relu(self.proj_i(image))[:, :, None] * torch.relu(self.proj_s(sketch))[:, None, :]
        s = nn.functional.normalize(semantics, dim=1)
        adj = graph_normalise(torch.exp(-torch.cdist(s, s).pow(2) / self.config.adj_temperature))
        hidden = torch.relu(adj @ self.gc1(fused.flatten(1)))
        return torch.sigmoid(adj @ self.gc2(hidden))

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        x_i, x_s = batch["image"], batch["sketch"]
        sem = batch["class_emb"][batch["label"].long()]
        n = x_i.shape[0]
        all_i, start = gathered_rows(x_i)
        q = self.code_probabilities(all_i, gather(x_s), gather(sem))[start:start + n]
        b = _StochasticBinary.apply(q, torch.rand_like(q))
        mu, logvar = self.dec(b).chunk(2, dim=1)
        rec = 0.5 * ((sem - mu).pow(2) * torch.exp(-logvar) + logvar).sum(1).mean()
        qc = q.clamp(1e-6, 1 - 1e-6)
        kl = (qc * torch.log(2 * qc) + (1 - qc) * torch.log(2 * (1 - qc))).sum(1).mean()
        target = b.detach()
        enc = ((target - torch.sigmoid(self.enc_i(x_i))).pow(2).sum(1)
               + (target - torch.sigmoid(self.enc_s(x_s))).pow(2).sum(1)).mean()
        return Objective({"rec": rec, "kl": kl, "enc": enc})
