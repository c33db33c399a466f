"""Where this process stands in a data-parallel run, and the one collective models use.

Under ``torchrun`` (or any launcher that initialises ``torch.distributed``)
several processes train one model on shards of each global batch; outside it
everything here is the identity and costs nothing. The set-up (process group,
device per rank, the DDP wrapper, sharded samplers, rank-0 files) lives in
:mod:`visem.train.distributed`; this module holds only what models and
metrics need, so that they never import the trainer.

**The rule every objective follows** (what keeps an N-process run the same
optimisation as a one-process run over the same global batch). Each rank
computes each term of :class:`visem.models.base.Objective` so that the
*mean over ranks* of its value is the one-process value:

* a per-sample term averaged over the batch needs nothing (each rank
  averages its own equal shard; DDP averages the gradients);
* anything that looks across the batch (in-batch negatives of a ranking
  loss, MMD, a median bandwidth, a correlation matrix, a sum over the batch)
  is computed on :func:`gather` ed tensors: every rank then holds the whole
  global batch, computes the same value, and ``gather``'s backward sums the
  gradient of every rank's copy into the rank that produced each row, which
  DDP's averaging turns back into exactly the one-process gradient.

:func:`gather` gathers only inside :func:`gathering` (entered by the training
step when a process group with more than one rank is active), so the same
objective called by one rank alone (a gradient-share probe, a test) never
waits on the others.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["barrier", "gather", "gathering", "is_distributed", "is_main", "local_rank", "rank", "world_size"]

_GATHERING = False


def is_distributed() -> bool:
    """A process group with more than one process is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """The rank on this machine (``LOCAL_RANK`` of torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing outside a process group)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def gathering(active: bool = True) -> Iterator[None]:
    """Within this block :func:`gather` gathers across ranks (when ``active`` and distributed)."""
    global _GATHERING
    before = _GATHERING
    _GATHERING = bool(active) and is_distributed()
    try:
        yield
    finally:
        _GATHERING = before


def gather(x: Tensor) -> Tensor:
    """``x`` of every rank concatenated along dim 0 in rank order, with gradient (identity otherwise).

    The backward sums each rank's gradient for the rows this rank produced
    (``torch.distributed.nn.functional.all_gather``), which is what the rule
    in the module docstring relies on. Every rank must call it with the same
    shape: the samplers give each rank an equal shard of the global batch.
    """
    if not _GATHERING:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)
