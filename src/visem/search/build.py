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
    from visem.search.folder import open_rows, write_embeddings
    from visem.search.vectors import StoreOptions, build_store
    from visem.search.embedding import embed_images, embed_texts
    from visem.search.features import image_features
    from visem.search.index import SearchIndex
    from visem.search.methods import AUTO_MODEL_DEFAULTS, choose_method, method_kind
    from visem.search.training import TrainingData, default_steps, make_sampler, train_model

    t0 = time.perf_counter()
    options = options or BuildOptions()
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
    method, reason = choose_method(n_captioned, len(col.names) - n_captioned, src_index is not None)
    defaults = AUTO_MODEL_DEFAULTS.get(method, {})
    if options.method:
        method, reason, defaults = options.method, f"method {options.method} asked for", {}
    kind, regions = method_kind(method)
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

    pooled, grid = image_features(col.paths, col.hashes, regions, options.crop, options.progress)
    pseudo, pseudo_note = pseudo_captions(col.tags, pooled)
    uncaptioned = np.setdiff1d(np.arange(len(col.names)), col.caption_image)

    # texts and vocabulary: training captions and pseudo captions (and the source's captions)
    texts = list(col.captions)
    src = None
    if src_index is not None:
        src_paths = [src_index._path_of(i) for i in range(src_index.n_images)]
        src_pooled, src_grid = image_features(src_paths, src_index._hashes, regions, options.crop, options.progress)
        src = {"pooled": src_pooled, "grid": src_grid, "captions": list(src_index._captions),
               "caption_image": np.asarray(src_index._caption_image, dtype=np.int64)}
        texts += src["captions"]
    from visem.features.text import TextTable

    text = TextTable(texts + pseudo)
    feats_np = grid if regions else pooled
    n_own = len(col.names)
    if src is not None:  # one feature table: this collection's images, then the source's
        feats_np = np.concatenate([feats_np, src["grid"] if regions else src["pooled"]])
    feats = torch.as_tensor(np.asarray(feats_np))
    all_caps = list(col.captions) + (src["captions"] if src else [])
    cap_img = np.concatenate([col.caption_image, src["caption_image"] + n_own]) if src else col.caption_image
    cap_ids = text.encode(all_caps) if all_caps else torch.zeros((0, 1), dtype=torch.long)
    data = TrainingData(feats=feats, n_own=n_own, cap_ids=cap_ids, cap_img=cap_img,
                        n_own_captions=len(col.captions), pseudo_ids=text.encode(pseudo), uncaptioned=uncaptioned)
    sampler, n_items = make_sampler(kind, method, data, options.batch_size, options.seed)

    steps = options.steps or default_steps(n_items, options.batch_size)
    dims = {"image_dim": int(feats.shape[-1]), "vocab_size": len(text.vocab)}
    params = {"embed_dim": options.embed_dim, **defaults, **options.model}
    model = train_model(method, params, dims, text.word_vectors(), sampler, steps, options, partial / "train")

    # embed and write: float16 embeddings on disk, the vector stores over them
    emb = embed_images(model, torch.as_tensor(np.asarray(grid if regions else pooled)))
    dim = int(emb.shape[1])
    cap_emb = embed_texts(model, text.encode(col.captions)) if col.captions else np.zeros((0, dim), np.float32)
    from visem.config import dump_yaml, to_dict
    from visem.train.checkpoint import save_weights

    save_weights(partial / "model.safetensors", model, {"method": method})
    dump_yaml(to_dict(model.config), partial / "model.yaml")
    (partial / "vocab.json").write_text(text.vocab.to_json())
    gen = 0
    files = gen_files(gen)
    atomic_write_json(partial / files["images"], [{"root": 0, "name": n, "sha256": h}
                                                  for n, h in zip(col.names, col.hashes)])
    write_embeddings(partial / files["embeddings"], emb, len(emb), dim)
    atomic_write_json(partial / "captions.json", {"captions": col.captions,
                                                  "image": col.caption_image.tolist()})
    write_embeddings(partial / "caption_embeddings.npy", cap_emb, len(cap_emb), dim)
    rows = open_rows(partial / files["embeddings"])
    cap_rows = open_rows(partial / "caption_embeddings.npy")
    store = StoreOptions(backend=options.backend, kind=options.index_type, exact_max=options.exact_max,
                         ivf_max=options.ivf_max, opq=options.opq, rerank=options.rerank, uri=options.uri,
                         seed=options.seed)
    # text-to-image queries are captions: they tune the image store; image-to-text queries tune the captions'
    image_entry, ann_report = build_store(store, partial, "images", rows,
                                          queries=cap_rows if len(cap_rows) >= 100 else None)
    caption_entry, _ = build_store(store, partial, "captions", cap_rows,
                                   queries=rows[:1000] if len(cap_rows) and len(rows) >= 100 else None)
    vectors = {"backend": options.backend, **({"uri": options.uri} if options.backend == "milvus" else {}),
               "images": image_entry, "captions": caption_entry}
    report = BuildReport(method=method, reason=reason, n_images=n_own, n_captioned=n_captioned,
                         n_captions=len(col.captions), n_pseudo=int(len(uncaptioned)), pseudo_source=pseudo_note,
                         skipped=col.skipped, problems=col.problems, ann=ann_report, steps=steps,
                         seconds=round(time.perf_counter() - t0, 1))
    import visem

    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "visem": visem.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "generation": gen,
        "generations": [{"id": gen, **files, "n": n_own}], "vectors": vectors,
        "captions": {"file": "captions.json", "embeddings": "caption_embeddings.npy"},
        "method": method, "regions": regions, "crop": options.crop, "max_len": text.max_len,
        "dim": dim, "roots": [str(images.resolve())],
        "n_images": n_own, "n_captions": len(col.captions), "options": asdict(options),
        "source": str(Path(source).resolve()) if source is not None else None, "report": report.to_dict(),
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
