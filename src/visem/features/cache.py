"""Feature caches: a content-addressed chunk store and npy + JSON sidecar files.

Layout under ``<data_dir>/features/``::

    store/<encoder-id>/<kind>/chunk-<hash>.npz   content-addressed features
    <dataset>/<kind>[-<style>][-<split>].npy     assembled array, rows = data set rows
    <dataset>/<kind>[-<style>][-<split>].json    sidecar: shape, dtype, encoder, inputs hash, row meaning

**Chunk store.** Each input (an image file, an image array) is keyed by the
sha256 of its bytes, so the same picture under two names is encoded once, and
a renamed folder still hits the cache. Features are written in chunks (a few
hundred inputs, one ``.npz`` holding ``keys`` and ``values``, written
atomically) as extraction proceeds: a killed run keeps every finished chunk
and the next run encodes only what is missing. The store directory name
carries the encoder and its preprocessing, so changing either starts a new
store rather than mixing features.

**Assembled files** are what ``visem features`` writes: one array in data set
order plus a sidecar; they are reused when the sidecar's ``inputs_sha256``
(a hash over the ordered input keys) and ``encoder`` still match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from visem.data.paths import DataError, atomic_save_npy, atomic_save_npz, atomic_write_json, data_dir, reading

__all__ = [
    "features_dir",
    "content_key",
    "file_key",
    "keys_digest",
    "FeatureStore",
    "save_features",
    "load_features",
    "cached_features",
]


def features_dir() -> Path:
    return data_dir() / "features"


def content_key(data: bytes | np.ndarray) -> str:
    """sha256 hex of raw bytes, or of an array's dtype, shape and C-order bytes."""
    h = hashlib.sha256()
    if isinstance(data, np.ndarray):
        h.update(f"{data.dtype.str}{data.shape}".encode())
        h.update(np.ascontiguousarray(data).tobytes())
    else:
        h.update(data)
    return h.hexdigest()


def file_key(path: str | Path) -> str:
    """sha256 of a file's bytes (the name plays no part)."""
    with reading(path, "a file to hash"):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def keys_digest(keys: Iterable[str], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for k in keys:
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()


class FeatureStore:
    """Content-addressed, chunked, resumable feature storage in one folder.

    ``put(keys, values)`` writes one chunk; ``get(keys)`` assembles rows in the
    order asked; ``missing(keys)`` says what still has to be computed.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._index: dict[str, tuple[Path, int]] | None = None
        self.writes = 0  # chunks written by this object (tests use it)

    def _scan(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            index: dict[str, tuple[Path, int]] = {}
            if self.root.is_dir():
                for chunk in sorted(self.root.glob("chunk-*.npz")):
                    try:
                        with np.load(chunk, allow_pickle=False) as z:
                            keys = z["keys"]
                    except Exception:  # noqa: BLE001 - a damaged chunk is ignored and recomputed
                        continue
                    for row, key in enumerate(keys.tolist()):
                        index.setdefault(key, (chunk, row))
            self._index = index
        return self._index

    def __len__(self) -> int:
        return len(self._scan())

    def __contains__(self, key: str) -> bool:
        return key in self._scan()

    def missing(self, keys: Sequence[str]) -> list[str]:
        """Distinct keys not yet stored, in first-appearance order."""
        index = self._scan()
        return [k for k in dict.fromkeys(keys) if k not in index]

    def put(self, keys: Sequence[str], values: np.ndarray) -> Path:
        values = np.asarray(values)
        if len(keys) != values.shape[0]:
            raise ValueError(f"{len(keys)} keys for {values.shape[0]} rows")
        name = f"chunk-{keys_digest(keys)[:20]}.npz"
        path = self.root / name
        atomic_save_npz(path, keys=np.asarray(list(keys), dtype="U64"), values=values)
        index = self._scan()
        for row, key in enumerate(keys):
            index.setdefault(key, (path, row))
        self.writes += 1
        return path

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Rows for ``keys`` (repeats allowed), stacked; raises KeyError if one is missing."""
        index = self._scan()
        absent = [k for k in keys if k not in index]
        if absent:
            raise KeyError(f"{len(absent)} keys not in the store {self.root}, e.g. {absent[0]}")
        by_chunk: dict[Path, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            chunk, row = index[k]
            by_chunk.setdefault(chunk, []).append((i, row))
        out = None
        for chunk, pairs in by_chunk.items():
            with reading(chunk, "a visem feature chunk (delete it to recompute)"):
                with np.load(chunk, allow_pickle=False) as z:
                    values = z["values"]
            if out is None:
                out = np.empty((len(keys), *values.shape[1:]), dtype=values.dtype)
            pos = np.asarray([p for p, _ in pairs])
            rows = np.asarray([r for _, r in pairs])
            out[pos] = values[rows]
        if out is None:
            raise KeyError("no keys given")
        return out


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_features(path: str | Path, array: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write ``array`` to ``path`` (``.npy``) and ``meta`` + shape/dtype to the ``.json`` beside it, atomically."""
    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    array = np.asarray(array)
    atomic_save_npy(path, array)
    atomic_write_json(_sidecar(path), {**meta, "shape": list(array.shape), "dtype": str(array.dtype), "file": path.name})
    return path


def load_features(path: str | Path, mmap: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an array written by :func:`save_features` and its sidecar."""
    path = Path(path)
    side = _sidecar(path)
    with reading(path, "a .npy feature file"):
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    meta: dict[str, Any] = {}
    if side.is_file():
        with reading(side, "a JSON sidecar"):
            meta = json.loads(side.read_text())
    return array, meta


def cached_features(path: str | Path, expect: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached array at ``path`` if its sidecar matches every item of ``expect``, else None."""
    path = Path(path)
    if not (path.is_file() and _sidecar(path).is_file()):
        return None
    try:
        array, meta = load_features(path)
    except DataError:
        return None
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    if list(array.shape) != meta.get("shape"):
        return None
    return array, meta
