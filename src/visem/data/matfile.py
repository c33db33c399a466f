"""Reading MATLAB ``.mat`` files with scipy, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visem.data.paths import DataError, reading, require_file

__all__ = ["load_mat", "mat_strings", "mat_vector"]


def load_mat(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """``scipy.io.loadmat`` without the ``__header__``-style keys.

    MATLAB v7.3 files are HDF5 and scipy cannot read them: that case gets its
    own message (re-save with ``save(..., '-v7')``).
    """
    import scipy.io

    path = require_file(path, what)
    with open(path, "rb") as fh:
        head = fh.read(128)
    if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) file; scipy reads only up to v7 - re-save it with save(..., '-v7')")
    with reading(path, what):
        mat = scipy.io.loadmat(str(path))
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def mat_strings(arr: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any shape) or a char matrix -> list of str."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "U":  # scipy turns char matrices into one string a row
        return [str(s).strip() for s in arr.reshape(-1)]
    out = []
    for item in arr.reshape(-1):
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.reshape(-1)[0]
        if isinstance(item, np.ndarray):
            flat = item.reshape(-1)
            item = "".join(str(x) for x in flat) if item.dtype.kind == "U" else (str(flat[0]) if flat.size else "")
        out.append(str(item).strip())
    return out


def mat_vector(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    """An (N, 1) or (1, N) or (N,) numeric array -> (N,)."""
    arr = np.asarray(arr)
    if arr.ndim == 2 and 1 in arr.shape:
        return arr.reshape(-1)
    if arr.ndim == 1:
        return arr
    raise DataError(f"{path}: '{key}' should be a vector, got shape {arr.shape}")
