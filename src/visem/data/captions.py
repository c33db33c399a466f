"""Bring-your-own image-caption data: a folder of images plus a CSV or JSONL file.

Each row pairs an image (a path relative to the image folder, or absolute)
with a caption; optional ``tags`` and ``label`` columns describe the image.
An image may appear in many rows (several captions) or in none (an image
without caption: it is still part of the data set, as an unpaired image).

CSV: a header row naming the columns. Accepted names (case-insensitive):
``image`` / ``file`` / ``filename`` / ``path`` / ``img``; ``caption`` /
``text`` / ``sentence``; ``tags`` (separated by ``;``, ``|`` or ``,``);
``label`` / ``class`` / ``category``.
JSONL: one JSON object a line with the same keys; ``caption`` may also be a
list of captions and ``tags`` a list.

Problems with single rows or images do not stop loading; they are collected
in a :class:`LoadReport` and the row is skipped:

==================  ============================================================
``malformed``       unparseable line (a CSV quote left open is reported on its
                    own line and never swallows the next rows), wrong number of
                    CSV fields, no image field, a JSONL caption or tag that is
                    not text
``missing_image``   the image file does not exist
``unreadable``      the image exists but does not decode (not an image, or a
                    truncated file that passes PIL's ``verify``)
``outside_folder``  with ``confine=True``: an absolute path or a symlink that
                    resolves outside the image folder
``empty_caption``   blank caption and no tags or label (the image itself is kept)
``duplicate``       the same (image, caption) pair again
``label_conflict``  another row gave the image a different label (first kept)
==================  ============================================================

Only an unreadable or missing annotation file, or one without an image or
caption column, is fatal (:class:`~visem.data.paths.DataError`).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visem.data.paths import DataError, reading, require_file

__all__ = ["Issue", "LoadReport", "CaptionDataset", "load_captions", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
_COLUMNS = {
    "image": ("image", "file", "filename", "path", "img", "image_path"),
    "caption": ("caption", "text", "sentence", "captions"),
    "tags": ("tags", "tag", "keywords"),
    "label": ("label", "class", "category"),
}


@dataclass(frozen=True)
class Issue:
    kind: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file and self.line else (self.file or "")
        return f"{where}: {self.kind}: {self.message}" if where else f"{self.kind}: {self.message}"


@dataclass
class LoadReport:
    """Everything skipped while loading, with line numbers."""

    issues: list[Issue] = field(default_factory=list)
    rows_read: int = 0
    rows_used: int = 0

    def add(self, kind: str, message: str, line: int | None = None, file: str | None = None) -> None:
        self.issues.append(Issue(kind, message, line, file))

    def __bool__(self) -> bool:  # truthy when something went wrong
        return bool(self.issues)

    def __len__(self) -> int:
        return len(self.issues)

    def counts(self) -> dict[str, int]:
        return dict(Counter(i.kind for i in self.issues))

    def of(self, kind: str) -> list[Issue]:
        return [i for i in self.issues if i.kind == kind]

    def summary(self, limit: int = 10) -> str:
        head = f"{self.rows_used}/{self.rows_read} rows used"
        if not self.issues:
            return head + ", no problems"
        lines = [head + ", skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items()))]
        lines += [f"  {i}" for i in self.issues[:limit]]
        if len(self.issues) > limit:
            lines.append(f"  ... {len(self.issues) - limit} more")
        return "\n".join(lines)


@dataclass
class CaptionDataset:
    """Images (some captioned, some not) with captions, tags and labels.

    ``images``: image paths relative to ``root`` (absolute when outside it),
    unique, all readable; ``captions``: list of M strings; ``caption_image``:
    int64 (M,) index into ``images``; ``tags``: per image, a list of strings;
    ``labels``: int64 (N,) index into ``class_names``, -1 for unlabelled images,
    or None when the file has no label column.
    """

    root: Path
    images: list[str]
    captions: list[str]
    caption_image: np.ndarray
    tags: list[list[str]]
    labels: np.ndarray | None
    class_names: list[str]
    report: LoadReport
    split: str = "all"
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_paths(self) -> list[Path]:
        return [self.root / p for p in self.images]

    @property
    def uncaptioned(self) -> np.ndarray:
        """Indices of images without any caption."""
        has = np.zeros(len(self.images), dtype=bool)
        has[self.caption_image] = True
        return np.flatnonzero(~has)


def _column(fields: list[str], role: str) -> str | None:
    lower = {f.strip().lower(): f for f in fields if f}
    for alias in _COLUMNS[role]:
        if alias in lower:
            return lower[alias]
    return None


def _split_tags(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = re.split(r"[;|,]", str(value))
    return [t.strip().lower() for t in items if t and t.strip()]


def _rows_csv(path: Path, report: LoadReport):
    with reading(path, "a CSV file with a header row"):
        text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a header row with image and caption columns)") from None
    except csv.Error as exc:
        raise DataError(f"{path}: header row is not valid CSV ({exc})") from exc
    cols = {role: _column(header, role) for role in _COLUMNS}
    if cols["image"] is None or cols["caption"] is None:
        raise DataError(f"{path}: header {header} lacks an image column ({'/'.join(_COLUMNS['image'])}) or a caption column ({'/'.join(_COLUMNS['caption'])})")
    index = {name: i for i, name in enumerate(header)}
    # one row per line: a quoted field left open is an error of its own line, never a field that swallows the
    # rows after it (captions are one line; a newline inside a caption would be whitespace anyway)
    for line, raw in enumerate(lines[reader.line_num:], start=reader.line_num + 1):
        try:
            rows = list(csv.reader([raw], strict=True))
        except csv.Error as exc:
            report.rows_read += 1
            why = "unterminated quote" if "end of data" in str(exc) else str(exc)
            report.add("malformed", f"not valid CSV ({why})", line, str(path))
            continue
        row = rows[0] if rows else []
        if not row or all(not c.strip() for c in row):
            continue
        report.rows_read += 1
        if len(row) != len(header):
            report.add("malformed", f"{len(row)} fields, the header has {len(header)}", line, str(path))
            continue
        rec = {role: (row[index[c]] if c is not None else None) for role, c in cols.items()}
        yield line, rec


def _rows_jsonl(path: Path, report: LoadReport):
    with reading(path, "a JSON Lines file"):
        text = path.read_text(encoding="utf-8-sig")
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        report.rows_read += 1
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            report.add("malformed", f"not valid JSON ({exc.msg})", line, str(path))
            continue
        if not isinstance(obj, dict):
            report.add("malformed", "not a JSON object", line, str(path))
            continue
        cols = {role: _column(list(obj), role) for role in _COLUMNS}
        rec = {role: (obj.get(c) if c is not None else None) for role, c in cols.items()}
        bad = _not_text(rec)
        if bad:
            report.add("malformed", bad, line, str(path))
            continue
        yield line, rec


def _not_text(rec: dict) -> str | None:
    """Why a JSON row's fields are not text (a caption or tags that are numbers, objects, ...), or None."""
    for role, allow_list in (("image", False), ("caption", True), ("tags", True), ("label", False)):
        v = rec.get(role)
        if v is None or isinstance(v, str):
            continue
        if role == "label" and isinstance(v, (int, float)) and not isinstance(v, bool):
            continue
        if allow_list and isinstance(v, list) and all(isinstance(x, str) for x in v):
            continue
        kind = type(v).__name__
        want = "a string or a list of strings" if allow_list else "a string"
        return f"{role} must be {want}, got {kind} {json.dumps(v)[:40]}"
    return None


def _readable(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:  # verify() does not decode: a truncated JPEG passes it
            im.draft("RGB", (64, 64))  # JPEG decodes at 1/8 scale here; still reads every byte
            im.load()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def load_captions(
    annotations: str | Path | None,
    images: str | Path | None = None,
    include_unlisted: bool = True,
    check_images: bool = True,
    confine: bool = False,
) -> CaptionDataset:
    """Read a CSV (``.csv``) or JSON Lines (``.jsonl``, ``.ndjson``, ``.json``) annotation file.

    ``annotations=None`` reads just the image folder (every image uncaptioned).

    ``images``: the image folder (default: the annotation file's folder).
    ``include_unlisted``: add images of the folder that no row mentions, as
    uncaptioned images. ``check_images``: decode every image with PIL and report
    the unreadable ones (they are left out). ``confine``: refuse images that
    resolve outside the image folder (absolute paths, symlinks out of it).
    """
    if annotations is None:  # a folder of images, none captioned
        if images is None:
            raise DataError("load_captions: give an annotation file, an image folder, or both")
        ann = None
    else:
        ann = require_file(annotations, "a CSV or JSONL file of (image, caption) rows")
    root = Path(images) if images is not None else ann.parent
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    report = LoadReport()
    suffix = ann.suffix.lower() if ann is not None else None
    if ann is None:
        rows = []
    elif suffix == ".csv":
        rows = _rows_csv(ann, report)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        rows = _rows_jsonl(ann, report)
    else:
        raise DataError(f"{ann}: unknown annotation format {suffix!r} (expected .csv or .jsonl)")

    root_res = root.resolve()
    image_index: dict[str, int] = {}
    image_list: list[str] = []
    tags: list[list[str]] = []
    label_of: list[str | None] = []
    status: dict[str, str | None] = {}  # resolved path -> None if fine, else problem kind
    captions: list[str] = []
    cap_img: list[int] = []
    seen_pairs: set[tuple[int, str]] = set()

    def rel_name(p: Path) -> str:
        rp = p.resolve()
        try:
            return rp.relative_to(root_res).as_posix()
        except ValueError:
            return str(rp)

    def add_image(name: str) -> int:
        if name not in image_index:
            image_index[name] = len(image_list)
            image_list.append(name)
            tags.append([])
            label_of.append(None)
        return image_index[name]

    for line, rec in rows:
        img_field = rec["image"]
        if img_field is None or not str(img_field).strip():
            report.add("malformed", "no image given", line, str(ann))
            continue
        p = Path(str(img_field).strip())
        p = p if p.is_absolute() else root / p
        name = rel_name(p)
        if confine and not p.resolve().is_relative_to(root_res):
            status[name] = "outside_folder"
            report.add("outside_folder", f"{str(img_field).strip()} resolves outside the image folder {root_res} "
                       "(absolute path or symlink): refused", line, str(ann))
            continue
        if name not in status:
            if not p.is_file():
                status[name] = "missing_image"
            elif check_images and (err := _readable(p)) is not None:
                status[name] = "unreadable"
                report.add("unreadable", f"{p}: not a readable image ({err})", line, str(ann))
            else:
                status[name] = None
        if status[name] == "missing_image":
            report.add("missing_image", f"{p} does not exist", line, str(ann))
            continue
        if status[name] == "unreadable":
            continue
        i = add_image(name)
        for t in _split_tags(rec["tags"]):
            if t not in tags[i]:
                tags[i].append(t)
        lab = rec["label"]
        if lab is not None and str(lab).strip():
            lab = str(lab).strip()
            if label_of[i] is None:
                label_of[i] = lab
            elif label_of[i] != lab:
                report.add("label_conflict", f"{name}: label {lab!r} differs from earlier {label_of[i]!r} (kept)", line, str(ann))
        caps = rec["caption"]
        caps = caps if isinstance(caps, list) else [caps]
        used = False
        for cap in caps:
            text = re.sub(r"\s+", " ", str(cap)).strip() if cap is not None else ""
            if not text:
                if not rec["tags"] and not (lab is not None and str(lab).strip()):
                    # a row with tags or a label but no caption describes an uncaptioned image: fine
                    report.add("empty_caption", f"{name}: empty caption", line, str(ann))
                continue
            if (i, text) in seen_pairs:
                report.add("duplicate", f"{name}: caption {text[:40]!r} repeated", line, str(ann))
                continue
            seen_pairs.add((i, text))
            captions.append(text)
            cap_img.append(i)
            used = True
        report.rows_used += int(used)

    if include_unlisted:
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and (ann is None or p.resolve() != ann.resolve()):
                name = rel_name(p)
                if name in status:
                    continue
                if confine and not p.resolve().is_relative_to(root_res):
                    status[name] = "outside_folder"
                    report.add("outside_folder", f"{p} is a symlink to {p.resolve()}, outside the image folder: "
                               "refused", None, str(p))
                    continue
                if check_images and (err := _readable(p)) is not None:
                    status[name] = "unreadable"
                    report.add("unreadable", f"{p}: not a readable image ({err})", None, str(p))
                    continue
                status[name] = None
                add_image(name)

    has_labels = any(lab is not None for lab in label_of)
    class_names = sorted({lab for lab in label_of if lab is not None})
    labels = None
    if has_labels:
        lookup = {c: k for k, c in enumerate(class_names)}
        labels = np.asarray([lookup[lab] if lab is not None else -1 for lab in label_of], dtype=np.int64)
    return CaptionDataset(
        root=root,
        images=image_list,
        captions=captions,
        caption_image=np.asarray(cap_img, dtype=np.int64),
        tags=tags,
        labels=labels,
        class_names=class_names,
        report=report,
        source={"annotations": str(ann) if ann is not None else None, "images": str(root), "format": "captions"},
    )
