"""Data-parallel training across processes: what the trainer needs from ``torch.distributed``.

Launch any visem command that trains with ``torchrun``::

    torchrun --nproc_per_node 4 -m visem train CONFIG.yaml --out runs/x
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        -m visem reproduce emoji-sparse --out runs/sparse

and every registered model trains data-parallel (``DistributedDataParallel``):

* **one process group**, initialised from torchrun's environment by
  :func:`init_from_env` (``gloo`` for CPU tensors, ``nccl`` for CUDA ones
  when CUDA is present: ``"cpu:gloo,cuda:nccl"``), each rank on
  ``cuda:LOCAL_RANK`` when ``train.device`` is ``auto`` or ``cuda``;
* **the global batch**: ``train.batch_size`` is the batch of one step over
  all ranks. The samplers draw one seeded order and each rank takes its
  contiguous ``batch_size / world_size`` slice of every global batch
  (``shard``), so step ``t`` sees the same items whatever the world size;
* **the same objective**: cross-batch terms see the global batch through
  :func:`visem.distributed.gather` (the rule in :mod:`visem.distributed`),
  DDP averages the gradients, and the logged terms are averaged over ranks
  (:func:`mean_over_ranks`), so a 2-process run logs what a 1-process run
  logs and ends at the same weights up to float rounding (deterministic
  models; models that sample noise draw it per rank);
* **rank 0 writes** checkpoints, ``metrics.csv``, weights, ``eval.json``,
  results and figures; a resumed run reads rank 0's checkpoint, which
  :func:`broadcast_file` sends to the other ranks (no shared file system
  needed between machines).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from visem.distributed import (  # noqa: F401  (re-exported: the trainer's one import)
    barrier, broadcast_object, is_distributed, is_main, local_rank, rank, world_size)

__all__ = [
    "DistributedError",
    "barrier",
    "broadcast_file",
    "broadcast_object",
    "device_for",
    "init_from_env",
    "is_distributed",
    "is_main",
    "launched_by_torchrun",
    "mean_over_ranks",
    "rank",
    "shard_size",
    "to_device",
    "world_size",
    "wrap",
]


class DistributedError(ValueError):
    """A setting that cannot work across processes (a batch that does not split evenly, a sampler that cannot shard)."""


def launched_by_torchrun() -> bool:
    """The environment torchrun sets for its workers says there are several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(timeout_s: float | None = None) -> bool:
    """Join the process group torchrun describes (once); returns whether this run is distributed.

    CPU tensors go through gloo; CUDA tensors through NCCL when CUDA is
    present. Outside torchrun (or with ``WORLD_SIZE=1``) nothing happens.
    """
    import datetime

    import torch.distributed as dist

    if not launched_by_torchrun():
        return False
    if not dist.is_available():  # pragma: no cover - every torch build visem supports has it
        raise DistributedError("this torch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        dist.init_process_group(backend=backend, **kwargs)
    return is_distributed()


def shard_size(batch_size: int, where: str = "train.batch_size") -> int:
    """Each rank's share of a global batch; the batch must split evenly over the ranks."""
    w = world_size()
    if batch_size % w:
        raise DistributedError(
            f"{where}={batch_size} is the global batch and must be divisible by the {w} processes "
            f"(use {batch_size - batch_size % w} or {batch_size + w - batch_size % w})")
    return batch_size // w


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model``.

    ``find_unused_parameters``: the phases of a step (LCALE's decoder step,
    a GAN's critic step) use only part of the model.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def mean_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """``values`` averaged over the ranks (every rank must pass the same keys in the same order)."""
    if not is_distributed() or not values:
        return dict(values)
    import torch.distributed as dist

    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def broadcast_file(path: str | Path | None) -> bytes | None:
    """The bytes of rank 0's file ``path`` on every rank (``None`` where rank 0 has no such file)."""
    path = Path(path) if path is not None else None
    data = path.read_bytes() if (is_main() and path is not None and path.is_file()) else None
    if not is_distributed():
        return data
    import torch.distributed as dist

    box = [data]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def device_for(spec: str) -> torch.device:
    """The device of ``train.device`` for this process: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.

    ``auto`` is CUDA when present, else the CPU. Under torchrun ``auto`` and
    ``cuda`` mean ``cuda:LOCAL_RANK``. A CUDA device that is not there is an
    error, not a silent fall-back to the CPU.
    """
    from visem.runtime import resolve_device

    dev = resolve_device(spec)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank() if launched_by_torchrun() else torch.cuda.current_device())
    return dev


def to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of ``batch`` on ``device`` (non-blocking from pinned memory)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}

