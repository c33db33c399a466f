"""Independent training runs of an experiment (splits, seeds, settings) in parallel processes.

The runs of a table share nothing but their inputs, so on a CPU with ``W``
cores ``W`` single-threaded processes finish about ``W`` times sooner than one
process running them in turn (the small models of the seed papers do not
speed up with more threads). :func:`run_parallel` keeps the results in job
order, so a table does not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Mapping, Sequence

from visem.runtime import cpu_count, set_threads

__all__ = ["run_parallel"]


def _init_worker(threads: int) -> None:
    set_threads(threads)


def run_parallel(fn: Callable[..., Any], jobs: Sequence[Mapping[str, Any]], workers: int | None = None,
                 threads: int = 1, progress: bool = False) -> list[Any]:
    """``[fn(**job) for job in jobs]``, computed by ``workers`` processes of ``threads`` threads each.

    ``fn`` must be a module-level function and the jobs picklable (numpy
    arrays, tensors, plain values). ``workers=None`` uses every CPU of the
    process (at most one per job); ``workers <= 1`` runs the jobs here, in
    order. Worker processes are started with ``spawn`` (no state inherited
    from the parent's threads). ``progress``: a bar over the finished jobs.
    """
    from tqdm.auto import tqdm

    jobs = list(jobs)
    n = min(len(jobs), cpu_count() if workers is None else int(workers))
    bar = tqdm(total=len(jobs), disable=not progress, desc="runs", leave=False)
    try:
        if n <= 1:
            out = []
            for job in jobs:
                out.append(fn(**job))
                bar.update(1)
            return out
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(fn, **job) for job in jobs]
            for _ in as_completed(futures):
                bar.update(1)
            return [f.result() for f in futures]
    finally:
        bar.close()
