"""emoji-cross-style and emoji-sparse: the full code path on a synthetic emoji-like corpus."""

import numpy as np
import pytest
import torch

from visem.experiments import format_table, get_experiment
from visem.experiments.cross_style import CROSS_MODELS, bleu_ceiling, cross_style
from visem.experiments.retrieval import (
    Budget,
    aggregate,
    pool_regions,
    region_pca,
    split_concepts,
    synthetic_corpus,
)
from visem.experiments.sparse import (ABLATIONS, RETRIEVAL_MODELS, _comparisons, _seed003_rows, instance_classes,
                                     model_list, parse_setting, setting_name, sparse)
from visem.features.text import TextTable
from visem.train.sampler import IndexSampler, MultiSampler

CROSS = CROSS_MODELS  # incl. vsa-ae-mmd-sum, Eq. 11's summed reading
REGISTERED_CROSS = ("vsepp", "vsa-ae", "vsa-e-mmd", "vsa-ae-mmd")
SPARSE = ("vsepp", "scan-xattn", "a3vse")  # registered models with a budget
METRICS = {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _budget(names, steps=4, **kw):
    small = {"vsepp": {"embed_dim": 16, "word_dim": 8},
             "vsa-ae": {"hidden_dim": 16, "channels": (8, 8), "word_dim": 8},
             "vsa-e-mmd": {"hidden_dim": 16, "channels": (8, 8), "word_dim": 8},
             "vsa-ae-mmd": {"hidden_dim": 16, "channels": (8, 8), "word_dim": 8},
             "scan-xattn": {"embed_dim": 16, "word_dim": 8},
             "a3vse": {"embed_dim": 16, "word_dim": 8, "disc_hidden": 16, "heads": 2},
             "dpc": {"embed_dim": 16, "word_dim": 8, "text_len": 6, "text_channels": (8, 8, 8, 8),
                     "text_blocks": (1, 1, 1, 1)},
             "dan": {"word_dim": 8, "hidden_dim": 8, "margin": 1.5}}
    return Budget(steps={m: steps for m in names}, batch_size={m: 8 for m in names}, lr={m: 1e-3 for m in names},
                  model={m: small[m] for m in names}, test_fraction=0.25, log_every=2, **kw)


def test_experiments_are_registered():
    assert get_experiment("emoji-cross-style").paper.startswith("seed 001")
    assert get_experiment("emoji-sparse").paper.startswith("seed 003")


def test_concept_split_is_disjoint_and_seeded():
    concept = np.repeat(np.arange(20), 2)
    tr, te = split_concepts(concept, 0.25, seed=3)
    assert len(te) == 5 and not set(tr) & set(te) and set(tr) | set(te) == set(range(20))
    assert np.array_equal(split_concepts(concept, 0.25, seed=3)[1], te)
    tr2, te2, va = split_concepts(concept, 0.25, seed=3, val_fraction=0.1)
    assert np.array_equal(te2, te) and len(va) == 2 and set(tr2) | set(va) == set(tr) and not set(tr2) & set(va)
    assert not np.array_equal(split_concepts(concept, 0.25, seed=4)[1], te)


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
    res = cross_style(corpus, tmp_path, _budget(REGISTERED_CROSS))
    rows = res["rows"]
    expected = [(m, s) for m in CROSS for s in ("target", "source")] + [("random", "target"), ("random", "source")]
    assert [(r["model"], r["setting"]) for r in rows] == expected
    for r in rows:
        assert METRICS <= set(r) and r["dataset"] == "emoji"
        assert ("bleu4" in r) == (r["model"] in ("vsa-ae", "vsa-ae-mmd", "vsa-ae-mmd-sum"))
        assert 0.0 <= r["i2t_r10"] <= 100.0
    cfg = res["config"]
    assert cfg["n_test_concepts"] == 4 and cfg["n_target_images"] == 12
    # no reconstruction beats a perfect auto-encoder over the training vocabulary
    for r in rows:
        if "bleu4" in r:
            assert all(r[f"bleu{n}"] <= cfg["bleu_ceiling"][r["setting"]][f"bleu{n}"] + 1e-9 for n in (2, 3, 4))
    # each model trained its steps and left its weights; its term shares were measured at both ends
    assert all((tmp_path / m / "model.safetensors").exists() for m in CROSS)
    assert set(res["shares"]["vsa-ae-mmd"]["start"]) == {"ranking", "mmd", "rec_image", "rec_text"}
    assert sum(res["shares"]["vsa-ae-mmd"]["end"].values()) == pytest.approx(1.0)
    table = format_table({"experiment": "emoji-cross-style", "rows": rows, "paper": []})
    assert "vsa-ae-mmd" in table


def test_sparse_rows_ablations_baselines_and_selection(tmp_path):
    corpus = synthetic_corpus(n_concepts=20)
    budget = _budget(SPARSE, steps=3, val_fraction=0.1, validate_every=2)
    res = sparse(corpus, tmp_path, budget, settings=((0.25, 1), (1.0, 0)), ablation_setting=(0.25, 1))
    got = [(r["model"], r["setting"]) for r in res["rows"]]
    expected = [(m, "sparse-25-1") for m in SPARSE] + [(a, "sparse-25-1") for a in ABLATIONS]
    expected += [(m, "full") for m in SPARSE]
    expected += [("s_g", "no-pairs"), ("s_g (oracle tags)", "ceiling"), ("random", "floor")]
    assert got == expected
    header = (tmp_path / "full" / "a3vse" / "metrics.csv").read_text().splitlines()[0]
    assert "triplet_pair" in header and "adversarial" in header and "best_val" in header
    assert "adversarial" not in (tmp_path / "sparse-25-1" / "a3vse-no-adv" / "metrics.csv").read_text().splitlines()[0]
    assert all(METRICS <= set(r) for r in res["rows"])
    cfg = res["config"]
    # 20 concepts: 5 held out for testing, 2 for validation, 13 x 2 styles train
    assert (cfg["n_test_concepts"], cfg["n_val_concepts"], cfg["n_train_images"]) == (5, 2, 26)
    assert cfg["splits"]["sparse-25-1"] == {"paired_images": 6, "pairs": 6, "unpaired_images": 20}
    assert cfg["splits"]["full"] == {"paired_images": 26, "pairs": 52, "unpaired_images": 0}
    assert cfg["n_test_images"] == 5 and cfg["n_val_images"] == 2  # held-out concepts, one style
    assert not set(cfg["test_concepts"]) & set(cfg["val_concepts"])
    # every model was selected on validation rsum at a step it validated on
    assert all(b["step"] in (2, 3) for b in res["best"].values())
    # the synthetic tags are the caption words: tag matching finds each caption's image
    s_g = res["rows"][-3]
    assert s_g["t2i_r1"] == 100.0 and s_g["i2t_r1"] == 100.0


def test_sparse_grid_trains_dpc_on_instance_classes_and_dan_on_regions(tmp_path):
    corpus = synthetic_corpus(n_concepts=20)
    budget = _budget(("dpc", "dan"), steps=3, val_fraction=0.1, validate_every=2)
    res = sparse(corpus, tmp_path, budget, settings=((0.25, 1), (1.0, 0)), ablation_setting=None,
                 models=("dpc", "dan"), baselines=False)
    assert [(r["model"], r["setting"]) for r in res["rows"]] == [
        ("dpc", "sparse-25-1"), ("dan", "sparse-25-1"), ("dpc", "full"), ("dan", "full")]
    assert all(METRICS <= set(r) for r in res["rows"])
    # full: 26 training images of 13 concepts, the two styles of a concept one instance class
    assert res["config"]["splits"]["full"]["instance_classes"] == 13
    header = (tmp_path / "full" / "dpc" / "metrics.csv").read_text().splitlines()[0]
    assert {"ranking", "instance_img", "instance_txt", "stage"} <= set(header.split(","))
    assert set(res["shares"]["dpc@full"]["end"]) == {"ranking", "instance_img", "instance_txt"}
    assert set(res["shares"]["dan@full"]["end"]) == {"ranking"}


def test_instance_classes_models_option_and_comparisons():
    concept = np.array([7, 7, 3, 5, 3, 9])
    classes, n = instance_classes(concept, np.array([0, 1, 2, 4]), 6)
    assert classes.tolist() == [1, 1, 0, -1, 0, -1] and n == 2  # images of one concept share a class
    assert model_list("all") == list(RETRIEVAL_MODELS)
    assert model_list(["dpc", "a3vse-no-adv"]) == ["dpc", "a3vse-no-adv"]
    with pytest.raises(ValueError, match="unknown model"):
        model_list(["dpc", "clip"])
    s = {"settings": ["full"], "models": ["a3vse", "dpc"], "ablations": [], "ablation_setting": "full"}
    pairs = _comparisons(s)
    assert ("a3vse@full", "dpc@full") in pairs and ("a3vse@full", "dan@full") not in pairs


def test_paper_rows_of_tables_2_and_4():
    rows = {(r["model"], r["setting"], r["dataset"]): r for r in _seed003_rows()}
    assert len(rows) == len(_seed003_rows())  # no row twice
    dpc = rows[("dpc", "sparse-10-all", "Flickr30K 1K")]
    assert (dpc["t2i_r1"], dpc["i2t_r10"], dpc["rsum"]) == (8.5, 66.0, 198.7)
    dan = rows[("dan", "full", "MS-COCO 5K")]
    assert (dan["t2i_r1"], dan["t2i_r5"], dan["i2t_r1"]) == (29.8, 58.8, 40.8)
    for model in RETRIEVAL_MODELS:
        for setting in ("sparse-10-1", "sparse-50-2", "full"):
            assert (model, setting, "MS-COCO 5K") in rows
        assert (model, "sparse-50-2", "Flickr30K 1K") in rows


def test_aggregate_gives_mean_and_sample_std_per_row():
    rows = [{"model": "a", "setting": "s", "dataset": "d", "rsum": 10.0},
            {"model": "b", "setting": "s", "dataset": "d", "rsum": 1.0},
            {"model": "a", "setting": "s", "dataset": "d", "rsum": 14.0}]
    out = aggregate(rows)
    assert [r["model"] for r in out] == ["a", "b"]
    assert out[0]["rsum"] == 12.0 and out[0]["rsum_std"] == pytest.approx(np.std([10, 14], ddof=1))
    assert out[0]["n_runs"] == 2 and out[1]["rsum_std"] == 0.0


def test_pool_regions_averages_square_cells():
    grid = np.arange(2 * 16 * 3, dtype=np.float32).reshape(2, 16, 3)  # 4 x 4 regions
    out = pool_regions(grid, 2)
    assert out.shape == (2, 4, 3)
    cells = grid.reshape(2, 4, 4, 3)
    assert np.allclose(out[:, 0], cells[:, :2, :2].mean(axis=(1, 2)))
    assert np.allclose(out[:, 3], cells[:, 2:, 2:].mean(axis=(1, 2)))
    assert np.array_equal(pool_regions(grid, 4), grid)  # the full grid is returned as it is
    with pytest.raises(ValueError, match="regions must be"):
        pool_regions(grid, 5)


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
    for name in ("sparse-10-1", "sparse-50-all", "full", "sparse-20-3"):
        assert setting_name(*parse_setting(name)) == name
    with pytest.raises(ValueError, match="unknown setting"):
        parse_setting("sparse-ten-1")


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
