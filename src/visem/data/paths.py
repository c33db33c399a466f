"""Where visem keeps its data, the one error type of the data layer, and safe file helpers.

Data directory: ``$VISEM_DATA_DIR`` if set, else ``~/.cache/visem``. Every
built-in source converts or unpacks into a sub-folder of it, and feature caches
live under ``<data_dir>/features``. Every file visem writes there is written
atomically (a temporary file in the same folder, then a rename), so a killed
run leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from visem.io import atomic_path, atomic_write_json

__all__ = [
    "DataError",
    "data_dir",
    "source_dir",
    "require_file",
    "reading",
    "atomic_path",
    "atomic_write_json",
    "atomic_save_npz",
    "atomic_save_npy",
    "sha256_bytes",
    "sha256_file",
    "read_json",
]

ENV_VAR = "VISEM_DATA_DIR"


class DataError(ValueError):
    """A data file is missing, unreadable or not in the expected layout.

    The message always names the file (or folder) and says what was expected,
    so the CLI can print it as one line instead of a stack trace.
    """


def data_dir() -> Path:
    """The visem data directory: ``$VISEM_DATA_DIR``, else ``~/.cache/visem`` (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/visem").expanduser()


def source_dir(name: str, create: bool = False) -> Path:
    """``<data_dir>/<name>``, created on request."""
    path = data_dir() / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` if it is an existing file, else raise DataError naming it and ``what``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected {what}")
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected {what})")
    return path


@contextlib.contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn low-level read errors (numpy, zlib, OS, pickle, JSON) into one DataError naming the file."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found (expected {what})") from exc
    except Exception as exc:  # noqa: BLE001 - deliberately broad: any failure to parse is a data error
        raise DataError(f"{path}: could not be read as {what} ({type(exc).__name__}: {exc})") from exc


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` (uncompressed) to ``path`` through :func:`visem.io.atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` through :func:`visem.io.atomic_path` (no ``.npy`` suffix is added)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | Path, what: str = "a JSON file") -> Any:
    require_file(path, what)
    with reading(path, what):
        return json.loads(Path(path).read_text(encoding="utf-8"))
