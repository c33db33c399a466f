"""The MiniLM text tower (``text_encoder="minilm"``) of VSE++, A3VSE and the VSA models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visem.models import build_model
from visem.models.pretrained_text import (
    MINILM_VOCAB,
    MiniLMTextEncoder,
    minilm_token_ids,
    minilm_token_states,
)

CAPTIONS = ["a red heart", "a smiling cat face", "café crème", "Красное сердце", "guitar"]


def test_sentence_vector_matches_sentence_transformers():
    """Oracle: sentence-transformers' own encode of the same package (mean pooling, then unit norm)."""
    from visem.features.text import encode_sentences

    tower = MiniLMTextEncoder(hidden_dim=8)
    ours = torch.nn.functional.normalize(tower.sentence(minilm_token_ids(CAPTIONS)), dim=-1).numpy()
    np.testing.assert_allclose(ours, encode_sentences(CAPTIONS), atol=2e-5)


def test_precomputed_states_give_the_same_embedding_as_ids():
    tower = MiniLMTextEncoder(hidden_dim=16)
    ids = minilm_token_ids(CAPTIONS)
    states = minilm_token_states(CAPTIONS, batch_size=2)  # float16, sorted batches of other widths
    out_ids, last_ids = tower(ids)
    out_st, last_st = tower(states)
    assert states.dtype == torch.float16 and states.shape[:2] == ids.shape
    torch.testing.assert_close(last_st, last_ids, atol=2e-2, rtol=1e-2)  # float16 storage of the states
    assert (out_st.abs().sum(-1) > 0).tolist() == (ids != 0).tolist()
    assert not any(k.startswith("_frozen") for k in tower.state_dict())  # frozen weights are the package's
    assert set(tower.state_dict()) == {"proj.weight", "proj.bias"}


@pytest.mark.parametrize("name, extra", [("vsepp", {"embed_dim": 16}),
                                         ("a3vse", {"embed_dim": 16, "heads": 2, "disc_hidden": 8}),
                                         ("vsa-ae-mmd", {"hidden_dim": 16}),
                                         ("vsa-e-mmd", {"hidden_dim": 16})])
def test_models_train_with_a_frozen_minilm_tower(name, extra):
    torch.manual_seed(0)
    model = build_model(name, {"image_dim": 12, "vocab_size": MINILM_VOCAB, "text_encoder": "minilm", **extra})
    batch = model.example_batch(4, torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = model.make_optimizers(1e-2)
    terms = model.train_step(batch, opts)
    assert torch.isfinite(terms["loss"])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("proj" in k for k in changed)
    assert not any("backbone" in k for k in model.state_dict())
    emb = model.embed_text(minilm_token_ids(CAPTIONS))
    assert emb.shape[0] == len(CAPTIONS) and torch.allclose(emb.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)


def test_fine_tuning_trains_minilm_at_text_lr():
    model = build_model("vsepp", {"image_dim": 12, "vocab_size": MINILM_VOCAB, "embed_dim": 8,
                                  "text_encoder": "minilm", "text_lr": 1e-4})
    (opt,) = model.make_optimizers(1e-2)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-4]
    w = model.text_encoder.backbone.embeddings.word_embeddings.weight
    before = w.detach().clone()
    batch = {"image": torch.randn(3, 12), "text": minilm_token_ids(CAPTIONS[:3])}
    model.train_step(batch, [opt])
    assert not torch.equal(before, w.detach())
    with pytest.raises(ValueError, match="token ids"):
        model.embed_text(minilm_token_states(CAPTIONS[:2]))


def test_bad_text_encoder_options_are_refused():
    with pytest.raises(ValueError, match="text_encoder must be"):
        build_model("vsepp", {"image_dim": 4, "vocab_size": 10, "text_encoder": "bert"})
    with pytest.raises(ValueError, match="needs text_encoder='minilm'"):
        build_model("vsepp", {"image_dim": 4, "vocab_size": 10, "text_lr": 1e-4})
