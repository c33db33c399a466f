"""Models, one file per paper family, each registered by name.

>>> from visem.models import build_model
>>> model = build_model("linear-vse", {"image_dim": 8, "text_dim": 4, "embed_dim": 3})
"""

from visem.models.base import EmbeddingModel, NonFiniteError, RetrievalModel, check_finite
from visem.models.registry import (
    ModelSpec,
    build_model,
    get_model_spec,
    list_models,
    register_model,
    resolve_config,
)

__all__ = [
    "EmbeddingModel",
    "ModelSpec",
    "NonFiniteError",
    "RetrievalModel",
    "build_model",
    "check_finite",
    "get_model_spec",
    "list_models",
    "register_model",
    "resolve_config",
]
