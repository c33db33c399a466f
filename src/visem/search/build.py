"""``build_index``: from a folder of images and a caption file to an index folder, stage by stage.

Stages, each in its own module: the collection (:mod:`~visem.search.collection`),
the method (:mod:`~visem.search.methods`), image features
(:mod:`~visem.search.features`), training (:mod:`~visem.search.training`),
embedding (:mod:`~visem.search.embedding`), the vector index
(:mod:`~visem.search.ann`) and the files (:mod:`~visem.search.folder`). This
module only sequences them and makes the build resumable: everything is
written into ``<out>.partial`` and renamed to ``<out>`` when complete.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from visem.search.collection import Collection, load_collection, pseudo_captions, skipped_text
from visem.search.folder import FORMAT, FORMAT_VERSION, MANIFEST, gen_files
from visem.search.types import BuildOptions, BuildReport

__all__ = ["build_index"]


def _fingerprint(col: Collection, options: BuildOptions, method: str, source: Path | None) -> str:
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps({"options": {k: v for k, v in asdict(options).items() if k != "progress"},
                         "method": method, "source": str(source) if source else None}, sort_keys=True).encode())
    for name, key in zip(col.names, col.hashes):
        h.update(f"{name}\0{key}\n".encode())
    for c, i in zip(col.captions, col.caption_image.tolist()):
        h.update(f"{i}\0{c}\n".encode())
    return h.hexdigest()


def build_index(images: str | Path, captions: str | Path | None, out: str | Path,
                options: BuildOptions | None = None, *, source: str | Path | None = None,
                overwrite: bool = False) -> BuildReport:
    """Train on a folder of images and a caption file, embed every image, write the index folder ``out``.

    Method (unless ``options.method`` names one of
    :func:`~visem.search.methods.search_methods`): ``source`` given ->
    VSA-AE-MMD (the source index's pairs as the paired domain, this folder as
    the target); every image captioned -> VSE++; some captioned -> A3VSE with
    pseudo captions (tags, else ImageNet classes) for the rest; none
    captioned -> VSE++ on the pseudo captions.

    Bad files and rows are skipped and counted (``report.skipped``) with the
    first problems listed (``report.problems``). The index is written in
    ``<out>.partial`` (features go to the content-keyed feature cache,
    training checkpoints to ``<out>.partial/train``) and renamed to ``out``
    when complete: an interrupted build leaves ``out`` untouched and the
    next identical call resumes. An existing index at ``out`` is replaced
    only with ``overwrite=True``.
    """
    import json
    import shutil
    import time

    import numpy as np
    import torch

    from visem.io import atomic_write_json
    from visem.search.ann import VectorIndex
    from visem.search.embedding import embed_images, embed_texts
    from visem.search.features import image_features
    from visem.search.index import SearchIndex
    from visem.search.choose import choose_and_train
    from visem.search.methods import choose_method, method_kind

    t0 = time.perf_counter()
    options = (options or BuildOptions()).check()
    images, out = Path(images), Path(out)
    captions = Path(captions) if captions is not None else None
    if out.exists() and not overwrite:
        what = "an index" if (out / MANIFEST).is_file() else "a file or folder"
        raise ValueError(f"{out}: {what} is already there (pass overwrite=True / --force to replace it)")
    col = load_collection(images, captions)
    if not col.names:
        raise ValueError(f"{images}: no readable image found ({skipped_text(col.skipped) or 'folder empty'})")
    if len(col.names) < 2:
        raise ValueError(f"{images}: one readable image; training needs at least two")
    src_index = SearchIndex.open(source) if source is not None else None
    n_captioned = len(set(col.caption_image.tolist()))
    if len(col.captions) < 2:  # a ranking loss needs two pairs: one caption is treated as none
        n_captioned = 0
    auto_method, auto_reason = choose_method(n_captioned, len(col.names) - n_captioned, src_index is not None)
    method = options.method or auto_method
    kind, regions = method_kind(method)
    regions = regions and options.regions  # pooled features unless asked (A3VSE reads them as one region)
    if kind == "domains" and src_index is None and not len(col.captions):
        raise ValueError(f"{method} needs captions (its paired domain): give a caption file or a source index")

    partial = out.with_name(out.name + ".partial")
    fp = _fingerprint(col, options, method, Path(source).resolve() if source else None)
    stamp = partial / "build.json"
    if partial.exists():
        try:
            same = json.loads(stamp.read_text()).get("fingerprint") == fp
        except (OSError, ValueError):
            same = False
        if not same:  # a stopped build of other inputs or options: start again
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"fingerprint": fp})

    enc = options.image_encoder
    pooled, grid = image_features(col.paths, col.hashes, regions, options.crop, options.progress, enc)
    pseudo, pseudo_note = pseudo_captions(col.tags, pooled, encoder=enc)
    uncaptioned = np.setdiff1d(np.arange(len(col.names)), col.caption_image)

    src = None
    if src_index is not None:
        src_paths = [src_index._path_of(i) for i in range(src_index.n_images)]
        src_pooled, src_grid = image_features(src_paths, src_index._hashes, regions, options.crop, options.progress, enc)
        src = {"pooled": src_pooled, "grid": src_grid, "captions": list(src_index._captions),
               "caption_image": np.asarray(src_index._caption_image, dtype=np.int64)}
    n_own = len(col.names)
    # towers, method and fusion: by validation on held-out captions when there are enough (visem.search.choose)
    chosen = choose_and_train(col, options, auto_method, auto_reason, pooled, grid, pseudo, src, partial)
    model, text, method, reason, steps = chosen.model, chosen.side, chosen.method, chosen.reason, chosen.steps

    # embed and write
    emb = embed_images(model, torch.as_tensor(np.asarray(grid if regions else pooled)))
    cap_emb = embed_texts(model, text.ids(col.captions)) if col.captions else np.zeros((0, emb.shape[1]), np.float32)
    queries = cap_emb if len(cap_emb) >= 100 else None
    vindex, ann_report = VectorIndex.build(emb, exact_max=options.exact_max, queries=queries, seed=options.seed)
    from visem.config import dump_yaml, to_dict
    from visem.train.checkpoint import save_weights

    save_weights(partial / "model.safetensors", model, {"method": method})
    dump_yaml(to_dict(model.config), partial / "model.yaml")
    (partial / "vocab.json").write_text(text.vocab.to_json())
    gen = 0
    files = gen_files(gen)
    atomic_write_json(partial / files["images"], [{"root": 0, "name": n, "sha256": h}
                                                  for n, h in zip(col.names, col.hashes)])
    np.save(partial / files["embeddings"], emb)
    vindex.save(partial / files["vectors"])
    atomic_write_json(partial / "captions.json", {"captions": col.captions,
                                                  "image": col.caption_image.tolist()})
    np.save(partial / "caption_embeddings.npy", cap_emb)
    # lexical side (visem.search.lexical): one document per image, and the chosen fusion
    from visem.search.lexical import image_documents, lexical_file, write_documents

    write_documents(partial / lexical_file(gen), image_documents(n_own, col.captions, col.caption_image, col.tags,
                                                                 pseudo))
    # image-to-image side (visem.search.image_space): the raw pooled features beside the learned embedding
    from visem.search.image_space import DEFAULT_IMAGE_SPACE, raw_file, unit_float16

    np.save(partial / raw_file(gen), unit_float16(pooled))
    report = BuildReport(method=method, reason=reason, n_images=n_own, n_captioned=n_captioned,
                         n_captions=len(col.captions), n_pseudo=int(len(uncaptioned)), pseudo_source=pseudo_note,
                         skipped=col.skipped, problems=col.problems, ann=ann_report, steps=steps,
                         seconds=round(time.perf_counter() - t0, 1), choice=chosen.choice,
                         notes=col.notes + chosen.notes)
    import visem

    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "visem": visem.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "generation": gen, "files": files,
        "method": method, "regions": regions, "crop": options.crop, "max_len": text.max_len,
        "dim": int(emb.shape[1]), "roots": [str(images.resolve())],
        "n_images": n_own, "n_captions": len(col.captions), "options": asdict(options),
        "source": str(Path(source).resolve()) if source is not None else None, "report": report.to_dict(),
        "lexical": {"file": lexical_file(gen), "fusion": chosen.fusion},  # visem.search.lexical
        "image_space": {"kind": DEFAULT_IMAGE_SPACE, "file": raw_file(gen)},  # visem.search.image_space
        "text_encoder": chosen.choice["text_encoder"], "image_encoder": enc,
    }
    shutil.rmtree(partial / "train", ignore_errors=True)
    stamp.unlink()
    atomic_write_json(partial / MANIFEST, manifest)
    if out.exists():  # overwrite: swap the folders (the old one is removed after)
        old = out.with_name(out.name + f".old-{int(time.time())}")
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        partial.rename(out)
    return report
