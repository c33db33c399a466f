"""Paper reproductions: registered experiments run by ``visem reproduce NAME``.

An experiment is a function ``run(out_dir, quick, **options) -> results`` that
returns::

    {"experiment": NAME, "config": {...}, "rows": [ROW, ...], "paper": [ROW, ...]}

where a ROW is ``{"model": ..., "setting": ..., METRIC: value, ...}`` with the
metric names of :mod:`visem.metrics`, and ``paper`` holds the paper's table
values in the same shape (an empty list where the paper has no such table).
:func:`reproduce` checks that shape, writes ``out_dir/results.json``
atomically, and :func:`format_table` renders ours beside the paper's.

**Data on disk** (``visem reproduce NAME --data PATH``). An experiment that runs
on the user's copy of a paper's data set is registered with ``data="required"``
(or ``"optional"``) and ``data_layout=`` (one line saying what ``PATH`` must
be); it then receives ``data=Path(PATH)`` as a keyword. :func:`reproduce`
refuses a missing ``data`` for a ``"required"`` experiment and any ``data``
for an experiment registered without it (``data=None``, the default), with a
message that names ``--data`` and the expected layout.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from visem.config import ConfigError
from visem.io import atomic_write_json

# Modules whose import registers experiments.
EXPERIMENT_MODULES = ("visem.experiments.synthetic", "visem.experiments.zeroshot", "visem.experiments.retrieval", "visem.experiments.pse", "visem.experiments.benchmarks")

# Keys that name a row rather than measure it.
ID_KEYS = ("model", "setting", "latent_dim", "features", "dataset")


DATA_MODES = (None, "required", "optional")


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction.

    ``data``: ``None`` (built-in data only), ``"required"`` or ``"optional"``
    (takes ``--data PATH``); ``data_layout``: what ``PATH`` must be.
    """

    name: str
    run: Callable[..., dict[str, Any]]
    description: str
    paper: str
    data: str | None = None
    data_layout: str = ""


_EXPERIMENTS: dict[str, Experiment] = {}
_LOADED = False


def register_experiment(name: str, *, description: str, paper: str = "", data: str | None = None,
                        data_layout: str = "") -> Callable:
    """Register ``run(out_dir, quick, **options)`` as experiment ``name``.

    With ``data="required"`` / ``"optional"`` the experiment takes a path
    (``visem reproduce NAME --data PATH``), passed to ``run`` as ``data=Path``;
    ``data_layout`` (required then) says what the path must hold.
    """
    if data not in DATA_MODES:
        raise ValueError(f"experiment {name!r}: data must be one of None, 'required', 'optional'; got {data!r}")
    if data is not None and not data_layout:
        raise ValueError(f"experiment {name!r}: an experiment that takes --data needs data_layout=")

    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        _EXPERIMENTS[name] = Experiment(name, fn, description, paper, data, data_layout)
        return fn

    return deco


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for mod in EXPERIMENT_MODULES:
            importlib.import_module(mod)


def list_experiments() -> list[Experiment]:
    _load_all()
    return [e for _, e in sorted(_EXPERIMENTS.items())]


def get_experiment(name: str) -> Experiment:
    _load_all()
    if name not in _EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(_EXPERIMENTS))}")
    return _EXPERIMENTS[name]


def validate_results(results: dict[str, Any], name: str) -> None:
    for key in ("experiment", "config", "rows", "paper"):
        if key not in results:
            raise ValueError(f"experiment {name!r} returned results without {key!r}")
    for section in ("rows", "paper"):
        for i, row in enumerate(results[section]):
            if "model" not in row:
                raise ValueError(f"experiment {name!r}: {section}[{i}] has no 'model'")


def check_data(exp: Experiment, data: str | Path | None) -> Path | None:
    """``data`` as a Path, checked against what ``exp`` takes (ConfigError / DataError otherwise)."""
    from visem.data.paths import DataError

    if data is None:
        if exp.data == "required":
            raise ConfigError(f"experiment {exp.name!r} needs --data PATH: {exp.data_layout}")
        return None
    if exp.data is None:
        raise ConfigError(f"experiment {exp.name!r} takes no --data (it runs on built-in data); got --data {data}")
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"{path}: not found (--data of {exp.name} expects {exp.data_layout})")
    return path


def reproduce(name: str, out_dir: str | Path, quick: bool = False, data: str | Path | None = None,
              **options: Any) -> dict[str, Any]:
    """Run experiment ``name``, write ``out_dir/results.json`` and return the results.

    ``data``: the path an experiment registered with ``data=`` runs on
    (``visem reproduce NAME --data PATH``); see :func:`check_data`.
    """
    exp = get_experiment(name)
    path = check_data(exp, data)
    if path is not None:
        options["data"] = path
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = exp.run(out_dir, quick, **options)
    validate_results(results, name)
    atomic_write_json(out_dir / "results.json", results)
    return results


def _row_id(row: dict[str, Any]) -> tuple:
    return tuple((k, row[k]) for k in ID_KEYS if k in row)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def format_table(results: dict[str, Any]) -> str:
    """Plain-text table: one line per row, ``ours (paper)`` where the paper has the cell."""
    rows, paper = results["rows"], results.get("paper", [])
    paper_by_id = {_row_id(r): r for r in paper}
    ids = [k for k in ID_KEYS if any(k in r for r in rows)]
    metrics: list[str] = []
    for r in rows:
        for k in r:
            if k not in ID_KEYS and k not in metrics:
                metrics.append(k)
    header = ids + metrics
    lines = []
    for r in rows:
        ref = paper_by_id.get(_row_id(r), {})
        cells = [_fmt(r.get(k)) for k in ids]
        for k in metrics:
            cell = _fmt(r.get(k))
            if k in ref and ref[k] is not None:
                cell += f" ({_fmt(ref[k])})"
            cells.append(cell)
        lines.append(cells)
    unmatched = [r for r in paper if _row_id(r) not in {_row_id(x) for x in rows}]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [f"{results['experiment']}" + ("   (paper values in parentheses)" if paper else "")]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    if unmatched:
        out.append("paper rows without a visem counterpart: " + "; ".join(
            ", ".join(f"{k}={_fmt(v)}" for k, v in r.items()) for r in unmatched))
    return "\n".join(out)
