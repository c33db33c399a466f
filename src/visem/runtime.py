"""Process-wide run settings: the number of CPU threads torch uses.

On a CPU the small models of the seed papers are dominated by per-operation
overhead, and torch's default of one thread per core makes several processes
(or a shared machine) fight for the cores. ``visem`` commands take
``--threads N``; :func:`set_threads` applies it once, early, for the whole
process. ``None`` keeps torch's default.
"""

from __future__ import annotations

import os

__all__ = ["cpu_count", "set_threads"]


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(n: int | None) -> int:
    """Use ``n`` intra-op threads in torch (``None``: leave the default); returns the number in use."""
    import torch

    if n is not None:
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"threads must be a positive integer, got {n!r}")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()
