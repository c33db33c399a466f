"""Speed and peak memory of the chunked retrieval metrics.

    python bench/bench_metrics.py [--images 5000] [--captions-per-image 5] [--dim 1024]

Prints the machine, the command and, per metric, wall time and the peak
resident memory added during the call (tracemalloc does not see torch's
allocations, so RSS is read from /proc). The chunked code never holds more
than one ``chunk_size``-square block of the score matrix.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np
from _measure import measure
import torch

from visem.metrics import mean_average_precision, precision_at_k, retrieval_recall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--classes", type=int, default=50)
    args = p.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    g = torch.Generator().manual_seed(0)
    n, c = args.images, args.images * args.captions_per_image
    img = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img.repeat_interleave(args.captions_per_image, 0)
                                        + 0.8 * torch.randn(c, args.dim, generator=g), dim=1)
    txt_to_img = torch.arange(n).repeat_interleave(args.captions_per_image)
    full_mb = n * c * 8 / 2**20
    print(f"retrieval_recall {n} images x {c} captions, d={args.dim} "
          f"(the full float64 score matrix would be {full_mb:.0f} MB)")
    out, sec, mem = measure(lambda: retrieval_recall(img, txt, txt_to_img, chunk_size=args.chunk_size))
    print(f"  {sec:.2f} s, peak RSS +{mem:.0f} MB, rsum={out['rsum']:.1f}")
    labels = np.repeat(np.arange(args.classes), -(-n // args.classes))[:n]
    q = min(n, 2048)
    out, sec, mem = measure(lambda: mean_average_precision(img[:q], img, labels[:q], labels))
    print(f"mean_average_precision {q} queries x {n} gallery: {sec:.2f} s, peak RSS +{mem:.0f} MB, MAP={out:.4f}")
    out, sec, mem = measure(lambda: precision_at_k(img[:q], img, labels[:q], labels, k=100))
    print(f"precision_at_k@100 {q} queries x {n} gallery: {sec:.2f} s, peak RSS +{mem:.0f} MB, P@100={out:.4f}")


if __name__ == "__main__":
    main()
