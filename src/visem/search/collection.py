"""Reading an image folder and its caption file into a :class:`Collection`, and pseudo captions.

A collection is the unit every stage works on: the unique images of a folder
(by content: the same bytes under two names are one image, their captions
and tags merged), their sha256 keys, the (image, caption) pairs and each
image's tags, with the problems found (counted, never fatal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Collection", "finish_collection", "load_collection", "pseudo_captions", "read_rows", "skipped_text"]


@dataclass
class Collection:
    """A loaded image folder: unique images (by content), captions, tags, problems found."""

    root: Path
    names: list[str]
    hashes: list[str]
    captions: list[str]
    caption_image: Any  # np.ndarray (M,)
    tags: list[list[str]]
    skipped: dict[str, int]
    problems: list[str]
    notes: list[str] = field(default_factory=list)  # rows kept with a change (images kept uncaptioned)

    @property
    def paths(self) -> list[Path]:
        return [self.root / n for n in self.names]


#: kinds of :class:`visem.data.captions.LoadReport` issues that keep the image (uncaptioned): notes, not skips
KEPT_KINDS = ("empty_caption",)


def _with_more(lines: list[str], total: int) -> list[str]:
    """``lines`` and, when ``total`` is larger, ``"... and N more"``."""
    return lines + ([f"... and {total - len(lines)} more"] if total > len(lines) else [])


def read_rows(images: Path, captions: Path | None) -> Any:
    """The caption file's rows and the folder's image files, without opening any image.

    A :class:`visem.data.captions.CaptionDataset`: malformed rows, missing
    images, empty captions are already counted; an absolute path or a
    symlink that resolves outside ``images`` is refused (``outside_folder``),
    as an index serves files only from inside its folders. Whether each file
    is a readable image is learnt by the one read of
    :func:`finish_collection`'s scan, not here.
    """
    from visem.data.captions import load_captions

    return load_captions(captions, images, include_unlisted=True, check_images=False, confine=True)


def finish_collection(ds: Any, keys: list[str | None], errors: dict[int, str],
                      problems_limit: int = 20) -> Collection:
    """Drop unreadable images (``keys[i] is None``; ``errors`` says why) and merge duplicates (same key).

    ``keys`` are the content keys of ``ds.image_paths`` from the scan that
    read each file once (:func:`visem.search.features.scan_images`). A
    dropped image's captions go with it; a duplicate's captions and tags
    join the first image with those bytes. Rows with an empty caption and
    captions with no usable word (no letter or digit of any script) keep
    their image, uncaptioned, and are reported in ``notes``; real skips are
    counted in ``skipped`` and listed in ``problems`` (the first
    ``problems_limit``, then ``... and N more``).
    """
    import numpy as np

    from visem.features.tokenize import tokenize

    issues = [i for i in ds.report.issues if i.kind not in KEPT_KINDS]
    skipped = {k: n for k, n in ds.report.counts().items() if k not in KEPT_KINDS}
    problem_list = [str(i) for i in issues]
    notes = []
    n_empty = len(ds.report.of("empty_caption"))
    if n_empty:
        notes.append(f"{n_empty} row(s) with an empty caption: their images kept, uncaptioned")
    bad = [i for i, k in enumerate(keys) if k is None]
    if bad:
        skipped["unreadable"] = skipped.get("unreadable", 0) + len(bad)
        problem_list += [f"unreadable: {errors.get(i, ds.image_paths[i])}" for i in bad]
    first: dict[str, int] = {}
    keep: list[int] = []
    remap = np.full(len(ds.images), -1, dtype=np.int64)
    n_dup = 0
    for i, h in enumerate(keys):
        if h is None:
            continue
        if h in first:
            remap[i] = remap[first[h]]
            n_dup += 1
            problem_list.append(f"duplicate_image: {ds.images[i]} has the same content as {ds.images[first[h]]} (merged)")
            continue
        first[h] = i
        remap[i] = len(keep)
        keep.append(i)
    if n_dup:
        skipped["duplicate_image"] = n_dup
    problems = _with_more(problem_list[:problems_limit], len(problem_list))
    tags: list[list[str]] = [list(ds.tags[i]) for i in keep]
    for i in range(len(keys)):  # tags of merged duplicates join the kept image's
        if remap[i] < 0:
            continue
        for t in ds.tags[i]:
            if t not in tags[remap[i]]:
                tags[remap[i]].append(t)
    cap_img = remap[ds.caption_image] if len(ds.captions) else np.zeros(0, dtype=np.int64)
    seen: set[tuple[int, str]] = set()
    caps, cimg, wordless = [], [], []
    for c, i in zip(ds.captions, cap_img.tolist()):
        if i < 0:  # captions of an unreadable image go with it
            continue
        if not tokenize(c):  # "!!!", emoji only: nothing to learn or match
            wordless.append(c)
            continue
        if (i, c) not in seen:
            seen.add((i, c))
            caps.append(c)
            cimg.append(i)
    if wordless:
        shown = ", ".join(repr(c) for c in wordless[:3]) + (f" and {len(wordless) - 3} more" if len(wordless) > 3 else "")
        notes.append(f"{len(wordless)} caption(s) with no usable word ({shown}): not counted as captions, "
                     "their images kept")
    return Collection(Path(ds.root), [ds.images[i] for i in keep], [keys[i] for i in keep], caps,
                      np.asarray(cimg, dtype=np.int64), tags, skipped, problems, notes)


def load_collection(images: Path, captions: Path | None, scan: Callable[[list[Path]], Any]) -> Collection:
    """:func:`read_rows`, ``scan(paths)`` (one read per file: keys, features), :func:`finish_collection`."""
    ds = read_rows(images, captions)
    found = scan(ds.image_paths)
    return finish_collection(ds, found.keys, found.errors)


def pseudo_captions(tags: list[list[str]], pooled: Any, top: int = 3, min_prob: float = 0.05,
                    encoder: str = "efficientnet-lite0", block: int = 4096) -> tuple[list[str], str]:
    """One pseudo caption per image: its tags joined when it has tags, else its top ImageNet classes.

    The ImageNet classes come from EfficientNet-Lite0's own classifier head on
    the pooled features (the analogue of seed 003's detector semantics):
    the first name of each of the ``top`` most probable classes whose
    probability is at least ``min_prob`` (always at least the most probable).
    Returns the captions and a note of the sources used.
    """
    import numpy as np

    out = [" ".join(t) for t in tags]
    need = [i for i, t in enumerate(tags) if not t]
    if need:
        from visem.data.imagenet import imagenet_classes
        from visem.features.image import imagenet_probabilities

        names = [c.split(",")[0].strip() for c in imagenet_classes()]
        for s in range(0, len(need), block):  # blocks: ``pooled`` may be rows read from the feature store
            part = need[s:s + block]
            probs = imagenet_probabilities(np.asarray(pooled[np.asarray(part)], dtype=np.float32), variant=encoder)
            for i, p in zip(part, probs):
                order = np.argsort(-p)[:top]
                words = [names[j] for r, j in enumerate(order) if r == 0 or p[j] >= min_prob]
                out[i] = " ".join(words)
    n_tags = len(tags) - len(need)
    note = ", ".join(s for s in (f"tags for {n_tags}" if n_tags else "",
                                 f"ImageNet classes for {len(need)}" if need else "") if s)
    return out, note or "none"


def skipped_text(skipped: dict[str, int]) -> str:
    """``"2 unreadable, 1 missing_image"``: the nonzero counts of a report's ``skipped``."""
    return ", ".join(f"{n} {k}" for k, n in skipped.items() if n)
