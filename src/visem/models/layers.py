"""Building blocks shared by the model families."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``, ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """A Gaussian VAE: MLP encoder to ``(mu, logvar)``, MLP decoder back.

    The blocks of LCALE (seed 004) and CADA-VAE: ``encoder`` maps
    ``in_dim -> hidden... -> 2 * latent_dim``, ``decoder`` maps
    ``latent_dim -> reversed(hidden)... -> in_dim``. :meth:`sample` draws with
    the reparameterisation trick in training and returns the mean in eval.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.encoder = mlp([in_dim, *hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(tuple(hidden)), in_dim])
        self.latent_dim = latent_dim

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def sample(self, mu: Tensor, logvar: Tensor) -> Tensor:
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
