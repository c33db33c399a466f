"""Time and peak memory of an index build's feature pass and of encoding the images into the index, at scale.

    python bench/bench_build.py [--n 200000] [--regions] [--workdir DIR] [--keep]

Data: a synthetic collection of ``--n`` small PNG files (8 x 8, distinct
bytes) whose features are already in the feature store (random non-negative
values, as EfficientNet-Lite0's ReLU6 outputs are): what a build finds when
the features were extracted before (``visem features``, an earlier build, or
the ranks of a ``torchrun`` extraction). Pooled features (1280 float32,
5 kB per image; VSE++, every image captioned) by default; ``--regions`` the
7 x 7 grid (49 x 1280 float16, 125 kB per image; A3VSE, a tenth of the
images captioned). Everything lives in ``--workdir`` (``VISEM_DATA_DIR`` is
pointed there, so the real feature cache is untouched).

Each stage runs in a fresh process (so its peak resident memory is its
own), calling the library functions ``build_index`` calls, in its order:

* ``feature pass``: read the caption file, hash every image file once
  (no image in the store needs decoding), merge duplicates, open the stored
  features as rows (``visem.search.features``);
* ``pseudo captions``: ImageNet classes of the uncaptioned, untagged images,
  read from the store in blocks;
* ``training reads``: 200 training batches of 64 drawn from the stored rows
  (the samplers' access pattern; the model's step is not included);
* ``encode into the index``: a VSE++ (or A3VSE) model embeds every image
  from its stored features, block by block, into the float16 embeddings
  file, then the vector store is built over it (IVF above 50,000 images);
* ``whole array (before)``: what the build did before this change:
  ``FeatureStore.get`` of every image's features into one array.

Prints a table and one JSON object. ``peak RSS`` is the process's high-water
mark (VmHWM) minus its resident memory after the imports.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WORDS = ("red blue green yellow purple orange black white small large round square "
         "happy sad cat dog car tree house heart").split()


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_collection(work: Path, n: int, regions: bool, seed: int = 0) -> None:
    """``n`` PNG files, a caption file, and their features in the store (keys = the files' sha256)."""
    from PIL import Image

    from visem.features.cache import FeatureStore
    from visem.search.features import encoder

    rng = np.random.default_rng(seed)
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    enc = encoder(1.0)
    root = work / "data" / "features" / "store" / enc.encoder_id
    stores = {k: FeatureStore(root / k) for k in ("pooled", "grid")}
    captioned = rng.random(n) < (0.1 if regions else 1.0)
    chunk = 256
    with open(work / "captions.csv", "w") as fh:
        fh.write("image,caption\n")
        for s in range(0, n, chunk):
            keys = []
            for i in range(s, min(s + chunk, n)):
                px = np.frombuffer(i.to_bytes(4, "little") * 48, dtype=np.uint8).reshape(8, 8, 3)
                buf = io.BytesIO()
                Image.fromarray(px, "RGB").save(buf, format="PNG")
                name = f"{i // 1000:04d}/{i:07d}.png"
                (images / name).parent.mkdir(exist_ok=True)
                (images / name).write_bytes(buf.getvalue())
                keys.append(hashlib.sha256(buf.getvalue()).hexdigest())
                if captioned[i]:
                    fh.write(f"{name},{' '.join(rng.choice(WORDS, 4))}\n")
            m = len(keys)
            if regions:
                grid = rng.uniform(0, 6, (m, 49, 1280)).astype(np.float16)
                stores["grid"].put(keys, grid)
                stores["pooled"].put(keys, grid.astype(np.float32).mean(axis=1))
            else:
                stores["pooled"].put(keys, rng.uniform(0, 6, (m, 1280)).astype(np.float32))


def stage(work: Path, name: str, regions: bool) -> dict:
    """Run one stage in this process; its seconds and peak RSS over the post-import baseline."""
    import torch

    from visem.search.collection import finish_collection, pseudo_captions, read_rows
    from visem.search.features import feature_rows, scan_images

    torch.set_num_threads(1)
    base = _status("VmRSS")
    t0 = time.perf_counter()
    rows = read_rows(work / "images", work / "captions.csv")
    known = work / "keys.json"  # the feature pass's keys, so later stages do not hash every file again
    keys = json.loads(known.read_text()) if name != "feature pass" and known.is_file() else None
    scan = scan_images(rows.image_paths, regions=regions, crop=1.0, keys=keys)  # workers: from the machine
    col = finish_collection(rows, scan.keys, scan.errors)
    feats = feature_rows(col.hashes, regions, 1.0)
    if name == "feature pass":
        known.write_text(json.dumps(scan.keys))
    extra: dict = {"n_images": len(col.names), "n_captions": len(col.captions), "encoded": scan.encoded}
    if name == "feature pass":
        pass
    elif name == "whole array (before)":
        t0 = time.perf_counter()  # the pass above is common to both; this stage is the assembly only
        base = _status("VmHWM")
        from visem.features.image import _store
        from visem.search.features import encoder

        arr = _store(encoder(1.0), "grid" if regions else "pooled", None).get(col.hashes)
        extra["array_mb"] = round(arr.nbytes / 2**20)
    elif name == "pseudo captions":
        t0 = time.perf_counter()
        base = _status("VmHWM")
        pooled = feats if not regions else feature_rows(col.hashes, False, 1.0)
        _, note = pseudo_captions(col.tags, pooled)
        extra["pseudo"] = note
    elif name == "training reads":
        from visem.search.training import FeatureTable

        t0 = time.perf_counter()
        base = _status("VmHWM")
        table = FeatureTable(feats)
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            table[torch.randint(0, len(table), (64,), generator=g)]
        extra["batches_per_s"] = round(200 / (time.perf_counter() - t0), 1)
    elif name == "encode into the index":
        from visem.models import build_model
        from visem.search.embedding import embed_image_blocks
        from visem.search.folder import open_rows, write_embeddings
        from visem.search.vectors import StoreOptions, build_store

        t0 = time.perf_counter()
        base = _status("VmHWM")
        method = "a3vse" if regions else "vsepp"
        params = {"embed_dim": 256, **({"adversarial": False} if regions else {})}
        model = build_model(method, params, dims={"image_dim": 1280, "vocab_size": 100}).eval()
        out = work / "index"
        out.mkdir(exist_ok=True)
        write_embeddings(out / "embeddings.0.npy", embed_image_blocks(model, feats), len(feats), 256)
        t_embed = time.perf_counter() - t0
        _, report = build_store(StoreOptions(), out, "images", open_rows(out / "embeddings.0.npy"))
        extra.update(embed_s=round(t_embed, 1), kind=report["kind"], nlist=report["nlist"], nprobe=report["nprobe"])
    else:
        raise ValueError(name)
    seconds = time.perf_counter() - t0
    return {"stage": name, "seconds": round(seconds, 1), "peak_rss_mb": round(_status("VmHWM") - base), **extra}


def _data_dir_beside(data: Path) -> None:
    """A data dir whose entries are the real one's (class names, word vectors) but whose feature store is new."""
    from visem.data.paths import data_dir

    real = data_dir()
    data.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        if entry.name != "features" and not (data / entry.name).exists():
            (data / entry.name).symlink_to(entry)


STAGES = ("feature pass", "pseudo captions", "training reads", "encode into the index", "whole array (before)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--regions", action="store_true", help="7 x 7 grid features (A3VSE) instead of pooled")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the work folder (default: removed at the end)")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_build_"))
    if not args.stage:
        _data_dir_beside(work / "data")
    os.environ["VISEM_DATA_DIR"] = str(work / "data")
    if args.stage:
        print(json.dumps(stage(work, args.stage, args.regions)))
        return
    from _measure import machine

    print(f"command: python {' '.join(sys.argv)}", flush=True)
    start = machine()
    t = time.perf_counter()
    if not (work / "captions.csv").is_file():
        make_collection(work, args.n, args.regions)
    setup_s = time.perf_counter() - t
    results = []
    for name in STAGES:
        cmd = [sys.executable, __file__, "--workdir", str(work), "--stage", name] + (["--regions"] if args.regions else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if out.returncode:
            raise SystemExit(f"stage {name!r} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['stage']:<24} {r['seconds']:>8.1f} s  peak RSS +{r['peak_rss_mb']:>6} MB  "
              + json.dumps({k: v for k, v in r.items() if k not in ('stage', 'seconds', 'peak_rss_mb')}), flush=True)
    end = machine()
    result = {"command": "python " + " ".join(sys.argv), "n": args.n, "regions": args.regions,
              "setup_s": round(setup_s, 1), "stages": results, "machine": start,
              "load_average_at_end": end["load_average"]}
    print(json.dumps(result))
    if not args.keep and not args.workdir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
