"""VSA-AE-MMD (seed 001): Eq. 1 lengths, exact reconstruction, hand-computed terms, ablations."""

import math

import pytest
import torch
import torch.nn.functional as F

from visem.models import build_model
from visem.models.text import ConvTextAutoEncoder, conv_lengths

DIMS = {"image_dim": 12, "vocab_size": 30}
SMALL = {"hidden_dim": 24, "channels": [16, 16], "word_dim": 8, "max_len": 14}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name="vsa-ae-mmd", **kw):
    torch.manual_seed(0)
    return build_model(name, {**SMALL, **kw}, dims=DIMS)


def test_eq1_lengths_by_hand():
    # paper setting: z = 4, r = (2, 2, 1); T(n+1) = floor((T(n) - z) / r + 1), last layer -> 1
    assert conv_lengths(30, 4, (2, 2, 1)) == [30, 14, 6, 1]
    assert conv_lengths(31, 4, (2, 2, 1)) == [31, 14, 6, 1]
    assert conv_lengths(60, 5, (2, 2, 1)) == [60, 28, 12, 1]  # Zhang et al.'s 60-token setting
    with pytest.raises(ValueError, match="too short"):
        conv_lengths(6, 4, (2, 2, 1))


@pytest.mark.parametrize("max_len", [10, 14, 18, 30])
def test_layer_outputs_follow_eq1_and_decoder_mirrors(max_len):
    ae = ConvTextAutoEncoder(30, 8, max_len, 20, (16, 16), 4, (2, 2, 1), 0.01)
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1])) for layer in ae.encoder_layers]
    ids = torch.randint(0, 30, (3, max_len))
    h = ae.encode(ids)
    for hk in hooks:
        hk.remove()
    expected = [math.floor((max_len - 4) / 2 + 1)]
    expected.append(math.floor((expected[0] - 4) / 2 + 1))
    assert seen == expected + [1]
    assert h.shape == (3, 20)
    assert ae.decode(h).shape == (3, max_len, 8)


@pytest.mark.parametrize("max_len", [12, 17, 31])
def test_lengths_that_drop_tokens_are_rejected(max_len):
    # Eq. 1 floors: with 12 tokens the second layer sees 5 positions and its
    # one window covers 4, so the last two tokens would never be encoded
    with pytest.raises(ValueError, match="does not tile exactly.*valid max_len"):
        ConvTextAutoEncoder(30, 8, max_len, 20, (16, 16), 4, (2, 2, 1), 0.01)


def test_word_likelihood_eq2_and_nll_eq3_by_hand():
    ae = ConvTextAutoEncoder(30, 8, 14, 20, (16, 16), 4, (2, 2, 1), temperature=0.5)
    ids = torch.randint(0, 30, (2, 14))
    h = ae.encode(ids)
    x_hat = ae.decode(h)
    we = ae.embed.weight
    logits = ae.word_logits(x_hat)
    for b in range(2):
        for t in (0, 5, 13):
            for v in (0, 7, 29):
                cos = F.cosine_similarity(x_hat[b, t], we[v], dim=0)
                assert logits[b, t, v].item() == pytest.approx(cos.item() / 0.5, abs=1e-5)
    nll = ae.reconstruction_loss(ids, h)
    by_hand = torch.stack([
        -sum(torch.log_softmax(logits[b, t], dim=0)[ids[b, t]] for t in range(14)) for b in range(2)
    ])
    assert torch.allclose(nll, by_hand, atol=1e-4)


def test_text_autoencoder_reconstructs_memorised_corpus_exactly():
    torch.manual_seed(0)
    rows = [
        [2, 3, 4, 5],
        [6, 7, 8],
        [9, 10, 11, 12, 13, 14],
        [3, 5, 7, 9, 11, 13, 15, 17],
        [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 2, 4, 6, 8],  # all 14 positions used
        [4, 4, 4, 8],
    ]
    corpus = torch.tensor([r + [0] * (14 - len(r)) for r in rows])
    ae = ConvTextAutoEncoder(30, 16, 14, 64, (64, 64), 4, (2, 2, 1), temperature=0.05)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        ae.reconstruction_loss(corpus, ae.encode(corpus)).mean().backward()
        opt.step()
    assert torch.equal(ae.reconstruct(corpus), corpus)


def _hinge_sum_by_hand(img, txt, margin):
    n = img.shape[0]
    s = img @ txt.T
    total = 0.0
    for k in range(n):
        total += sum(max(0.0, margin - s[k, k] + s[k, j]) for j in range(n) if j != k)
        total += sum(max(0.0, margin - s[k, k] + s[i, k]) for i in range(n) if i != k)
    return total  # Eq. 8 per pair, summed over the batch (Eq. 11-12)


def _mmd_by_hand(x, y, sigma):
    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))
    kxx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
    kyy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
    kxy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return kxx + kyy - 2 * kxy


def test_joint_loss_eq12_terms_by_hand():
    model = _model(reduction="sum")  # Eq. 11 as printed: per-sample terms summed over the batch
    batch = model.example_batch(5, torch.Generator().manual_seed(3))
    terms = model.loss(batch)
    with torch.no_grad():
        hi_s = torch.tanh(model.img_enc(batch["src.image"]))  # Eq. 4
        hi_t = torch.tanh(model.img_enc(batch["tgt.image"]))
        hc_s, hc_t = model.text_ae.encode(batch["src.text"]), model.text_ae.encode(batch["tgt.text"])
        n = lambda x: F.normalize(x, dim=-1)  # noqa: E731
        rank = _hinge_sum_by_hand(n(hi_s), n(hc_s), 0.2)  # Eq. 7-8
        m = _mmd_by_hand(torch.cat([n(hi_s), n(hi_t)]), torch.cat([n(hc_s), n(hc_t)]), 1.0)  # Eq. 9-10
        rec_i = sum(((model.img_dec(h) - x) ** 2).sum(1).sum() for h, x in
                    ((hi_s, batch["src.image"]), (hi_t, batch["tgt.image"])))  # Eq. 5-6, summed (Eq. 11)
        rec_c = model.text_ae.reconstruction_loss(batch["src.text"], hc_s).sum() + \
            model.text_ae.reconstruction_loss(batch["tgt.text"], hc_t).sum()  # Eq. 3, summed (Eq. 11)
    assert terms["ranking"].item() == pytest.approx(float(rank), rel=1e-4)
    assert terms["mmd"].item() == pytest.approx(m, rel=1e-4, abs=1e-6)
    assert terms["rec_image"].item() == pytest.approx(rec_i.item(), rel=1e-5)
    assert terms["rec_text"].item() == pytest.approx(rec_c.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(float(rank) + m + rec_i.item() + rec_c.item(), rel=1e-4)
    # reduction="mean" (the default): every per-sample term averaged over the batch of 5, MMD unchanged
    mean = _model()
    mean.load_state_dict(model.state_dict())
    mt = mean.loss(batch)
    assert mt["ranking"].item() == pytest.approx(float(rank) / 5, rel=1e-4)
    assert mt["rec_image"].item() == pytest.approx(rec_i.item() / 5, rel=1e-5)
    assert mt["rec_text"].item() == pytest.approx(rec_c.item() / 5, rel=1e-5)
    assert mt["mmd"].item() == pytest.approx(m, rel=1e-4, abs=1e-6)


def test_ablations_drop_their_terms_and_parameters():
    batch = _model().example_batch(4, torch.Generator().manual_seed(0))
    ae = _model("vsa-ae")
    assert set(ae.loss(batch)) == {"loss", "ranking", "rec_image", "rec_text"}
    e_mmd = _model("vsa-e-mmd")
    assert set(e_mmd.loss(batch)) == {"loss", "ranking", "mmd"}
    assert e_mmd.img_dec is None and e_mmd.text_ae.decoder_layers is None
    with pytest.raises(ValueError, match="no decoders"):
        e_mmd.reconstruct_text(batch["src.text"])
    full = _model()
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in e_mmd.parameters())


def test_ranking_uses_source_pairs_only():
    model = _model()
    batch = model.example_batch(4, torch.Generator().manual_seed(0))
    shuffled = {**batch, "tgt.text": batch["tgt.text"].flip(0)}  # target pairing is meaningless
    a, b = model.loss(batch), model.loss(shuffled)
    assert a["ranking"] == b["ranking"]


def test_overfits_tiny_paired_set_to_r1_100():
    g = torch.Generator().manual_seed(0)
    n = 8
    model = _model(max_len=10)
    image = torch.randn(n, 12, generator=g)
    text = torch.zeros(n, 10, dtype=torch.long)
    text[:, :3] = torch.arange(2, 2 + 3 * n).view(n, 3) % 30
    batch = {"src.image": image, "src.text": text, "tgt.image": image + 1.0, "tgt.text": text.flip(0)}
    opt = model.make_optimizers(5e-3)
    for _ in range(300):  # the text NLL (tau = 0.01) dominates the first ~200 steps
        model.train_step(batch, opt)
    m = model.evaluate({"image": image, "text": text, "txt_to_img": torch.arange(n)})
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0
