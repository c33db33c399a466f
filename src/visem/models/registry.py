"""Model registry: every model is created by name from a typed config.

A model is an :class:`~visem.models.base.EmbeddingModel` subclass registered with
:func:`register_model` next to its config dataclass. The tests walk the
registry (``tests/models/test_registry_models.py``) so every registered model
gets forward, backward and finiteness checks from its :meth:`example_batch`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from visem.config import ConfigError, from_dict, to_dict
from visem.models.base import EmbeddingModel

# Modules whose import registers models. Imported on first registry lookup.
MODEL_MODULES = ("visem.models.linear", "visem.models.vsepp", "visem.models.vsa", "visem.models.a3vse", "visem.models.scan_xattn", "visem.models.zeroshot", "visem.models.lcale", "visem.models.cada_vae", "visem.models.dcca", "visem.models.pse",
                 # zero-shot cross-modal baselines of seed 004 Table 2
                 "visem.models.deepsm", "visem.models.acmr", "visem.models.dual_gan",
                 # image-text retrieval baselines of seed 003 Tables 2 and 4
                 "visem.models.dpc", "visem.models.dan",
                 # zero-shot sketch-based image retrieval (seed 004 Table 3; LCALE's sketch variant lives in visem.models.lcale)
                 "visem.models.gn_triplet", "visem.models.frwgan", "visem.models.gdh", "visem.models.zsih",
                 "visem.models.zs_sbir", "visem.models.sem_pcyc")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[EmbeddingModel]
    config_cls: type
    family: str
    paper: str

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


def register_model(
    name: str, *, config: type, family: str, paper: str = ""
) -> Callable[[type[EmbeddingModel]], type[EmbeddingModel]]:
    """Class decorator: register ``cls`` under ``name`` with its config dataclass."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config of model {name!r} must be a dataclass")

    def deco(cls: type[EmbeddingModel]) -> type[EmbeddingModel]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].cls}")
        _REGISTRY[name] = ModelSpec(name, cls, config, family, paper)
        cls.registry_name = name
        return cls

    return deco


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for mod in MODEL_MODULES:
            importlib.import_module(mod)


def list_models(family: str | None = None) -> list[ModelSpec]:
    _load_all()
    return [s for n, s in sorted(_REGISTRY.items()) if family is None or s.family == family]


def get_model_spec(name: str) -> ModelSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def resolve_config(name: str, params: Mapping[str, Any] | Any | None = None,
                   dims: Mapping[str, int] | None = None) -> Any:
    """The typed config of model ``name`` from ``params`` (unknown keys are errors).

    ``dims`` are sizes read off the data (``image_dim``, ``text_dim``,
    ``n_classes``...). A config field of that name left unset (``None``) takes
    the data's value; one set to a different value is an error naming both.
    """
    spec = get_model_spec(name)
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = to_dict(params)
    params = dict(params or {})
    params.pop("name", None)
    cfg = from_dict(spec.config_cls, params, where="model")
    if dims:
        names = {f.name for f in dataclasses.fields(cfg)}
        updates = {}
        for key, value in dims.items():
            if key not in names:
                continue
            current = getattr(cfg, key)
            if current is None:
                updates[key] = value
            elif current != value:
                raise ConfigError(f"model.{key}={current} but the data has {key}={value}")
        cfg = dataclasses.replace(cfg, **updates)
    missing = [f.name for f in dataclasses.fields(cfg) if f.name.endswith("_dim") and getattr(cfg, f.name) is None]
    if missing:
        raise ConfigError(f"model {name!r}: set {', '.join('model.' + m for m in missing)} (no data to infer it from)")
    return cfg


def build_model(name: str, params: Mapping[str, Any] | Any | None = None,
                dims: Mapping[str, int] | None = None) -> EmbeddingModel:
    """Create the registered model ``name`` from a config dataclass or mapping."""
    spec = get_model_spec(name)
    return spec.cls(resolve_config(name, params, dims))
