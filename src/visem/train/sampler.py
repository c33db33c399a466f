"""Minibatch samplers whose state is two integers, so a resumed run is exact.

Every sampler can :meth:`~BatchSampler.shard` itself for data-parallel
training: ``batch_size`` stays the GLOBAL batch, the seeded order is the
same on every rank, and rank ``r`` of ``w`` yields the ``r``-th contiguous
``batch_size / w`` slice of each global batch. The items of step ``t`` are
therefore the same set whatever the number of processes, and the state
(``epoch``, ``position``) is the same on every rank, so a resumed run
continues exactly from rank 0's checkpoint.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor


class BatchSampler:
    """Endless shuffled minibatches over row-aligned tensors.

    Each epoch draws a fresh permutation from ``seed + epoch``; the state is
    ``(epoch, position)``, so restoring it reproduces the exact batch stream.
    The last incomplete batch of an epoch is dropped (``drop_last``) when the
    data holds at least one full batch, as in-batch negatives need full
    batches.
    """

    def __init__(self, tensors: Mapping[str, Tensor], batch_size: int, seed: int = 0) -> None:
        if not tensors:
            raise ValueError("BatchSampler needs at least one tensor")
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must share their first dimension, got sizes {sizes}")
        self.n = next(iter(sizes.values()))
        if self.n == 0:
            raise ValueError("BatchSampler got empty tensors")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = dict(tensors)
        self.requested = int(batch_size)
        self.batch_size = min(batch_size, self.n)
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._perm: Tensor | None = None
        self.rank, self.world = 0, 1

    def shard(self, rank: int, world: int) -> "BatchSampler":
        """Yield only rank ``rank``'s slice of each global batch (``world`` processes in all)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        if self.requested % world:
            raise ValueError(
                f"the global batch of {self.requested} items does not split over {world} processes "
                f"(set a batch size divisible by {world})")
        if self.batch_size % world:  # cut down to the data's size: cut it to a multiple of the world too
            if self.n < world:
                raise ValueError(f"{self.n} items cannot be shared by {world} processes")
            self.batch_size -= self.batch_size % world
        self.rank, self.world = int(rank), int(world)
        return self

    def _permutation(self) -> Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            self._perm = torch.randperm(self.n, generator=g)
        return self._perm

    def __iter__(self) -> "BatchSampler":
        return self

    def __next__(self) -> dict[str, Tensor]:
        if self.position + self.batch_size > self.n:
            self.epoch += 1
            self.position = 0
            self._perm = None
        idx = self._permutation()[self.position : self.position + self.batch_size]
        if self.world > 1:
            local = self.batch_size // self.world
            idx = idx[self.rank * local : (self.rank + 1) * local]
        self.position += self.batch_size
        return {k: v[idx] for k, v in self.tensors.items()}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._perm = None


class MultiSampler:
    """Several samplers stepped together, their batches merged into one dict.

    Keys are prefixed ``"{group}.{key}"`` (``prefix=True``) or kept as the
    samplers name them (``prefix=False``, for :class:`IndexSampler` s whose
    output keys already say where they belong). Used where one update sees
    several data groups of different sizes, e.g. a paired source domain and
    an unpaired target domain (seed 001), or annotated pairs and pseudo pairs
    (seed 003).
    """

    def __init__(self, samplers: Mapping[str, Any], prefix: bool = True) -> None:
        self.samplers = dict(samplers)
        self.prefix = prefix

    def shard(self, rank: int, world: int) -> "MultiSampler":
        for s in self.samplers.values():
            s.shard(rank, world)
        return self

    def __iter__(self) -> "MultiSampler":
        return self

    def __next__(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for group, sampler in self.samplers.items():
            for k, v in next(sampler).items():
                out[f"{group}.{k}" if self.prefix else k] = v
        return out

    def state_dict(self) -> dict[str, int]:
        return {f"{g}.{k}": v for g, s in self.samplers.items() for k, v in s.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        for g, s in self.samplers.items():
            s.load_state_dict({k: state[f"{g}.{k}"] for k in ("epoch", "position")})


class IndexSampler:
    """Shuffled batches of index rows; each output key gathers ``table[index]``.

    ``index``: ``{column: (n,) int tensor}``, row-aligned; ``outputs``:
    ``{key: (column, table)}``. Floating tables are returned as float32. A
    feature table is gathered per batch, not copied per caption (grid
    features of an image with five captions are stored once).
    """

    def __init__(self, index: Mapping[str, Tensor], outputs: Mapping[str, tuple[str, Tensor]],
                 batch_size: int, seed: int) -> None:
        self.inner = BatchSampler(dict(index), batch_size, seed)
        self.outputs = dict(outputs)

    def shard(self, rank: int, world: int) -> "IndexSampler":
        self.inner.shard(rank, world)
        return self

    def __iter__(self) -> "IndexSampler":
        return self

    def __next__(self) -> dict[str, Tensor]:
        b = next(self.inner)
        out = {}
        for key, (col, table) in self.outputs.items():
            x = table[b[col]]
            out[key] = x.float() if x.is_floating_point() else x
        return out

    def state_dict(self) -> dict[str, int]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.inner.load_state_dict(state)
