"""Wall time and peak resident memory of one call, shared by the benchmarks in this folder.

tracemalloc does not see torch's or faiss's allocations, so RSS is read from
``/proc/self/status`` by a polling thread (every 10 ms) while the call runs.
"""

from __future__ import annotations

import threading
import time


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


def measure(fn):
    """Run ``fn``; return its result, wall seconds and the peak RSS added while it ran (MB)."""
    peak = [rss_mb()]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.01)

    base = rss_mb()
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    return out, elapsed, max(peak[0], rss_mb()) - base
