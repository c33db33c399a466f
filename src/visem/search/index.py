"""Build, open, search, extend and evaluate an image-text search index.

Index folder layout (``index.json`` is the manifest; it is replaced
atomically and names every other file, so a reader sees either the old index
or the new one, never a mix):

================================  =============================================
``index.json``                    format version, method, options, sizes,
                                  image roots, the build report, file names
``model.safetensors``             trained model weights
``model.yaml``                    the model's resolved config
``vocab.json``                    the text vocabulary
``images.<gen>.json``             ``[{"root": r, "name": rel, "sha256": h}]``
``embeddings.<gen>.npy``          (N, D) float32 image embeddings, unit norm
``vectors.<gen>.faiss``           the faiss index over those embeddings
``captions.json``                 the training captions and their image ids
``caption_embeddings.npy``        (M, D) float32 caption embeddings
================================  =============================================

``<gen>`` grows by one with every :meth:`SearchIndex.add_images`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class IndexFileError(ValueError):
    """An index folder that is missing, incomplete or of another format (names the file)."""


class QueryError(ValueError):
    """A query that cannot be answered (empty, too long, no known word, bad image); the message says why."""


@dataclass(frozen=True)
class Hit:
    """One image result: its id in the index, its name (path relative to its root), score, a caption if known."""

    id: int
    name: str
    score: float
    caption: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CaptionHit:
    """One caption result: the caption text, the id of the image it describes, and the score."""

    caption: str
    image_id: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimilarResult:
    """Image-query results: similar images and matching captions."""

    images: list[Hit]
    captions: list[CaptionHit]

    def to_dict(self) -> dict[str, Any]:
        return {"images": [h.to_dict() for h in self.images], "captions": [c.to_dict() for c in self.captions]}


@dataclass
class BuildOptions:
    """How :func:`build_index` trains. ``None`` fields are chosen from the data."""

    method: str | None = None
    steps: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    embed_dim: int = 256
    seed: int = 0
    crop: float = 1.0
    exact_max: int = 50_000
    model: dict[str, Any] = field(default_factory=dict)
    progress: bool = False


@dataclass
class BuildReport:
    """What a build found and did (also stored in ``index.json``)."""

    method: str
    reason: str
    n_images: int
    n_captioned: int
    n_captions: int
    n_pseudo: int
    pseudo_source: str
    skipped: dict[str, int]
    problems: list[str]
    ann: dict[str, Any]
    steps: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_QUERY_CHARS = 500
MAX_K = 100
FORMAT = "visem-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"


# --------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------
def search_methods() -> list[str]:
    """Registered models an index can use: retrieval models that embed token ids and images into one space."""
    from visem.models import list_models
    from visem.models.vsepp import TokenRetrievalModel

    return [s.name for s in list_models("retrieval") if issubclass(s.cls, TokenRetrievalModel)]


def _method_kind(name: str) -> tuple[str, bool]:
    """``(training kind, uses region features)`` of a search method.

    Kinds: ``pairs`` (image-caption pairs only), ``pseudo`` (pairs plus
    pseudo-captioned unpaired images, A3VSE's ``pair.*`` / ``pseudo.*``
    batches), ``domains`` (paired source plus unpaired target, VSA's
    ``src.*`` / ``tgt.*`` batches).
    """
    from visem.models import get_model_spec

    methods = search_methods()
    if name not in methods:
        known = ", ".join(methods)
        try:
            get_model_spec(name)
        except (KeyError, ValueError):
            raise ValueError(f"unknown method {name!r} (search methods: {known})") from None
        raise ValueError(f"method {name!r} cannot build a search index: it has no single-vector image and text "
                         f"embedding over token ids (search methods: {known})")
    cls = get_model_spec(name).cls
    return getattr(cls, "training_kind", "pairs"), bool(getattr(cls, "region_features", False))


def choose_method(n_captioned: int, n_uncaptioned: int, has_source: bool) -> tuple[str, str]:
    """``(method, reason)`` from the supervision found (see :func:`build_index`)."""
    if has_source:
        return "vsa-ae-mmd", "a paired source index was given: VSA-AE-MMD (seed 001) adapts it to these images"
    if n_captioned == 0:
        return "vsepp", ("no captions: VSE++ trained on pseudo captions only (tags or ImageNet classes); "
                         "expect searches to follow those words")
    if n_uncaptioned == 0:
        return "vsepp", "every image has a caption: VSE++ on the pairs"
    return "a3vse", (f"{n_captioned} captioned and {n_uncaptioned} uncaptioned images: A3VSE (seed 003) "
                     "with pseudo captions for the uncaptioned ones, adversarial terms off")


#: Model settings of an automatically chosen method (``options.model`` overrides them). A3VSE's six
#: adversarial discriminators are off: on emoji-sparse they change held-out rsum by -2.7 +- 4.6 over 5
#: seeds (no measurable gain) and add six networks to every step (docs/search.md).
AUTO_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"a3vse": {"adversarial": False}}


# --------------------------------------------------------------------------
# collections: images, their hashes, captions, pseudo captions
# --------------------------------------------------------------------------
@dataclass
class _Collection:
    """A loaded image folder: unique images (by content), captions, tags, problems found."""

    root: Path
    names: list[str]
    hashes: list[str]
    captions: list[str]
    caption_image: Any  # np.ndarray (M,)
    tags: list[list[str]]
    skipped: dict[str, int]
    problems: list[str]

    @property
    def paths(self) -> list[Path]:
        return [self.root / n for n in self.names]


def _load_collection(images: Path, captions: Path | None, problems_limit: int = 20) -> _Collection:
    """Read the folder and caption file; drop exact duplicate images (same bytes), merging their captions."""
    import numpy as np

    from visem.data.captions import load_captions
    from visem.features.cache import file_key

    ds = load_captions(captions, images, include_unlisted=True, check_images=True)
    skipped = dict(ds.report.counts())
    problems = [str(i) for i in ds.report.issues[:problems_limit]]
    hashes_all = [file_key(p) for p in ds.image_paths]
    first: dict[str, int] = {}
    keep: list[int] = []
    remap = np.empty(len(ds.images), dtype=np.int64)
    n_dup = 0
    for i, h in enumerate(hashes_all):
        if h in first:
            remap[i] = remap[first[h]]
            n_dup += 1
            if len(problems) < problems_limit:
                problems.append(f"duplicate_image: {ds.images[i]} has the same content as {ds.images[first[h]]} (merged)")
            continue
        first[h] = i
        remap[i] = len(keep)
        keep.append(i)
    if n_dup:
        skipped["duplicate_image"] = n_dup
    tags: list[list[str]] = [list(ds.tags[i]) for i in keep]
    for i, h in enumerate(hashes_all):  # tags of merged duplicates join the kept image's
        for t in ds.tags[i]:
            if t not in tags[remap[i]]:
                tags[remap[i]].append(t)
    cap_img = remap[ds.caption_image] if len(ds.captions) else np.zeros(0, dtype=np.int64)
    seen: set[tuple[int, str]] = set()
    caps, cimg = [], []
    for c, i in zip(ds.captions, cap_img.tolist()):
        if (i, c) not in seen:
            seen.add((i, c))
            caps.append(c)
            cimg.append(i)
    return _Collection(Path(images), [ds.images[i] for i in keep], [hashes_all[i] for i in keep], caps,
                       np.asarray(cimg, dtype=np.int64), tags, skipped, problems)


def pseudo_captions(tags: list[list[str]], pooled: Any, top: int = 3, min_prob: float = 0.05) -> tuple[list[str], str]:
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
        probs = imagenet_probabilities(np.asarray(pooled)[need])
        for i, p in zip(need, probs):
            order = np.argsort(-p)[:top]
            words = [names[j] for r, j in enumerate(order) if r == 0 or p[j] >= min_prob]
            out[i] = " ".join(words)
    n_tags = len(tags) - len(need)
    note = ", ".join(s for s in (f"tags for {n_tags}" if n_tags else "",
                                 f"ImageNet classes for {len(need)}" if need else "") if s)
    return out, note or "none"


# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------
def _fingerprint(col: _Collection, options: BuildOptions, method: str, source: Path | None) -> str:
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


def _features(paths: list[Path], hashes: list[str], regions: bool, crop: float, progress: bool):
    """Pooled (N, 1280) float32 and, if ``regions``, grid (N, 49, 1280) float16 features (content-keyed cache)."""
    import numpy as np

    from visem.features.image import EfficientNetLite0, Preprocess, extract_image_features

    enc = EfficientNetLite0(Preprocess(crop=crop))
    if len(paths) == 0:
        return np.zeros((0, 1280), np.float32), (np.zeros((0, 49, 1280), np.float16) if regions else None)
    grid = extract_image_features(paths, "grid", encoder=enc, keys=hashes, progress=progress) if regions else None
    pooled = extract_image_features(paths, "pooled", encoder=enc, keys=hashes, progress=progress)
    return np.asarray(pooled, dtype=np.float32), grid


def _default_steps(n_items: int, batch_size: int) -> int:
    """About 15 passes over the training items, at least 300 and at most 2,000 steps."""
    import math

    return int(min(2000, max(300, math.ceil(15 * n_items / max(1, batch_size)))))


def build_index(images: str | Path, captions: str | Path | None, out: str | Path,
                options: BuildOptions | None = None, *, source: str | Path | None = None,
                overwrite: bool = False) -> BuildReport:
    """Train on a folder of images and a caption file, embed every image, write the index folder ``out``.

    Method (unless ``options.method`` names one of :func:`search_methods`):
    ``source`` given -> VSA-AE-MMD (the source index's pairs as the paired
    domain, this folder as the target); every image captioned -> VSE++; some
    captioned -> A3VSE with pseudo captions (tags, else ImageNet classes) for
    the rest; none captioned -> VSE++ on the pseudo captions.

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

    t0 = time.perf_counter()
    options = options or BuildOptions()
    images, out = Path(images), Path(out)
    captions = Path(captions) if captions is not None else None
    if out.exists() and not overwrite:
        what = "an index" if (out / MANIFEST).is_file() else "a file or folder"
        raise ValueError(f"{out}: {what} is already there (pass overwrite=True / --force to replace it)")
    col = _load_collection(images, captions)
    if not col.names:
        raise ValueError(f"{images}: no readable image found ({_skipped_text(col.skipped) or 'folder empty'})")
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
    kind, regions = _method_kind(method)
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

    pooled, grid = _features(col.paths, col.hashes, regions, options.crop, options.progress)
    pseudo, pseudo_note = pseudo_captions(col.tags, pooled)
    uncaptioned = np.setdiff1d(np.arange(len(col.names)), col.caption_image)

    # texts and vocabulary: training captions and pseudo captions (and the source's captions)
    texts = list(col.captions)
    src = None
    if src_index is not None:
        src_paths = [src_index._path_of(i) for i in range(src_index.n_images)]
        src_pooled, src_grid = _features(src_paths, src_index._hashes, regions, options.crop, options.progress)
        src = {"pooled": src_pooled, "grid": src_grid, "captions": list(src_index._captions),
               "caption_image": np.asarray(src_index._caption_image, dtype=np.int64)}
        texts += src["captions"]
    from visem.features.text import TextTable
    from visem.train.sampler import IndexSampler, MultiSampler

    text = TextTable(texts + pseudo)
    feats_np = grid if regions else pooled
    n_own = len(col.names)
    if src is not None:  # one feature table: this collection's images, then the source's
        feats_np = np.concatenate([feats_np, src["grid"] if regions else src["pooled"]])
    feats = torch.as_tensor(np.asarray(feats_np))
    all_caps = list(col.captions) + (src["captions"] if src else [])
    cap_img = np.concatenate([col.caption_image, src["caption_image"] + n_own]) if src else col.caption_image
    cap_ids = text.encode(all_caps) if all_caps else torch.zeros((0, 1), dtype=torch.long)
    pseudo_ids = text.encode(pseudo)

    bs = options.batch_size
    seed = options.seed

    def pairs(img: np.ndarray, cap: np.ndarray) -> dict[str, torch.Tensor]:
        return {"img": torch.as_tensor(img, dtype=torch.long), "cap": torch.as_tensor(cap, dtype=torch.long)}

    if kind == "pairs":
        if len(col.captions) >= 2:
            idx = pairs(col.caption_image, np.arange(len(col.captions)))
            n_items = len(col.captions)
            sampler: Any = IndexSampler(idx, {"image": ("img", feats), "text": ("cap", cap_ids)}, min(bs, n_items), seed)
        else:  # no captions at all: pseudo captions are the pairs
            n_items = n_own
            sampler = IndexSampler({"img": torch.arange(n_own)}, {"image": ("img", feats), "text": ("img", pseudo_ids)},
                                   min(bs, n_items), seed)
    elif kind == "pseudo":
        if len(col.captions) < 2:
            raise ValueError(f"{method} needs at least two captions (found {len(col.captions)}); leave --method unset")
        # pseudo pairs: the uncaptioned images (every image when fewer than two are uncaptioned)
        unl = uncaptioned if len(uncaptioned) >= 2 else np.arange(n_own)
        n_items = len(col.captions) + len(unl)
        sampler = MultiSampler({
            "pair": IndexSampler(pairs(col.caption_image, np.arange(len(col.captions))),
                                 {"pair.image": ("img", feats), "pair.text": ("cap", cap_ids)},
                                 min(bs, len(col.captions)), seed),
            "pseudo": IndexSampler({"img": torch.as_tensor(unl)},
                                   {"pseudo.image": ("img", feats), "pseudo.text": ("img", pseudo_ids)},
                                   min(bs, len(unl)), seed + 1)}, prefix=False)
    else:  # domains: paired = this collection's pairs and the source's; target = this collection unpaired
        src_cap = np.arange(len(all_caps))
        if not len(src_cap):
            raise ValueError(f"{method} needs captions in the source index or the caption file")
        tgt_text = (np.arange(len(col.captions)) if len(col.captions) else None)
        n_items = len(src_cap) + n_own
        b = min(bs, len(src_cap), n_own)
        tgt_t = (IndexSampler({"cap": torch.as_tensor(tgt_text)}, {"tgt.text": ("cap", cap_ids)}, b, seed + 2)
                 if tgt_text is not None else
                 IndexSampler({"img": torch.arange(n_own)}, {"tgt.text": ("img", pseudo_ids)}, b, seed + 2))
        sampler = MultiSampler({
            "src": IndexSampler(pairs(cap_img, src_cap), {"src.image": ("img", feats), "src.text": ("cap", cap_ids)},
                                b, seed),
            "tgt_img": IndexSampler({"img": torch.arange(n_own)}, {"tgt.image": ("img", feats)}, b, seed + 1),
            "tgt_txt": tgt_t}, prefix=False)

    from visem.models import build_model
    from visem.train.checkpoint import save_weights
    from visem.train.trainer import TrainConfig, Trainer

    steps = options.steps or _default_steps(n_items, bs)
    dims = {"image_dim": int(feats.shape[-1]), "vocab_size": len(text.vocab)}
    params = {"embed_dim": options.embed_dim, **defaults, **options.model}
    torch.manual_seed(seed)
    model = build_model(method, _known_fields(method, params), dims=dims)
    model.load_word_vectors(text.word_vectors())
    cfg = TrainConfig(steps=steps, batch_size=bs, lr=options.lr, lr_decay_step=max(1, int(steps * 2 / 3)),
                      lr_decay=0.1, grad_clip=2.0, seed=seed, log_every=max(1, min(50, steps)),
                      checkpoint_every=max(25, steps // 10), progress=options.progress)
    Trainer(model, sampler, cfg, partial / "train").fit()
    model.eval()

    # embed and write
    emb = _embed_images(model, torch.as_tensor(np.asarray(grid if regions else pooled)))
    cap_emb = _embed_texts(model, text.encode(col.captions)) if col.captions else np.zeros((0, emb.shape[1]), np.float32)
    from visem.search.ann import VectorIndex

    queries = cap_emb if len(cap_emb) >= 100 else None
    vindex, ann_report = VectorIndex.build(emb, exact_max=options.exact_max, queries=queries, seed=seed)
    save_weights(partial / "model.safetensors", model, {"method": method})
    from visem.config import dump_yaml, to_dict

    dump_yaml(to_dict(model.config), partial / "model.yaml")
    (partial / "vocab.json").write_text(text.vocab.to_json())
    gen = 0
    files = _gen_files(gen)
    atomic_write_json(partial / files["images"], [{"root": 0, "name": n, "sha256": h}
                                                  for n, h in zip(col.names, col.hashes)])
    np.save(partial / files["embeddings"], emb)
    vindex.save(partial / files["vectors"])
    atomic_write_json(partial / "captions.json", {"captions": col.captions,
                                                  "image": col.caption_image.tolist()})
    np.save(partial / "caption_embeddings.npy", cap_emb)
    report = BuildReport(method=method, reason=reason, n_images=n_own, n_captioned=n_captioned,
                         n_captions=len(col.captions), n_pseudo=int(len(uncaptioned)), pseudo_source=pseudo_note,
                         skipped=col.skipped, problems=col.problems, ann=ann_report, steps=steps,
                         seconds=round(time.perf_counter() - t0, 1))
    import visem

    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "visem": visem.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "generation": gen, "files": files,
        "method": method, "regions": regions, "crop": options.crop, "max_len": text.max_len,
        "dim": int(emb.shape[1]), "roots": [str(images.resolve())],
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


def _known_fields(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` restricted to fields the method's config has (``embed_dim`` is not every model's name)."""
    import dataclasses

    from visem.models import get_model_spec

    names = {f.name for f in dataclasses.fields(get_model_spec(method).config_cls)}
    extra = [k for k in params if k not in names and k != "embed_dim"]
    if extra:
        raise ValueError(f"model option(s) {', '.join(extra)} unknown to {method} (fields: {', '.join(sorted(names))})")
    return {k: v for k, v in params.items() if k in names}


def _skipped_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in skipped.items() if n)


def _gen_files(gen: int) -> dict[str, str]:
    return {"images": f"images.{gen}.json", "embeddings": f"embeddings.{gen}.npy", "vectors": f"vectors.{gen}.faiss"}


def _embed_images(model: Any, feats: Any, chunk: int = 256):
    import numpy as np
    import torch

    if len(feats) == 0:
        return np.zeros((0, 0), np.float32)
    with torch.no_grad():
        return torch.cat([model.embed_image(x.float()) for x in feats.split(chunk)]).numpy().astype(np.float32)


def _embed_texts(model: Any, ids: Any, chunk: int = 512):
    import numpy as np
    import torch

    with torch.no_grad():
        return torch.cat([model.embed_text(x) for x in ids.split(chunk)]).numpy().astype(np.float32)


# --------------------------------------------------------------------------
# the opened index
# --------------------------------------------------------------------------
class SearchIndex:
    """An index folder opened for search (see the module docstring for its files).

    The methods that run the model hold a lock, so one :class:`SearchIndex`
    may serve several threads; :meth:`add_images` must not run in two
    processes on one index at once.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        import threading

        self.path = Path(path)
        self.manifest = manifest
        self._lock = threading.RLock()
        self._encoder = None
        self._load()

    # -- opening ------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "SearchIndex":
        """Open the index folder ``path``; :class:`IndexFileError` names what is wrong."""
        import json

        path = Path(path)
        mf = path / MANIFEST
        if not path.is_dir():
            raise IndexFileError(f"{path}: no index folder there")
        if not mf.is_file():
            hint = " (an interrupted build? run the same build again to resume)" if path.name.endswith(".partial") else ""
            raise IndexFileError(f"{mf}: not found: {path} is not a visem index{hint}")
        try:
            manifest = json.loads(mf.read_text())
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"{mf}: unreadable ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise IndexFileError(f"{mf}: not a visem index manifest (format {manifest.get('format')!r})")
        if manifest.get("version") != FORMAT_VERSION:
            raise IndexFileError(f"{mf}: index format version {manifest.get('version')}, this visem reads {FORMAT_VERSION}")
        return cls(path, manifest)

    def _file(self, name: str) -> Path:
        p = self.path / name
        if not p.is_file():
            raise IndexFileError(f"{p}: missing from the index (named by {self.path / MANIFEST})")
        return p

    def _load(self, model: bool = True) -> None:
        """Read the files the manifest names; ``model=False`` keeps the loaded model and vocabulary."""
        import json

        import numpy as np

        from visem.config import load_yaml
        from visem.features.text import Vocabulary
        from visem.models import build_model
        from visem.search.ann import VectorIndex
        from visem.train.checkpoint import load_weights

        m = self.manifest
        files = m["files"]
        try:
            if model:
                self.model = build_model(m["method"], load_yaml(self._file("model.yaml")))
                load_weights(self._file("model.safetensors"), self.model)
                self.model.eval()
                self.vocab = Vocabulary.from_json(self._file("vocab.json").read_text())
            images = json.loads(self._file(files["images"]).read_text())
            caps = json.loads(self._file("captions.json").read_text())
            self.embeddings = np.load(self._file(files["embeddings"]))
            self.caption_embeddings = np.load(self._file("caption_embeddings.npy"))
            self.vectors = VectorIndex.load(self._file(files["vectors"]))
        except IndexFileError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise IndexFileError(f"{self.path}: damaged index ({exc})") from None
        self.roots = [Path(r) for r in m["roots"]]
        self._names = [im["name"] for im in images]
        self._root_of = [int(im["root"]) for im in images]
        self._hashes = [im["sha256"] for im in images]
        self._captions = list(caps["captions"])
        self._caption_image = list(caps["image"])
        self._by_image: dict[int, list[int]] = {}
        for j, i in enumerate(self._caption_image):
            self._by_image.setdefault(i, []).append(j)
        n = len(self._names)
        if self.embeddings.shape[0] != n or self.vectors.ntotal != n:
            raise IndexFileError(f"{self.path}: {n} images but {self.embeddings.shape[0]} embeddings and "
                                 f"{self.vectors.ntotal} vectors")
        if self.caption_embeddings.shape[0] != len(self._captions):
            raise IndexFileError(f"{self.path}: {len(self._captions)} captions but "
                                 f"{self.caption_embeddings.shape[0]} caption embeddings")

    # -- facts ------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self._names)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": str(self.path), "method": m["method"], "n_images": self.n_images,
                "n_captions": len(self._captions), "dim": m["dim"], "generation": m["generation"],
                "roots": [str(r) for r in self.roots], "created": m["created"], "vocab_size": len(self.vocab),
                "ann": {"kind": self.vectors.kind, "n": self.vectors.ntotal, "nprobe": self.vectors.nprobe,
                        "recall_at_10_at_build": m["report"]["ann"].get("recall_at_10")},
                "report": m["report"]}

    def name(self, image_id: int) -> str:
        return self._names[self._check_id(image_id)]

    def captions_of(self, image_id: int) -> list[str]:
        return [self._captions[j] for j in self._by_image.get(self._check_id(image_id), [])]

    def _check_id(self, image_id: int) -> int:
        if not isinstance(image_id, (int,)) or isinstance(image_id, bool) or not 0 <= image_id < self.n_images:
            raise KeyError(f"no image {image_id!r} in the index (ids 0..{self.n_images - 1})")
        return int(image_id)

    def _path_of(self, image_id: int) -> Path:
        return self.roots[self._root_of[image_id]] / self._names[image_id]

    def image_file(self, image_id: int) -> Path:
        """The file of an indexed image, guaranteed inside its indexed folder.

        ``KeyError`` for an unknown id or a file that resolves outside its
        folder (a symlink out of it); ``FileNotFoundError`` when it is gone.
        """
        i = self._check_id(image_id)
        root = self.roots[self._root_of[i]].resolve()
        p = (root / self._names[i]).resolve()
        if not p.is_relative_to(root):
            raise KeyError(f"image {i} resolves outside its indexed folder {root}")
        if not p.is_file():
            raise FileNotFoundError(f"image {i}: {p} is no longer there")
        return p

    # -- queries ------------------------------------------------------------------
    def _hits(self, scores: Any, ids: Any) -> list[Hit]:
        out = []
        for s, i in zip(scores.tolist(), ids.tolist()):
            caps = self._by_image.get(int(i))
            out.append(Hit(int(i), self._names[int(i)], round(float(s), 6), self._captions[caps[0]] if caps else None))
        return out

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise QueryError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        return k

    def explain_query(self, query: str) -> dict[str, Any]:
        """How the query's words reach the model: the ``used`` words and the ``unknown`` ones (ignored).

        Words outside the index's vocabulary (its captions and pseudo
        captions) are dropped, not replaced: nearest neighbours in GloVe are
        often co-hyponyms (``pink`` -> ``blue`` at cosine 0.85), which would
        silently search for something else.
        """
        from visem.features.text import tokenize

        if not isinstance(query, str):
            raise QueryError("the query must be text")
        q = query.strip()
        if not q:
            raise QueryError("empty query")
        if len(q) > MAX_QUERY_CHARS:
            raise QueryError(f"query too long: {len(q)} characters (at most {MAX_QUERY_CHARS})")
        toks = tokenize(q)
        return {"query": q, "used": [t for t in toks if t in self.vocab],
                "unknown": [t for t in toks if t not in self.vocab]}

    def embed_query(self, query: str) -> Any:
        """The (D,) embedding of a text query; :class:`QueryError` when no word of it is usable."""
        import torch

        ex = self.explain_query(query)
        if not ex["used"]:
            raise QueryError(f"no word of {ex['query']!r} is known to this index (vocabulary of {len(self.vocab)} "
                             "words from its captions and pseudo captions)")
        ids = torch.as_tensor([[self.vocab.index[w] for w in ex["used"][: self.manifest["max_len"]]]])
        with self._lock, torch.no_grad():
            return self.model.embed_text(ids)[0].numpy()

    def search_text(self, query: str, k: int = 10) -> list[Hit]:
        """Top-``k`` images for a text query, best first."""
        k = self._check_k(k)
        scores, ids = self.vectors.search(self.embed_query(query)[None, :], k)
        return self._hits(scores[0], ids[0])

    def _encoder_get(self):
        from visem.features.image import EfficientNetLite0, Preprocess

        if self._encoder is None:
            self._encoder = EfficientNetLite0(Preprocess(crop=self.manifest["crop"]))
        return self._encoder

    def embed_image_file(self, image: Any) -> Any:
        """The (D,) embedding of an image: a path, the bytes of an image file, or a PIL image."""
        import io

        import numpy as np
        import torch
        from PIL import Image, UnidentifiedImageError

        try:
            if isinstance(image, (bytes, bytearray)):
                with Image.open(io.BytesIO(image)) as im:
                    im.load()
                    pil = im.copy()
            elif isinstance(image, (str, Path)):
                with Image.open(image) as im:
                    im.load()
                    pil = im.copy()
            elif isinstance(image, Image.Image):
                pil = image
            else:
                raise QueryError(f"an image query must be a path, bytes or a PIL image, not {type(image).__name__}")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            name = image if isinstance(image, (str, Path)) else "the uploaded file"
            raise QueryError(f"{name}: not a readable image ({type(exc).__name__})") from None
        enc = self._encoder_get()
        with self._lock:
            grid = enc.encode(enc.preprocess(pil)[None])  # (1, R, 1280)
            x = torch.as_tensor(grid if self.manifest["regions"] else grid.mean(axis=1))
            with torch.no_grad():
                return self.model.embed_image(x.float())[0].numpy().astype(np.float32)

    def _similar(self, vec: Any, k: int, exclude: int | None = None) -> SimilarResult:
        import numpy as np

        k = self._check_k(k)
        scores, ids = self.vectors.search(vec[None, :], min(self.n_images, k + (exclude is not None)))
        keep = ids[0] != (exclude if exclude is not None else -1)
        images = self._hits(scores[0][keep][:k], ids[0][keep][:k])
        caps: list[CaptionHit] = []
        if len(self._captions):
            s = self.caption_embeddings @ vec
            top = np.argsort(-s, kind="stable")[:k]
            caps = [CaptionHit(self._captions[j], int(self._caption_image[j]), round(float(s[j]), 6)) for j in top]
        return SimilarResult(images, caps)

    def search_image(self, image: Any, k: int = 10) -> SimilarResult:
        """Images similar to a query image, and the indexed captions that match it."""
        k = self._check_k(k)
        return self._similar(self.embed_image_file(image), k)

    def similar(self, image_id: int, k: int = 10) -> SimilarResult:
        """An indexed image as the query: the other images nearest to it, and matching captions."""
        i = self._check_id(image_id)
        return self._similar(self.embeddings[i], k, exclude=i)

    # -- growing -----------------------------------------------------------------
    def _features_of(self, paths: list[Path], hashes: list[str], progress: bool = False):
        pooled, grid = _features(paths, hashes, self.manifest["regions"], self.manifest["crop"], progress)
        import torch

        feats = torch.as_tensor(grid if self.manifest["regions"] else pooled)
        with self._lock:
            return _embed_images(self.model, feats)

    def add_images(self, images: str | Path, progress: bool = False) -> dict[str, Any]:
        """Embed the images of a folder into the index without retraining.

        Images whose content is already indexed are skipped (counted as
        ``already_indexed``); unreadable files are skipped and reported. The
        new embeddings, image list and vector index are written as the next
        generation's files and the manifest is replaced last, so a reader
        sees the index before or after the addition, never between.
        """
        import copy

        import numpy as np

        from visem.io import atomic_path, atomic_write_json

        folder = Path(images)
        col = _load_collection(folder, None)
        known = set(self._hashes)
        new = [i for i, h in enumerate(col.hashes) if h not in known]
        report: dict[str, Any] = {"folder": str(folder), "found": len(col.names), "added": len(new),
                                  "already_indexed": len(col.names) - len(new), "skipped": col.skipped,
                                  "problems": col.problems}
        if not new:
            report["n_images"] = self.n_images
            return report
        emb = self._features_of([col.paths[i] for i in new], [col.hashes[i] for i in new], progress)
        root = str(folder.resolve())
        roots = [str(r) for r in self.roots]
        if root not in roots:
            roots.append(root)
        r = roots.index(root)
        gen = int(self.manifest["generation"]) + 1
        files = _gen_files(gen)
        vectors = copy.deepcopy(self.vectors)
        vectors.add(emb)
        entries = [{"root": ro, "name": n, "sha256": h} for ro, n, h in zip(self._root_of, self._names, self._hashes)]
        entries += [{"root": r, "name": col.names[i], "sha256": col.hashes[i]} for i in new]
        all_emb = np.concatenate([self.embeddings, emb])
        atomic_write_json(self.path / files["images"], entries)
        with atomic_path(self.path / files["embeddings"]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, all_emb)
        vectors.save(self.path / files["vectors"])
        old_files = dict(self.manifest["files"])
        manifest = dict(self.manifest, generation=gen, files=files, roots=roots, n_images=len(entries))
        atomic_write_json(self.path / MANIFEST, manifest)  # the commit point
        for f in old_files.values():
            (self.path / f).unlink(missing_ok=True)
        self.manifest = manifest
        self._load(model=False)  # the model and vocabulary did not change
        report["n_images"] = self.n_images
        return report

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, captions: str | Path, images: str | Path | None = None) -> dict[str, Any]:
        """R@1/5/10 both ways (and medR, rsum) on held-out ``image,caption`` rows.

        The gallery is the distinct images of the file (the usual protocol:
        each caption ranks those images, each image ranks those captions),
        embedded from the index when their content is indexed, else computed.
        Image paths are relative to ``images`` (default: the index's first
        folder). ``overlap`` counts held-out pairs that were training pairs
        (nonzero means the numbers are not held-out numbers).
        """
        import numpy as np
        import torch

        from visem.data.paths import DataError
        from visem.metrics import retrieval_recall

        root = Path(images) if images is not None else self.roots[0]
        col = _load_collection(root, Path(captions))
        if not len(col.captions):
            raise DataError(f"{captions}: no usable (image, caption) row ({_skipped_text(col.skipped) or 'empty'})")
        used = np.unique(col.caption_image)  # only captioned images form the gallery
        remap = -np.ones(len(col.names), dtype=np.int64)
        remap[used] = np.arange(len(used))
        pos = {h: i for i, h in enumerate(self._hashes)}
        in_index = [pos.get(col.hashes[i]) for i in used]
        img = np.zeros((len(used), self.embeddings.shape[1]), np.float32)
        have = [j for j, p in enumerate(in_index) if p is not None]
        img[have] = self.embeddings[[in_index[j] for j in have]]
        todo = [j for j, p in enumerate(in_index) if p is None]
        if todo:
            img[todo] = self._features_of([col.paths[used[j]] for j in todo], [col.hashes[used[j]] for j in todo])
        ids = torch.from_numpy(self.vocab.encode_batch(col.captions, max_len=self.manifest["max_len"])[0])
        with self._lock:
            txt = _embed_texts(self.model, ids)
        train_pairs = {(self._hashes[i], c) for c, i in zip(self._captions, self._caption_image)}
        overlap = sum((col.hashes[i], c) in train_pairs for c, i in zip(col.captions, col.caption_image.tolist()))
        metrics = retrieval_recall(torch.as_tensor(img), torch.as_tensor(txt),
                                   torch.as_tensor(remap[col.caption_image]))
        return {"n_images": int(len(used)), "n_captions": len(col.captions), "in_index": len(have),
                "overlap": int(overlap), "skipped": col.skipped,
                **{k: round(float(v), 4) for k, v in metrics.items()}}
