"""DAN (m-DAN): attention steps against a naive per-element reference, the summed similarity, overfitting."""

import math

import pytest
import torch

from visem.losses import ranking_loss_from_scores
from visem.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

DIMS = {"image_dim": 6, "vocab_size": 30}


def _model(**kw):
    torch.manual_seed(0)
    return build_model("dan", {"word_dim": 5, "hidden_dim": 4, "margin": 1.0, **kw}, dims=DIMS)


def _lin(layer, x):
    """``W x + b`` of a torch Linear on a plain list, by hand."""
    w, b = layer.weight.tolist(), layer.bias.tolist()
    return [sum(wi * xi for wi, xi in zip(row, x)) + bi for row, bi in zip(w, b)]


def _attend(att, elements, memory):
    """DAN's attention weights over ``elements`` (lists) given ``memory``, one element at a time."""
    mem = [math.tanh(z) for z in _lin(att.w_m, memory)]
    logits = []
    for x in elements:
        h = [math.tanh(a) * m for a, m in zip(_lin(att.w_x, x), mem)]
        logits.append(_lin(att.w_h, h)[0])
    top = max(logits)
    e = [math.exp(z - top) for z in logits]
    return [v / sum(e) for v in e]


def test_attention_steps_match_a_naive_reference():
    model = _model(steps=2)
    g = torch.Generator().manual_seed(1)
    regions = torch.randn(1, 3, 6, generator=g)
    text = torch.tensor([[4, 9, 2, 0, 0]])  # three words, two pads
    with torch.no_grad():
        got_v = [v[0].tolist() for v in model.visual_vectors(regions)]
        got_u = [u[0].tolist() for u in model.textual_vectors(text)]
        words = (2.0 * model.text_encoder(text)[0][0, :3]).tolist()  # u_t = h_f + h_b, real words only
    vs = regions[0].tolist()
    # visual: v0 = tanh(P0 mean v_n); v_k = tanh(P_k sum alpha_n v_n); m_v accumulates the v's
    mean = [sum(col) / len(vs) for col in zip(*vs)]
    want_v = [[math.tanh(z) for z in _lin(model.P[0], mean)]]
    memory = list(want_v[0])
    for k in (1, 2):
        alpha = _attend(model.visual[k - 1], vs, memory)
        pooled = [sum(a * v[d] for a, v in zip(alpha, vs)) for d in range(6)]
        want_v.append([math.tanh(z) for z in _lin(model.P[k], pooled)])
        memory = [m + v for m, v in zip(memory, want_v[-1])]
    # textual: u0 = mean u_t; u_k = sum alpha_t u_t over the real words; m_u accumulates the u's
    want_u = [[sum(col) / len(words) for col in zip(*words)]]
    memory = list(want_u[0])
    for k in (1, 2):
        alpha = _attend(model.textual[k - 1], words, memory)
        want_u.append([sum(a * w[d] for a, w in zip(alpha, words)) for d in range(4)])
        memory = [m + u for m, u in zip(memory, want_u[-1])]
    for got, want in ((got_v, want_v), (got_u, want_u)):
        assert len(got) == 3
        for a, b in zip(got, want):
            assert a == pytest.approx(b, abs=1e-5)


def test_similarity_is_summed_over_steps_and_the_loss_sums_violations():
    model = _model(steps=2, margin=3.0)
    batch = model.example_batch(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = model.visual_vectors(batch["image"])
        u = model.textual_vectors(batch["text"])
        s = sum(vk @ uk.T for vk, uk in zip(v, u))  # S = sum_k v^(k) . u^(k)
        z_v, z_u = model.embed_image(batch["image"]), model.embed_text(batch["text"])
        assert z_v.shape == (5, 12) and torch.allclose(z_v @ z_u.T, s, atol=1e-5)
        hinge = sum(max(0.0, 3.0 - s[k, k].item() + s[k, j].item()) + max(0.0, 3.0 - s[k, k].item() + s[j, k].item())
                    for k in range(5) for j in range(5) if j != k)
        assert model.objective(batch).terms["ranking"].item() == pytest.approx(hinge, rel=1e-5)
        assert ranking_loss_from_scores(s, 3.0, hardest=False).item() == pytest.approx(hinge, rel=1e-5)


def test_padding_and_separate_memories():
    model = _model(steps=1).eval()
    text = torch.tensor([[4, 9, 2, 0], [7, 3, 0, 0]])
    padded = torch.cat([text, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    image = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.embed_text(text), model.embed_text(padded), atol=1e-6)
        # an image's embedding does not depend on the other images of its batch (no cross-modal memory)
        assert torch.allclose(model.embed_image(image)[:1], model.embed_image(image[:1]), atol=1e-6)
    assert _model(steps=0).embed_image(image).shape == (2, 4)  # K = 0: v^(0) only
    with pytest.raises(ValueError, match="image must be"):
        model.embed_image(torch.randn(2, 6))


def test_overfits_tiny_paired_set_to_r1_100():
    g = torch.Generator().manual_seed(0)
    n = 8
    torch.manual_seed(0)
    # margin 100 for 512-d hidden layers, scaled with the hidden size (as the experiments do)
    model = build_model("dan", {"word_dim": 16, "hidden_dim": 16, "margin": 100.0 * 16 / 512},
                        dims={"image_dim": 12, "vocab_size": 30})
    image = torch.randn(n, 4, 12, generator=g)
    text = torch.zeros(n, 5, dtype=torch.long)
    text[:, :3] = torch.arange(2, 2 + 3 * n).view(n, 3) % 30
    opt = model.make_optimizers(1e-2)
    for _ in range(60):  # R@1 = 100 both ways from about 30 steps (seeds 0-2)
        model.train_step({"image": image, "text": text}, opt)
    m = model.evaluate({"image": image, "text": text, "txt_to_img": torch.arange(n)})
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0
