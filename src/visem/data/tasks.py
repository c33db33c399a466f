"""Data tasks for ``visem train``: a config's ``data`` section resolved to tensors.

A task turns ``data: {name: ..., **kwargs}`` into :class:`TaskData`: row-aligned
training tensors for the sampler, held-out tensors for ``model.evaluate``,
``static`` tensors that join every batch (class embeddings), and the sizes
(``dims``) that fill the model config's unset ``*_dim`` fields. The data layer
owns the registry: the modules of :data:`TASK_MODULES` register the built-in
tasks when the registry is first read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from visem.config import ConfigError


@dataclass
class TaskData:
    train: dict[str, Tensor]
    test: dict[str, Tensor]
    dims: dict[str, int]
    static: dict[str, Tensor] = field(default_factory=dict)


_TASKS: dict[str, Callable[..., TaskData]] = {}
_LOADED = False

#: Modules whose import registers data tasks (read on first lookup).
TASK_MODULES = ("visem.data.tasks", "visem.data.label_tasks")


def register_task(name: str) -> Callable[[Callable[..., TaskData]], Callable[..., TaskData]]:
    def deco(fn: Callable[..., TaskData]) -> Callable[..., TaskData]:
        _TASKS[name] = fn
        return fn

    return deco


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import importlib

        for mod in TASK_MODULES:
            importlib.import_module(mod)


def list_tasks() -> list[str]:
    _load_all()
    return sorted(_TASKS)


def build_task(data_cfg: Mapping[str, Any]) -> TaskData:
    cfg = dict(data_cfg)
    known = list_tasks()
    name = cfg.pop("name", None)
    if name is None:
        raise ConfigError(f"data.name is required; known data tasks: {', '.join(known)}")
    if name not in _TASKS:
        raise ConfigError(f"unknown data task {name!r}; known: {', '.join(known)}")
    try:
        return _TASKS[name](**cfg)
    except TypeError as exc:
        raise ConfigError(f"data task {name!r}: {exc}") from None


def _t(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@register_task("synthetic")
def synthetic_task(
    n_classes: int = 10,
    per_class: int = 20,
    test_per_class: int = 5,
    image_dim: int = 32,
    text_dim: int = 16,
    class_dim: int = 8,
    noise: float = 0.1,
    seed: int = 0,
) -> TaskData:
    """Paired image/text features of :func:`visem.data.synthetic.synthetic_pairs`."""
    from visem.data.synthetic import synthetic_pairs

    kw = dict(n_classes=n_classes, image_dim=image_dim, text_dim=text_dim, class_dim=class_dim, noise=noise)
    tr = synthetic_pairs(per_class=per_class, seed=seed, **kw)
    te = synthetic_pairs(per_class=test_per_class, seed=seed + 1, **kw)
    return TaskData(
        train={k: _t(tr[k]) for k in ("image", "text", "label")},
        test={k: _t(te[k]) for k in ("image", "text", "label", "txt_to_img")},
        dims={"image_dim": image_dim, "text_dim": text_dim, "class_dim": class_dim, "n_classes": n_classes},
        static={"class_emb": _t(tr["class_emb"])},
    )
