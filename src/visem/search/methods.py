"""Which registered model an index trains, and how its training data are shaped.

:func:`choose_method` picks from the supervision found (the table in
docs/search.md); :func:`method_kind` says how a method consumes data
(``pairs``, ``pseudo`` or ``domains``) and whether it needs region features;
:func:`model_params` restricts user settings to the method's config fields.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTO_MODEL_DEFAULTS", "choose_method", "method_kind", "model_params", "search_methods"]

#: Model settings of an automatically chosen method (``options.model`` overrides them). A3VSE's six
#: adversarial discriminators are off: on emoji-sparse they change held-out rsum by -2.7 +- 4.6 over 5
#: seeds (no measurable gain) and add six networks to every step (docs/search.md).
AUTO_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"a3vse": {"adversarial": False}}


def search_methods() -> list[str]:
    """Registered models an index can use: retrieval models that embed token ids and images into one space."""
    from visem.models import list_models
    from visem.models.vsepp import TokenRetrievalModel

    return [s.name for s in list_models("retrieval") if issubclass(s.cls, TokenRetrievalModel)]


def method_kind(name: str) -> tuple[str, bool]:
    """``(training kind, uses region features)`` of a search method.

    Kinds: ``pairs`` (image-caption pairs only), ``pseudo`` (pairs plus
    pseudo-captioned unpaired images, A3VSE's ``pair.*`` / ``pseudo.*``
    batches), ``domains`` (paired source plus unpaired target, VSA's
    ``src.*`` / ``tgt.*`` batches).
    """
    from visem.models import get_model_spec

    methods = search_methods()
    if name not in methods:
        known = ", ".join(methods)
        try:
            get_model_spec(name)
        except (KeyError, ValueError):
            raise ValueError(f"unknown method {name!r} (search methods: {known})") from None
        raise ValueError(f"method {name!r} cannot build a search index: it has no single-vector image and text "
                         f"embedding over token ids (search methods: {known})")
    cls = get_model_spec(name).cls
    return getattr(cls, "training_kind", "pairs"), bool(getattr(cls, "region_features", False))


def choose_method(n_captioned: int, n_uncaptioned: int, has_source: bool) -> tuple[str, str]:
    """``(method, reason)`` from the supervision found (see :func:`visem.search.build_index`)."""
    if has_source:
        return "vsa-ae-mmd", "a paired source index was given: VSA-AE-MMD (seed 001) adapts it to these images"
    if n_captioned == 0:
        return "vsepp", ("no captions: VSE++ trained on pseudo captions only (tags or ImageNet classes); "
                         "expect searches to follow those words")
    if n_uncaptioned == 0:
        return "vsepp", "every image has a caption: VSE++ on the pairs"
    return "a3vse", (f"{n_captioned} captioned and {n_uncaptioned} uncaptioned images: A3VSE (seed 003) "
                     "with pseudo captions for the uncaptioned ones, adversarial terms off")


def model_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` restricted to fields the method's config has (``embed_dim`` is not every model's name)."""
    import dataclasses

    from visem.models import get_model_spec

    names = {f.name for f in dataclasses.fields(get_model_spec(method).config_cls)}
    extra = [k for k in params if k not in names and k != "embed_dim"]
    if extra:
        raise ValueError(f"model option(s) {', '.join(extra)} unknown to {method} (fields: {', '.join(sorted(names))})")
    return {k: v for k, v in params.items() if k in names}
