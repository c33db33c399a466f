"""emoji-cross-style and emoji-sparse: the full code path on a synthetic emoji-like corpus."""

import numpy as np
import pytest
import torch

from visem.experiments import format_table, get_experiment
from visem.experiments.retrieval import (
    ABLATIONS,
    Budget,
    bleu_ceiling,
    cross_style,
    region_pca,
    setting_name,
    sparse,
    split_concepts,
    synthetic_corpus,
)
from visem.features.text import TextTable
from visem.train.sampler import IndexSampler, MultiSampler

CROSS = ("vsepp", "vsa-ae", "vsa-e-mmd", "vsa-ae-mmd")
SPARSE = ("vsepp", "scan-xattn", "a3vse")  # registered models with a budget
METRICS = {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _budget(names, steps=4):
    small = {"vsepp": {"embed_dim": 16, "word_dim": 8},
             "vsa-ae": {"hidden_dim": 16, "channels": (8, 8), "word_dim": 8},
             "vsa-e-mmd": {"hidden_dim": 16, "channels": (8, 8), "word_dim": 8},
             "vsa-ae-mmd": {"hidden_dim": 16, "channels": (8, 8), "word_dim": 8},
             "scan-xattn": {"embed_dim": 16, "word_dim": 8},
             "a3vse": {"embed_dim": 16, "word_dim": 8, "disc_hidden": 16, "heads": 2}}
    return Budget(steps={m: steps for m in names}, batch_size={m: 8 for m in names}, lr={m: 1e-3 for m in names},
                  model={m: small[m] for m in names}, test_fraction=0.25, log_every=2)


def test_experiments_are_registered():
    assert get_experiment("emoji-cross-style").paper.startswith("seed 001")
    assert get_experiment("emoji-sparse").paper.startswith("seed 003")


def test_concept_split_is_disjoint_and_seeded():
    concept = np.repeat(np.arange(20), 2)
    tr, te = split_concepts(concept, 0.25, seed=3)
    assert len(te) == 5 and not set(tr) & set(te) and set(tr) | set(te) == set(range(20))
    assert np.array_equal(split_concepts(concept, 0.25, seed=3)[1], te)


def test_samplers_gather_and_resume_exactly():
    table = torch.arange(10.0).view(10, 1) * 10
    a = IndexSampler({"i": torch.arange(10)}, {"x": ("i", table)}, batch_size=3, seed=0)
    b = IndexSampler({"i": torch.arange(7)}, {"y": ("i", table)}, batch_size=2, seed=1)
    joint = MultiSampler({"a": a, "b": b}, prefix=False)
    for _ in range(5):
        next(joint)
    state = joint.state_dict()
    expected = [next(joint) for _ in range(4)]
    a2 = IndexSampler({"i": torch.arange(10)}, {"x": ("i", table)}, batch_size=3, seed=0)
    b2 = IndexSampler({"i": torch.arange(7)}, {"y": ("i", table)}, batch_size=2, seed=1)
    joint2 = MultiSampler({"a": a2, "b": b2}, prefix=False)
    joint2.load_state_dict(state)
    for want in expected:
        got = next(joint2)
        assert torch.equal(got["x"], want["x"]) and torch.equal(got["y"], want["y"])
    assert expected[0]["x"].dtype == torch.float32 and expected[0]["x"].shape == (3, 1)


def test_cross_style_rows_and_unpaired_target(tmp_path):
    corpus = synthetic_corpus(n_concepts=16)
    res = cross_style(corpus, tmp_path, _budget(CROSS))
    rows = res["rows"]
    assert [(r["model"], r["setting"]) for r in rows] == [(m, s) for m in CROSS for s in ("target", "source")]
    for r in rows:
        assert METRICS <= set(r) and r["dataset"] == "emoji"
        assert ("bleu4" in r) == (r["model"] in ("vsa-ae", "vsa-ae-mmd"))
        assert 0.0 <= r["i2t_r10"] <= 100.0
    cfg = res["config"]
    assert cfg["n_test_concepts"] == 4 and cfg["n_target_images"] == 12
    # no reconstruction beats a perfect auto-encoder over the training vocabulary
    for r in rows:
        if "bleu4" in r:
            assert all(r[f"bleu{n}"] <= cfg["bleu_ceiling"][r["setting"]][f"bleu{n}"] + 1e-9 for n in (2, 3, 4))
    # each model trained its steps and left its weights
    assert all((tmp_path / m / "model.safetensors").exists() for m in CROSS)
    table = format_table({"experiment": "emoji-cross-style", "rows": rows, "paper": []})
    assert "vsa-ae-mmd" in table


def test_sparse_rows_ablations_and_tag_baseline(tmp_path):
    corpus = synthetic_corpus(n_concepts=16)
    res = sparse(corpus, tmp_path, _budget(SPARSE, steps=3), settings=((0.25, 1),), ablation_setting=(0.25, 1),
                 full=True)
    got = [(r["model"], r["setting"]) for r in res["rows"]]
    models = SPARSE + ("a3vse-no-adv",)  # the default: A3VSE without discriminators at every setting too
    expected = [(m, "sparse-25-1") for m in models] + [(a, "sparse-25-1") for a in ABLATIONS if a not in models]
    expected += [(m, "full") for m in models] + [("s_g", "no-pairs")]
    assert got == expected
    header = (tmp_path / "full" / "a3vse-no-adv" / "metrics.csv").read_text().splitlines()[0]
    assert "triplet_pair" in header and "adversarial" not in header
    assert "adversarial" in (tmp_path / "full" / "a3vse" / "metrics.csv").read_text().splitlines()[0]
    assert all(METRICS <= set(r) for r in res["rows"])
    splits = res["config"]["splits"]
    assert splits["sparse-25-1"] == {"paired_images": 6, "pairs": 6, "unpaired_images": 18}
    assert splits["full"] == {"paired_images": 24, "pairs": 48, "unpaired_images": 0}
    assert res["config"]["n_test_images"] == 4  # held-out concepts, one style
    # the synthetic tags are the caption words: tag matching finds each caption's image
    s_g = res["rows"][-1]
    assert s_g["t2i_r1"] == 100.0 and s_g["i2t_r1"] == 100.0


def test_region_pca_keeps_the_dominant_directions_fitted_on_training_images():
    g = np.random.default_rng(0)
    basis = np.linalg.qr(g.standard_normal((10, 2)))[0]  # 2 strong directions in 10-d
    grid = (g.standard_normal((30, 5, 2)) * [5.0, 3.0]) @ basis.T + 0.01 * g.standard_normal((30, 5, 10))
    out = region_pca(grid.astype(np.float32), np.arange(20), k=2)
    assert out.shape == (30, 5, 2) and out.dtype == np.float32
    # two components carry (almost) all of the variance, images outside the fit set included
    centred = grid[20:] - grid[:20].reshape(-1, 10).mean(0)
    assert np.allclose((out[20:] ** 2).sum(), (centred ** 2).sum(), rtol=1e-3)
    with pytest.raises(ValueError, match="grid_pca"):
        region_pca(grid, np.arange(20), k=11)


def test_setting_names():
    assert setting_name(0.1, 1) == "sparse-10-1"
    assert setting_name(0.5, 0) == "sparse-50-all"
    assert setting_name(1.0, 0) == "full"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["emoji-cross-style", "emoji-sparse"])
def test_quick_reproduction_on_emoji(tmp_path, name):
    pytest.importorskip("visem.features")
    from visem.data.paths import DataError
    from visem.experiments import reproduce

    try:
        res = reproduce(name, tmp_path, quick=True)
    except DataError as exc:
        pytest.skip(f"emoji data or features not prepared: {exc}")
    assert (tmp_path / "results.json").exists() and res["rows"] and res["paper"]


def test_bleu_ceiling_counts_out_of_vocabulary_words_as_misses():
    from sacrebleu.metrics import BLEU

    text = TextTable(["a small red cat sat on the mat today", "one big blue dog ran in the park"])
    caps = ["a small red cat ran in the park", "one big green dog sat on the mat"]  # "green" is unknown
    data = {"text": text.encode(caps), "captions": caps}
    got = bleu_ceiling(data, text, max_len=30)
    hyps = ["a small red cat ran in the park", "one big <unk> dog sat on the mat"]
    for n in (2, 3, 4):
        want = BLEU(tokenize="none", max_ngram_order=n).corpus_score(hyps, [caps]).score
        assert abs(got[f"bleu{n}"] - want) < 1e-9
    assert got["bleu4"] < 100.0
    assert bleu_ceiling({"text": text.encode(caps[:1]), "captions": caps[:1]}, text, 30)["bleu4"] == pytest.approx(100.0)
