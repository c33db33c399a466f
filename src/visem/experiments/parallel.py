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
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from visem.runtime import cpu_count, set_threads

__all__ = ["cached_json", "run_parallel"]


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
    Under ``torchrun`` the jobs run here, in order, on every rank: each trains
    data-parallel over the processes instead.
    """
    from tqdm.auto import tqdm

    from visem.distributed import is_distributed

    jobs = list(jobs)
    n = min(len(jobs), cpu_count() if workers is None else int(workers))
    if is_distributed():  # under torchrun every rank runs every job in order, each one data-parallel
        n = 1
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


def cached_json(path: str | Path, compute: Callable[[], Any]) -> Any:
    """``compute()``, cached as JSON at ``path`` so that a stopped experiment resumes its finished runs.

    Under ``torchrun`` rank 0 decides whether the cache holds the run (every
    rank follows, so they stay in step without a shared file system) and
    alone writes it.
    """
    from visem.distributed import broadcast_object, is_main
    from visem.io import atomic_write_json

    path = Path(path)
    found = json.loads(path.read_text()) if is_main() and path.is_file() else None
    found = broadcast_object(found)
    if found is not None:
        return found
    result = compute()
    if is_main():
        atomic_write_json(path, result)
    return result
