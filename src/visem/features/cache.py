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
store rather than mixing features. Chunks are uncompressed, so any row of
any chunk is read at its byte offset (:meth:`FeatureStore.view`): a store
larger than memory is read row by row, never loaded whole; several
processes (``torchrun`` ranks) may fill one store at once.

**Assembled files** are what ``visem features`` writes: one array in data set
order plus a sidecar; they are reused when the sidecar's ``inputs_sha256``
(a hash over the ordered input keys) and ``encoder`` still match.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from visem.data.paths import DataError, atomic_save_npy, atomic_save_npz, atomic_write_json, data_dir, reading

__all__ = [
    "features_dir",
    "content_key",
    "file_key",
    "keys_digest",
    "FeatureStore",
    "StoreRows",
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


#: chunk files a store keeps open for reading.
OPEN_CHUNKS = 64


def _npz_member_layout(path: Path, member: str) -> tuple[int, np.dtype, tuple[int, ...], bool] | None:
    """``(byte offset, dtype, shape, fortran order)`` of an uncompressed ``.npy`` member of an ``.npz`` file.

    ``np.savez`` stores members uncompressed (``ZIP_STORED``), so a member's
    array bytes lie contiguous in the file after its local zip header and its
    ``.npy`` header: they can be read at an offset without loading the rest
    (``np.load`` of an ``.npz`` cannot memory-map). ``None`` for a compressed
    member (read whole instead).
    """
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: bad zip local header for {member}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            return None
        shape, fortran, dtype = read_header(fh)
        return fh.tell(), dtype, shape, fortran


class FeatureStore:
    """Content-addressed, chunked, resumable feature storage in one folder.

    ``put(keys, values)`` writes one chunk; ``get(keys)`` assembles rows in the
    order asked; ``missing(keys)`` says what still has to be computed;
    ``view(keys)`` gives row access without assembling anything (a store
    past RAM is read row by row, at each row's offset in its chunk).

    Several processes may write into one store at once (the ranks of a
    ``torchrun`` extraction): a chunk's name is a digest of its keys and it
    is written to a temporary file renamed into place, so writers never
    clobber each other's chunks and readers never see half a chunk. Call
    :meth:`refresh` to see chunks other processes wrote since the first
    look.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._index: dict[str, int] | None = None  # key -> chunk number << 32 | row
        self._chunks: list[Path] = []
        self._layouts: dict[int, Any] = {}
        self._fds: dict[int, int] = {}
        self.writes = 0  # chunks written by this object (tests use it)

    def _add_chunk(self, path: Path, keys: Sequence[str]) -> None:
        c = len(self._chunks)
        self._chunks.append(path)
        index = self._index
        for row, key in enumerate(keys):
            index.setdefault(key, (c << 32) | row)

    def _scan(self) -> dict[str, int]:
        if self._index is None:
            self.close()
            self._index, self._chunks, self._layouts = {}, [], {}
            if self.root.is_dir():
                for chunk in sorted(self.root.glob("chunk-*.npz")):
                    try:
                        with np.load(chunk, allow_pickle=False) as z:
                            keys = z["keys"]
                    except Exception:  # noqa: BLE001 - a damaged chunk is ignored and recomputed
                        continue
                    self._add_chunk(chunk, keys.tolist())
        return self._index

    def refresh(self) -> None:
        """Forget what was scanned: the next call sees every chunk now on disk (written by other processes too)."""
        self.close()
        self._index = None

    def keys(self) -> set[str]:
        """Every stored key."""
        return set(self._scan())

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
        self._scan()
        self._add_chunk(path, list(keys))
        self.writes += 1
        return path

    def locate(self, keys: Sequence[str]) -> np.ndarray:
        """(len(keys),) int64 locations (chunk number << 32 | row); ``KeyError`` naming a missing key."""
        index = self._scan()
        try:
            return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as exc:
            absent = [k for k in keys if k not in index]
            raise KeyError(f"{len(absent)} keys not in the store {self.root}, e.g. {absent[0]}") from exc

    def _layout(self, c: int):
        if c not in self._layouts:
            path = self._chunks[c]
            with reading(path, "a visem feature chunk (delete it to recompute)"):
                layout = _npz_member_layout(path, "values")
                if layout is None or layout[3]:  # compressed or Fortran order: read the whole member
                    with np.load(path, allow_pickle=False) as z:
                        layout = z["values"]
            self._layouts[c] = layout
        return self._layouts[c]

    def _fd(self, c: int) -> int:
        """An open descriptor of chunk ``c`` (the last :data:`OPEN_CHUNKS` stay open; ``pread`` needs no seek)."""
        fd = self._fds.pop(c, None)
        if fd is None:
            with reading(self._chunks[c], "a visem feature chunk (delete it to recompute)"):
                fd = os.open(self._chunks[c], os.O_RDONLY)
            while len(self._fds) >= OPEN_CHUNKS:
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[c] = fd  # most recently used last
        return fd

    def close(self) -> None:
        """Close the chunk files kept open for reading."""
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def read(self, locations: np.ndarray) -> np.ndarray:
        """The rows at ``locations`` (from :meth:`locate`), in that order, reading only those rows."""
        locations = np.asarray(locations, dtype=np.int64)
        if locations.size == 0:
            raise KeyError("no keys given")
        chunk_of, row_of = locations >> 32, locations & 0xFFFFFFFF
        out = None
        for c in np.unique(chunk_of).tolist():
            pos = np.flatnonzero(chunk_of == c)
            rows = row_of[pos]
            layout = self._layout(c)
            if isinstance(layout, np.ndarray):  # held in memory
                values = layout[rows]
            else:
                offset, dtype, shape, _ = layout
                row_items = int(np.prod(shape[1:], dtype=np.int64))
                row_bytes = row_items * dtype.itemsize
                values = np.empty((len(rows), *shape[1:]), dtype=dtype)
                flat = values.reshape(len(rows), -1)
                fd = self._fd(c)
                order = np.argsort(rows, kind="stable")
                srt = rows[order]
                for run in np.split(np.arange(len(srt)), np.flatnonzero(np.diff(srt) != 1) + 1):
                    count = len(run)  # consecutive rows: one read
                    data = os.pread(fd, count * row_bytes, offset + int(srt[run[0]]) * row_bytes)
                    if len(data) != count * row_bytes:
                        raise DataError(f"{self._chunks[c]}: truncated visem feature chunk (delete it to recompute)")
                    flat[order[run]] = np.frombuffer(data, dtype=dtype).reshape(count, row_items)
            if out is None:
                out = np.empty((len(locations), *values.shape[1:]), dtype=values.dtype)
            out[pos] = values
        return out

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Rows for ``keys`` (repeats allowed), stacked; raises KeyError if one is missing."""
        if len(keys) == 0:
            raise KeyError("no keys given")
        return self.read(self.locate(keys))

    def view(self, keys: Sequence[str]) -> "StoreRows":
        """Row access to ``keys``' features without assembling them (see :class:`StoreRows`)."""
        return StoreRows(self, self.locate(keys))


class StoreRows:
    """An (N, ...) array-like over stored features: ``rows[idx]`` reads just those rows from their chunks.

    ``idx`` is an int, a slice or an integer array (a torch tensor too);
    :meth:`blocks` walks the rows in order, ``size`` at a time. Nothing is
    held but the rows' locations (8 bytes each), so training on a collection
    larger than memory draws each batch from disk (and the page cache).
    """

    def __init__(self, store: FeatureStore, locations: np.ndarray):
        self.store = store
        self.locations = np.asarray(locations, dtype=np.int64)
        first = store.read(self.locations[:1]) if len(self.locations) else None
        self.dtype = first.dtype if first is not None else np.dtype(np.float32)
        self.shape = (len(self.locations), *(first.shape[1:] if first is not None else ()))

    def __len__(self) -> int:
        return len(self.locations)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, idx: Any) -> np.ndarray:
        if hasattr(idx, "numpy"):  # a torch tensor
            idx = idx.numpy()
        if isinstance(idx, (int, np.integer)):
            return self.store.read(self.locations[[int(idx)]])[0]
        sel = self.locations[idx]
        if sel.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return self.store.read(sel)

    def blocks(self, size: int = 1024) -> Iterator[np.ndarray]:
        """The rows in order, ``size`` at a time."""
        for s in range(0, len(self), size):
            yield self[s:s + size]


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
