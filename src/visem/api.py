"""The one-line Python API: ``visem.load(path)`` and a model that encodes and searches.

>>> import visem
>>> m = visem.load("runs/demo/index")            # an index, or a run directory of `visem train`
>>> img = m.encode_image(["a.png", "b.jpg"])     # paths, PIL images or arrays; (N, D) unit norm
>>> txt = m.encode_text(["a red heart", "cat"])  # (M, D) unit norm, the same space
>>> hits = m.search("a dog on a beach", k=10)    # index only: [(image, score, captions), ...]

Images go through the index's own preprocessing (its EfficientNet-Lite
variant, input size, centre crop, transparency over white) and model, in
batches, on the device asked for (``device="cuda"``; default: the CPU),
with a progress bar for long lists. A run directory of ``visem train``
holds a model over the features of its data task: its ``encode_image`` and
``encode_text`` take those feature arrays (and image files when its image
features are EfficientNet-Lite0's pooled 1280-d ones, the default of the
built-in tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["Model", "SearchHit", "load"]


class SearchHit(NamedTuple):
    """One result of :meth:`Model.search`: the image file, its score, its stored captions."""

    image: str
    score: float
    captions: list[str]


def load(path: str | Path, device: str | None = None, progress: bool = True) -> "Model":
    """Open an index folder (``visem index build``) or a run directory (``visem train``).

    ``device``: a torch device for the models (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"``); default the CPU. ``progress``: progress bars
    for lists longer than one batch. Errors name the file at fault.
    """
    path = Path(path)
    if (path / "index.json").is_file():
        return Model._from_index(path, device, progress)
    if (path / "config.yaml").is_file() and (path / "model.safetensors").is_file():
        return Model._from_run(path, device, progress)
    from visem.search.types import IndexFileError

    raise IndexFileError(f"{path}: neither a visem index (no index.json) nor a finished run directory "
                         "(config.yaml and model.safetensors)")


def _as_images(images: Any) -> list[Any]:
    if isinstance(images, (str, Path)) or hasattr(images, "convert"):
        return [images]
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (2, 3):
        return [images]
    return list(images)


class Model:
    """A trained visual-semantic embedding opened for encoding (and, for an index, searching)."""

    def __init__(self, path: Path, kind: str, model: Any, device: str, progress: bool,
                 index: Any = None, image_dim: int | None = None) -> None:
        self.path, self.kind, self.model, self.device, self.progress = path, kind, model, device, progress
        self.index = index
        self.image_dim = image_dim
        self._cnn: dict[str, Any] = {}

    def __repr__(self) -> str:
        extra = f", {self.index.n_images} images" if self.index is not None else ""
        return f"visem.Model({str(self.path)!r}, {self.kind}, {type(self.model).__name__} on {self.device}{extra})"

    # -- opening ----------------------------------------------------------
    @classmethod
    def _from_index(cls, path: Path, device: str | None, progress: bool) -> "Model":
        from visem.search import SearchIndex

        index = SearchIndex.open(path)
        dev = str(device or "cpu")
        index.model.to(dev)
        return cls(path, "index", index.model, dev, progress, index=index)

    @classmethod
    def _from_run(cls, path: Path, device: str | None, progress: bool) -> "Model":
        from visem.config import load_yaml
        from visem.models import build_model
        from visem.train.checkpoint import load_weights

        cfg = load_yaml(path / "config.yaml")
        spec = dict(cfg["model"])
        model = build_model(spec.pop("name"), spec)
        load_weights(path / "model.safetensors", model)
        dev = str(device or "cpu")
        model.to(dev).eval()
        return cls(path, "run", model, dev, progress, image_dim=spec.get("image_dim"))

    # -- encoding ---------------------------------------------------------
    def _bar(self, total: int, batch: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="item", leave=False, disable=not self.progress or total <= batch)

    def _cnn_for(self) -> tuple[Any, Any, bool]:
        """The image encoder (preprocessing + network on this model's device) and whether regions are used."""
        from visem.features.image import EfficientNetLite0
        from visem.search.features import DEFAULT_IMAGE_ENCODER, encoder

        if self.index is not None:
            m = self.index.manifest
            enc = encoder(m["crop"], m.get("image_encoder", DEFAULT_IMAGE_ENCODER))
            regions = bool(m["regions"])
        else:
            if self.image_dim != 1280:
                raise ValueError(f"{self.path}: this run's model reads {self.image_dim}-d image features of its data "
                                 "task; pass those features as an (N, image_dim) float array")
            enc, regions = EfficientNetLite0(), False
        if "net" not in self._cnn:
            import copy

            net = enc.model
            self._cnn["net"] = net if self.device == "cpu" else copy.deepcopy(net).to(self.device)
        return enc, self._cnn["net"], regions

    def encode_image(self, images: Any, batch_size: int = 32) -> np.ndarray:
        """``(N, D)`` float32 unit-norm embeddings of image files, PIL images or uint8 arrays, in batches.

        A float array ``(N, image_dim)`` is taken as precomputed image features.
        """
        import torch

        if isinstance(images, np.ndarray) and np.issubdtype(images.dtype, np.floating):
            feats = torch.as_tensor(images, dtype=torch.float32)
            return self._embed_image_features(feats, batch_size)
        items = _as_images(images)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        from visem.search.upload import open_query_image

        enc, net, regions = self._cnn_for()
        out = []
        with self._bar(len(items), batch_size, "images") as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                pix = np.stack([enc.preprocess(x if isinstance(x, np.ndarray) else open_query_image(x))
                                for x in chunk])
                x = torch.from_numpy(pix).permute(0, 3, 1, 2).float().sub_(127.0).div_(128.0).to(self.device)
                with torch.inference_mode():
                    fmap = net.extract_features(x)
                    b, c, h, w = fmap.shape
                    grid = fmap.permute(0, 2, 3, 1).reshape(b, h * w, c)
                    feats = grid if regions else grid.mean(dim=1)
                    out.append(self.model.embed_image(feats.float()).float().cpu().numpy())
                bar.update(len(chunk))
        return np.concatenate(out).astype(np.float32)

    def _embed_image_features(self, feats: Any, batch_size: int) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for chunk in feats.split(batch_size):
                out.append(self.model.embed_image(chunk.to(self.device)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_text(self, texts: str | Sequence[str] | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``(M, D)`` float32 unit-norm embeddings of captions or queries, in batches.

        An index tokenises them like its captions (a word its text tower
        does not know is left out, as in search). A run directory's model
        takes its task's text features as an ``(M, text_dim)`` float array.
        """
        import torch

        if isinstance(texts, np.ndarray) and np.issubdtype(texts.dtype, np.floating):
            out = []
            with torch.no_grad():
                for chunk in torch.as_tensor(texts, dtype=torch.float32).split(batch_size):
                    out.append(self.model.embed_text(chunk.to(self.device)).float().cpu().numpy())
            return np.concatenate(out).astype(np.float32)
        if self.index is None:
            raise ValueError(f"{self.path}: a run's model reads the text features of its data task; pass them as an "
                             "(M, text_dim) float array (raw text needs an index: visem index build)")
        texts = [texts] if isinstance(texts, str) else list(texts)
        side = self.index.side
        out = []
        with self._bar(len(texts), batch_size, "texts") as bar, torch.no_grad():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                ids = side.ids(chunk).to(self.device)
                out.append(self.model.embed_text(ids).float().cpu().numpy())
                bar.update(len(chunk))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        if self.index is not None:
            return int(self.index.manifest["dim"])
        for name in ("embed_dim", "hidden_dim", "latent_dim"):
            if hasattr(self.model.config, name):
                return int(getattr(self.model.config, name))
        raise AttributeError("dim")

    # -- searching ----------------------------------------------------------
    def search(self, query: str, k: int = 10, mode: str | None = None) -> list[SearchHit]:
        """Top-``k`` images of the index for a text query: ``[(image file, score, captions), ...]``.

        ``mode``: the index's fusion of dense and word-match scores
        (default), ``"dense"`` or ``"lexical"``.
        """
        if self.index is None:
            raise ValueError(f"{self.path} is a training run: search needs an index (visem index build)")
        if self.device != "cpu":  # queries are embedded one at a time on the CPU copy of the index
            self.index.model.to("cpu")
        try:
            hits = self.index.search_text(query, k=k, mode=mode)
        finally:
            if self.device != "cpu":
                self.index.model.to(self.device)
        return [SearchHit(str(self.index._path_of(h.id)), float(h.score), self.index.captions_of(h.id))
                for h in hits]

    def explain(self, query: str) -> dict[str, Any]:
        """Which words of a query the index uses and which it ignores (as ``visem search`` prints them)."""
        if self.index is None:
            raise ValueError(f"{self.path} is a training run: it has no query vocabulary")
        return self.index.explain_query(query)
