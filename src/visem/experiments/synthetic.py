"""``synthetic-retrieval``: the end-to-end smoke experiment on synthetic pairs.

Trains the linear VSE baseline with the sum-of-violations loss (seed 001
Eq. 8) and the hardest-negative loss (seed 003 Eq. 2) on
:func:`visem.data.synthetic.synthetic_pairs`, whose image and text features
are linear images of one class space, and reports retrieval recall on held-out
pairs. No paper reports this table; it exists so that every part of the stack
(config, registry, trainer, checkpoints, metrics, results) runs in seconds
with no files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from visem.config import to_dict
from visem.experiments import register_experiment, settings
from visem.train.run import RunConfig, train_run
from visem.train.trainer import TrainConfig


@register_experiment("synthetic-retrieval", description="linear VSE on synthetic pairs (smoke test, no paper)")
def run(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = False,
        overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    s = settings({"train": {"steps": 60 if quick else 600, "batch_size": 64, "lr": 1e-2}}, overrides,
                 "synthetic-retrieval")
    steps = int(s["train"]["steps"])
    data = {"name": "synthetic", "n_classes": 20, "per_class": 30, "test_per_class": 5, "seed": seed}
    rows, configs = [], {}
    for setting, hardest in (("sum", False), ("hardest", True)):
        cfg = RunConfig(
            model={"name": "linear-vse", "embed_dim": 32, "hardest": hardest},
            data=data,
            train=TrainConfig(steps=steps, batch_size=int(s["train"]["batch_size"]), lr=float(s["train"]["lr"]),
                              seed=seed, log_every=max(1, steps // 10),
                              checkpoint_every=steps, progress=progress),
        )
        metrics = train_run(cfg, out_dir / setting)
        rows.append({"model": "linear-vse", "setting": setting, **metrics})
        configs[setting] = to_dict(cfg)
    return {"experiment": "synthetic-retrieval", "config": {**configs, "settings": s}, "rows": rows, "paper": []}
