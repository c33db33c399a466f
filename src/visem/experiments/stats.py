"""Statistics shared by the experiments: mean and std over splits or seeds, feature scaling.

Every table row that summarises several splits or seeds carries ``KEY`` (the
mean) and ``KEY_std`` (the sample standard deviation, ``ddof=1``) for each
metric, and ``n_runs``; a claim "A beats B" in the docs needs at least five
of them and a random-floor row beside it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_tensor", "floored_std", "mean_std", "paired_difference"]


def as_tensor(a: Any, dtype: torch.dtype | None = None) -> Tensor:
    """``a`` (numpy array or tensor) as a tensor, optionally cast to ``dtype``."""
    t = a if isinstance(a, Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(dtype) if dtype is not None else t


def floored_std(x: Tensor) -> Tensor:
    """Per-column std of ``x``, floored at a tenth of its mean (near-constant inputs are not blown up)."""
    sd = x.std(0)
    return sd.clamp(min=max(0.1 * float(sd.mean()), 1e-6))


def mean_std(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``{key: mean, key_std: sample std (ddof=1, 0 for one run), "n_runs": n}`` over ``rows``.

    Every row must have the same keys.
    """
    if not rows:
        raise ValueError("mean_std needs at least one row")
    keys = list(rows[0])
    for i, r in enumerate(rows):
        if list(r) != keys:
            raise ValueError(f"mean_std: row {i} has keys {sorted(r)}, row 0 has {sorted(keys)}")
    out: dict[str, float] = {}
    for key in keys:
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = float(vals.mean())
        out[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    out["n_runs"] = len(rows)
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n", "wins"}`` of ``a[i] - b[i]`` over runs that share their split or seed ``i``.

    ``std`` is the sample std of the differences and ``wins`` the number of
    runs where ``a`` is higher; with five runs, a mean difference that is
    small against its std decides nothing.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_difference needs two equally long, non-empty sequences, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "n": len(d),
            "wins": int((d > 0).sum())}
