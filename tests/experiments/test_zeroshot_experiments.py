"""Zero-shot protocols (splits, few-shot, validation) and the quick built-in experiments."""

import numpy as np
import pytest
import torch

from visem.data.synthetic import synthetic_pairs
from visem.experiments import format_table, get_experiment, reproduce
from visem.experiments.zscmr import _CMR_RUNS, make_cmr_split
from visem.experiments.zsl import _ZSL_RUNS, few_shot_split, make_zsl_split, train_zsl, validation_split, zsl_metrics
from visem.train.trainer import TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic_pairs(n_classes=10, per_class=20, image_dim=12, text_dim=6, class_dim=4, seed=0)


def test_zsl_split_keeps_unseen_classes_out_of_training(data):
    sp = make_zsl_split(data["image"], data["label"], data["class_emb"], [2, 5, 7], seed=0)
    assert set(sp.unseen.tolist()) == {2, 5, 7}
    assert not torch.isin(sp.train_label, sp.unseen).any()
    assert not torch.isin(sp.test_seen_label, sp.unseen).any()
    assert set(sp.test_unseen_label.tolist()) == {2, 5, 7}
    assert len(sp.train_label) + len(sp.test_seen_label) + len(sp.test_unseen_label) == 200


def test_few_shot_moves_k_images_per_novel_class(data):
    sp = make_zsl_split(data["image"], data["label"], data["class_emb"], [2, 5, 7], seed=0)
    fs = few_shot_split(sp, 3, seed=1)
    for c in (2, 5, 7):
        assert int((fs.train_label == c).sum()) == 3
        assert int((fs.test_unseen_label == c).sum()) == 20 - 3
    # the moved images left the test set: no image is both trained on and tested
    train_rows = {tuple(r.tolist()) for r in fs.train_image}
    assert not any(tuple(r.tolist()) in train_rows for r in fs.test_unseen_image)
    with pytest.raises(ValueError, match="too few"):
        few_shot_split(sp, 20)


def test_validation_split_lives_inside_the_seen_training_images(data):
    sp = make_zsl_split(data["image"], data["label"], data["class_emb"], [2, 5, 7], seed=0)
    val = validation_split(sp, 2, seed=0)
    assert len(val.unseen) == 2 and torch.isin(val.unseen, sp.seen).all()
    for part in (val.train_label, val.test_seen_label, val.test_unseen_label):
        assert not torch.isin(part, sp.unseen).any()  # outer unseen classes never appear
    n_val = len(val.train_label) + len(val.test_seen_label) + len(val.test_unseen_label)
    assert n_val == len(sp.train_label)  # only training images are used


def test_inductive_training_never_sees_unseen_side_information(data, monkeypatch):
    sp = make_zsl_split(data["image"], data["label"], data["class_emb"], [2, 5, 7], seed=0)
    seen_batches = []
    from visem.models.zeroshot import DeViSE

    orig = DeViSE.loss

    def spy(self, batch, progress=0.0):
        seen_batches.append(batch)
        return orig(self, batch, progress)

    monkeypatch.setattr(DeViSE, "loss", spy)
    train = TrainConfig(steps=3, batch_size=16, lr=1e-3, log_every=10**9, checkpoint_every=10**9, progress=False)
    train_zsl("devise", {}, sp, train)
    unseen_rows = {tuple(r.tolist()) for r in sp.class_emb[sp.unseen]}
    for b in seen_batches:
        assert "unlabeled" not in b
        assert not any(tuple(r.tolist()) in unseen_rows for r in b["class_emb"])
    seen_batches.clear()
    train_zsl("devise", {}, sp, train, transductive=True)
    assert all(b["unlabeled"].shape[1] == 12 for b in seen_batches)
    assert all(b["unlabeled_classes"].sum() == 3 for b in seen_batches)


def test_zsl_metrics_of_a_perfect_model(data):
    sp = make_zsl_split(data["image"], data["label"], data["class_emb"], [2, 5, 7], seed=0)

    class Oracle:  # the class vector of each image's own class: every score is perfect
        def embed_image(self, x):
            return sp.class_emb[lookup[tuple(x[0].tolist())]] if x.dim() == 1 else torch.stack(
                [sp.class_emb[lookup[tuple(r.tolist())]] for r in x])

        def embed_class(self, s):
            return s

        def predict(self, x, s, ids):
            return torch.cdist(self.embed_image(x), s).argmin(1)

    lookup = {tuple(r.tolist()): int(y) for r, y in zip(torch.as_tensor(data["image"]), data["label"])}
    m = zsl_metrics(Oracle(), sp)
    assert m["unseen_accuracy"] == 100.0 and m["gzsl_h"] == 100.0 and m["retrieval_map"] == pytest.approx(100.0)


def test_cmr_split_separates_classes(data):
    cs = make_cmr_split(data["image"], data["text"], data["label"], data["class_emb"], 0.3, seed=0)
    assert len(cs.unseen) == 3
    assert not torch.isin(cs.train_label, cs.unseen).any()
    assert torch.isin(cs.test_image_label, cs.unseen).all()


def _skip_without_data(name):
    from visem.data.paths import DataError

    try:
        from visem.features import compute_features

        compute_features(name, "glove-classes", **({"style": "google"} if name == "emoji" else {}))
    except (DataError, ImportError, FileNotFoundError) as exc:  # data or word vectors not installed
        pytest.skip(f"{name} data not available: {exc}")


def test_zsl_fashion_mnist_quick(tmp_path):
    _skip_without_data("fashion-mnist")
    res = reproduce("zsl-fashion-mnist", tmp_path, quick=True)
    assert (tmp_path / "results.json").exists()
    ids = [(r["model"], r["setting"]) for r in res["rows"]]
    assert ids == [(m, s) for m, s, *_ in _ZSL_RUNS] + [("random", "floor")]
    for r in res["rows"]:
        assert r["features"] == "pixels" and r["n_runs"] == 1
        for key in ("unseen_accuracy", "gzsl_seen", "gzsl_unseen", "gzsl_h", "retrieval_map"):
            assert 0.0 <= r[key] <= 100.0 and f"{key}_std" in r
    cfg = res["config"]
    assert cfg["quick"] and cfg["settings"]["train"]["steps"] == 40  # the budget is recorded
    assert [sorted(sp["seen"] + sp["unseen"]) for sp in cfg["splits"]] == [list(range(10))]
    assert len(cfg["splits"][0]["unseen"]) == 3
    assert set(cfg["term_shares"]) == {f"pixels/{m}/{s}" for m, s, *_ in _ZSL_RUNS if m not in ("eszsl", "sae")}
    assert "eszsl" in format_table(res)
    assert get_experiment("zsl-mnist").description


def test_zsl_settings_are_overridable_and_checked(tmp_path):
    _skip_without_data("fashion-mnist")
    from visem.config import ConfigError

    with pytest.raises(ConfigError, match="no setting 'train.stepz'"):
        reproduce("zsl-fashion-mnist", tmp_path, quick=True, overrides={"train": {"stepz": 3}})
    res = reproduce("zsl-fashion-mnist", tmp_path, quick=True,
                    overrides={"train": {"steps": 3}, "shares": False, "grids": {"sae": {"lam": [1.0]}},
                               "models": {"revise": {"mmd_weight": 2.5}}})
    assert res["config"]["settings"]["train"]["steps"] == 3 and res["config"]["overrides"]["train"]["steps"] == 3
    revise_runs = [r for r in res["config"]["runs"] if r["model"] == "revise"]
    assert revise_runs and all(r["params"]["mmd_weight"] == 2.5 for r in revise_runs)
    assert res["config"]["term_shares"] == {}
    assert {v["lam"] for k, v in res["config"]["closed_form_chosen_on_validation"].items() if "/sae/" in k} == {1.0}


@pytest.mark.slow  # loads and pools the 1,906 emoji images' pixels: about a minute on 2 busy cores
def test_zscmr_emoji_quick(tmp_path):
    _skip_without_data("emoji")
    res = reproduce("zscmr-emoji", tmp_path, quick=True)
    ids = [(r["model"], r["setting"]) for r in res["rows"]]
    assert ids == [(m, s) for m, s, *_ in _CMR_RUNS] + [("random", "floor")]
    for r in res["rows"]:
        for key in ("i2t_map", "t2i_map", "avg_map", "p_at_100"):
            assert 0.0 <= r[key] <= 1.0
        assert r["avg_map"] == pytest.approx((r["i2t_map"] + r["t2i_map"]) / 2)
    # seed 004's rows are on other data sets and match none of ours
    assert all(p["dataset"] != "emoji-google" for p in res["paper"])


def test_run_xian_on_a_file_in_the_published_layout(tmp_path, data):
    import scipy.io

    from visem.experiments.benchmarks import run_xian

    folder = tmp_path / "TOY"
    folder.mkdir()
    labels = data["label"] + 1  # 1-based, one column per image
    idx = np.arange(1, labels.size + 1)
    unseen = np.isin(labels, [3, 6, 9])
    seen_idx = idx[~unseen]
    test_seen, trainval = seen_idx[::5], np.setdiff1d(seen_idx, seen_idx[::5])
    scipy.io.savemat(folder / "res101.mat", {"features": data["image"].T.astype(np.float64),
                                             "labels": labels.reshape(-1, 1)})
    scipy.io.savemat(folder / "att_splits.mat", {
        "att": data["class_emb"].T.astype(np.float64),
        "trainval_loc": trainval.reshape(-1, 1), "test_seen_loc": test_seen.reshape(-1, 1),
        "test_unseen_loc": idx[unseen].reshape(-1, 1),
        "allclasses_names": np.array([[f"c{i}"] for i in range(10)], dtype=object),
    })
    res = run_xian(folder, quick=True, steps=5)
    assert [(r["model"], r["setting"]) for r in res["rows"]] == [(m, s) for m, s, _, _, k in _ZSL_RUNS if not k] + [
        ("random", "floor")]
    assert res["config"]["settings"]["train"]["steps"] == 5
    assert res["config"]["splits"][0]["unseen"] == [2, 5, 8]
    assert all(r["dataset"] == "TOY" for r in res["rows"])
    # the closed forms need no training: on this linear problem they are far above chance (33%)
    assert next(r for r in res["rows"] if r["model"] == "sae")["unseen_accuracy"] > 80.0


def test_unseen_class_count_never_rounds_to_nothing():
    from visem.experiments.zscmr import choose_unseen, n_unseen

    assert n_unseen(10, 0.5) == 5 and n_unseen(3, 0.1) == 1 and n_unseen(2, 0.9) == 1
    with pytest.raises(ValueError, match="unseen_fraction"):
        n_unseen(10, 0.0)
    seen, unseen = choose_unseen(np.arange(8), seed=0, unseen_fraction=0.25)
    assert len(unseen) == 2 and not set(seen) & set(unseen) and set(seen) | set(unseen) == set(range(8))
    seen, unseen = choose_unseen(np.arange(8), seed=0, unseen_classes=[7, 2])
    assert unseen.tolist() == [2, 7]
    with pytest.raises(ValueError, match="at least one seen"):
        choose_unseen(np.arange(3), seed=0, unseen_classes=[0, 1, 2])


def test_cap_class_share_balances_the_gallery():
    from visem.experiments.zscmr import cap_class_share

    small = [20 + i for i in range(20)]  # 20 classes of 20..39 items, and one of 259 (country-flag)
    labels = np.concatenate([np.zeros(259, int)] + [np.full(n, c + 1) for c, n in enumerate(small)])
    keep = cap_class_share(labels, 0.15, seed=0)
    _, counts = np.unique(labels[keep], return_counts=True)
    assert counts.max() / counts.sum() <= 0.15 + 1e-12
    assert counts.tolist()[1:] == small and counts[0] == int(0.15 * sum(small) / 0.85)  # only the big class shrinks
    # with few classes, capping one can push another over: every class ends under the cap
    few = np.array([0] * 259 + [1] * 20 + [2] * 30 + [3] * 25 + [4] * 40 + [5] * 10 + [6] * 35 + [7] * 15)
    _, c2 = np.unique(few[cap_class_share(few, 0.15, seed=0)], return_counts=True)
    assert c2.max() / c2.sum() <= 0.15 + 1e-12 and c2[1] == 20 and c2[5] == 10
    assert np.array_equal(keep, cap_class_share(labels, 0.15, seed=0))  # seeded
    assert len(cap_class_share(labels[259:], 0.5, seed=0)) == len(labels) - 259  # nothing over the cap: all kept
    with pytest.raises(ValueError, match="cannot hold"):
        cap_class_share(few, 0.1, seed=0)  # 8 classes cannot each hold under 1/8


def test_grids_cover_the_papers_range_and_edges_are_flagged():
    from visem.experiments.zsl import _GRID_AXES, grid_edges, param_grid, warn_grid_edges

    for axes in _GRID_AXES.values():
        for values in axes.values():
            assert min(values) == pytest.approx(1e-3) and max(values) == pytest.approx(1e3)
    grid = param_grid({"gamma": [0.1, 1.0], "lam": [1.0, 10.0, 100.0]})
    assert len(grid) == 6 and grid[0] == {"gamma": 0.1, "lam": 1.0} and grid[-1] == {"gamma": 1.0, "lam": 100.0}
    axes = {"gamma": [0.1, 1.0, 10.0], "lam": [1.0, 10.0, 100.0], "fixed": [3.0]}
    assert grid_edges(axes, {"gamma": 1.0, "lam": 10.0, "fixed": 3.0}) == []
    assert grid_edges(axes, {"gamma": 0.1, "lam": 100.0, "fixed": 3.0}) == [
        "gamma=0.1 (lowest of 0.1..10)", "lam=100 (highest of 1..100)"]
    with pytest.warns(UserWarning, match=r"eszsl chose gamma=0\.1 .*--set grids\.eszsl"):
        warn_grid_edges("here", "eszsl", ["gamma=0.1 (lowest of 0.1..10)"])


def test_random_floor_is_chance(data):
    from visem.experiments.zsl import RandomScorer

    sp = make_zsl_split(data["image"], data["label"], data["class_emb"], [2, 5, 7], seed=0)
    accs = [zsl_metrics(RandomScorer(seed), sp)["unseen_accuracy"] for seed in range(40)]
    assert np.mean(accs) == pytest.approx(100 / 3, abs=3.0)  # 3 unseen classes
    assert zsl_metrics(RandomScorer(0), sp) == zsl_metrics(RandomScorer(0), sp)  # seeded
