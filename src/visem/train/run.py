"""A run from a config: resolve, save the resolved config, train, evaluate.

Config layout (YAML)::

    model: {name: linear-vse, embed_dim: 64}   # registered name + its config
    data:  {name: synthetic, n_classes: 10}    # data task + its kwargs
    train: {steps: 500, batch_size: 64}        # visem.train.TrainConfig

CLI overrides (``train.steps=10``) are merged on top; unknown keys anywhere
are errors. The resolved config, with every default and every size read off
the data filled in, is saved as ``RUN_DIR/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from visem.config import ConfigError, dump_yaml, from_dict, load_yaml, merge, to_dict
from visem.io import atomic_write_json
from visem.models import build_model, resolve_config
from visem.models.base import EmbeddingModel
from visem.train.checkpoint import load_weights
from visem.train.sampler import BatchSampler
from visem.data.tasks import TaskData, build_task
from visem.train.trainer import TrainConfig, Trainer


@dataclass
class RunConfig:
    model: dict[str, Any]
    data: dict[str, Any]
    train: TrainConfig = field(default_factory=TrainConfig)


def load_run_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    raw = load_yaml(path) if path is not None else {}
    raw = merge(raw, overrides or {})
    cfg = from_dict(RunConfig, raw)
    for section in ("model", "data"):
        if "name" not in getattr(cfg, section):
            raise ConfigError(f"{section}.name is required")
    return cfg


def prepare(cfg: RunConfig) -> tuple[RunConfig, TaskData, EmbeddingModel]:
    """Build the data and the model; returns the config with every value resolved."""
    task = build_task(cfg.data)
    name = cfg.model["name"]
    model_cfg = resolve_config(name, cfg.model, task.dims)
    resolved = RunConfig(model={"name": name, **to_dict(model_cfg)}, data=dict(cfg.data), train=cfg.train)
    return resolved, task, build_model(name, model_cfg)


def train_run(cfg: RunConfig, run_dir: str | Path) -> dict[str, float]:
    """Train (resuming if ``run_dir`` holds a checkpoint), evaluate, write ``eval.json``."""
    run_dir = Path(run_dir)
    resolved, task, model = prepare(cfg)
    saved = run_dir / "config.yaml"
    if saved.exists() and load_yaml(saved) != to_dict(resolved):
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({saved}); use a new --out or delete it"
        )
    dump_yaml(to_dict(resolved), saved)
    sampler = BatchSampler(task.train, resolved.train.batch_size, seed=resolved.train.seed)
    Trainer(model, sampler, resolved.train, run_dir, static=task.static).fit()
    metrics = model.evaluate({**task.test, **task.static})
    atomic_write_json(run_dir / "eval.json", metrics)
    return metrics


def eval_run(run_dir: str | Path) -> dict[str, float]:
    """Evaluate the final weights of a finished run on its task's held-out data."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory: {cfg_path} is missing")
    cfg = load_run_config(cfg_path)
    _, task, model = prepare(cfg)
    load_weights(run_dir / "model.safetensors", model)
    metrics = model.evaluate({**task.test, **task.static})
    atomic_write_json(run_dir / "eval.json", metrics)
    return metrics
