"""How much of the encoders' gradient each weighted term of an objective carries.

A paper's loss weights assume the paper's reductions (a hinge summed over the
batch, a reconstruction summed over dimensions, one MMD per batch). When an
implementation reduces differently, a weight can silence its term: a term
whose gradient is under 1% of the whole is switched off in all but name.
:func:`gradient_shares` measures it on a real batch:

    norm_k  = || d (w_k * L_k) / d theta_enc ||_2
    share_k = norm_k / sum_j norm_j

over the model's :meth:`~visem.models.base.EmbeddingModel.encoder_parameters`
(the parameters that make the embeddings), for every term ``L_k`` of
:meth:`~visem.models.base.EmbeddingModel.objective` with a non-zero weight
``w_k``. Gradients through a gradient-reversal layer arrive reversed and
scaled, as the encoders receive them in training. The shares sum to 1; they
are a diagnostic of one batch, not a property of the model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["gradient_norms", "gradient_shares", "low_share_terms", "shares_of"]


def gradient_norms(model: nn.Module, batch: Mapping[str, Tensor], progress: float = 1.0,
                   params: Sequence[nn.Parameter] | None = None) -> dict[str, float]:
    """``{term: || d (weight * term) / d params ||}`` on ``batch`` at training ``progress``.

    ``params`` defaults to ``model.encoder_parameters()``. ``progress`` sets
    the schedules of the objective (warm-ups, the GRL coefficient); the
    default 1.0 measures the weights at their final values.
    """
    params = list(params if params is not None else model.encoder_parameters())
    if not params:
        raise ValueError(f"{type(model).__name__}: no parameters to measure gradients on")
    was = model.training
    model.train()
    try:
        obj = model.objective(batch, progress)
        weighted = obj.weighted()
        out: dict[str, float] = {}
        names = list(weighted)
        for i, name in enumerate(names):
            term = weighted[name]
            if not term.requires_grad:
                out[name] = 0.0
                continue
            grads = torch.autograd.grad(term, params, retain_graph=i < len(names) - 1, allow_unused=True)
            sq = sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None)
            out[name] = sq ** 0.5
    finally:
        model.train(was)
    return out


def gradient_shares(model: nn.Module, batch: Mapping[str, Tensor], progress: float = 1.0,
                    params: Sequence[nn.Parameter] | None = None) -> dict[str, float]:
    """Each weighted term's fraction of the summed gradient norms (see the module docstring); sums to 1."""
    norms = gradient_norms(model, batch, progress, params)
    if sum(norms.values()) == 0.0:
        raise ValueError(f"{type(model).__name__}: no term has a gradient on the measured parameters ({sorted(norms)})")
    return shares_of(norms)


def shares_of(norms: Mapping[str, float]) -> dict[str, float]:
    """Each norm's fraction of their sum; every share 0 when no term has a gradient."""
    total = sum(norms.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in norms.items()}


def low_share_terms(shares: Mapping[str, float], floor: float = 0.01) -> list[str]:
    """The terms whose share is under ``floor`` (1% by default): switched off in all but name."""
    return sorted(k for k, v in shares.items() if v < floor)
