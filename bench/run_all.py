"""Run the benchmarks of this folder and write bench/RESULTS.md (what ``make bench`` does).

    python bench/run_all.py [--full] [--out bench/RESULTS.md] [--images 5000] [--queries 3000] ...

One table, ``task | visem | peer or floor | ratio | peak RSS | command``:
visem and its peer run in the same process, interleaved, on the same data,
with one thread (torch and faiss); times are CPU seconds of this process
and the ratio is visem / peer. Ratios, not absolute times, are the claims:
on a machine shared with other work the absolute times move with the load
(the load average at the start and end is written down), the ratios far
less. The defaults take a few minutes on 2 cores; ``--full`` runs the
issue's sizes (30,000 MAP queries, the VSE++ procedure at COCO-5K), about
an hour there.

``bench_server.py`` (throughput under concurrent load, no peer) is not part
of the table: run it on its own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from _measure import Row, machine  # noqa: E402

import bench_ann  # noqa: E402
import bench_features  # noqa: E402
import bench_metrics  # noqa: E402
import bench_pse  # noqa: E402
import bench_train  # noqa: E402


def fmt_seconds(row: Row, value: float | None) -> str:
    if value is None:
        return "-"
    unit = "ms" if row.task.endswith(", ms") else "s"
    return f"{value:.3f} {unit}" if value < 10 else f"{value:.1f} {unit}"


def table(rows: list[Row]) -> str:
    lines = ["| task | visem | peer or floor | ratio | peak RSS | command |", "|---|---|---|---|---|---|"]
    for r in rows:
        task = r.task.removesuffix(", ms") + (f" ({r.note})" if r.note else "")
        peer = r.peer if r.peer_s is None else f"{r.peer}: {fmt_seconds(r, r.peer_s)}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {task} | {fmt_seconds(r, r.visem_s)} | {peer} | {ratio} | +{r.peak_rss_mb:.0f} MB | `{r.command}` |")
    return "\n".join(lines)


def main() -> None:
    # the metric sizes are bench_metrics' own options
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[bench_metrics.parser(add_help=False)])
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    p.add_argument("--full", action="store_true", help="the issue's sizes (about an hour on 2 cores)")
    p.add_argument("--ann-size", type=int, default=100_000)
    p.add_argument("--ann-dim", type=int, default=256)
    p.add_argument("--ann-queries", type=int, default=1000)
    p.add_argument("--pse-steps", type=int, default=200)
    p.add_argument("--pse-batch", type=int, default=100)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--feature-images", type=int, default=128)
    args = p.parse_args()
    if args.full:
        args.queries, args.vsepp_images = 30000, 5000
    torch.set_num_threads(1)
    start_machine, started, t0 = machine(), datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    print(f"command: python {' '.join(sys.argv)}")
    print("machine: " + json.dumps(start_machine), flush=True)

    metrics_cmd = (f"python bench/bench_metrics.py --images {args.images} --dim {args.dim} --vsepp-images "
                   f"{args.vsepp_images} --queries {args.queries} --gallery {args.gallery} --label-dim "
                   f"{args.label_dim} --sklearn-queries {args.sklearn_queries} --reps {args.reps}")
    rows = bench_metrics.rows(args, metrics_cmd)
    ann_cmd = (f"python bench/bench_ann.py --peers --sizes {args.ann_size} --dim {args.ann_dim} "
               f"--queries {args.ann_queries}")
    rows += bench_ann.peer_rows(args.ann_size, args.ann_dim, args.ann_queries, ann_cmd)
    rows += bench_pse.rows(args.pse_steps, args.pse_batch, f"python bench/bench_pse.py --steps {args.pse_steps} "
                           f"--batch {args.pse_batch}")
    train_cmd = f"python bench/bench_train.py --steps {args.train_steps} --threads 1,2"
    rows += bench_train.rows(list(bench_train.SIZES), args.train_steps, [1, 2], train_cmd)
    feat_cmd = f"python bench/bench_features.py --images {args.feature_images} --batches 8,16,32,64 --threads 1,2"
    rows += bench_features.rows(args.feature_images, [8, 16, 32, 64], [1, 2], 2, feat_cmd)
    end_machine = machine()
    minutes = (time.perf_counter() - t0) / 60
    m = start_machine
    text = f"""# visem benchmarks

Written by `make bench` (`python {' '.join(['bench/run_all.py', *sys.argv[1:]])}`), {started:%Y-%m-%d %H:%M} UTC,
{minutes:.1f} minutes wall.

Machine: {m['cores']} cores, {m['cpu']}; load average (1, 5, 15 min) {', '.join(map(str, m['load_average']))}
at the start and {', '.join(map(str, end_machine['load_average']))} at the end; Python {m['python']},
torch {m['torch']}, numpy {m['numpy']}; one thread for torch and faiss.

visem and its peer (or floor) run in the same process, interleaved, on the same data. Times are CPU
seconds of the process (user + system; ms per step for training); **the ratio (visem / peer) is the
claim**, the absolute times move with the machine's load. Peak RSS is the resident memory added during
visem's call. Data and peers are described in each script's docstring.

{table(rows)}
"""
    Path(args.out).write_text(text)
    print(f"wrote {args.out} ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
