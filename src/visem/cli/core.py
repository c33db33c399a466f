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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a finished run on its held-out data")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("reproduce", help="run a paper reproduction and print its table")
    p.add_argument("experiment")
    p.add_argument("--out", default=None, help="output directory (default runs/EXPERIMENT)")
    p.add_argument("--quick", action="store_true", help="a short version (what the tests run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("demo", help="the main job of `make demo`")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)


def cmd_list(args: argparse.Namespace) -> int:
    from visem.experiments import list_experiments
    from visem.models import list_models

    print("models:")
    for spec in list_models():
        print(f"  {spec.name:<18} {spec.family:<10} {spec.description}")
    print("experiments:")
    for exp in list_experiments():
        print(f"  {exp.name:<24} {exp.description}")
    return 0


SYNTHETIC = {
    "model": {"name": "linear-vse", "embed_dim": 32},
    "data": {"name": "synthetic", "n_classes": 20, "per_class": 30},
    "train": {"steps": 300, "batch_size": 64, "lr": 0.01},
}


def cmd_train(args: argparse.Namespace) -> int:
    from visem.config import merge
    from visem.train.run import load_run_config, train_run

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
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from visem.experiments import format_table, reproduce

    out = Path(args.out or Path("runs") / args.experiment)
    results = reproduce(args.experiment, out, quick=args.quick, seed=args.seed, progress=args.progress)
    print(format_table(results))
    print(f"\nresults written to {out / 'results.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from visem.experiments import format_table, reproduce

    print("visem demo: the linear VSE baseline on synthetic image/text pairs, end to end")
    results = reproduce("synthetic-retrieval", args.out, progress=True)
    print(format_table(results))
    print(f"\nresults written to {Path(args.out) / 'results.json'}")
    return 0
