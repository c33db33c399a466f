"""Shared fixtures: writers of the published data-set file layouts (Xian, cross-modal .mat, VSE++ precomp),
and ``one_thread`` (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``).

Each fixture returns a function that writes arrays given row-major and
0-based in the layout the releases use (one column per item, 1-based ids),
so reader tests and experiment tests build their files the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the models here are tiny, so more threads only add contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_xian_folder(folder: Path, features: np.ndarray, labels: np.ndarray, att: np.ndarray,
                      splits: dict[str, np.ndarray], names: Sequence[str] | None = None) -> Path:
    """``res101.mat`` + ``att_splits.mat``: features (N, D), labels (N,) 0-based, att (C, A), splits of 0-based rows."""
    import scipy.io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "res101.mat", {"features": np.asarray(features, dtype=np.float64).T,
                                             "labels": (np.asarray(labels) + 1).reshape(-1, 1)})
    att_mat = {"att": np.asarray(att, dtype=np.float64).T}
    for k, rows in splits.items():
        att_mat[f"{k}_loc"] = (np.asarray(rows) + 1).reshape(-1, 1)
    if names is not None:
        att_mat["allclasses_names"] = np.array([[n] for n in names], dtype=object)
    scipy.io.savemat(folder / "att_splits.mat", att_mat)
    return folder


def write_crossmodal_mat(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                         extra: dict[str, np.ndarray] | None = None) -> Path:
    """Wikipedia-style ``I_tr`` / ``T_tr`` / ``L_tr`` (1-based labels) per split ``tr`` / ``te`` / ``val``."""
    import scipy.io

    mat: dict[str, np.ndarray] = {}
    for sp, (image, text, labels) in splits.items():
        mat[f"I_{sp}"] = np.asarray(image, dtype=np.float64)
        mat[f"T_{sp}"] = np.asarray(text, dtype=np.float64)
        mat[f"L_{sp}"] = (np.asarray(labels) + 1).reshape(-1, 1)
    mat.update(extra or {})
    scipy.io.savemat(path, mat)
    return Path(path)


def write_precomp_split(folder: Path, split: str, images: np.ndarray, captions: Sequence[str]) -> Path:
    """``{split}_ims.npy`` + ``{split}_caps.txt`` (captions ``5i .. 5i+4`` describe image ``i``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}_ims.npy", np.asarray(images, dtype=np.float32))
    (folder / f"{split}_caps.txt").write_text("\n".join(captions) + "\n")
    return folder


@pytest.fixture
def xian_writer():
    return write_xian_folder


@pytest.fixture
def crossmodal_writer():
    return write_crossmodal_mat


@pytest.fixture
def precomp_writer():
    return write_precomp_split
