"""Image files into the feature store at scale: one read per file, decoding in DataLoader workers, ranks in parallel.

:func:`extract_files` is the one pass every image folder goes through (the
search index's build, ``add`` and ``eval``; ``visem features emoji``). Each
file is read **once**: its bytes are hashed (the content key) and, only when
the store lacks that key, decoded and preprocessed from the same bytes. A
file that cannot be decoded is reported, not fatal; there is no separate
"is this a readable image" pass and no second read to hash or decode.

* **Workers.** Reading, hashing, decoding and resizing run in
  ``torch.utils.data.DataLoader`` worker processes (``workers``; default
  :func:`default_workers`), the network in this process, in batches;
  finished chunks are written to the store as they fill, so a stopped pass
  keeps them and the next one encodes only what is missing.
* **Ranks.** Under ``torchrun`` (a process group with ``world_size > 1``),
  rank ``r`` reads files ``r, r + W, r + 2W, ...``; every rank writes its
  own chunks into the shared store (atomic, named by their keys: ranks
  never collide), then the ranks exchange the keys they found and meet at
  a barrier, so each returns the whole list. Use one store folder on a
  filesystem every rank sees.

Features are not returned: the caller reads them from the store
(:meth:`visem.features.cache.FeatureStore.view`), as rows, when it needs
them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["FileScan", "default_workers", "extract_files"]


@dataclass
class FileScan:
    """What :func:`extract_files` found: each file's content key (``None`` when unreadable) and the errors."""

    keys: list[str | None]
    errors: dict[int, str] = field(default_factory=dict)
    encoded: int = 0  # images this process decoded and encoded (the rest were in the store)


def default_workers(n_files: int) -> int:
    """Decoding processes: none for a few files (starting workers costs more), else up to 4, one core left free."""
    if n_files < 64:
        return 0
    return min(4, max(1, (os.cpu_count() or 1) - 1))


class _Files:
    """Dataset of ``(position, key, uint8 image or None, error or None)``, one read of each file.

    ``have`` (keys whose features are stored) is inherited by forked
    workers; a file whose key is in it is hashed and not decoded.
    """

    def __init__(self, paths: Sequence[Path], positions: Sequence[int], keys: Sequence[str | None] | None,
                 have: set[str], preprocess: Any):
        self.paths, self.positions, self.keys = paths, list(positions), keys
        self.have, self.preprocess = have, preprocess

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        import io

        from PIL import Image, UnidentifiedImageError

        i = self.positions[j]
        key = self.keys[i] if self.keys is not None else None
        if key is not None and key in self.have:
            return i, key, None, None  # known key, stored features: the file is not even read
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError as exc:
            return i, None, None, f"{self.paths[i]}: cannot read ({exc.strerror or exc})"
        if key is None:
            key = hashlib.sha256(data).hexdigest()
        if key in self.have:
            return i, key, None, None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                arr = self.preprocess(im)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return i, None, None, f"{self.paths[i]}: not a readable image ({type(exc).__name__}: {exc})"
        return i, key, arr, None


def _collate(items):
    return items


def _all_gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def extract_files(paths: Sequence[str | Path], kinds: Sequence[str], *, encoder: Any = None,
                  store_root: str | Path | None = None, keys: Sequence[str | None] | None = None,
                  skip: set[str] | None = None, workers: int | None = None, batch_size: int = 16,
                  chunk_size: int = 256, progress: bool = False) -> FileScan:
    """Hash every file once and store the ``kinds`` (``pooled``, ``grid``) features of those the store lacks.

    ``keys``: content keys already known (a file whose key is given and
    stored is not read at all; ``None`` entries are hashed). ``skip``: keys
    whose features are not wanted (images already indexed). ``pooled`` is
    always stored with ``grid`` (it is the grid's mean, and the pseudo
    captions need it). Same bytes under two names are decoded once. Returns
    a :class:`FileScan`; under a process group every rank gets the same
    whole scan (see the module docstring).
    """
    from torch.utils.data import DataLoader

    from visem import distributed
    from visem.features.image import IMAGE_KINDS, EfficientNetLite0, _store

    kinds = tuple(dict.fromkeys([*kinds, "pooled"]))
    for k in kinds:
        if k not in IMAGE_KINDS:
            raise ValueError(f"kind must be one of {IMAGE_KINDS}, got {k!r}")
    encoder = encoder or EfficientNetLite0()
    stores = {k: _store(encoder, k, store_root) for k in IMAGE_KINDS}
    have = set.intersection(*(stores[k].keys() for k in kinds)) | set(skip or ())
    n = len(paths)
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} files")
    rank, world = distributed.rank(), distributed.world_size()
    mine = range(rank, n, world)
    workers = default_workers(len(mine)) if workers is None else int(workers)
    ds = _Files(list(paths), mine, keys, have, encoder.preprocess)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        prefetch_factor=4 if workers else None)
    found: dict[int, str] = {}
    errors: dict[int, str] = {}
    scheduled: set[str] = set()
    pend_keys: list[str] = []
    pend_imgs: list[np.ndarray] = []
    chunk_keys: list[str] = []
    chunk_grids: list[np.ndarray] = []
    encoded = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ds), desc=f"{encoder.name} images" + (f" (rank {rank})" if world > 1 else ""),
                   unit="img")

    def flush_chunk() -> None:
        if not chunk_keys:
            return
        grid = np.concatenate(chunk_grids)
        if "grid" in kinds:
            stores["grid"].put(list(chunk_keys), grid.astype(np.float16))
        stores["pooled"].put(list(chunk_keys), grid.mean(axis=1).astype(np.float32))
        chunk_keys.clear()
        chunk_grids.clear()

    def encode(count: int) -> None:
        nonlocal encoded
        batch = np.stack(pend_imgs[:count])
        chunk_grids.append(encoder.encode(batch))
        chunk_keys.extend(pend_keys[:count])
        del pend_imgs[:count], pend_keys[:count]
        encoded += count
        if len(chunk_keys) >= chunk_size:
            flush_chunk()

    try:
        for items in loader:
            for i, key, arr, err in items:
                if err is not None:
                    errors[i] = err
                    continue
                found[i] = key
                if arr is not None and key not in scheduled:
                    scheduled.add(key)
                    pend_keys.append(key)
                    pend_imgs.append(arr)
            while len(pend_imgs) >= batch_size:
                encode(batch_size)
            if bar is not None:
                bar.update(len(items))
        if pend_imgs:
            encode(len(pend_imgs))
        flush_chunk()
    finally:
        if bar is not None:
            bar.close()
    if world > 1:  # every rank learns every key, after every chunk is on disk
        distributed.barrier()
        for part_found, part_errors in _all_gather((found, errors)):
            found.update(part_found)
            errors.update(part_errors)
    for st in stores.values():
        st.refresh()
    return FileScan([found.get(i) for i in range(n)], errors, encoded)
