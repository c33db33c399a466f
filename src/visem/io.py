"""Atomic file writes: a file is either absent or complete, never half-written.

The one helper every writer of visem uses (:func:`atomic_path`; the text,
JSON and array writers below and in :mod:`visem.data.paths` are built on it):

* the data go to a temporary file in the target's folder;
* the temporary file gets the permissions of any file the user creates
  (``0o666`` minus the umask: ``tempfile.mkstemp`` would leave ``0o600``);
* it is flushed to disk (``fsync``) before the rename, so a crash after the
  rename cannot leave an empty or partial file under the final name, and the
  folder is synced after it so the rename itself survives;
* ``os.replace`` renames it onto the target (atomic on POSIX): readers see
  the old file or the new one. On error the temporary file is removed and
  the target is untouched.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_dir", "atomic_path", "atomic_write_json", "atomic_write_text", "file_mode"]


@functools.lru_cache(maxsize=1)
def file_mode() -> int:
    """``0o666`` minus the process's umask: the mode of a file created with ``open()`` (read once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system without fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success sync it and rename it onto ``path``.

    The body writes the temporary file by any means (``open``, ``np.save``,
    a library that takes a file name). See the module docstring for the
    permissions and the syncs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent, directory=True)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path, work_dir: str | Path | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces the folder ``path`` whole.

    The temporary folder is made in ``work_dir`` (default: ``path``'s
    folder; it must be on the same file system) and gets mode ``0o755``
    (an ordinary data folder, not ``mkdtemp``'s private one). A folder
    already at ``path`` is removed just before the rename. On error the
    temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    work = Path(work_dir) if work_dir is not None else path.parent
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f".{path.name}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, data: Any) -> None:
    """JSON (indented, UTF-8) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
