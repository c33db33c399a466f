"""``build_index``: from a folder of images and a caption file to an index folder, stage by stage.

Stages, each in its own module: the collection (:mod:`~visem.search.collection`),
the method (:mod:`~visem.search.methods`), image features
(:mod:`~visem.search.features`), the choice of towers and fusion and the
training (:mod:`~visem.search.choose`, :mod:`~visem.search.training`),
embedding (:mod:`~visem.search.embedding`), the vector index
(:mod:`~visem.search.vectors`), the sides beside it (lexical documents, raw
image features: :mod:`~visem.search.sides`) and the files
(:mod:`~visem.search.folder`). This module only sequences them and makes
the build resumable: everything is written into ``<out>.partial`` and
renamed to ``<out>`` when complete.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from visem.search.collection import Collection, skipped_text
from visem.search.folder import FORMAT, FORMAT_VERSION, MANIFEST, gen_files
from visem.search.types import BuildOptions, BuildReport

__all__ = ["build_index"]


#: options that change how a build runs, not what it writes.
_NOT_IN_FINGERPRINT = ("progress", "workers")


def _fingerprint(col: Collection, options: BuildOptions, method: str, source: Path | None) -> str:
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps({"options": {k: v for k, v in asdict(options).items() if k not in _NOT_IN_FINGERPRINT},
                         "method": method, "source": str(source) if source else None}, sort_keys=True).encode())
    for name, key in zip(col.names, col.hashes):
        h.update(f"{name}\0{key}\n".encode())
    for c, i in zip(col.captions, col.caption_image.tolist()):
        h.update(f"{i}\0{c}\n".encode())
    return h.hexdigest()


def _choose(col_counts: tuple[int, int, int], has_source: bool, options: BuildOptions) -> tuple[str, str]:
    """``(method, reason)`` from (images, captioned images, captions) counts."""
    from visem.search.methods import choose_method

    n_images, n_captioned, n_captions = col_counts
    if n_captions < 2:  # a ranking loss needs two pairs: one caption is treated as none
        n_captioned = 0
    method, reason = choose_method(n_captioned, n_images - n_captioned, has_source)
    if options.method:
        method, reason = options.method, f"method {options.method} asked for"
    return method, reason


@dataclass
class _Plan:
    """What the collection and method stages decided."""

    col: Collection
    method: str
    reason: str
    regions: bool
    n_captioned: int


def _plan(images: Path, captions: Path | None, src_index: Any, options: BuildOptions) -> _Plan:
    """Collection and method: the rows, one read of every image (features into the store), the choice.

    Under ``torchrun`` every rank reads its share of the files and gets the
    whole scan back, so every rank makes the same plan.
    """
    from visem.search.collection import finish_collection, read_rows
    from visem.search.features import scan_images
    from visem.search.methods import method_kind

    rows = read_rows(images, captions)
    if not rows.image_paths:
        raise ValueError(f"{images}: no readable image found ({skipped_text(dict(rows.report.counts())) or 'folder empty'})")
    # the method before any image is read, to know which features the one read must compute: dropping
    # unreadable or duplicate images can only turn A3VSE (regions) into VSE++ (pooled), never the reverse;
    # regions only when asked for (options.regions), else a region method reads pooled features as one region
    guess = _choose((len(rows.images), len(set(rows.caption_image.tolist())), len(rows.captions)),
                    src_index is not None, options)[0]
    guess_regions = method_kind(guess)[1] and options.regions
    scan = scan_images(rows.image_paths, regions=guess_regions, crop=options.crop, workers=options.workers,
                       progress=options.progress, variant=options.image_encoder)
    col = finish_collection(rows, scan.keys, scan.errors)
    if not col.names:
        raise ValueError(f"{images}: no readable image found ({skipped_text(col.skipped) or 'folder empty'})")
    if len(col.names) < 2:
        raise ValueError(f"{images}: one readable image; training needs at least two")
    n_captioned = len(set(col.caption_image.tolist())) if len(col.captions) >= 2 else 0
    method, reason = _choose((len(col.names), n_captioned, len(col.captions)), src_index is not None, options)
    kind, regions = method_kind(method)
    regions = regions and options.regions
    if kind == "domains" and src_index is None and not len(col.captions):
        raise ValueError(f"{method} needs captions (its paired domain): give a caption file or a source index")
    if regions and not guess_regions:  # cannot happen with the automatic choice (see above); kept safe
        scan_images(col.paths, regions=True, crop=options.crop, workers=options.workers, keys=list(col.hashes),
                    progress=options.progress, variant=options.image_encoder)
    return _Plan(col, method, reason, regions, n_captioned)


def _source(src_index: Any, regions: bool, options: BuildOptions) -> dict[str, Any] | None:
    """A source index's images (features stored, read once if missing), captions and their image rows."""
    import numpy as np

    from visem.search.features import scan_images

    if src_index is None:
        return None
    src_paths = [src_index._path_of(i) for i in range(src_index.n_images)]
    found = scan_images(src_paths, regions=regions, crop=options.crop, workers=options.workers,
                        keys=list(src_index._hashes), progress=options.progress, variant=options.image_encoder)
    if found.errors:
        raise ValueError(f"source index {src_index.path}: {len(found.errors)} of its images cannot be read "
                         f"(e.g. {found.errors[min(found.errors)]})")
    return {"hashes": list(src_index._hashes), "captions": list(src_index._captions),
            "caption_image": np.asarray(src_index._caption_image, dtype=np.int64)}


def _write(partial: Path, plan: _Plan, chosen: Any, pseudo: list[str], options: BuildOptions) -> tuple[dict, dict, int]:
    """Model files, generation 0 (image list, embeddings streamed block by block, lexical documents, raw
    features), captions, vector stores.

    Returns ``(manifest entries: generations, vectors, captions, sides; the image store's report; dimension)``.
    """
    import numpy as np

    from visem.config import dump_yaml, to_dict
    from visem.io import atomic_write_json
    from visem.search.embedding import embed_image_blocks, embed_texts
    from visem.search.features import feature_rows
    from visem.search.folder import open_rows, write_embeddings
    from visem.search.sides import side_entries, write_sides
    from visem.search.vectors import StoreOptions, build_store
    from visem.train.checkpoint import save_weights

    col, model, side = plan.col, chosen.model, chosen.side
    save_weights(partial / "model.safetensors", model, {"method": plan.method})
    dump_yaml(to_dict(model.config), partial / "model.yaml")
    (partial / "vocab.json").write_text(side.vocab.to_json())
    own = feature_rows(col.hashes, plan.regions, options.crop, options.image_encoder)
    dim = int(next(embed_image_blocks(model, own[:1])).shape[1])
    files = gen_files(0)
    atomic_write_json(partial / files["images"], [{"root": 0, "name": n, "sha256": h}
                                                  for n, h in zip(col.names, col.hashes)])
    write_embeddings(partial / files["embeddings"], embed_image_blocks(model, own), len(own), dim)
    cap_emb = embed_texts(model, side.ids(col.captions)) if col.captions else np.zeros((0, dim), np.float32)
    atomic_write_json(partial / "captions.json", {"captions": col.captions, "image": col.caption_image.tolist()})
    write_embeddings(partial / "caption_embeddings.npy", cap_emb, len(cap_emb), dim)
    sides = write_sides(partial, 0, col, list(range(len(col.names))), pseudo,
                        feature_rows(col.hashes, False, options.crop, options.image_encoder))
    rows, cap_rows = open_rows(partial / files["embeddings"]), open_rows(partial / "caption_embeddings.npy")
    store = StoreOptions(backend=options.backend, kind=options.index_type, exact_max=options.exact_max,
                         ivf_max=options.ivf_max, opq=options.opq, rerank=options.rerank, uri=options.uri,
                         seed=options.seed)
    # text-to-image queries are captions: they tune the image store; image-to-text queries tune the captions'.
    # --index-type forces the images' structure; the captions' follows their number
    image_entry, ann_report = build_store(store, partial, "images", rows,
                                          queries=cap_rows if len(cap_rows) >= 100 else None)
    caption_entry, _ = build_store(replace(store, kind=None), partial, "captions", cap_rows,  # by size
                                   queries=rows[:1000] if len(cap_rows) and len(rows) >= 100 else None)
    entries = {"generation": 0, "generations": [{"id": 0, **files, **sides, "n": len(own)}],
               "vectors": {"backend": options.backend, "images": image_entry, "captions": caption_entry},
               "captions": {"file": "captions.json", "embeddings": "caption_embeddings.npy"},
               **side_entries(chosen.fusion)}
    return entries, ann_report, dim


def _partial_folder(out: Path, fingerprint: str) -> Path:
    """``<out>.partial`` for this build: a stopped build of the same inputs and options is resumed, another discarded.

    Rank 0 decides and prepares it; the other ranks of a ``torchrun`` build wait for it.
    """
    import json
    import shutil

    from visem import distributed
    from visem.io import atomic_write_json

    partial = out.with_name(out.name + ".partial")
    if not distributed.is_main():
        distributed.barrier()
        return partial
    stamp = partial / "build.json"
    if partial.exists():
        try:
            same = json.loads(stamp.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"fingerprint": fingerprint})
    distributed.barrier()
    return partial


def _commit(partial: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, then rename ``<out>.partial`` onto ``out`` (swapping out an old index)."""
    import shutil
    import time

    from visem.io import atomic_write_json

    shutil.rmtree(partial / "train", ignore_errors=True)
    (partial / "build.json").unlink()
    atomic_write_json(partial / MANIFEST, manifest)
    if out.exists():  # overwrite: swap the folders (the old one is removed after)
        old = out.with_name(out.name + f".old-{int(time.time())}")
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        partial.rename(out)


def build_index(images: str | Path, captions: str | Path | None, out: str | Path,
                options: BuildOptions | None = None, *, source: str | Path | None = None,
                overwrite: bool = False) -> BuildReport | None:
    """Train on a folder of images and a caption file, embed every image, write the index folder ``out``.

    Method (unless ``options.method`` names one of
    :func:`~visem.search.methods.search_methods`): ``source`` given ->
    VSA-AE-MMD (the source index's pairs as the paired domain, this folder as
    the target); every image captioned -> VSE++; some captioned -> A3VSE with
    pseudo captions (tags, else ImageNet classes) for the rest; none
    captioned -> VSE++ on the pseudo captions. The text tower and the fusion
    of the dense and word-match scores are chosen on held-out captions when
    there are enough (:mod:`visem.search.choose`).

    Bad files and rows are skipped and counted (``report.skipped``) with the
    first problems listed (``report.problems``). Each image file is read
    once (hashed, and decoded only when the feature store lacks it); the
    features are then read from the store batch by batch and block by
    block, never held whole. The index is written in ``<out>.partial``
    (features go to the content-keyed feature cache, training checkpoints to
    ``<out>.partial/train``) and renamed to ``out`` when complete: an
    interrupted build leaves ``out`` untouched and the next identical call
    resumes. An existing index at ``out`` is replaced only with
    ``overwrite=True``.

    Under ``torchrun`` every rank extracts its share of the features into
    the shared store, then the model trains data-parallel over the ranks
    (``batch_size`` is the global batch; the choice by validation trains
    every candidate the same way on every rank); rank 0 alone writes the
    index (the other ranks return ``None``).
    """
    import time

    import numpy as np

    import visem
    from visem import distributed
    from visem.search.choose import choose_and_train
    from visem.search.collection import pseudo_captions
    from visem.search.features import feature_rows
    from visem.search.index import SearchIndex

    t0 = time.perf_counter()
    options = (options or BuildOptions()).check()
    images, out = Path(images), Path(out)
    captions = Path(captions) if captions is not None else None
    if out.exists() and not overwrite:
        what = "an index" if (out / MANIFEST).is_file() else "a file or folder"
        raise ValueError(f"{out}: {what} is already there (pass overwrite=True / --force to replace it)")
    src_index = SearchIndex.open(source) if source is not None else None
    plan = _plan(images, captions, src_index, options)
    col, enc = plan.col, options.image_encoder
    partial = _partial_folder(out, _fingerprint(col, options, plan.method,
                                                Path(source).resolve() if source else None))
    pseudo, pseudo_note = pseudo_captions(col.tags, feature_rows(col.hashes, False, options.crop, enc), encoder=enc)
    src = _source(src_index, plan.regions, options)
    # towers, method and fusion: by validation on held-out captions when there are enough (visem.search.choose)
    chosen = choose_and_train(col, options, plan.method, plan.reason, pseudo, src, partial)
    if not distributed.is_main():
        return None
    entries, ann_report, dim = _write(partial, plan, chosen, pseudo, options)
    n_pseudo = len(np.setdiff1d(np.arange(len(col.names)), col.caption_image))
    report = BuildReport(method=chosen.method, reason=chosen.reason, n_images=len(col.names),
                         n_captioned=plan.n_captioned, n_captions=len(col.captions), n_pseudo=int(n_pseudo),
                         pseudo_source=pseudo_note, skipped=col.skipped, problems=col.problems, ann=ann_report,
                         steps=chosen.steps, seconds=round(time.perf_counter() - t0, 1), choice=chosen.choice,
                         notes=col.notes + chosen.notes)
    _commit(partial, out, {
        "format": FORMAT, "version": FORMAT_VERSION, "visem": visem.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entries,
        "method": chosen.method, "regions": plan.regions, "crop": options.crop, "max_len": chosen.side.max_len,
        "dim": dim, "roots": [str(images.resolve())], "n_images": len(col.names), "n_captions": len(col.captions),
        "options": asdict(options), "source": str(Path(source).resolve()) if source is not None else None,
        "report": report.to_dict(), "text_encoder": chosen.choice["text_encoder"], "image_encoder": enc})
    return report
