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
from visem.search.features import image_features
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
    may serve several threads; :meth:`add_images` must not run in two
    processes on one index at once.
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
        """Read the files the manifest names; ``model=False`` keeps the loaded model and vocabulary."""
        import json

        import numpy as np

        from visem.config import load_yaml
        from visem.features.text import Vocabulary
        from visem.models import build_model
        from visem.search.ann import VectorIndex
        from visem.train.checkpoint import load_weights

        m = self.manifest
        files = m["files"]
        try:
            if model:
                self.model = build_model(m["method"], load_yaml(self._file("model.yaml")))
                load_weights(self._file("model.safetensors"), self.model)
                self.model.eval()
                self.vocab = Vocabulary.from_json(self._file("vocab.json").read_text())
            images = json.loads(self._file(files["images"]).read_text())
            caps = json.loads(self._file("captions.json").read_text())
            self.embeddings = np.load(self._file(files["embeddings"]))
            self.caption_embeddings = np.load(self._file("caption_embeddings.npy"))
            self.vectors = VectorIndex.load(self._file(files["vectors"]))
        except IndexFileError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise IndexFileError(f"{self.path}: damaged index ({exc})") from None
        self.roots = [Path(r) for r in m["roots"]]
        self._names = [im["name"] for im in images]
        self._root_of = [int(im["root"]) for im in images]
        self._hashes = [im["sha256"] for im in images]
        self._captions = list(caps["captions"])
        self._caption_image = list(caps["image"])
        self._by_image: dict[int, list[int]] = {}
        for j, i in enumerate(self._caption_image):
            self._by_image.setdefault(i, []).append(j)
        n = len(self._names)
        if self.embeddings.shape[0] != n or self.vectors.ntotal != n:
            raise IndexFileError(f"{self.path}: {n} images but {self.embeddings.shape[0]} embeddings and "
                                 f"{self.vectors.ntotal} vectors")
        if self.caption_embeddings.shape[0] != len(self._captions):
            raise IndexFileError(f"{self.path}: {len(self._captions)} captions but "
                                 f"{self.caption_embeddings.shape[0]} caption embeddings")
        self._load_text_side(model)  # visem.search.towers / visem.search.lexical

    def _load_text_side(self, model: bool) -> None:
        """The text tower's query side, the lexical index and fusion, the raw image features (visem.search.sides)."""
        from visem.search.sides import load_sides

        load_sides(self, model)

    def reloaded(self) -> "SearchIndex":
        """``self``, or the index's next generation (written by ``index add``) sharing this one's model."""
        from visem.search.sides import reloaded

        return reloaded(self)

    # -- facts ------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self._names)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": str(self.path), "method": m["method"], "n_images": self.n_images,
                "n_captions": len(self._captions), "dim": m["dim"], "generation": m["generation"],
                "roots": [str(r) for r in self.roots], "created": m["created"], "vocab_size": len(self.vocab),
                "ann": {"kind": self.vectors.kind, "n": self.vectors.ntotal, "nprobe": self.vectors.nprobe,
                        "recall_at_10_at_build": m["report"]["ann"].get("recall_at_10")},
                "text_encoder": m.get("text_encoder", "gru"), "image_encoder": m.get("image_encoder",
                                                                                      "efficientnet-lite0"),
                "fusion": self.fusion, "report": m["report"]}

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
        from visem.features.image import VARIANTS, EfficientNetLite0, Preprocess

        if self._encoder is None:
            variant = self.manifest.get("image_encoder", "efficientnet-lite0")
            self._encoder = EfficientNetLite0(Preprocess(crop=self.manifest["crop"], image_size=VARIANTS[variant]),
                                              variant=variant)
        return self._encoder

    def embed_image_file(self, image: Any) -> Any:
        """The (D,) embedding of an image: a path, the bytes of an image file, or a PIL image.

        The pixel count is checked before decoding (:mod:`visem.search.upload`);
        the CNN runs outside the index's lock (only the small embedding head
        takes it), so text queries are not held up by image queries.
        """
        import numpy as np
        import torch

        from visem.features.image import VARIANTS
        from visem.search.upload import open_query_image

        return self._embed_image_both(image)[0]

    def _embed_image_both(self, image: Any) -> tuple[Any, Any]:
        """``(learned (D,), raw pooled (F,))`` embeddings of a query image."""
        import numpy as np
        import torch

        from visem.features.image import VARIANTS
        from visem.search.upload import open_query_image

        pil = open_query_image(image, target=VARIANTS[self.manifest.get("image_encoder", "efficientnet-lite0")])
        enc = self._encoder_get()
        grid = enc.encode(enc.preprocess(pil)[None])  # (1, R, 1280), outside the lock
        x = torch.as_tensor(grid if self.manifest["regions"] else grid.mean(axis=1))
        with self._lock, torch.no_grad():
            return self.model.embed_image(x.float())[0].numpy().astype(np.float32), grid.mean(axis=1)[0]

    def _similar(self, vec: Any, k: int, exclude: int | None = None, raw: Any = None) -> SimilarResult:
        import numpy as np

        k = self._check_k(k)
        if raw is not None and self.raw is not None:  # learned + raw cosine (visem.search.image_space)
            from visem.search.image_space import fused_top

            s_img, i_img = fused_top(vec, raw, self.embeddings, self.raw, self.vectors, k, exclude)
            images = self._hits(s_img, i_img)
        else:
            scores, ids = self.vectors.search(vec[None, :], min(self.n_images, k + (exclude is not None)))
            keep = ids[0] != (exclude if exclude is not None else -1)
            images = self._hits(scores[0][keep][:k], ids[0][keep][:k])
        caps: list[CaptionHit] = []
        if len(self._captions):
            s = self.caption_embeddings @ vec
            top = np.argsort(-s, kind="stable")[:k]
            caps = [CaptionHit(self._captions[j], int(self._caption_image[j]), round(float(s[j]), 6)) for j in top]
        return SimilarResult(images, caps)

    def search_image(self, image: Any, k: int = 10) -> SimilarResult:
        """Images similar to a query image, and the indexed captions that match it."""
        k = self._check_k(k)
        vec, raw = self._embed_image_both(image)
        return self._similar(vec, k, raw=raw)

    def similar(self, image_id: int, k: int = 10) -> SimilarResult:
        """An indexed image as the query: the other images nearest to it, and matching captions."""
        i = self._check_id(image_id)
        return self._similar(self.embeddings[i], k, exclude=i, raw=self.raw[i] if self.raw is not None else None)

    # -- growing -----------------------------------------------------------------
    def _features_of(self, paths: list[Path], hashes: list[str], progress: bool = False):
        pooled, grid = image_features(paths, hashes, self.manifest["regions"], self.manifest["crop"], progress,
                                      self.manifest.get("image_encoder", "efficientnet-lite0"))
        import torch

        feats = torch.as_tensor(grid if self.manifest["regions"] else pooled)
        with self._lock:
            return embed_images(self.model, feats)

    def add_images(self, images: str | Path, progress: bool = False, captions: str | Path | None = None) -> dict[str, Any]:
        """Embed the images of a folder into the index without retraining.

        Images whose content is already indexed are skipped (counted as
        ``already_indexed``); unreadable files are skipped and reported. The
        new embeddings, image list and vector index are written as the next
        generation's files and the manifest is replaced last, so a reader
        sees the index before or after the addition, never between.
        """
        import copy

        import numpy as np

        from visem.io import atomic_path, atomic_write_json

        folder = Path(images)
        col = load_collection(folder, Path(captions) if captions is not None else None)
        known = set(self._hashes)
        new = [i for i, h in enumerate(col.hashes) if h not in known]
        report: dict[str, Any] = {"folder": str(folder), "found": len(col.names), "added": len(new),
                                  "already_indexed": len(col.names) - len(new), "skipped": col.skipped,
                                  "problems": col.problems}
        if not new:
            report["n_images"] = self.n_images
            return report
        emb = self._features_of([col.paths[i] for i in new], [col.hashes[i] for i in new], progress)
        root = str(folder.resolve())
        roots = [str(r) for r in self.roots]
        if root not in roots:
            roots.append(root)
        r = roots.index(root)
        gen = int(self.manifest["generation"]) + 1
        files = gen_files(gen)
        vectors = copy.deepcopy(self.vectors)
        vectors.add(emb)
        entries = [{"root": ro, "name": n, "sha256": h} for ro, n, h in zip(self._root_of, self._names, self._hashes)]
        entries += [{"root": r, "name": col.names[i], "sha256": col.hashes[i]} for i in new]
        all_emb = np.concatenate([self.embeddings, emb])
        atomic_write_json(self.path / files["images"], entries)
        with atomic_path(self.path / files["embeddings"]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, all_emb)
        vectors.save(self.path / files["vectors"])
        old_files = dict(self.manifest["files"])
        manifest = dict(self.manifest, generation=gen, files=files, roots=roots, n_images=len(entries))
        from visem.search.sides import add_sides  # the new images' words and raw features (visem.search.sides)

        old_files.update(add_sides(self, manifest, col, new, gen))
        atomic_write_json(self.path / MANIFEST, manifest)  # the commit point
        for f in old_files.values():
            (self.path / f).unlink(missing_ok=True)
        self.manifest = manifest
        self._load(model=False)  # the model and vocabulary did not change
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
        col = load_collection(root, Path(captions))
        if not len(col.captions):
            raise DataError(f"{captions}: no usable (image, caption) row ({skipped_text(col.skipped) or 'empty'})")
        used = np.unique(col.caption_image)  # only captioned images form the gallery
        remap = -np.ones(len(col.names), dtype=np.int64)
        remap[used] = np.arange(len(used))
        pos = {h: i for i, h in enumerate(self._hashes)}
        in_index = [pos.get(col.hashes[i]) for i in used]
        img = np.zeros((len(used), self.embeddings.shape[1]), np.float32)
        have = [j for j, p in enumerate(in_index) if p is not None]
        img[have] = self.embeddings[[in_index[j] for j in have]]
        todo = [j for j, p in enumerate(in_index) if p is None]
        if todo:
            img[todo] = self._features_of([col.paths[used[j]] for j in todo], [col.hashes[used[j]] for j in todo])
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
