"""DPC: instance and ranking losses against naive references, the two stages, the text CNN's slots, overfitting."""

import math

import pytest
import torch

from visem.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

DIMS = {"image_dim": 12, "vocab_size": 30, "n_classes": 5}
SMALL = {"embed_dim": 16, "word_dim": 8, "text_len": 6, "text_channels": (8, 8, 16, 16), "text_blocks": (1, 1, 1, 1)}


def _model(**kw):
    torch.manual_seed(0)
    return build_model("dpc", {**SMALL, **kw}, dims=DIMS)


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, 30, (n, 4), generator=g)
    text[0, 2:] = 0  # a shorter caption
    return {"image": torch.randn(n, 12, generator=g), "text": text,
            "label": torch.tensor([0, 1, 2, 3, 4, 0][:n])}


def _naive_ce(logits, labels):
    total = []
    for row, c in zip(logits.tolist(), labels.tolist()):
        m = max(row)
        total.append(-(row[c] - m - math.log(sum(math.exp(x - m) for x in row))))
    return total


def _naive_hardest_hinge(a, b, margin):
    s = (a @ b.T).tolist()
    n = len(s)
    out = 0.0
    for k in range(n):
        out += max(max(0.0, margin - s[k][k] + s[k][j]) for j in range(n) if j != k)
        out += max(max(0.0, margin - s[k][k] + s[i][k]) for i in range(n) if i != k)
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_terms_match_naive_references(reduction):
    model = _model(dropout=0.0, position_shift=False, reduction=reduction, margin=0.7)
    batch = _batch()
    obj = model.objective(batch, progress=0.9)
    with torch.no_grad():
        f_img = model.image_path(batch["image"])
        f_txt = model.text_path(batch["text"])
        w, b = model.classifier.weight, model.classifier.bias
        ce_img = _naive_ce(f_img @ w.T + b, batch["label"])
        ce_txt = _naive_ce(f_txt @ w.T + b, batch["label"])
        unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
        hinge = _naive_hardest_hinge(unit(f_img), unit(f_txt), 0.7)
    n = len(ce_img)
    scale = 1.0 / n if reduction == "mean" else 1.0
    assert obj.terms["instance_img"].item() == pytest.approx(sum(ce_img) * scale, rel=1e-5)
    assert obj.terms["instance_txt"].item() == pytest.approx(sum(ce_txt) * scale, rel=1e-5)
    assert obj.terms["ranking"].item() == pytest.approx(hinge * scale, rel=1e-5)
    # one classifier W_share reads both paths
    assert [name for name, _ in model.named_parameters() if name.startswith("classifier")] == \
        ["classifier.weight", "classifier.bias"]


def test_two_stages_switch_the_ranking_loss_on():
    model = _model(dropout=0.0, position_shift=False, stage1_fraction=0.6)
    batch = _batch()
    one, two = model.objective(batch, 0.59), model.objective(batch, 0.6)
    assert one.weights == {"ranking": 0.0, "instance_img": 1.0, "instance_txt": 1.0}
    assert two.weights == {"ranking": 1.0, "instance_img": 1.0, "instance_txt": 1.0}
    assert one.total.item() == pytest.approx((one.terms["instance_img"] + one.terms["instance_txt"]).item())
    assert two.total.item() == pytest.approx(sum(t.item() for t in two.terms.values()), rel=1e-6)
    # stage I: the ranking loss is logged but sends no gradient
    assert "ranking" in one.terms and "ranking" not in one.weighted()
    assert model.stage(0.59) == 1 and model.stage(0.6) == 2


def test_text_slots_position_shift_and_cut():
    model = _model(text_len=6)
    ids = torch.tensor([[5, 6, 7, 0, 0], [2, 3, 4, 5, 6]])
    tp = model.text_path
    assert tp.slots(ids).tolist() == [[5, 6, 7, 0, 0, 0], [2, 3, 4, 5, 6, 0]]
    assert tp.slots(ids, torch.tensor([2, 1])).tolist() == [[0, 0, 5, 6, 7, 0], [0, 2, 3, 4, 5, 6]]
    long = torch.arange(2, 12)[None, :]  # 10 tokens into 6 slots: cut
    assert tp.slots(long).tolist() == [[2, 3, 4, 5, 6, 7]]
    model.eval()
    with torch.no_grad():  # trailing pad columns change nothing at test time (left-aligned)
        padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
        assert torch.allclose(model.embed_text(ids), model.embed_text(padded), atol=1e-6)


def test_dropout_only_before_the_classifier_and_shift_only_in_training():
    model = _model(dropout=0.75)
    batch = _batch()
    model.train()
    with torch.no_grad():
        a, b = model.embed_image(batch["image"]), model.embed_image(batch["image"])
    assert torch.equal(a, b)  # the embeddings see no dropout
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.embed_text(batch["text"]), model.embed_text(batch["text"]))


def test_bad_inputs_name_the_field():
    model = _model()
    batch = _batch()
    with pytest.raises(ValueError, match="'label'"):
        model.objective({"image": batch["image"], "text": batch["text"]})
    with pytest.raises(ValueError, match=r"label must be a \(6,\) integer tensor"):
        model.objective({**batch, "label": torch.zeros(6, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        model.objective({**batch, "label": torch.tensor([0, 1, 2, 3, 4, 5])})
    with pytest.raises(ValueError, match="image must be"):
        model.objective({**batch, "image": torch.randn(6, 7)})
    with pytest.raises(ValueError, match="n_classes"):
        build_model("dpc", SMALL, dims={"image_dim": 12, "vocab_size": 30, "n_classes": 0})
    with pytest.raises(ValueError, match="one entry per stage"):
        build_model("dpc", {**SMALL, "text_blocks": (1, 1)}, dims=DIMS)


def test_overfits_tiny_paired_set_to_r1_100():
    g = torch.Generator().manual_seed(0)
    n = 8
    torch.manual_seed(0)
    # dropout off: the test asks whether the two paths can fit the pairs, not how the 0.75 regularises
    model = build_model("dpc", {**SMALL, "embed_dim": 32, "dropout": 0.0},
                        dims={"image_dim": 12, "vocab_size": 30, "n_classes": n})
    image = torch.randn(n, 12, generator=g)
    text = torch.zeros(n, 5, dtype=torch.long)
    text[:, :3] = torch.arange(2, 2 + 3 * n).view(n, 3) % 30
    batch = {"image": image, "text": text, "label": torch.arange(n)}
    opt = model.make_optimizers(5e-3)
    steps = 200
    for step in range(steps):  # stage I (instance loss) for 80%, then the ranking loss joins
        model.train_step(batch, opt, step / steps)
    m = model.evaluate({"image": image, "text": text, "txt_to_img": torch.arange(n)})
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0
