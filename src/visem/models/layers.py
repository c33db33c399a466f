"""Building blocks shared by the model families."""

from __future__ import annotations

from typing import Sequence

from torch import nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``, ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
