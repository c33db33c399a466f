"""An opened index folder: search it by text or by image, add images, evaluate held-out captions.

:class:`SearchIndex` reads the files the manifest names (:mod:`visem.search.folder`),
embeds queries with the index's model, answers them through the vector index
(:mod:`visem.search.ann`), and appends a generation of new images without
retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visem.search.collection import load_collection, skipped_text
from visem.search.embedding import embed_images, embed_texts
from visem.search.features import feature_rows, scan_images
from visem.search.folder import MANIFEST, gen_files, read_manifest, require_file
from visem.search.types import (
    MAX_K,
    MAX_QUERY_CHARS,
    CaptionHit,
    Hit,
    IndexFileError,
    QueryError,
    SimilarResult,
)

__all__ = ["IndexFileError", "MAX_K", "MAX_QUERY_CHARS", "QueryError", "SearchIndex"]


class SearchIndex:
    """An index folder opened for search (see the module docstring for its files).

    The methods that run the model hold a lock, so one :class:`SearchIndex`
    may serve several threads; :meth:`add_images` must not run while other
    threads search the same object, nor in two processes on one index at
    once. Image embeddings stay on disk (memory-mapped float16, one file per
    generation); :meth:`close` releases a Milvus connection.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        import threading

        self.path = Path(path)
        self.manifest = manifest
        self._lock = threading.RLock()
        self._encoder = None
        self._load()

    # -- opening ------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "SearchIndex":
        """Open the index folder ``path``; :class:`IndexFileError` names what is wrong."""
        path = Path(path)
        manifest = read_manifest(path)
        return cls(path, manifest)

    def _file(self, name: str) -> Path:
        return require_file(self.path, name)

    def _load(self, model: bool = True) -> None:
        """Read the model, vocabulary, captions and every generation the manifest names; open the vector stores.

        ``model=False`` keeps the loaded model, vocabulary and text side (a reload after ``index add``).
        """
        import json

        from visem.config import load_yaml
        from visem.features.text import Vocabulary
        from visem.models import build_model
        from visem.search.folder import open_rows
        from visem.search.vectors import open_store
        from visem.train.checkpoint import load_weights

        m = self.manifest
        self._names: list[str] = []
        self._root_of: list[int] = []
        self._hashes: list[str] = []
        self._rows: list[Any] = []  # per generation, (n_g, D) memory-mapped embeddings
        try:
            if model:
                self.model = build_model(m["method"], load_yaml(self._file("model.yaml")))
                load_weights(self._file("model.safetensors"), self.model)
                self.model.eval()
                self.vocab = Vocabulary.from_json(self._file("vocab.json").read_text())
            for gen in m["generations"]:
                self._read_generation(gen)
            caps = json.loads(self._file(m["captions"]["file"]).read_text())
            self.caption_embeddings = open_rows(self._file(m["captions"]["embeddings"]))
            self._images = open_store(m["vectors"], self.path, "images", self._rows)
            self._caption_store = open_store(m["vectors"], self.path, "captions", [self.caption_embeddings])
        except IndexFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFileError(f"{self.path}: damaged index ({exc})") from None
        self.roots = [Path(r) for r in m["roots"]]
        self._captions = list(caps["captions"])
        self._caption_image = list(caps["image"])
        self._by_image: dict[int, list[int]] = {}
        for j, i in enumerate(self._caption_image):
            self._by_image.setdefault(i, []).append(j)
        n = len(self._names)
        if self._images.ntotal != n:
            raise IndexFileError(f"{self.path}: {n} images but {self._images.ntotal} vectors")
        if self.caption_embeddings.shape[0] != len(self._captions):
            raise IndexFileError(f"{self.path}: {len(self._captions)} captions but "
                                 f"{self.caption_embeddings.shape[0]} caption embeddings")
        self._load_sides(model)

    def _load_sides(self, model: bool) -> None:
        """The text tower's query side, the lexical index and fusion, the raw image features (visem.search.sides)."""
        from visem.search.sides import load_sides

        load_sides(self, model)

    def reloaded(self) -> "SearchIndex":
        """``self``, or the index's next generation (written by ``index add``) sharing this one's model."""
        from visem.search.sides import reloaded

        return reloaded(self)

    def _read_generation(self, gen: dict[str, Any]) -> None:
        """Append one generation's images and embeddings to the in-memory lists."""
        import json

        from visem.search.folder import open_rows

        images = json.loads(self._file(gen["images"]).read_text())
        rows = open_rows(self._file(gen["embeddings"]))
        if rows.ndim != 2 or rows.shape[0] != len(images):
            raise IndexFileError(f"{self.path / gen['embeddings']}: shape {rows.shape} for {len(images)} images "
                                 f"in {gen['images']}")
        self._names += [im["name"] for im in images]
        self._root_of += [int(im["root"]) for im in images]
        self._hashes += [im["sha256"] for im in images]
        self._rows.append(rows)

    def close(self) -> None:
        """Release the vector stores' connections (a Milvus client); the faiss store holds nothing to release."""
        self._images.close()
        self._caption_store.close()

    @property
    def embeddings(self) -> Any:
        """(N, D) image embeddings in id order: the memory map of a one-generation index, else a copy in memory.

        Prefer :meth:`embedding_rows` for a few rows of a large index.
        """
        from visem.search.folder import GenerationRows

        return GenerationRows(self._rows).whole()

    def embedding_rows(self, ids: Any) -> Any:
        """(len(ids), D) float32 embeddings of the given image ids (read from the generations' memory maps)."""
        from visem.search.folder import GenerationRows

        return GenerationRows(self._rows)[ids]

    @property
    def raw(self) -> Any:
        """(N, F) raw image features (unit norm, float16; :mod:`visem.search.image_space`), or ``None`` when the
        index keeps none; a copy in memory past one generation."""
        return self._raw_rows.whole() if self._raw_rows is not None else None

    # -- facts ------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self._names)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    def info(self) -> dict[str, Any]:
        m = self.manifest
        ann = self._images.describe()
        ann["recall_at_10_at_build"] = m["report"]["ann"].get("recall_at_10")
        return {"path": str(self.path), "method": m["method"], "n_images": self.n_images,
                "n_captions": len(self._captions), "dim": m["dim"], "generation": m["generation"],
                "generations": len(self._rows), "roots": [str(r) for r in self.roots], "created": m["created"],
                "vocab_size": len(self.vocab), "format_version": m.get("read_as", m["version"]), "ann": ann,
                "captions_ann": self._caption_store.describe(),
                "text_encoder": m.get("text_encoder", "gru"),
                "image_encoder": m.get("image_encoder", "efficientnet-lite0"), "fusion": self.fusion,
                "report": m["report"]}

    def name(self, image_id: int) -> str:
        return self._names[self._check_id(image_id)]

    def captions_of(self, image_id: int) -> list[str]:
        return [self._captions[j] for j in self._by_image.get(self._check_id(image_id), [])]

    def _check_id(self, image_id: int) -> int:
        if not isinstance(image_id, (int,)) or isinstance(image_id, bool) or not 0 <= image_id < self.n_images:
            raise KeyError(f"no image {image_id!r} in the index (ids 0..{self.n_images - 1})")
        return int(image_id)

    def _path_of(self, image_id: int) -> Path:
        return self.roots[self._root_of[image_id]] / self._names[image_id]

    def image_file(self, image_id: int) -> Path:
        """The file of an indexed image, guaranteed inside its indexed folder.

        ``KeyError`` for an unknown id or a file that resolves outside its
        folder (a symlink out of it); ``FileNotFoundError`` when it is gone.
        """
        i = self._check_id(image_id)
        root = self.roots[self._root_of[i]].resolve()
        p = (root / self._names[i]).resolve()
        if not p.is_relative_to(root):
            raise KeyError(f"image {i} resolves outside its indexed folder {root}")
        if not p.is_file():
            raise FileNotFoundError(f"image {i}: {p} is no longer there")
        return p

    # -- queries ------------------------------------------------------------------
    def _hits(self, scores: Any, ids: Any) -> list[Hit]:
        out = []
        for s, i in zip(scores.tolist(), ids.tolist()):
            caps = self._by_image.get(int(i))
            out.append(Hit(int(i), self._names[int(i)], round(float(s), 6), self._captions[caps[0]] if caps else None))
        return out

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise QueryError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        return k

    def explain_query(self, query: str) -> dict[str, Any]:
        """How the query's words reach the model: the ``used`` words and the ``unknown`` ones (ignored).

        Words outside the index's vocabulary (its captions and pseudo
        captions) are dropped, not replaced: nearest neighbours in GloVe are
        often co-hyponyms (``pink`` -> ``blue`` at cosine 0.85), which would
        silently search for something else.
        """
        from visem.features.text import tokenize

        if not isinstance(query, str):
            raise QueryError("the query must be text")
        q = query.strip()
        if not q:
            raise QueryError("empty query")
        if len(q) > MAX_QUERY_CHARS:
            raise QueryError(f"query too long: {len(q)} characters (at most {MAX_QUERY_CHARS})")
        toks = tokenize(q)
        used, _ = self.side.explain(toks)
        matched = self.lexical.known(toks) if self.lexical is not None else []
        return {"query": q, "used": used, "matched": matched,
                "unknown": [t for t in toks if t not in used and t not in matched]}

    def embed_query(self, query: str) -> Any:
        """The (D,) embedding of a text query; :class:`QueryError` when the text tower can use no word of it."""
        import torch

        ex = self.explain_query(query)
        ids = self.side.query(ex["query"]) if ex["used"] else None
        if ids is None:
            raise QueryError(f"no word of {ex['query']!r} is known to this index's text tower (vocabulary of "
                             f"{len(self.vocab)} words from its captions and pseudo captions)")
        with self._lock, torch.no_grad():
            return self.model.embed_text(ids)[0].numpy()

    def search_text(self, query: str, k: int = 10, mode: str | None = None) -> list[Hit]:
        """Top-``k`` images for a text query, best first.

        ``mode``: ``None`` (the index's fusion of the dense and lexical
        scores, :mod:`visem.search.lexical`), ``"dense"`` or ``"lexical"``.
        A query the text tower cannot embed is answered by its word matches
        alone; one neither side can use is a :class:`QueryError`.
        """
        from visem.search.sides import search_text

        scores, ids = search_text(self, query, self._check_k(k), mode)
        return self._hits(scores, ids)

    def _encoder_get(self):
        from visem.search.features import encoder

        if self._encoder is None:
            self._encoder = encoder(self.manifest["crop"], self._image_encoder)
        return self._encoder

    def embed_image_file(self, image: Any) -> Any:
        """The (D,) embedding of an image: a path, the bytes of an image file, or a PIL image.

        The pixel count is checked before decoding (:mod:`visem.search.upload`);
        the CNN runs outside the index's lock (only the small embedding head
        takes it), so text queries are not held up by image queries.
        """
        return self._embed_image_both(image)[0]

    def _embed_image_both(self, image: Any) -> tuple[Any, Any]:
        """``(learned (D,), raw pooled (F,))`` embeddings of a query image."""
        import numpy as np
        import torch

        from visem.features.image import VARIANTS
        from visem.search.upload import open_query_image

        pil = open_query_image(image, target=VARIANTS[self._image_encoder])
        enc = self._encoder_get()
        grid = enc.encode(enc.preprocess(pil)[None])  # (1, R, 1280), outside the lock
        x = torch.as_tensor(grid if self.manifest["regions"] else grid.mean(axis=1))
        with self._lock, torch.no_grad():
            return self.model.embed_image(x.float())[0].numpy().astype(np.float32), grid.mean(axis=1)[0]

    def _similar(self, vec: Any, k: int, exclude: int | None = None, raw: Any = None) -> SimilarResult:
        """Nearest images (``exclude`` left out) and nearest captions of an embedding, both through the vector stores.

        With ``raw`` (the query's raw features) and an index that keeps them,
        images rank by learned + raw cosine (:mod:`visem.search.image_space`).
        """
        k = self._check_k(k)
        if raw is not None and self._raw_rows is not None:
            from visem.search.sides import similar_fused

            s_img, i_img = similar_fused(self, vec, raw, k, exclude)
            images = self._hits(s_img, i_img)
        else:
            scores, ids = self._images.search(vec[None, :], min(self.n_images, k + (exclude is not None)))
            keep = ids[0] != (exclude if exclude is not None else -1)
            images = self._hits(scores[0][keep][:k], ids[0][keep][:k])
        caps: list[CaptionHit] = []
        if len(self._captions):
            s, top = self._caption_store.search(vec[None, :], k)
            caps = [CaptionHit(self._captions[j], int(self._caption_image[j]), round(float(v), 6))
                    for v, j in zip(s[0].tolist(), top[0].tolist())]
        return SimilarResult(images, caps)

    def search_image(self, image: Any, k: int = 10) -> SimilarResult:
        """Images similar to a query image, and the indexed captions that match it."""
        k = self._check_k(k)
        vec, raw = self._embed_image_both(image)
        return self._similar(vec, k, raw=raw)

    def similar(self, image_id: int, k: int = 10) -> SimilarResult:
        """An indexed image as the query: the other images nearest to it, and matching captions."""
        i = self._check_id(image_id)
        raw = self._raw_rows[[i]][0] if self._raw_rows is not None else None
        return self._similar(self.embedding_rows([i])[0], k, exclude=i, raw=raw)

    # -- growing -----------------------------------------------------------------
    def _load_folder(self, folder: Path, captions: Path | None, progress: bool = False,
                     workers: int | None = None):
        """A collection read with one read per file; features stored for the images not already indexed."""
        regions, crop, variant = self.manifest["regions"], self.manifest["crop"], self._image_encoder
        known = set(self._hashes)
        return load_collection(folder, captions, lambda paths: scan_images(
            paths, regions=regions, crop=crop, workers=workers, progress=progress, skip=known, variant=variant))

    @property
    def _image_encoder(self) -> str:
        """The EfficientNet-Lite variant the index was built with."""
        from visem.search.features import DEFAULT_IMAGE_ENCODER

        return self.manifest.get("image_encoder", DEFAULT_IMAGE_ENCODER)

    def _embed_stored(self, hashes: list[str]):
        """(n, D) float32 embeddings of images whose features are in the store (by content key)."""
        rows = feature_rows(hashes, self.manifest["regions"], self.manifest["crop"], self._image_encoder)
        with self._lock:
            return embed_images(self.model, rows)

    def add_images(self, images: str | Path, progress: bool = False, captions: str | Path | None = None,
                   workers: int | None = None) -> dict[str, Any]:
        """Embed the images of a folder into the index without retraining, as a new generation.

        Images whose content is already indexed are skipped (counted as
        ``already_indexed``); unreadable files are skipped and reported. The
        new images' list, embeddings and vectors are written as the next
        generation's files (nothing already written is copied or rewritten,
        so the cost follows the number of new images) and the manifest is
        replaced last, so a reader sees the index before or after the
        addition, never between.
        """
        from visem.io import atomic_write_json
        from visem.search.folder import open_rows, stored_manifest, write_embeddings

        folder = Path(images)
        col = self._load_folder(folder, Path(captions) if captions is not None else None, progress, workers)
        known = set(self._hashes)
        new = [i for i, h in enumerate(col.hashes) if h not in known]
        report: dict[str, Any] = {"folder": str(folder), "found": len(col.names), "added": len(new),
                                  "already_indexed": len(col.names) - len(new), "skipped": col.skipped,
                                  "problems": col.problems}
        if not new:
            report["n_images"] = self.n_images
            return report
        emb = self._embed_stored([col.hashes[i] for i in new])
        root = str(folder.resolve())
        roots = [str(r) for r in self.roots]
        if root not in roots:
            roots.append(root)
        r = roots.index(root)
        gen = int(self.manifest["generation"]) + 1
        files = gen_files(gen)
        entries = [{"root": r, "name": col.names[i], "sha256": col.hashes[i]} for i in new]
        from visem.search.sides import add_sides  # the new images' words and raw features

        with self._lock:
            atomic_write_json(self.path / files["images"], entries)
            write_embeddings(self.path / files["embeddings"], emb, len(new), emb.shape[1])
            sides = add_sides(self, col, new, gen, self.manifest["crop"], self._image_encoder)
            rows = open_rows(self.path / files["embeddings"])
            entry = self._images.append(rows, gen)
            vectors = dict(self.manifest["vectors"], images=entry)
            gens = list(self.manifest["generations"]) + [{"id": gen, **files, **sides, "n": len(new)}]
            manifest = dict(self.manifest, generation=gen, generations=gens, vectors=vectors, roots=roots,
                            n_images=self.n_images + len(new))
            atomic_write_json(self.path / MANIFEST, stored_manifest(manifest))  # the commit point
            self.manifest = stored_manifest(manifest)
            self.roots = [Path(x) for x in roots]
            self._names += [e["name"] for e in entries]
            self._root_of += [r] * len(entries)
            self._hashes += [e["sha256"] for e in entries]
            self._rows.append(rows)
            self._load_sides(model=False)  # the lexical index over every document, the raw rows of every generation
        report["n_images"] = self.n_images
        return report

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, captions: str | Path, images: str | Path | None = None) -> dict[str, Any]:
        """R@1/5/10 both ways (and medR, rsum) on held-out ``image,caption`` rows.

        The gallery is the distinct images of the file (the usual protocol:
        each caption ranks those images, each image ranks those captions),
        embedded from the index when their content is indexed, else computed.
        Image paths are relative to ``images`` (default: the index's first
        folder). ``overlap`` counts held-out pairs that were training pairs
        (nonzero means the numbers are not held-out numbers).
        """
        import numpy as np
        import torch

        from visem.data.paths import DataError
        from visem.metrics import retrieval_recall

        root = Path(images) if images is not None else self.roots[0]
        col = self._load_folder(root, Path(captions))
        if not len(col.captions):
            raise DataError(f"{captions}: no usable (image, caption) row ({skipped_text(col.skipped) or 'empty'})")
        used = np.unique(col.caption_image)  # only captioned images form the gallery
        remap = -np.ones(len(col.names), dtype=np.int64)
        remap[used] = np.arange(len(used))
        pos = {h: i for i, h in enumerate(self._hashes)}
        in_index = [pos.get(col.hashes[i]) for i in used]
        img = np.zeros((len(used), int(self.manifest["dim"])), np.float32)
        have = [j for j, p in enumerate(in_index) if p is not None]
        img[have] = self.embedding_rows([in_index[j] for j in have])
        todo = [j for j, p in enumerate(in_index) if p is None]
        if todo:
            img[todo] = self._embed_stored([col.hashes[used[j]] for j in todo])
        with self._lock:
            txt = embed_texts(self.model, self.side.ids(col.captions))
        train_pairs = {(self._hashes[i], c) for c, i in zip(self._captions, self._caption_image)}
        overlap = sum((col.hashes[i], c) in train_pairs for c, i in zip(col.captions, col.caption_image.tolist()))
        t2i = remap[col.caption_image]
        metrics = retrieval_recall(torch.as_tensor(img), torch.as_tensor(txt), torch.as_tensor(t2i))
        out = {"n_images": int(len(used)), "n_captions": len(col.captions), "in_index": len(have),
               "overlap": int(overlap), "skipped": col.skipped}
        modes = {"dense": {k: round(float(v), 4) for k, v in metrics.items()}}
        if self.lexical is not None:  # the lexical side and the index's fusion on the same gallery
            from visem.search.sides import held_out_modes

            out.update(held_out_modes(self, col.captions, t2i, txt, img, in_index, have, modes))
        main = modes.get("hybrid", modes["dense"])
        return {**out, **main, "modes": modes}
