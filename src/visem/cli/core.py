"""Core commands: list, train, eval, reproduce, demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visem.config import parse_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="models and experiments visem knows")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a model from a YAML config (resumes a killed run)")
    p.add_argument("config", nargs="?", help="YAML config; omit with --synthetic")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--synthetic", action="store_true", help="synthetic data and the linear VSE baseline, no files")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=100 (repeatable)")
    add_threads_option(p)
    add_device_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a finished run on its held-out data")
    p.add_argument("run_dir")
    p.add_argument("--plot", action="store_true",
                   help="also write R@K-vs-K curves (retrieval runs) or precision-recall curves (MAP runs) "
                        "to RUN_DIR/curves.png")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("reproduce", help="run a paper reproduction and print its table")
    p.add_argument("experiment")
    p.add_argument("--out", default=None, help="output directory (default runs/EXPERIMENT)")
    p.add_argument("--quick", action="store_true", help="a short version (what the tests run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="your copy of the paper's data set, for the experiments that take one "
                        "(`visem list` marks them and says what PATH must be)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the experiment, e.g. --set train.steps=20000 (repeatable; "
                        "unknown keys are errors that list the known ones)")
    add_threads_option(p)
    add_device_options(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("demo", help="the main job of `make demo`: an emoji search index from 20%% of the captions")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: from the data size)")
    p.add_argument("--method", default=None, help="a retrieval model instead of the automatic choice")
    add_threads_option(p, default=None)
    p.set_defaults(func=cmd_demo)


def add_threads_option(p: argparse.ArgumentParser, default: int | None = 1) -> None:
    """``--threads N``: 1 by default where training small models dominates, torch's own where a CNN does."""
    if default == 1:
        why = ("default 1: on a 2-core machine a small model's step costs 10-20x more CPU on two threads "
               "than on one, bench/bench_train.py; experiments that train several runs use one process per "
               "core, one thread each")
    else:
        why = "default: torch's, one per core, for the image encoder's convolutions"
    p.add_argument("--threads", type=int, default=default, metavar="N", help=f"CPU threads for torch ({why})")


def add_device_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``: where every model of the command trains (``train.device`` /
    ``train.precision`` left at ``auto`` take them; the worker processes of an experiment inherit them)."""
    from visem.runtime import DEVICE_HELP

    p.add_argument("--device", default=None, metavar="DEV", help=f"{DEVICE_HELP}; default auto")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"),
                   help="training precision: autocast to bf16 or fp16 (with a gradient scaler); default fp32")


def apply_device_options(args: argparse.Namespace) -> None:
    """Check ``--device`` / ``--precision`` now (a clear error before any work) and pass them on."""
    import os

    from visem.runtime import resolve_device, resolve_precision

    if getattr(args, "device", None):
        resolve_device(args.device)
        os.environ["VISEM_DEVICE"] = args.device
    if getattr(args, "precision", None):
        os.environ["VISEM_PRECISION"] = resolve_precision(args.precision)


def cmd_list(args: argparse.Namespace) -> int:
    from visem.experiments import list_experiments
    from visem.models import list_models

    print("models:")
    for spec in list_models():
        print(f"  {spec.name:<18} {spec.family:<10} {spec.description}")
    print("experiments:")
    for exp in list_experiments():
        print(f"  {exp.name:<24} {exp.description}")
        if exp.data is not None:
            print(f"  {'':<24} --data PATH ({exp.data}): {exp.data_layout}")
    return 0


SYNTHETIC = {
    "model": {"name": "linear-vse", "embed_dim": 32},
    "data": {"name": "synthetic", "n_classes": 20, "per_class": 30},
    "train": {"steps": 300, "batch_size": 64, "lr": 0.01},
}


def cmd_train(args: argparse.Namespace) -> int:
    from visem.config import merge
    from visem.runtime import set_threads
    from visem.train.run import load_run_config, train_run

    set_threads(args.threads)
    apply_device_options(args)
    overrides = parse_overrides(args.overrides)
    if args.synthetic:
        if args.config:
            raise ValueError("give either a CONFIG file or --synthetic, not both")
        overrides = merge(SYNTHETIC, overrides)
    elif not args.config:
        raise ValueError("a CONFIG file is required (or --synthetic)")
    cfg = load_run_config(args.config, overrides)
    metrics = train_run(cfg, args.out)
    print(json.dumps(metrics, indent=2))
    print(f"run written to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from visem.train.run import eval_run

    print(json.dumps(eval_run(args.run_dir), indent=2))
    if args.plot:
        from visem.train.curves import plot_run_curves

        out = plot_run_curves(args.run_dir)
        print(f"curves written to {out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from visem.experiments import QUICK_BANNER, format_table, reproduce
    from visem.runtime import set_threads

    set_threads(args.threads)
    apply_device_options(args)
    if args.quick:
        print(QUICK_BANNER)
    if args.out:
        out = Path(args.out)
    elif args.data:  # one folder per data set, so runs on AwA2 and CUB do not overwrite each other
        out = Path("runs") / args.experiment / (Path(args.data).name or "data")
    else:
        out = Path("runs") / args.experiment
    results = reproduce(args.experiment, out, quick=args.quick, data=args.data, seed=args.seed,
                        progress=args.progress, overrides=parse_overrides(args.overrides))
    print(format_table(results))
    print(f"\nresults written to {out / 'results.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from visem.runtime import set_threads
    from visem.search.demo import run_demo

    set_threads(args.threads)
    print("visem demo: a search index over Google-style emoji, 20% of them captioned, the rest tagged")
    res = run_demo(args.out, steps=args.steps, method=args.method)
    col, rep = res["collection"], res["report"]
    print(f"\n{col['n_images']} images in {col['images']}: {col['n_captioned']} captioned ({col['n_captions']} "
          f"captions); {col['n_heldout']} held out in {col['heldout']}")
    from visem.cli.search import print_heldout
    from visem.search.lexical import fusion_label

    c = rep["choice"]
    print(f"method: {rep['method']} ({rep['reason']}); {rep['steps']} steps, built in {rep['seconds']:.0f} s")
    print(f"chose: {c['text_encoder']} text tower, fusion {fusion_label(c['fusion'])} ({c['how']}: {c['why']})")
    for q, hits in res["searches"].items():
        if isinstance(hits, str):  # the index could not answer it (a message)
            print(f"  {q!r}: {hits}")
            continue
        shown = ", ".join(f"{h['name']} {h['score']:.2f}" + (f" ({h['caption']})" if h["caption"] else "") for h in hits)
        print(f"  {q!r}: {shown}")
    print(f"added the held-out folder with its tags: index now {res['added']['n_images']} images")
    h = res["heldout"]
    print(f"\nheld-out ({h['n_images']} images never seen in training, {h['n_captions']} captions):")
    print_heldout(h, indent="  ")
    print(f"\nsearch it:  visem search {res['index']} \"red heart\"")
    print(f"web page:   visem serve {res['index']}   then open http://127.0.0.1:8000/")
    return 0
