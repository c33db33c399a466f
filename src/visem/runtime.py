"""Process-wide run settings: the number of CPU threads torch uses, and the device to run on.

On a CPU the small models of the seed papers are dominated by per-operation
overhead, and torch's default of one thread per core makes several processes
(or a shared machine) fight for the cores. ``visem`` commands take
``--threads N``; :func:`set_threads` applies it once, early, for the whole
process. ``None`` keeps torch's default.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEVICE_HELP", "cpu_count", "resolve_device", "resolve_precision", "set_threads"]

DEVICE_HELP = "auto (CUDA when present, else the CPU) | cpu | cuda | cuda:N"


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


def resolve_device(spec: str | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` as a ``torch.device``.

    ``auto`` is ``$VISEM_DEVICE`` when set (what ``--device`` of the
    commands sets, so that the worker processes of an experiment inherit
    it), else CUDA when present, else the CPU.

    Asking for CUDA where there is none, or for a GPU index past the last,
    is a ``ValueError`` that says what is there.
    """
    import torch

    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto" and os.environ.get("VISEM_DEVICE", "auto").strip().lower() != "auto":
        spec = os.environ["VISEM_DEVICE"].strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device {spec!r} is not one of {DEVICE_HELP}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {spec!r} is not one of {DEVICE_HELP}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: this machine has no CUDA device (torch {torch.__version__}); "
                             "use device=cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resolve_precision(spec: str | None = "auto") -> str:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16``; ``auto`` is ``$VISEM_PRECISION`` when set, else ``fp32``."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        spec = os.environ.get("VISEM_PRECISION", "fp32").strip().lower() or "fp32"
    if spec not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be one of fp32, bf16, fp16 (or auto), got {spec!r}")
    return spec
