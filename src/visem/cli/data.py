"""``visem data info|fetch|list`` and ``visem features``: thin wrappers over visem.data and visem.features."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    from visem.data import info

    kwargs = {}
    if getattr(args, "images", None):
        kwargs["images"] = args.images
    print(info(args.name, path=args.path, split=args.split, **kwargs).format())
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from visem.data import data_dir, fetch

    print(f"data dir: {data_dir()}")
    results = fetch(args.sources or None, force=args.force)
    for r in results:
        print(f"{r}  ({r.seconds:.1f}s)")
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    from visem.data import BUILTIN, FORMATS, data_dir
    from visem.data.fetcher import FETCH_SOURCES

    print(f"built-in data sets (visem data info NAME): {', '.join(BUILTIN)}")
    print(f"benchmark formats (visem data info FORMAT --path P): {', '.join(FORMATS)}")
    print(f"sources fetched by `visem data fetch`: {', '.join(FETCH_SOURCES)}")
    print(f"data dir: {data_dir()}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from visem import distributed
    from visem.features import compute_features

    # under torchrun (the process group is opened by visem.cli.main) each rank encodes its share, rank 0 writes
    res = compute_features(
        args.name,
        args.kind,
        split=args.split,
        style=args.style,
        limit=args.limit,
        image_size=args.image_size,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        force=args.force,
        out=args.out,
        workers=args.workers,
    )
    if not distributed.is_main():
        return 0
    a = res.array
    print(f"{args.name} {args.kind}: {a.dtype} {tuple(a.shape)} ({'cached' if res.cached else 'computed'})")
    print(f"cache: {res.path}")
    if args.out:
        print(f"written: {args.out} (+ .json sidecar)")
    oov = res.meta.get("oov_words")
    if oov:
        print(f"out-of-vocabulary words ({len(oov)}): {', '.join(oov[:20])}{' ...' if len(oov) > 20 else ''}")
    if res.meta.get("all_oov_rows"):
        print(f"rows with no known word (zero vectors): {len(res.meta['all_oov_rows'])}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``data`` (info, fetch, list) and ``features``."""
    from visem.features import FEATURE_DATASETS, FEATURE_KINDS

    data = subparsers.add_parser("data", help="built-in data sets and benchmark files", description="Fetch and inspect data.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("info", help="counts, shapes, classes and provenance of a data set")
    p.add_argument("name", help="mnist, fashion-mnist, emoji, emoji-sketch, or a format: xian, vsepp, crossmodal, captions")
    p.add_argument("--path", help="folder or file for a benchmark format")
    p.add_argument("--split", help="split to describe (format readers)")
    p.add_argument("--images", help="image folder (captions format)")
    p.set_defaults(func=_info)

    p = dsub.add_parser("fetch", help="fetch, convert and check every built-in source (idempotent)")
    p.add_argument("sources", nargs="*", help="only these sources (default: all)")
    p.add_argument("--force", action="store_true", help="redo even what is already in place")
    p.set_defaults(func=_fetch)

    p = dsub.add_parser("list", help="data set names and the data dir")
    p.set_defaults(func=_list)

    f = subparsers.add_parser(
        "features",
        help="encode a built-in data set (EfficientNet-Lite0, pixels, GloVe, MiniLM) into a cached array",
        description="Compute (or reuse cached) features of a built-in data set; prints the cache path.",
    )
    f.add_argument("name", choices=FEATURE_DATASETS)
    f.add_argument("--kind", required=True, choices=FEATURE_KINDS)
    f.add_argument("--style", help="emoji style: google or twitter (default both)")
    f.add_argument("--split", help="mnist / fashion-mnist split: train (default) or test")
    f.add_argument("--out", help="also write the array here (.npy) with a .json sidecar")
    f.add_argument("--limit", type=int, help="only the first N rows")
    f.add_argument("--image-size", type=int, default=224, help="EfficientNet input size (224 gives the 7x7 grid)")
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--workers", type=int, default=None,
                   help="image-decoding worker processes (default: from the machine; 0 decodes in this process)")
    f.add_argument("--force", action="store_true", help="recompute even if cached")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=_features)
