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

**Budgets and options** (``visem reproduce NAME --set KEY=VALUE``). An
experiment that accepts ``overrides`` (a nested dict, e.g.
``{"train": {"steps": 20000}}``) resolves its built-in settings with
:func:`settings`: every key must exist in the defaults, so a typo is an error
naming it. The settings actually used go into ``config`` of
``results.json``, and :func:`reproduce` records ``config.quick`` and
``config.overrides`` for every experiment. ``--quick`` tables print a banner:
their numbers mean nothing.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from visem.config import ConfigError, merge
from visem.io import atomic_write_json

# Modules whose import registers experiments.
EXPERIMENT_MODULES = ("visem.experiments.synthetic", "visem.experiments.zsl", "visem.experiments.zscmr", "visem.experiments.cross_style", "visem.experiments.sparse", "visem.experiments.pse", "visem.experiments.benchmarks")

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


QUICK_BANNER = "QUICK RUN: a few steps on a subset of the data; it exercises the code, its numbers mean nothing"


def _leaf_keys(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _leaf_keys(v, key + ".") if isinstance(v, Mapping) and v else [key]
    return out


def settings(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, experiment: str) -> dict[str, Any]:
    """``defaults`` with ``overrides`` merged in (``--set`` of ``visem reproduce``).

    Every overridden key must exist in ``defaults`` at its depth; an unknown
    one is a :class:`~visem.config.ConfigError` naming it and the known keys.
    A mapping in ``defaults`` may only be overridden key by key.
    """

    def check(d: Mapping[str, Any], o: Mapping[str, Any], prefix: str) -> None:
        for k, v in o.items():
            key = f"{prefix}{k}"
            if k not in d:
                raise ConfigError(f"experiment {experiment!r} has no setting {key!r}; "
                                  f"known: {', '.join(_leaf_keys(defaults))}")
            if isinstance(d[k], Mapping) and d[k]:
                if not isinstance(v, Mapping):
                    raise ConfigError(f"experiment {experiment!r}: {key!r} is a group of settings "
                                      f"({', '.join(_leaf_keys(d[k], key + '.'))}); set them one by one")
                check(d[k], v, key + ".")

    check(defaults, overrides or {}, "")
    return merge(defaults, overrides or {})


def reproduce(name: str, out_dir: str | Path, quick: bool = False, data: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Run experiment ``name``, write ``out_dir/results.json`` and return the results.

    ``data``: the path an experiment registered with ``data=`` runs on
    (``visem reproduce NAME --data PATH``); see :func:`check_data`.
    ``overrides``: nested ``--set`` values for the experiment's settings (an
    experiment that takes none refuses them); see :func:`settings`.
    """
    exp = get_experiment(name)
    path = check_data(exp, data)
    if path is not None:
        options["data"] = path
    if overrides:
        if "overrides" not in inspect.signature(exp.run).parameters:
            raise ConfigError(f"experiment {name!r} takes no --set (its settings are fixed)")
        options["overrides"] = dict(overrides)
    from visem.distributed import is_main, world_size

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = exp.run(out_dir, quick, **options)
    validate_results(results, name)
    results["config"] = {**results["config"], "quick": bool(quick), "overrides": dict(overrides or {})}
    if world_size() > 1:
        results["config"]["world_size"] = world_size()
    if is_main():
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


def _grid(header: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    return out + ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]


def format_table(results: dict[str, Any]) -> str:
    """Plain-text table: one line per row, ``ours (paper)`` where the paper has the cell.

    A metric with a ``KEY_std`` beside it prints as ``mean ± std``; ``n_runs``
    (the seeds or splits behind each row) is a column. Paper rows that match
    no row of ours (another data set) follow in a table of their own.
    """
    rows, paper = results["rows"], results.get("paper", [])
    paper_by_id = {_row_id(r): r for r in paper}
    ids = [k for k in ID_KEYS if any(k in r for r in rows)]
    metrics: list[str] = []
    for r in rows:
        for k in r:
            if k not in ID_KEYS and k not in metrics and not (k.endswith("_std") and k[:-4] in r):
                metrics.append(k)
    lines = []
    for r in rows:
        ref = paper_by_id.get(_row_id(r), {})
        cells = [_fmt(r.get(k)) for k in ids]
        for k in metrics:
            cell = _fmt(r.get(k))
            if r.get(f"{k}_std") is not None and r.get(k) is not None:
                cell += f" ± {_fmt(r[f'{k}_std'])}"
            if k in ref and ref[k] is not None:
                cell += f" ({_fmt(ref[k])})"
            cells.append(cell)
        lines.append(cells)
    unmatched = [r for r in paper if _row_id(r) not in {_row_id(x) for x in rows}]
    cfg = results.get("config", {})
    out = [QUICK_BANNER] if cfg.get("quick") else []
    out.append(f"{results['experiment']}" + ("   (paper values in parentheses)" if paper else ""))
    out += _grid(ids + metrics, lines)
    if unmatched:
        p_ids = [k for k in ID_KEYS if any(k in r for r in unmatched)]
        p_metrics = list(dict.fromkeys(k for r in unmatched for k in r if k not in ID_KEYS))
        out.append("")
        out.append("paper rows without a visem counterpart (other data):")
        out += _grid(p_ids + p_metrics, [[_fmt(r.get(k)) for k in p_ids + p_metrics] for r in unmatched])
    used = cfg.get("settings")
    if used:
        out.append("settings (raise any with --set KEY=VALUE): " + ", ".join(
            f"{k}={_fmt(v)}" for k, v in _flat(used).items()))
    if cfg.get("quick"):
        out.append(QUICK_BANNER)
    return "\n".join(out)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
