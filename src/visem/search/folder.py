"""The index folder on disk: its manifest, its files and their generations.

Layout (``index.json`` is the manifest; it is replaced atomically and names
every other file, so a reader sees either the old index or the new one, never
a mix):

=================================  ============================================
``index.json``                     format version, method, options, sizes,
                                   image roots, the build report, the
                                   generations and the vector stores
``model.safetensors``              trained model weights
``model.yaml``                     the model's resolved config
``vocab.json``                     the text vocabulary
``images.<g>.json``                generation ``g``'s images:
                                   ``[{"root": r, "name": rel, "sha256": h}]``
``embeddings.<g>.npy``             their (n_g, D) float16 embeddings, unit
                                   norm (memory-mapped when opened)
``vectors.<g>.faiss``              their faiss index (IVF kinds; none for
                                   exact search, which reads the embeddings)
``lexical.<g>.json``               their documents for word matches (BM25;
                                   :mod:`visem.search.lexical`)
``raw.<g>.npy``                    their raw pooled image features, unit
                                   norm, float16 (image-to-image search;
                                   :mod:`visem.search.image_space`)
``vectors.codec.faiss``            the trained, empty faiss index later
                                   generations are indexed with
``captions.json``                  the training captions and their image ids
``caption_embeddings.npy``         (M, D) float16 caption embeddings
``caption_vectors.0.faiss``        their faiss index (IVF kinds only)
=================================  ============================================

**Generations.** The build writes generation 0. Each
:meth:`visem.search.SearchIndex.add_images` writes the next generation's
files, holding only the new images, and then replaces the manifest:
nothing already written is copied or rewritten, so adding 1,000 images
costs time and memory proportional to the 1,000 (plus reading the
manifest). Image ids run through the generations in order: generation
``g``'s images are ids ``offset_g .. offset_g + n_g - 1``. A generation
whose files exist but which no manifest names (an add stopped before its
commit) is ignored and overwritten by the next add.

**Vector stores** (``manifest["vectors"]``): ``{"backend": "faiss" |
"milvus", "images": {...}, "captions": {...}}``, one entry per space, read
by :func:`visem.search.vectors.open_store`.

**Versions.** This module writes version 2. Version 1 (visem 0.1 before
generations: one ``images.<g>.json`` / float32 ``embeddings.<g>.npy`` /
``vectors.<g>.faiss`` holding every image, ``files`` naming them) is read as
one generation; the first ``add_images`` on it writes version 2 around the
old files, which stay as they are (no rewrite, no conversion step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from visem.search.types import IndexFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "READABLE_VERSIONS", "GenerationRows", "codec_file", "gen_files",
           "open_rows", "read_manifest", "require_file", "stored_manifest", "vector_file", "write_embeddings"]

FORMAT = "visem-index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "index.json"
#: file name stem of each space's faiss files.
_VECTOR_STEM = {"images": "vectors", "captions": "caption_vectors"}


def gen_files(gen: int) -> dict[str, str]:
    """The names of generation ``gen``'s image list and embeddings."""
    return {"images": f"images.{gen}.json", "embeddings": f"embeddings.{gen}.npy"}


def vector_file(space: str, gen: int) -> str:
    """The faiss file of generation ``gen`` of a space (``images`` or ``captions``)."""
    return f"{_VECTOR_STEM[space]}.{gen}.faiss"


def codec_file(space: str) -> str:
    """The trained, empty faiss index of a space."""
    return f"{_VECTOR_STEM[space]}.codec.faiss"


def _upgrade_v1(m: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest seen as version 2: its cumulative files are generation ``m["generation"]``."""
    files = m["files"]
    kind = (m.get("report") or {}).get("ann", {}).get("kind") or "exact"
    m = dict(m)
    m["generations"] = [{"id": int(m["generation"]), "images": files["images"], "embeddings": files["embeddings"],
                         "n": int(m["n_images"])}]
    m["vectors"] = {"backend": "faiss",
                    "images": {"kind": kind, "codec": None, "segments": [None if kind == "exact" else files["vectors"]]},
                    "captions": {"kind": "exact", "codec": None, "segments": [None]}}
    m["captions"] = {"file": "captions.json", "embeddings": "caption_embeddings.npy"}
    m["read_as"] = 1
    return m


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index folder ``path`` (a version 1 one upgraded in memory).

    :class:`IndexFileError` names what is wrong.
    """
    mf = path / MANIFEST
    if not path.is_dir():
        raise IndexFileError(f"{path}: no index folder there")
    if not mf.is_file():
        hint = " (an interrupted build? run the same build again to resume)" if path.name.endswith(".partial") else ""
        raise IndexFileError(f"{mf}: not found: {path} is not a visem index{hint}")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{mf}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexFileError(f"{mf}: not a visem index manifest (format {fmt!r})")
    version = manifest.get("version")
    if version not in READABLE_VERSIONS:
        raise IndexFileError(f"{mf}: index format version {version}, this visem reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
    try:
        return _upgrade_v1(manifest) if version == 1 else manifest
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFileError(f"{mf}: incomplete version {version} manifest ({exc!r})") from None


def stored_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """What :func:`read_manifest` returned, as version 2 is written (drops the in-memory upgrade marker)."""
    out = {k: v for k, v in manifest.items() if k not in ("read_as", "files")}
    out["version"] = FORMAT_VERSION
    return out


def require_file(folder: Path, name: str) -> Path:
    """``folder / name``, or :class:`IndexFileError` when the manifest names a file that is not there."""
    p = folder / name
    if not p.is_file():
        raise IndexFileError(f"{p}: missing from the index (named by {folder / MANIFEST})")
    return p


def write_embeddings(path: Path, blocks: Any, n: int, dim: int) -> None:
    """Write ``n`` x ``dim`` float16 rows, given as an array or an iterable of row blocks, to ``path`` atomically.

    The file is a ``.npy`` written through a memory map, so an iterable of
    blocks never needs the whole array in memory.
    """
    from numpy.lib.format import open_memmap

    from visem.io import atomic_path

    with atomic_path(path) as tmp:
        out = open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        if isinstance(blocks, np.ndarray):
            blocks = [blocks]
        pos = 0
        for b in blocks:
            b = np.asarray(b)
            if b.ndim != 2 or b.shape[1] != dim or pos + b.shape[0] > n:
                raise ValueError(f"{path.name}: block of shape {b.shape} does not fit ({n}, {dim}) at row {pos}")
            out[pos:pos + b.shape[0]] = b
            pos += b.shape[0]
        if pos != n:
            raise ValueError(f"{path.name}: {pos} rows written, {n} expected")
        out.flush()
        del out


def open_rows(path: Path) -> np.ndarray:
    """The embeddings ``.npy`` at ``path``, memory-mapped read-only."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


class GenerationRows:
    """(N, D) row access across the generations' memory maps: ``rows[ids]`` reads just those rows, as float32.

    ``ids`` is an integer array (or list) of ids ``0 .. N - 1`` running
    through the generations in order; each generation's rows are read in
    ascending order (sequential reads of its memory map).
    """

    def __init__(self, parts: list[Any]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [int(p.shape[0]) for p in self.parts])
        self.dim = int(self.parts[0].shape[1]) if self.parts else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, ids: Any) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((len(ids), self.dim), np.float32)
        gen = np.searchsorted(self.offsets, ids, side="right") - 1
        for g in np.unique(gen).tolist():
            sel = np.flatnonzero(gen == g)
            local = ids[sel] - self.offsets[g]
            order = np.argsort(local, kind="stable")  # ascending reads of the memory map
            out[sel[order]] = self.parts[g][local[order]]
        return out

    def whole(self) -> np.ndarray:
        """Every row: the memory map of a one-generation index, else a copy in memory."""
        return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
