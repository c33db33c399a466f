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
from visem.train import distributed as dist
from visem.train.checkpoint import load_weights
from visem.train.sampler import BatchSampler
from visem.data.tasks import TaskData, build_task
from visem.train.trainer import TrainConfig, Trainer, seed_everything


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
    """Build the data and the model; returns the config with every value resolved.

    The model is built right after seeding with ``train.seed``, so two runs of
    one config start from the same weights (and so does every process of a
    data-parallel run).
    """
    task = build_task(cfg.data)
    name = cfg.model["name"]
    model_cfg = resolve_config(name, cfg.model, task.dims)
    resolved = RunConfig(model={"name": name, **to_dict(model_cfg)}, data=dict(cfg.data), train=cfg.train)
    seed_everything(cfg.train.seed)
    return resolved, task, build_model(name, model_cfg)


def train_run(cfg: RunConfig, run_dir: str | Path) -> dict[str, float]:
    """Train (resuming if ``run_dir`` holds a checkpoint), evaluate, write ``eval.json``.

    Under ``torchrun`` every process runs this; rank 0 checks and writes the
    run directory, the others follow its verdict.
    """
    run_dir = Path(run_dir)
    dist.init_from_env()
    resolved, task, model = prepare(cfg)
    saved = run_dir / "config.yaml"
    problem = None
    if dist.is_main() and saved.exists() and load_yaml(saved) != to_dict(resolved):
        problem = f"{run_dir} holds a run with a different config ({saved}); use a new --out or delete it"
    problem = dist.broadcast_object(problem)
    if problem:
        raise ConfigError(problem)
    if dist.is_main():
        dump_yaml(to_dict(resolved), saved)
    sampler = BatchSampler(task.train, resolved.train.batch_size, seed=resolved.train.seed)
    trainer = Trainer(model, sampler, resolved.train, run_dir, static=task.static)
    trainer.fit(keep_device=True)
    metrics = model.evaluate(dist.to_device({**task.test, **task.static}, trainer.device))
    if dist.is_main():
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
    device = dist.device_for(cfg.train.device)
    model.to(device)
    metrics = model.evaluate(dist.to_device({**task.test, **task.static}, device))
    if dist.is_main():
        atomic_write_json(run_dir / "eval.json", metrics)
    return metrics
