"""The index folder on disk: its manifest, its files and their generations.

Layout (``index.json`` is the manifest; it is replaced atomically and names
every other file, so a reader sees either the old index or the new one, never
a mix):

================================  =============================================
``index.json``                    format version, method, options, sizes,
                                  image roots, the build report, file names
``model.safetensors``             trained model weights
``model.yaml``                    the model's resolved config
``vocab.json``                    the text vocabulary
``images.<gen>.json``             ``[{"root": r, "name": rel, "sha256": h}]``
``embeddings.<gen>.npy``          (N, D) float32 image embeddings, unit norm
``vectors.<gen>.faiss``           the faiss index over those embeddings
``captions.json``                 the training captions and their image ids
``caption_embeddings.npy``        (M, D) float32 caption embeddings
================================  =============================================

``<gen>`` grows by one with every :meth:`visem.search.SearchIndex.add_images`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visem.search.types import IndexFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "gen_files", "read_manifest", "require_file"]

FORMAT = "visem-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"


def gen_files(gen: int) -> dict[str, str]:
    """The names of generation ``gen``'s files."""
    return {"images": f"images.{gen}.json", "embeddings": f"embeddings.{gen}.npy", "vectors": f"vectors.{gen}.faiss"}


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index folder ``path``; :class:`IndexFileError` names what is wrong."""
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
    if manifest.get("format") != FORMAT:
        raise IndexFileError(f"{mf}: not a visem index manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise IndexFileError(f"{mf}: index format version {manifest.get('version')}, this visem reads {FORMAT_VERSION}")
    return manifest


def require_file(folder: Path, name: str) -> Path:
    """``folder / name``, or :class:`IndexFileError` when the manifest names a file that is not there."""
    p = folder / name
    if not p.is_file():
        raise IndexFileError(f"{p}: missing from the index (named by {folder / MANIFEST})")
    return p
