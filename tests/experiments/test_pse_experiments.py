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
import visem.models.pse as P
import visem.models.pse_eval as PE
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
    got = PE.reconstruction_error(m, x, torch.tensor([0, 1]), torch.eye(2), chunk=1)
    assert got == pytest.approx(sum(want) / 2, abs=1e-6)
    assert E.reconstruction_error is PE.reconstruction_error  # the experiments use the models' evaluation


def test_reconstruction_from_the_posterior_mean_decodes_mu():
    torch.manual_seed(0)
    m = build_model("pse", {"latent_dim": 2, "hidden": (5,)}, dims={"image_dim": 4, "class_dim": 2, "n_classes": 2})
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        mu, _ = m.image_encoder(x)
        want = float(P.bernoulli_nll(m.image_decoder(mu), x).mean())
    assert PE.reconstruction_error(m, x, y, torch.eye(2), decode="mean", chunk=4) == pytest.approx(want, rel=1e-6)
    # a sample differs from the mean (the variance is not 0)
    assert PE.reconstruction_error(m, x, y, torch.eye(2), seed=3) != pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="decode"):
        PE.reconstruction_error(m, x, y, torch.eye(2), decode="mode")


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
    assert PE.annotation_accuracy(model, x, labels, torch.eye(3), chunk=3) == pytest.approx(500 / 7)


class _LabelPainter(nn.Module):
    """'Generates' 784-pixel images whose first pixel is (label + 0.5) / 10: z is the label index."""

    can_annotate = True
    conditional_decoder = False

    def sample_latent(self, vectors, n, generator=None):
        return vectors.argmax(1).float().repeat_interleave(n)[:, None]

    def decode(self, z, label_vectors=None):
        img = torch.full((z.shape[0], 784), -30.0)  # sigmoid -> 0
        img[:, 0] = torch.logit((z[:, 0] + 0.5) / 10)
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
    out = PE.generation_accuracy(_LabelPainter(), _PixelReader(), torch.eye(10), n_per_label=7, repeats=3, chunk=3)
    assert out["mean"] == 100.0 and out["std"] == 0.0 and out["per_repeat"] == [100.0] * 3
    # chunks of 4 straddle the label boundaries (7 images per label)
    out = PE.generation_accuracy(_LabelPainter(), _PixelReader(wrong=(2, 5, 9)), torch.eye(10), n_per_label=7,
                                 repeats=1, chunk=4)
    assert out["mean"] == pytest.approx(70.0)
    with pytest.raises(ValueError, match="n_per_label"):
        PE.generation_accuracy(_LabelPainter(), _PixelReader(), torch.eye(10), n_per_label=0)


def test_generated_predictions_match_a_per_label_loop():
    """The batched scorer equals a naive loop over labels and images of the same latent samples."""
    torch.manual_seed(0)
    for name in ("pse", "cvae"):
        m = build_model(name, {"latent_dim": 3}, dims={"image_dim": 784, "class_dim": 10, "n_classes": 10}).eval()
        cnn = _PixelReader()
        emb = torch.eye(10)
        got = PE.generated_predictions(m, cnn, emb, 13, torch.Generator().manual_seed(4), chunk=7)
        z = m.sample_latent(emb, 13, torch.Generator().manual_seed(4))
        want = torch.empty(10, 13, dtype=torch.long)
        with torch.no_grad():
            for k in range(10):
                for j in range(13):
                    zz = z[k * 13 + j : k * 13 + j + 1]
                    img = torch.sigmoid(m.decode(zz, emb[k : k + 1] if m.conditional_decoder else None))
                    want[k, j] = cnn(img).argmax(1)[0]
        assert torch.equal(got, want)


def test_classify_generated_gives_class_fractions():
    frac = PE.classify_generated(_LabelPainter(), _PixelReader(wrong=(3,)), torch.eye(10)[[1, 3]], n=6, n_classes=10)
    want = torch.zeros(2, 10)
    want[0, 1] = 1.0
    want[1, 4] = 1.0  # label 3 is read as 4
    torch.testing.assert_close(frac, want)


def test_generation_accuracy_std_is_over_repeats():
    torch.manual_seed(0)
    m = build_model("pse", {"latent_dim": 2}, dims={"image_dim": 784, "class_dim": 10, "n_classes": 10})
    out = PE.generation_accuracy(m, _PixelReader(), torch.eye(10), n_per_label=50, repeats=4, seed=1)
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
def test_quick_pse_mnist_end_to_end(tmp_path, one_thread):
    results = reproduce("pse-mnist", tmp_path, quick=True, overrides={"workers": 1, "long": {"steps": [60]}})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == results["rows"]
    rows = {(r["model"], r["latent_dim"], r.get("setting")): r for r in results["rows"]}
    floor = rows.pop(("random-floor", 0, "per-pixel mean image, chance labels"))
    assert floor["annotation_accuracy"] == floor["generation_accuracy"] == 10.0
    assert floor["reconstruction_error"] > max(r["reconstruction_error"] for r in rows.values())
    assert set(rows) == {(m, 10, None) for m in E.MODEL_ORDER} | {("pse", 10, "60 steps")}
    for r in rows.values():
        assert set(CONTRACT) <= set(r) and r["n_runs"] == 1
        assert math.isfinite(r["reconstruction_error"]) and 0 <= r["generation_accuracy"] <= 100
    assert rows[("cvae", 10, None)]["annotation_accuracy"] is None
    # annotation of PSE on MNIST: far above the 10% of chance after 400 steps (2,000 reach ~88%)
    assert rows[("pse", 10, None)]["annotation_accuracy"] > 40.0
    assert rows[("pse-star", 10, None)]["annotation_accuracy"] > 40.0
    cfg = results["config"]
    assert cfg["quick"] and cfg["settings"]["train"]["steps"] == 400 and cfg["settings"]["long"]["steps"] == [60]
    assert cfg["wall_s"] > 0 and cfg["cpu_s"] > 0
    table = format_table(results)
    assert "(96.00)" in table  # the paper's PSE 10-D annotation accuracy beside ours
    assert "QUICK RUN" in table and "long.steps=[60]" in table
    for fig in results["figures"]:
        assert (tmp_path / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("latent_2d" in f for f in results["figures"])
    assert set(results["latent_2d"]) == set(E.MODEL_ORDER) and results["latent_2d_steps"] == 30
    # term shares at the start and end of every row, per encoder network and over all of them
    sh = results["term_shares"]["jmvae-10d"]
    assert sh["weights"] == {"kl_image": 0.1, "kl_label": 0.1}
    assert set(sh["end"]) == {"encoders", "joint_encoder", "image_encoder", "label_encoder"}
    assert sum(sh["start"]["encoders"].values()) == pytest.approx(1.0, abs=1e-4)
    assert sh["end"]["image_encoder"]["kl_image"] == pytest.approx(1.0)  # its only gradient
    v = {r["model"]: r for r in results["reconstruction_variants"] if r["steps"] == 400}
    assert v["pse"]["reconstruction_error_posterior_mean"] < rows[("pse", 10, None)]["reconstruction_error"]


def test_seeds_are_summarised_with_mean_and_std_in_worker_processes(tmp_path, one_thread):
    over = {"workers": 2, "seeds": 2, "rows": ["pse:3"], "train": {"steps": 20}, "plot_steps": 5,
            "generation": {"n_per_label": 20, "repeats": 2}, "shares": False}
    results = reproduce("pse-mnist", tmp_path, quick=True, seed=3, overrides=over)
    row, floor = results["rows"]
    assert floor["model"] == "random-floor" and floor["annotation_accuracy"] == pytest.approx(10.0)
    assert row["n_runs"] == 2 and results["config"]["seeds"] == [3, 4]
    assert (tmp_path / "runs" / "pse-3d-20steps-seed3" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "pse-3d-20steps-seed4" / "model.safetensors").is_file()
    assert row["reconstruction_error_std"] > 0 and "generation_repeat_std" in row
    assert results["term_shares"]["pse-3d"] is None
    # a rerun reuses the finished run folders and gives the same numbers
    again = reproduce("pse-mnist", tmp_path, quick=True, seed=3, overrides={**over, "workers": 1})
    assert again["rows"] == results["rows"]


def test_settings_errors_name_the_key(tmp_path):
    from visem.config import ConfigError

    with pytest.raises(ConfigError, match="trian"):
        reproduce("pse-mnist", tmp_path, quick=True, overrides={"trian": {"steps": 5}})
    with pytest.raises(ConfigError, match="rows"):
        reproduce("pse-mnist", tmp_path, quick=True, overrides={"rows": ["pse"]})
    with pytest.raises(ConfigError, match="seeds"):
        reproduce("pse-word-vectors", tmp_path, quick=True, overrides={"seeds": 0})
    with pytest.raises(ConfigError, match="long.seeds"):
        reproduce("pse-mnist", tmp_path, quick=True, overrides={"long": {"steps": [100, 200], "seeds": [1]}})


def test_term_shares_over_all_encoders_equal_gradient_shares(one_thread):
    """The per-network split of the experiments agrees with visem.train.shares, its oracle."""
    from visem.train.shares import gradient_shares

    torch.manual_seed(0)
    m = build_model("trelbo", {"latent_dim": 3, "hidden": (8,)}, dims={"image_dim": 12, "class_dim": 4, "n_classes": 4})
    batch = m.example_batch(9, torch.Generator().manual_seed(1))
    got = E.term_shares(m, [batch], 1.0, seed=5)
    torch.manual_seed(5)
    want = gradient_shares(m, batch)
    assert got["encoders"] == pytest.approx(want, rel=1e-9)
    for enc in ("joint_encoder", "image_encoder", "label_encoder"):
        torch.manual_seed(5)
        assert got[enc] == pytest.approx(gradient_shares(m, batch, params=list(getattr(m, enc).parameters())),
                                         rel=1e-9, abs=1e-12)
    assert got["label_encoder"]["reconstruction"] == 0.0  # the joint ELBO never reaches q(z|l)


def test_floor_scores_against_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(40, 5, generator=g), (torch.rand(7, 5, generator=g) > 0.5).float()
    out = PE.floor_scores(train, test, 4)
    p = train.double().mean(0)
    want = 0.0
    for img in test.double():
        for v, q in zip(img.tolist(), p.tolist()):
            want -= v * math.log(q) + (1 - v) * math.log(1 - q)
    assert out["reconstruction_error"] == pytest.approx(want / 7, rel=1e-9)
    assert out["annotation_accuracy"] == out["generation_accuracy"] == 25.0
