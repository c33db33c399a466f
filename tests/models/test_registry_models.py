"""Every registered model, walked from the registry: build, forward, backward, finite.

A model registered without passing these cannot land: the list of models is
read from the registry, not written here.
"""

import dataclasses

import pytest
import torch

from visem.config import ConfigError
from visem.models import EmbeddingModel, build_model, get_model_spec, list_models, resolve_config

DIMS = {"image_dim": 12, "text_dim": 7, "class_dim": 5, "n_classes": 4, "vocab_size": 30}
NAMES = [s.name for s in list_models()]


def _build(name):
    torch.manual_seed(0)
    return build_model(name, {}, dims=DIMS)


def test_registry_is_not_empty():
    assert "linear-vse" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_model_trains_one_step_with_finite_gradients(name):
    model = _build(name)
    assert isinstance(model, EmbeddingModel)
    batch = model.example_batch(8, torch.Generator().manual_seed(0))
    terms = model.loss(batch, 0.5)
    assert "loss" in terms and terms["loss"].ndim == 0
    assert all(torch.isfinite(v).all() for v in terms.values())
    opts = model.make_optimizers(1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    model.train_step(batch, opts, 0.5)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads), f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed, f"{name}: one step changed no parameter"


@pytest.mark.parametrize("name", NAMES)
def test_model_evaluates_its_example_held_out_data_to_finite_metrics(name):
    model = _build(name)
    if hasattr(model, "prepare"):  # zero-shot recognition models see the training data around training
        model.prepare(model.example_batch(8, torch.Generator().manual_seed(1)))
    if hasattr(model, "finalize"):
        model.finalize(model.example_batch(8, torch.Generator().manual_seed(1)))
    metrics = model.evaluate(model.example_eval_data(8, torch.Generator().manual_seed(0)))
    assert metrics and all(isinstance(v, float) and v == v for v in metrics.values()), f"{name}: {metrics}"


@pytest.mark.parametrize("name", NAMES)
def test_model_config_rejects_unknown_keys(name):
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_config(name, {"no_such_option": 1}, dims=DIMS)


@pytest.mark.parametrize("name", NAMES)
def test_model_has_documented_config(name):
    spec = get_model_spec(name)
    assert spec.description, f"{name}: the model class needs a docstring"
    assert dataclasses.is_dataclass(spec.config_cls)


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="linear-vse"):
        get_model_spec("no-such-model")


def test_dims_conflict_is_an_error():
    with pytest.raises(ConfigError, match="model.image_dim=3 but the data has image_dim=12"):
        resolve_config("linear-vse", {"image_dim": 3}, dims=DIMS)
    with pytest.raises(ConfigError, match="set model.image_dim"):
        resolve_config("linear-vse", {})
