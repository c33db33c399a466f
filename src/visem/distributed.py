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

__all__ = ["any_rank", "barrier", "batch_sum", "broadcast_object", "gather", "gathered_rows", "shard_map", "gathering", "is_distributed", "is_main", "local_rank", "rank", "world_size"]

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

    The backward sums each rank's gradient for the rows this rank produced,
    which is what the rule in the module docstring relies on. Every rank
    must call it with the same shape: the samplers give each rank an equal
    shard of the global batch, and token tables are padded to one width.
    """
    if not _GATHERING:
        return x
    return _AllGather.apply(x)


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0 whose backward reduce-scatters the (contiguous) gradient with SUM.

    Written out rather than ``torch.distributed.nn.functional.all_gather``
    (deprecated), whose backward off NCCL is an all-to-all that sends the
    wrong elements when the incoming gradient is a strided view (what
    ``einsum`` hands back): measured, SCAN's text gradients came out 100% off
    on 2 gloo processes. Off NCCL (gloo has no reduce-scatter) the backward
    all-reduces the whole gradient and keeps this rank's rows.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        x = x.contiguous()
        w = dist.get_world_size()
        out = torch.empty((w * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        dist.all_gather(list(out.chunk(w)), x)
        ctx.rows = x.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.contiguous()
        r, n = dist.get_rank(), ctx.rows
        if grad.is_cuda:  # CUDA tensors go through NCCL, which reduce-scatters
            mine = torch.empty((n, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(mine, grad, op=dist.ReduceOp.SUM)
            return mine
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[r * n:(r + 1) * n].contiguous()


def gathered_rows(x: Tensor) -> tuple[Tensor, int]:
    """``(gather(x), offset)``: the global batch and where this rank's rows start in it."""
    g = gather(x)
    return g, (rank() * x.shape[0] if g is not x else 0)


def batch_sum(per_sample: Tensor) -> Tensor:
    """The sum over the GLOBAL batch of per-sample values (a term whose paper sums over the batch)."""
    return gather(per_sample).sum()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (every rank must call it; ``flag`` itself outside a group).

    Used where one rank's finding must stop every rank alike (a non-finite
    loss on one shard), lest the others wait forever in the next collective.
    """
    if not is_distributed():
        return bool(flag)
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shard_map(fn, x: Tensor) -> Tensor:
    """``fn(x)`` for a row-wise ``fn`` (an encoder at evaluation), each rank computing its share of the rows.

    Under a process group every rank embeds its contiguous ``ceil(n / w)``
    rows and the results are all-gathered, so every rank ends with the whole
    of ``fn(x)`` (and can rank the gallery itself); every rank must call it.
    Outside a group, or inside a training step, it is ``fn(x)``.
    """
    if not is_distributed() or _GATHERING or x.shape[0] == 0:
        return fn(x)
    import torch.distributed as dist

    w, r, n = world_size(), rank(), x.shape[0]
    per = -(-n // w)
    part = x[r * per:(r + 1) * per]
    if part.shape[0] < per:  # the last ranks pad with copies of row 0, dropped below
        part = torch.cat([part, x[:1].expand(per - part.shape[0], *x.shape[1:])])
    y = fn(part).contiguous()
    out = torch.empty((w * per, *y.shape[1:]), dtype=y.dtype, device=y.device)
    dist.all_gather(list(out.chunk(w)), y)
    return out[:n]


def broadcast_object(obj):
    """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself outside a group."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
