"""TensorBoard logging of a run's metrics, beside ``metrics.csv`` (the optional ``tensorboard`` extra).

Every row the trainer logs (``step``, ``lr``, each loss term) is also
written as scalars to ``RUN_DIR/tensorboard`` when the ``tensorboard``
package is installed (``pip install 'visem[tensorboard]'``); without it
this is a no-op and the CSV stays the record. ``tensorboard --logdir runs``
shows every run. A resumed run purges the events past its checkpoint, as
the CSV drops its rows past it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["available", "log_scalars"]

_writers: dict[str, Any] = {}


def available() -> bool:
    """Whether the tensorboard package is installed (probed once per call; cheap)."""
    return importlib.util.find_spec("tensorboard") is not None


def log_scalars(run_dir: str | Path, row: dict[str, float]) -> bool:
    """Write ``row`` (its ``step`` the global step) to ``run_dir/tensorboard``; ``False`` when not installed."""
    if not available():
        return False
    key = str(Path(run_dir).resolve())
    step = int(row["step"])
    writer = _writers.get(key)
    if writer is None:
        from torch.utils.tensorboard import SummaryWriter

        writer = _writers[key] = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=step)
    for name, value in row.items():
        if name != "step":
            writer.add_scalar(name, float(value), step)
    writer.flush()
    return True


def close(run_dir: str | Path) -> None:
    """Close the writer of ``run_dir`` (the trainer calls it at the end of a run)."""
    writer = _writers.pop(str(Path(run_dir).resolve()), None)
    if writer is not None:
        writer.close()
