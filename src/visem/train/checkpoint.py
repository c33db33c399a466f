"""Checkpoints in safetensors, written atomically.

One file holds the model weights (``model.*``), every optimiser's tensor state
(``optim.{i}.{param}.{key}``) and the RNG states (``rng.cpu``, ``rng.cuda``
of the training GPU; ``rng.cpu.rank{r}``... of every rank of a distributed
run); the
rest (step, optimiser hyper-parameters and scalar state, sampler position,
anything extra) is JSON in the safetensors metadata. Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from visem.io import atomic_path


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def _plain(t: Tensor) -> Tensor:
    return t.detach().cpu().contiguous().clone()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer] = (),
    meta: Mapping[str, Any] | None = None,
    rng: Mapping[str, Tensor] | None = None,
) -> None:
    """Write model, optimisers, RNG and ``meta`` (JSON-able) to ``path`` atomically.

    ``rng``: the RNG state tensors to store (keys ``rng.*``); default this
    process's CPU generator as ``rng.cpu``.
    """
    tensors: dict[str, Tensor] = {f"model.{k}": _plain(v) for k, v in model.state_dict().items()}
    optim_meta = []
    for i, opt in enumerate(optimizers):
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    tensors[f"optim.{i}.{pid}.{key}"] = _plain(value)
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        optim_meta.append({"param_groups": sd["param_groups"], "scalars": scalars})
    for key, state in (rng if rng is not None else {"rng.cpu": torch.get_rng_state()}).items():
        if not key.startswith("rng."):
            raise ValueError(f"RNG state keys start with 'rng.', got {key!r}")
        tensors[key] = _plain(state)
    metadata = {"meta": json.dumps(dict(meta or {})), "optim": json.dumps(optim_meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_weights(path: str | Path, model: nn.Module, meta: Mapping[str, Any] | None = None) -> None:
    """Model weights only (what an index or a user loads), atomically."""
    tensors = {k: _plain(v) for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(dict(meta or {}))})


def load_weights(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load :func:`save_weights` output into ``model``; returns its metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from None
    _load_state(model, state, path)
    return meta


def _load_state(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(expected[k].shape)}")
    model.load_state_dict(state)


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizers: list[torch.optim.Optimizer] = (),
    rng_suffix: str = "", cuda_device: torch.device | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns its ``meta``.

    The CPU RNG is restored from ``rng.cpu{rng_suffix}`` (``.rank{r}`` for
    rank ``r`` of a distributed run) and, with ``cuda_device``, that GPU's
    from ``rng.cuda{rng_suffix}``, where the checkpoint has them.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    _load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    optim_meta = json.loads(metadata.get("optim", "[]"))
    if len(optim_meta) != len(optimizers):
        raise CheckpointError(f"{path} holds {len(optim_meta)} optimiser(s), the run has {len(optimizers)}")
    for i, (opt, om) in enumerate(zip(optimizers, optim_meta)):
        state: dict[int, dict[str, Any]] = {}
        prefix = f"optim.{i}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix):].split(".", 1)
                state.setdefault(int(pid), {})[key] = v
        for pid, scalars in om["scalars"].items():
            state.setdefault(int(pid), {}).update(scalars)
        groups = om["param_groups"]
        for saved, current in zip(groups, opt.param_groups):  # JSON turned tuples (betas) into lists
            for key, value in current.items():
                if isinstance(value, tuple) and isinstance(saved.get(key), list):
                    saved[key] = tuple(saved[key])
        opt.load_state_dict({"state": state, "param_groups": groups})
    cpu = tensors.get(f"rng.cpu{rng_suffix}", tensors.get("rng.torch") if not rng_suffix else None)
    if cpu is not None:  # rng.torch: checkpoints written before the per-device keys
        torch.set_rng_state(cpu)
    if cuda_device is not None and f"rng.cuda{rng_suffix}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.cuda{rng_suffix}"], cuda_device)
    return json.loads(metadata.get("meta", "{}"))
