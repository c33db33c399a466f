"""The ``visem`` command line: parses, calls the library, prints.

Each module in :data:`COMMAND_MODULES` exposes ``add_parser(subparsers)``
registering its commands with ``set_defaults(func=handler)``; a handler
takes the parsed arguments and returns an exit code. Errors the user can fix
(bad config, bad data, a missing file) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from visem import __version__

COMMAND_MODULES = ("visem.cli.core", "visem.cli.data", "visem.cli.search")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visem",
        description="Joint visual-semantic embeddings when paired annotations are scarce.",
    )
    parser.add_argument("--version", action="version", version=f"visem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


# what a command's options pass on to the processes and experiments it starts (see
# cli.core.apply_device_options); restored when the command returns, so that ``main``
# called in-process leaves nothing behind for the next call
_COMMAND_ENV = ("VISEM_DEVICE", "VISEM_PRECISION")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    quiet = _join_torchrun()
    saved_env = {k: os.environ.get(k) for k in _COMMAND_ENV}
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        # ConfigError, DataError, CheckpointError are ValueErrors; NonFiniteError a FloatingPointError
        print(f"visem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if quiet is not None:
            sys.stdout = quiet
        for k, v in saved_env.items():  # a command's --device / --precision end with it
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _join_torchrun():
    """Under ``torchrun``: join the process group; ranks other than 0 print nothing to stdout.

    Returns the stdout to restore (``None`` when nothing was changed).
    Errors still reach stderr from every rank.
    """
    from visem.train.distributed import init_from_env, is_main, launched_by_torchrun

    if not launched_by_torchrun():
        return None
    init_from_env()
    if is_main():
        return None
    import os

    saved, sys.stdout = sys.stdout, open(os.devnull, "w")
    return saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
