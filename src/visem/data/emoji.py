"""Emoji: a real image-text data set in several visual styles.

Sources, fetched once with ``npm pack NAME@VERSION`` (pinned versions, pinned
sha256 of the tarballs; only the needed files are unpacked, no JavaScript runs)
into ``<data_dir>/emoji/<package>-<version>/``:

* ``emoji-datasource-google`` / ``emoji-datasource-twitter`` 16.0.0:
  ``emoji.json`` (name, short_names, category, subcategory, image file name)
  and ``img/<style>/64/*.png`` (64x64 RGBA).
* ``emojibase-data`` 17.0.0: ``en/data.json`` (CLDR label, tags, group and
  subgroup ids) and ``en/messages.json`` (group / subgroup names).

The table has one row per (concept, style):

=============  ===============================================================
``concept``    hexcode as in emoji-datasource (``unified``, e.g. ``1F43C``)
``emoji``      the character
``style``      ``google`` or ``twitter``
``image``      absolute path of the 64 px PNG (checked to exist)
``captions``   up to three distinct lowercase captions: the CLDR label, the
               emoji-datasource name, the short names as words
               (``thumbsup``/``+1`` -> ``thumbsup +1``; ``_`` and ``-`` become
               spaces); duplicates removed (ignoring case, spacing and
               hyphens: ``left-facing fist`` == ``left facing fist``), order kept
``tags``       emojibase tags (CLDR keywords), lowercase
``group``      CLDR group key (``animals-nature``)
``subgroup``   CLDR subgroup key (``animal-mammal``), the class of the concept
``label``      int index of ``subgroup`` in :attr:`EmojiData.class_names`
``order``      emojibase order (the CLDR sort order)
=============  ===============================================================

Left out, by design: skin-tone variants (``skin_variations``: the same concept
five more times with a different skin colour; they would leak a concept across
any split), and the ``component`` group (the five skin-tone swatches, which are
modifiers rather than concepts). Concepts are joined on the hexcode without
``FE0F`` variation selectors; every emoji-datasource entry has an emojibase match.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from visem.data.npm import STAMP, fetch_npm_package
from visem.data.paths import DataError, read_json, reading, source_dir

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EMOJI_STYLES",
    "EMOJI_PACKAGES",
    "EmojiData",
    "load_emoji",
    "prepare_emoji",
    "emoji_package_dir",
    "composite_rgb",
]

EMOJI_STYLES = ("google", "twitter")
#: npm package -> (version, sha256 of the tarball npm pack writes)
EMOJI_PACKAGES = {
    "emoji-datasource-google": ("16.0.0", "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"),
    "emoji-datasource-twitter": ("16.0.0", "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"),
    "emojibase-data": ("17.0.0", "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a"),
}
_EXCLUDED_GROUPS = ("component",)


def _members_wanted(package: str):
    """Predicate over tar member names (``package/...``) that we unpack."""
    if package.startswith("emoji-datasource-"):
        style = package.rsplit("-", 1)[1]
        prefix = f"package/img/{style}/64/"
        keep = {"package/emoji.json", "package/package.json", "package/LICENSE"}
        return lambda n: n in keep or (n.startswith(prefix) and n.endswith(".png") and "/" not in n[len(prefix) :])
    keep = {"package/en/data.json", "package/en/messages.json", "package/package.json", "package/LICENSE"}
    return lambda n: n in keep


def emoji_package_dir(package: str) -> Path:
    version = EMOJI_PACKAGES[package][0]
    return source_dir("emoji") / f"{package}-{version}"


def _fetch_package(package: str, force: bool = False) -> tuple[Path, bool]:
    version, sha = EMOJI_PACKAGES[package]
    return fetch_npm_package(package, version, sha, "emoji", emoji_package_dir(package),
                             _members_wanted(package), force=force)


def prepare_emoji(force: bool = False) -> list[tuple[str, Path, bool]]:
    """Fetch and unpack the three npm packages; ``[(package, folder, created)]``. Idempotent."""
    out = []
    for package in EMOJI_PACKAGES:
        path, created = _fetch_package(package, force=force)
        out.append((package, path, created))
    if any(c for _, _, c in out):
        _build_table.cache_clear()
    return out


# -------------------------------------------------------------------- table
def _norm_hex(code: str) -> str:
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ").replace("-", " ")).strip().lower()


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _captions(label: str, name: str, short_names: list[str]) -> list[str]:
    short: list[str] = []
    for s in short_names:
        for w in _words(s).split():
            if w not in short:
                short.append(w)
    out: list[str] = []
    seen: set[str] = set()
    for c in (_clean(label), _clean(name), " ".join(short)):
        key = " ".join(re.findall(r"[^\W_]+|[^\w\s]", c.replace("-", " ")))  # 'left-facing' == 'left facing'
        if c and key not in seen:
            seen.add(key)
            out.append(c)
    return out[:3]


def _require_fetched() -> dict[str, Path]:
    dirs = {p: emoji_package_dir(p) for p in EMOJI_PACKAGES}
    for package, d in dirs.items():
        if not (d / STAMP).is_file():
            raise DataError(f"{d}: emoji package {package} is not fetched (run `visem data fetch`)")
    return dirs


@lru_cache(maxsize=2)
def _build_table(stamp_key: tuple):
    import pandas as pd

    dirs = _require_fetched()
    base = dirs["emojibase-data"]
    data = read_json(base / "en" / "data.json", "emojibase en/data.json")
    messages = read_json(base / "en" / "messages.json", "emojibase en/messages.json")
    try:
        groups = {g["order"]: g["key"] for g in messages["groups"]}
        subgroups = {g["order"]: g["key"] for g in messages["subgroups"]}
        by_hex = {_norm_hex(e["hexcode"]): e for e in data}
    except (KeyError, TypeError) as exc:
        raise DataError(f"{base}: emojibase data lacks the expected fields ({exc})") from exc

    rows = []
    for style in EMOJI_STYLES:
        pkg_dir = dirs[f"emoji-datasource-{style}"]
        entries = read_json(pkg_dir / "emoji.json", "emoji-datasource emoji.json")
        img_dir = pkg_dir / "img" / style / "64"
        present = set(os.listdir(img_dir)) if img_dir.is_dir() else set()
        for e in entries:
            try:
                base_entry = by_hex.get(_norm_hex(e["unified"]))
                if base_entry is None or "group" not in base_entry:
                    continue
                group = groups[base_entry["group"]]
                if group in _EXCLUDED_GROUPS or e["image"] not in present:
                    continue
                rows.append(
                    {
                        "concept": e["unified"],
                        "emoji": base_entry.get("emoji", ""),
                        "style": style,
                        "image": str(img_dir / e["image"]),
                        "captions": _captions(base_entry.get("label", ""), e.get("name") or "", e.get("short_names") or []),
                        "tags": [_clean(t) for t in base_entry.get("tags", [])],
                        "group": group,
                        "subgroup": subgroups[base_entry["subgroup"]],
                        "order": int(base_entry.get("order", 0)),
                    }
                )
            except (KeyError, TypeError) as exc:
                raise DataError(f"{pkg_dir / 'emoji.json'}: entry without the expected fields ({exc})") from exc
    if not rows:
        raise DataError(f"{source_dir('emoji')}: no emoji images found (run `visem data fetch`)")
    table = pd.DataFrame(rows).sort_values(["style", "order", "concept"], kind="stable").reset_index(drop=True)
    sub_order = table.groupby("subgroup")["order"].min().sort_values(kind="stable")
    class_names = list(sub_order.index)
    table["label"] = table["subgroup"].map({s: i for i, s in enumerate(class_names)}).astype(np.int64)
    return table, class_names


@dataclass
class EmojiData:
    """The emoji table (see the module docstring for its columns) and helpers.

    Rows are sorted by style, then CLDR order, so ``table.iloc[i]`` of one style
    and of another are the same concept at the same position when both styles
    have all concepts (they do in the pinned versions).
    """

    table: "pd.DataFrame"
    class_names: list[str]
    split: str = "all"
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def styles(self) -> list[str]:
        return sorted(self.table["style"].unique())

    @property
    def concepts(self) -> list[str]:
        """Distinct concepts (hexcodes) in table order."""
        return list(dict.fromkeys(self.table["concept"]))

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) subgroup index of each row."""
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def image_paths(self) -> list[str]:
        return self.table["image"].tolist()

    def style(self, name: str) -> "EmojiData":
        """The rows of one style."""
        if name not in EMOJI_STYLES:
            raise DataError(f"emoji: unknown style {name!r} (expected one of {', '.join(EMOJI_STYLES)})")
        sub = self.table[self.table["style"] == name].reset_index(drop=True)
        return EmojiData(sub, self.class_names, split=name, source=self.source)

    def captions(self) -> tuple[list[str], np.ndarray]:
        """All captions flattened: ``(texts, row)`` where ``row[j]`` is the table row of caption ``j``."""
        texts: list[str] = []
        rows: list[int] = []
        for i, caps in enumerate(self.table["captions"]):
            texts.extend(caps)
            rows.extend([i] * len(caps))
        return texts, np.asarray(rows, dtype=np.int64)

    def class_texts(self) -> list[str]:
        """Class names as words (``animal-mammal`` -> ``animal mammal``), for word vectors."""
        return [_words(c) for c in self.class_names]

    def load_images(self, size: int | None = None, background: int = 255) -> np.ndarray:
        """uint8 (N, H, W, 3): every row's PNG composited over a flat ``background`` grey level."""
        return np.stack([composite_rgb(p, size=size, background=background) for p in self.image_paths])


def composite_rgb(path: str | Path, size: int | None = None, background: int = 255) -> np.ndarray:
    """Read an image (any mode), composite transparency over ``background``, optionally resize (bicubic)."""
    from PIL import Image

    with reading(path, "an image file"):
        with Image.open(path) as im:
            im = im.convert("RGBA")
            canvas = Image.new("RGBA", im.size, (background, background, background, 255))
            canvas.alpha_composite(im)
            rgb = canvas.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8)


def load_emoji(split: str = "all") -> EmojiData:
    """The emoji table, ``split="all"`` or one style (``"google"``, ``"twitter"``). Needs ``visem data fetch``."""
    dirs = _require_fetched()
    stamp_key = tuple((d / STAMP).stat().st_mtime for d in dirs.values())
    table, class_names = _build_table(stamp_key)
    source = {
        "packages": {p: f"{p}@{EMOJI_PACKAGES[p][0]}" for p in EMOJI_PACKAGES},
        "folders": {p: str(d) for p, d in dirs.items()},
    }
    data = EmojiData(table.copy(), list(class_names), split="all", source=source)
    if split == "all":
        return data
    if split in EMOJI_STYLES:
        return data.style(split)
    raise DataError(f"emoji: unknown split {split!r} (expected 'all' or one of {', '.join(EMOJI_STYLES)})")

