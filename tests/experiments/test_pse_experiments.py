"""Seed 002 experiments: the evaluation functions on models whose answers are known, the paper
tables, the data task, and a ``--quick`` end-to-end run of ``pse-mnist``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import visem.experiments.pse as E
from visem.experiments import format_table, get_experiment, reproduce
from visem.models import build_model

CONTRACT = ("model", "latent_dim", "reconstruction_error", "annotation_accuracy", "generation_accuracy",
            "generation_accuracy_std")


# --------------------------------------------------------------------------
# paper tables (seed 002 Tables 1-3, as printed)
# --------------------------------------------------------------------------
def test_paper_tables_hold_every_printed_value():
    t1 = {(r["model"], r["latent_dim"]): tuple(r[k] for k in CONTRACT[2:]) for r in E.PAPER_TABLE1}
    assert t1 == {
        ("cvae", 10): (79.8, None, 97.6, 0.1),
        ("jmvae", 10): (87.7, 95.4, 92.2, 0.3),
        ("trelbo", 10): (83.1, 90.3, 61.1, 0.5),
        ("pse", 10): (82.8, 96.0, 93.9, 0.2),
        ("pse-star", 10): (82.3, 96.3, 94.9, 0.2),
        ("pse-star", 20): (75.0, 97.1, 95.6, 0.2),
    }
    t2 = {(r["model"], r["latent_dim"]): tuple(r[k] for k in CONTRACT[2:]) for r in E.PAPER_TABLE2}
    assert t2 == {
        ("cvae", 10): (219.7, None, 81.3, 0.3),
        ("jmvae", 10): (225.4, 80.3, 71.2, 0.5),
        ("trelbo", 10): (220.3, 73.0, 47.5, 0.4),
        ("pse", 10): (219.1, 81.2, 75.9, 0.3),
        ("pse-star", 10): (219.6, 81.3, 76.1, 0.4),
        ("pse-star", 20): (219.0, 81.6, 76.2, 0.4),
    }
    t3 = {(r["model"], r["features"]): (r["reconstruction_error"], r["annotation_accuracy"], r["annotation_accuracy_std"])
          for r in E.PAPER_TABLE3}
    assert t3 == {
        ("pse", "one-hot"): (219.1, 81.2, 0.1),
        ("pse", "word-vectors"): (218.7, 81.4, 0.2),
        ("pse-star", "one-hot"): (219.6, 81.3, 0.2),
        ("pse-star", "word-vectors"): (218.8, 81.9, 0.3),
    }


def test_experiments_are_registered():
    for name in ("pse-mnist", "pse-fashion-mnist", "pse-word-vectors"):
        assert "seed 002" in get_experiment(name).paper


# --------------------------------------------------------------------------
# evaluation functions on models with known answers
# --------------------------------------------------------------------------
def _constant_decoder_pse(bias):
    m = build_model("pse", {"latent_dim": 1, "hidden": ()}, dims={"image_dim": 2, "class_dim": 2, "n_classes": 2})
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.image_decoder[-1].bias.copy_(torch.tensor(bias))
    return m


def test_reconstruction_error_is_the_bernoulli_nll_in_nats():
    m = _constant_decoder_pse([0.0, math.log(3.0)])  # p = (1/2, 3/4) whatever z
    x = torch.tensor([[1.0, 1.0], [0.0, 0.5]])
    want = [-(math.log(0.5) + math.log(0.75)),
            -(math.log(0.5) + 0.5 * math.log(0.75) + 0.5 * math.log(0.25))]
    got = E.reconstruction_error(m, x, torch.tensor([0, 1]), torch.eye(2), chunk=1)
    assert got == pytest.approx(sum(want) / 2, abs=1e-6)


class _Annotator(nn.Module):
    can_annotate = True

    def __init__(self, answers):
        super().__init__()
        self.answers = answers

    def annotate(self, x, class_emb):
        return self.answers[x[:, 0].long()]


def test_annotation_accuracy_is_the_percent_of_right_labels_in_chunks():
    x = torch.arange(7.0)[:, None].repeat(1, 3)  # image i carries its index
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    model = _Annotator(torch.tensor([0, 1, 2, 1, 1, 0, 0]))  # 5 of 7 right
    assert E.annotation_accuracy(model, x, labels, torch.eye(3), chunk=3) == pytest.approx(500 / 7)


class _LabelPainter(nn.Module):
    """'Generates' 784-pixel images whose first pixel is (label + 0.5) / 10."""

    can_annotate = True

    def generate(self, vectors, n, generator=None):
        k = int(vectors.argmax())
        img = torch.zeros(n, 784)
        img[:, 0] = (k + 0.5) / 10
        return img


class _PixelReader(nn.Module):
    """A 'classifier' reading the label off the first pixel; wrong for labels in ``wrong``."""

    def __init__(self, wrong=()):
        super().__init__()
        self.wrong = set(wrong)

    def forward(self, x):
        k = (x[:, 0] * 10).long()
        k = torch.tensor([(v + 1) % 10 if v in self.wrong else v for v in k.tolist()], dtype=torch.long)
        return nn.functional.one_hot(k, 10).float()


def test_generation_accuracy_counts_images_classified_as_their_label():
    out = E.generation_accuracy(_LabelPainter(), _PixelReader(), torch.eye(10), n_per_label=7, repeats=3, chunk=3)
    assert out["mean"] == 100.0 and out["std"] == 0.0 and out["per_repeat"] == [100.0] * 3
    out = E.generation_accuracy(_LabelPainter(), _PixelReader(wrong=(2, 5, 9)), torch.eye(10), n_per_label=5,
                                repeats=1)
    assert out["mean"] == pytest.approx(70.0)
    with pytest.raises(ValueError, match="n_per_label"):
        E.generation_accuracy(_LabelPainter(), _PixelReader(), torch.eye(10), n_per_label=0)


def test_generation_accuracy_std_is_over_repeats():
    torch.manual_seed(0)
    m = build_model("pse", {"latent_dim": 2}, dims={"image_dim": 784, "class_dim": 10, "n_classes": 10})
    out = E.generation_accuracy(m, _PixelReader(), torch.eye(10), n_per_label=50, repeats=4, seed=1)
    assert len(out["per_repeat"]) == 4
    vals = torch.tensor(out["per_repeat"], dtype=torch.float64)
    assert out["std"] == pytest.approx(float(vals.std()), abs=1e-9)
    assert out["mean"] == pytest.approx(float(vals.mean()), abs=1e-9)


def test_interpolation_ends_at_the_label_means():
    torch.manual_seed(0)
    m = build_model("pse", {"latent_dim": 3}, dims={"image_dim": 784, "class_dim": 10, "n_classes": 10})
    emb = torch.eye(10)
    strip = E.interpolate_means(m, emb, 2, 7, steps=5)
    mu, _ = m.encode_label(emb)
    with torch.no_grad():
        torch.testing.assert_close(strip[0], torch.sigmoid(m.decode(mu[2:3]))[0])
        torch.testing.assert_close(strip[-1], torch.sigmoid(m.decode(mu[7:8]))[0])


# --------------------------------------------------------------------------
# data task
# --------------------------------------------------------------------------
def test_labels_task_one_hot_and_word_vectors():
    t = E.labels_task("mnist", train_size=300, test_size=50)
    assert t.train["image"].shape == (300, 784) and t.test["label"].shape == (50,)
    assert float(t.train["image"].min()) >= 0 and float(t.train["image"].max()) <= 1
    assert t.dims == {"image_dim": 784, "class_dim": 10, "n_classes": 10}
    torch.testing.assert_close(t.static["class_emb"], torch.eye(10))
    w = E.labels_task("fashion-mnist", "word-vectors", train_size=10, test_size=10)
    assert w.static["class_emb"].shape == (10, 50) and w.dims["class_dim"] == 50
    # a class name's vector is the mean of its words' GloVe vectors ('Ankle boot' = ankle, boot)
    from visem.features.text import glove

    g = glove()
    torch.testing.assert_close(w.static["class_emb"][9], torch.from_numpy((g.vector("ankle") + g.vector("boot")) / 2))
    with pytest.raises(ValueError, match="label_encoding"):
        E.labels_task("mnist", "bag-of-words", train_size=10, test_size=10)
    with pytest.raises(ValueError, match="mnist or fashion-mnist"):
        E.labels_task("emoji", train_size=10)


def test_train_from_the_packaged_config(tmp_path):
    from visem.train.run import load_run_config, train_run

    cfg_path = Path(E.__file__).parents[1] / "configs" / "pse-mnist.yaml"
    cfg = load_run_config(cfg_path, {"train": {"steps": 5, "progress": False},
                                     "data": {"train_size": 500, "test_size": 200}})
    metrics = train_run(cfg, tmp_path / "run")
    assert set(metrics) == {"reconstruction_error", "annotation_accuracy"}
    assert (tmp_path / "run" / "model.safetensors").is_file()


# --------------------------------------------------------------------------
# --quick end to end
# --------------------------------------------------------------------------
def test_quick_pse_mnist_end_to_end(tmp_path):
    results = reproduce("pse-mnist", tmp_path, quick=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == results["rows"]
    rows = {(r["model"], r["latent_dim"]): r for r in results["rows"]}
    assert set(rows) == {(m, 10) for m in E.MODEL_ORDER}
    for r in rows.values():
        assert set(CONTRACT) <= set(r)
        assert math.isfinite(r["reconstruction_error"]) and 0 <= r["generation_accuracy"] <= 100
    assert rows[("cvae", 10)]["annotation_accuracy"] is None
    # annotation of PSE on MNIST: far above the 10% of chance after 400 steps (2,000 reach ~88%)
    assert rows[("pse", 10)]["annotation_accuracy"] > 40.0
    assert rows[("pse-star", 10)]["annotation_accuracy"] > 40.0
    table = format_table(results)
    assert "(96.00)" in table  # the paper's PSE 10-D annotation accuracy beside ours
    for fig in results["figures"]:
        assert (tmp_path / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("latent_2d" in f for f in results["figures"])
    assert set(results["latent_2d"]) == set(E.MODEL_ORDER)
