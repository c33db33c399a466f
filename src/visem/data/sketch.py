"""Emoji sketches: the line-art glyphs of the Symbola font as the sketch modality of zero-shot SBIR.

Seed 004 evaluates LCALE on sketch-to-image retrieval (Sketchy, Table 3). Sketchy
cannot be installed offline; the Debian package ``fonts-symbola`` (Symbola 2.60 by
George Douros, free for any use) draws most emoji as black outline glyphs, by a
different hand from the colour emoji styles. :func:`prepare_emoji_sketch` renders
the glyph of every emoji concept that is a single code point (a trailing ``FE0F``
variation selector is ignored) and that the font has (1,140 of the 1,384 such
concepts of the pinned emoji data), and the colour styles of :mod:`visem.data.emoji`
(Google, Twitter) are the image modality. Classes are the CLDR subgroups, as in
``zscmr-emoji``; relevance is "same subgroup".

Rendering (:func:`render_glyph`), documented so that the files can be remade:

* the glyph is drawn black on white at ``RENDER_PT`` pixels per em (8-bit grey,
  FreeType anti-aliasing, Pillow's ``ImageFont.truetype``), cropped to its ink;
* scaled (Lanczos) so that its longer side is ``size - 2 * padding`` pixels
  (``SKETCH_SIZE`` 128, ``SKETCH_PADDING`` 8: every glyph fills the box the way a
  Sketchy sketch fills its canvas, whatever its design size in the font);
* pasted at the centre of a white ``size x size`` canvas, written as an 8-bit
  grey PNG without metadata.

The same font file, Pillow and FreeType give the same bytes (tested). The font is
pinned by the sha256 of ``Symbola_hint.ttf`` (fonts-symbola 2.60-1.1); a file with
another hash is refused. The rendering goes to a temporary folder that is renamed
into place with a complete-marker (``.visem-complete.json``: package, version, font
hash, settings, Pillow / FreeType versions, the concepts rendered); a folder
without it is rendered again.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visem.data.paths import DataError, atomic_write_json, read_json, reading, sha256_file, source_dir
from visem.io import atomic_dir

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SYMBOLA_PACKAGE",
    "SYMBOLA_VERSION",
    "SYMBOLA_FONT",
    "SYMBOLA_SHA256",
    "SKETCH_SIZE",
    "SKETCH_PADDING",
    "RENDER_PT",
    "SketchData",
    "check_font",
    "render_glyph",
    "font_codepoints",
    "sketch_concepts",
    "prepare_emoji_sketch",
    "emoji_sketch_dir",
    "load_emoji_sketch",
]

SYMBOLA_PACKAGE = "fonts-symbola"
SYMBOLA_VERSION = "2.60-1.1"
SYMBOLA_FONT = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
SYMBOLA_SHA256 = "af8bd8cc9c808272034651cb5ebf6c38370ae536fe631eb89462f127f11e793f"
SKETCH_SIZE = 128
SKETCH_PADDING = 8
RENDER_PT = 256
STAMP = ".visem-complete.json"
STYLE = "symbola"


def _installed_version() -> str | None:
    """The installed fonts-symbola version according to dpkg, or None (no dpkg / not installed)."""
    exe = shutil.which("dpkg-query")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-W", "-f=${Version}", SYMBOLA_PACKAGE], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_font(font: str | Path = SYMBOLA_FONT, sha256: str = SYMBOLA_SHA256) -> Path:
    """``font`` if it exists and has the pinned sha256; DataError naming the file otherwise."""
    font = Path(font)
    if not font.is_file():
        raise DataError(f"{font}: file not found (expected Symbola from the Debian package {SYMBOLA_PACKAGE} "
                        f"{SYMBOLA_VERSION}; install it with `apt-get install {SYMBOLA_PACKAGE}` or `make system`)")
    got = sha256_file(font)
    if got != sha256:
        installed = _installed_version()
        where = f" (dpkg reports {SYMBOLA_PACKAGE} {installed})" if installed else ""
        raise DataError(f"{font}: sha256 {got} differs from the pinned {sha256} of {SYMBOLA_PACKAGE} "
                        f"{SYMBOLA_VERSION}{where}; the sketches are only rendered from the pinned font")
    return font


def font_codepoints(font: str | Path) -> set[int]:
    """The code points the font maps to a glyph (its best ``cmap``, read with fontTools)."""
    from fontTools.ttLib import TTFont

    with reading(font, "a TrueType font"):
        with TTFont(str(font), lazy=True) as tt:
            return set(tt.getBestCmap())


@lru_cache(maxsize=4)
def _font(path: str, pt: int):
    from PIL import ImageFont

    with reading(path, "a TrueType font"):
        return ImageFont.truetype(path, size=pt)


def render_glyph(font: str | Path, char: str, size: int = SKETCH_SIZE, padding: int = SKETCH_PADDING,
                 pt: int = RENDER_PT) -> bytes:
    """PNG bytes (8-bit grey, ``size x size``) of ``char`` drawn black on white, fitted and centred.

    The glyph is drawn at ``pt`` pixels per em, cropped to its ink, scaled (Lanczos)
    so that its longer side is ``size - 2 * padding`` and centred on a white canvas.
    Raises DataError for a glyph without ink.
    """
    from PIL import Image, ImageDraw, ImageOps

    if size <= 2 * padding:
        raise ValueError(f"size {size} leaves no room inside a padding of {padding}")
    ft = _font(str(font), int(pt))
    left, top, right, bottom = ft.getbbox(char)
    margin = pt // 8
    canvas = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
    ImageDraw.Draw(canvas).text((margin - left, margin - top), char, font=ft, fill=0)
    ink = ImageOps.invert(canvas).getbbox()
    if ink is None:
        raise DataError(f"{font}: the glyph of U+{ord(char[0]):04X} has no ink")
    glyph = canvas.crop(ink)
    box = size - 2 * padding
    scale = box / max(glyph.size)
    w, h = (max(1, round(glyph.size[0] * scale)), max(1, round(glyph.size[1] * scale)))
    glyph = glyph.resize((w, h), Image.LANCZOS)
    out = Image.new("L", (size, size), 255)
    out.paste(glyph, ((size - w) // 2, (size - h) // 2))
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _single_codepoint(concept: str) -> int | None:
    parts = [p for p in concept.upper().split("-") if p != "FE0F"]
    return int(parts[0], 16) if len(parts) == 1 else None


def sketch_concepts(table: "pd.DataFrame", codepoints: set[int]) -> "pd.DataFrame":
    """The rows of one emoji style whose concept is one code point (``FE0F`` ignored) that the font draws."""
    cps = table["concept"].map(_single_codepoint)
    keep = cps.map(lambda c: c is not None and c in codepoints).astype(bool)
    return table[keep].assign(codepoint=cps[keep].astype(np.int64))


def emoji_sketch_dir(size: int = SKETCH_SIZE, padding: int = SKETCH_PADDING) -> Path:
    return source_dir("emoji-sketch") / f"symbola-{SYMBOLA_VERSION}-s{size}-p{padding}"


def prepare_emoji_sketch(force: bool = False, font: str | Path = SYMBOLA_FONT, sha256: str = SYMBOLA_SHA256,
                         size: int = SKETCH_SIZE, padding: int = SKETCH_PADDING, target: str | Path | None = None,
                         limit: int | None = None) -> tuple[Path, bool, int]:
    """Render the Symbola glyph of every single-code-point emoji concept; ``(folder, created, n_sketches)``.

    Idempotent: a folder with its complete-marker is kept. Needs the emoji data
    (``visem data fetch`` fetches it first) and the pinned font (checked by
    :func:`check_font` before anything is written). ``target`` (default
    :func:`emoji_sketch_dir`) and ``limit`` (the first N concepts) serve tests.
    """
    from PIL import __version__ as pil_version
    from PIL import features

    from visem.data.emoji import load_emoji

    target = Path(target) if target is not None else emoji_sketch_dir(size, padding)
    if not force and (target / STAMP).is_file():
        return target, False, int(read_json(target / STAMP, "the emoji-sketch marker").get("n_sketches", 0))
    font = check_font(font, sha256)
    rows = sketch_concepts(load_emoji(EMOJI_STYLE_FOR_CONCEPTS).table, font_codepoints(font))
    if limit is not None:
        rows = rows.iloc[: int(limit)]
    with atomic_dir(target) as tmp:
        concepts, skipped = [], []
        for concept, cp in zip(rows["concept"], rows["codepoint"]):
            try:
                png = render_glyph(font, chr(int(cp)), size=size, padding=padding)
            except DataError:
                skipped.append(concept)
                continue
            (tmp / f"{concept}.png").write_bytes(png)
            concepts.append(concept)
        atomic_write_json(tmp / STAMP, {
            "package": SYMBOLA_PACKAGE, "version": SYMBOLA_VERSION, "installed_version": _installed_version(),
            "font": str(font), "font_sha256": sha256, "size": size, "padding": padding, "render_pt": RENDER_PT,
            "pillow": pil_version, "freetype": features.version("freetype2"), "n_sketches": len(concepts),
            "concepts": concepts, "skipped_no_ink": skipped,
        })
    load_emoji_sketch.cache_clear()
    return target, True, len(concepts)


#: the emoji table of this style names the concepts (both styles have every concept in the pinned versions)
EMOJI_STYLE_FOR_CONCEPTS = "google"


@dataclass
class SketchData:
    """Emoji sketches (one row per rendered concept) and the colour emoji of the same classes.

    ``table``: ``concept``, ``emoji``, ``style`` (``"symbola"``), ``image`` (the
    sketch PNG), ``group``, ``subgroup``, ``label`` (index into :attr:`class_names`,
    the emoji data's subgroups, so GloVe class vectors of ``emoji`` line up),
    ``order``. ``images``: the image modality, every Google and Twitter emoji of
    a subgroup that has at least one sketch (the emoji table's columns, and
    ``row``: the row of ``load("emoji")``'s table, hence of its feature files),
    including concepts without a sketch, as Sketchy's gallery holds photos no
    sketch was drawn from.
    """

    table: "pd.DataFrame"
    images: "pd.DataFrame"
    class_names: list[str]
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def image_labels(self) -> np.ndarray:
        return self.images["label"].to_numpy(dtype=np.int64)

    @property
    def classes(self) -> np.ndarray:
        """Class ids (subgroups) with at least one sketch, sorted."""
        return np.unique(self.labels)

    def class_counts(self) -> "pd.DataFrame":
        """Per class: ``subgroup``, ``sketches``, ``images`` (both styles), sorted by sketches, descending."""
        import pandas as pd

        sk = self.table.groupby("subgroup").size().rename("sketches")
        im = self.images.groupby("subgroup").size().rename("images")
        out = pd.concat([sk, im], axis=1).fillna(0).astype(np.int64).reset_index(names="subgroup")
        return out.sort_values(["sketches", "subgroup"], ascending=[False, True], kind="stable").reset_index(drop=True)


@lru_cache(maxsize=2)
def load_emoji_sketch(size: int = SKETCH_SIZE, padding: int = SKETCH_PADDING) -> SketchData:
    """The rendered sketches and the colour emoji of their classes. Needs ``visem data fetch``."""
    from visem.data.emoji import load_emoji

    folder = emoji_sketch_dir(size, padding)
    if not (folder / STAMP).is_file():
        raise DataError(f"{folder}: the emoji sketches are not rendered (run `visem data fetch`)")
    stamp = read_json(folder / STAMP, "the emoji-sketch marker")
    emoji = load_emoji()
    one = emoji.table[emoji.table["style"] == EMOJI_STYLE_FOR_CONCEPTS]
    concepts = list(stamp.get("concepts", []))
    rows = one.set_index("concept").reindex(concepts)
    if rows["label"].isna().any():
        bad = rows.index[rows["label"].isna()][0]
        raise DataError(f"{folder / STAMP}: concept {bad} is not in the emoji data (render again with --force)")
    table = rows.reset_index()[["concept", "emoji", "group", "subgroup", "label", "order"]].copy()
    table["style"] = STYLE
    table["image"] = [str(folder / f"{c}.png") for c in concepts]
    missing = [p for p in table["image"] if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{missing[0]}: sketch file missing (run `visem data fetch emoji-sketch --force`)")
    table["label"] = table["label"].astype(np.int64)
    table = table.sort_values(["order", "concept"], kind="stable").reset_index(drop=True)
    images = emoji.table[emoji.table["label"].isin(table["label"].unique())].rename_axis("row").reset_index()
    source: dict[str, Any] = {k: stamp.get(k) for k in ("package", "version", "font", "font_sha256", "size",
                                                         "padding", "render_pt", "pillow", "freetype")}
    source["folder"] = str(folder)
    source["image styles"] = ", ".join(sorted(images["style"].unique()))
    return SketchData(table, images, list(emoji.class_names), source)
