"""Time and peak resident memory of one call, and the machine, shared by the benchmarks in this folder.

tracemalloc does not see torch's or faiss's allocations, so RSS is read from
``/proc/self/status`` by a polling thread (every 10 ms) while the call runs.
CPU seconds are this process's user + system time (``resource.getrusage``):
on a machine shared with other work they move far less than wall time.
"""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from dataclasses import dataclass, field


def rss_mb() -> float:
    """Resident set size of this process in MB (NaN where /proc is not there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn):
    """Run ``fn``; return its result, wall seconds and the peak RSS added while it ran (MB)."""
    out, _, wall, mem = measure_cpu(fn)
    return out, wall, mem


def measure_cpu(fn):
    """Run ``fn``; return its result, CPU seconds, wall seconds and the peak RSS added while it ran (MB)."""
    peak = [rss_mb()]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.01)

    base = rss_mb()
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    cpu0, start = cpu_seconds(), time.perf_counter()
    out = fn()
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    stop.set()
    t.join()
    return out, cpu, elapsed, max(peak[0], rss_mb()) - base


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Cores, CPU model, load average (1, 5, 15 min) now, and the library versions that matter."""
    import numpy as np
    import torch

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cores": os.cpu_count(), "cpu": cpu_model(), "load_average": tuple(round(x, 2) for x in load),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "numpy": np.__version__}


@dataclass
class Row:
    """One line of bench/RESULTS.md: visem and its peer (or floor) on the same task, in CPU seconds."""

    task: str
    visem_s: float
    peer: str
    peer_s: float | None
    peak_rss_mb: float
    command: str
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.peer_s else self.visem_s / self.peer_s
