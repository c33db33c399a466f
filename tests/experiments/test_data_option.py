"""`visem reproduce NAME --data PATH`: zsl-xian, zscmr-mat and retrieval-precomp on tiny files in each layout.

Every file carries a planted signal (features are fixed linear images of class
codes or word codes plus noise), so the models must beat chance clearly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from visem.cli import main
from visem.config import ConfigError
from visem.data.paths import DataError
from visem.experiments import get_experiment, list_experiments, register_experiment, reproduce
from visem.experiments.zscmr import _CMR_RUNS
from visem.experiments.zsl import _ZSL_RUNS

ZSL_KEYS = ("unseen_accuracy", "gzsl_seen", "gzsl_unseen", "gzsl_h", "retrieval_map")
CMR_KEYS = ("i2t_map", "t2i_map", "avg_map", "p_at_100")
RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------
# planted-signal files
# --------------------------------------------------------------------------
def _xian(folder, xian_writer, n_classes=10, per_class=24, seed=0):
    """Images = class attributes through a fixed linear map + noise; 3 unseen classes, 2 validation classes."""
    rng = np.random.default_rng(seed)
    att = rng.standard_normal((n_classes, 10))
    w = rng.standard_normal((10, 16))
    labels = np.repeat(np.arange(n_classes), per_class)
    feats = att[labels] @ w + 0.3 * rng.standard_normal((labels.size, 16))
    unseen, val = [2, 5, 8], [0, 7]
    rows = np.arange(labels.size)
    seen_rows = rows[~np.isin(labels, unseen)]
    test_seen = seen_rows[::5]
    trainval = np.setdiff1d(seen_rows, test_seen)
    splits = {"trainval": trainval, "test_seen": test_seen, "test_unseen": rows[np.isin(labels, unseen)],
              "train": trainval[~np.isin(labels[trainval], val)], "val": trainval[np.isin(labels[trainval], val)]}
    return xian_writer(folder, feats, labels, att, splits, names=[f"class{i}" for i in range(n_classes)])


def _pairs(rng, codes, labels, wi, wt, noise=0.3):
    z = codes[labels]
    return (z @ wi + noise * rng.standard_normal((labels.size, wi.shape[1])),
            z @ wt + noise * rng.standard_normal((labels.size, wt.shape[1])), labels)


def _crossmodal(path, crossmodal_writer, n_classes=12, per_class=30, disjoint=False, names=None, seed=0):
    """Image and text of a pair = one class code through two fixed linear maps + noise (shared across classes)."""
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n_classes, 5))
    wi, wt = rng.standard_normal((5, 20)), rng.standard_normal((5, 9))
    labels = np.repeat(np.arange(n_classes), per_class)
    if disjoint:  # the file defines the zero-shot split: test classes appear only in the test split
        tr, te = labels[labels < n_classes - 2], labels[labels >= n_classes - 2]
    else:
        perm = rng.permutation(labels.size)
        tr, te = labels[perm[: labels.size * 3 // 4]], labels[perm[labels.size * 3 // 4:]]
    extra = {"names": np.array([[n] for n in names], dtype=object)} if names else None
    return crossmodal_writer(path, {"tr": _pairs(rng, codes, tr, wi, wt), "te": _pairs(rng, codes, te, wi, wt)}, extra)


def _precomp(folder, precomp_writer, n_train=240, n_test=40, seed=0):
    """Each image holds 3 of 40 words: 4 regions = word codes through a fixed map (+ a noise region); captions = the words."""
    world = np.random.default_rng(123)
    codes = world.standard_normal((40, 8))
    rmap = world.standard_normal((8, 12)) / np.sqrt(8)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("testall", n_test)):
        words = np.stack([rng.choice(40, size=3, replace=False) for _ in range(n)])
        regions = np.stack([np.concatenate([codes[ws] @ rmap, 0.3 * rng.standard_normal((1, 12))]) for ws in words])
        regions += 0.05 * rng.standard_normal(regions.shape)
        caps = []
        for ws in words:
            w = [f"w{i}" for i in ws]
            caps += [" ".join(w), " ".join(w[::-1]), f"{w[0]} and {w[1]} {w[2]}", f"a {w[1]} {w[2]} {w[0]}",
                     f"{w[2]} with {w[0]} {w[1]}"]
        precomp_writer(folder, split, regions.astype(np.float32), caps)
    return folder


# --------------------------------------------------------------------------
# the registry and reproduce()
# --------------------------------------------------------------------------
def test_data_experiments_are_registered_with_their_layout():
    by_name = {e.name: e for e in list_experiments()}
    for name in ("zsl-xian", "zscmr-mat", "retrieval-precomp"):
        assert by_name[name].data == "required" and by_name[name].data_layout
    assert by_name["synthetic-retrieval"].data is None
    with pytest.raises(ValueError, match="data_layout"):
        register_experiment("x-bad", description="d", data="required")
    with pytest.raises(ValueError, match="data must be one of"):
        register_experiment("x-bad", description="d", data="yes", data_layout="a folder")


def test_reproduce_checks_the_data_option(tmp_path):
    with pytest.raises(ConfigError, match=r"needs --data PATH: a Xian et al\. data set folder"):
        reproduce("zsl-xian", tmp_path / "out")
    with pytest.raises(ConfigError, match="takes no --data"):
        reproduce("synthetic-retrieval", tmp_path / "out", quick=True, data=tmp_path)
    with pytest.raises(DataError, match=r"nowhere\.mat: not found .*cross-modal \.mat"):
        reproduce("zscmr-mat", tmp_path / "out", quick=True, data=tmp_path / "nowhere.mat")
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


# --------------------------------------------------------------------------
# zsl-xian
# --------------------------------------------------------------------------
def test_zsl_xian_quick(tmp_path, xian_writer):
    folder = _xian(tmp_path / "TOY", xian_writer)
    res = reproduce("zsl-xian", tmp_path / "out", quick=True, data=folder)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["experiment"] == "zsl-xian"
    ids = {(r["model"], r["setting"]) for r in res["rows"]}
    assert ids == {(m, s) for m, s, _, _, shots in _ZSL_RUNS if not shots} | {("random", "floor")}
    assert {"inductive", "transductive", "transductive-adapt"} <= {s for m, s in ids if m == "revise"}
    for r in res["rows"]:
        assert r["dataset"] == "TOY"
        assert all(0.0 <= r[k] <= 100.0 for k in ZSL_KEYS)
    # model selection used the file's val classes, never the test images
    assert "val_loc" in res["config"]["validation"] and res["config"]["n_validation_classes"] == 2
    assert set(res["config"]["closed_form_chosen_on_validation"]) == {"eszsl", "sae"}
    cfg = res["config"]
    assert cfg["quick"] and cfg["settings"]["train"]["steps"] == 40  # budget and classes are recorded
    assert cfg["splits"][0]["unseen"] == [2, 5, 8] and cfg["splits"][0]["validation_unseen"] == [0, 7]
    # linear world, 3 unseen classes: chance is 33%; the closed forms need no training steps
    for model in ("eszsl", "sae"):
        assert next(r for r in res["rows"] if r["model"] == model)["unseen_accuracy"] > 70.0


# --------------------------------------------------------------------------
# zscmr-mat
# --------------------------------------------------------------------------
def test_zscmr_mat_quick_seeded_split_with_class_names(tmp_path, crossmodal_writer):
    names = ["cat", "dog", "horse", "car", "boat", "tree", "house", "bird", "fish", "apple", "chair", "river"]
    path = _crossmodal(tmp_path / "toywiki.mat", crossmodal_writer, names=names)
    res = reproduce("zscmr-mat", tmp_path / "out", quick=True, data=path)
    cfg = res["config"]
    # seed 004 holds out half of the classes (Table 1): 6 of these 12
    assert "seeded 50%" in cfg["split"] and len(cfg["splits"][0]["unseen"]) == 6 and len(cfg["splits"]) == 2
    assert cfg["class_embedding"] == "glove-6b-50d class names"
    assert cfg["pairs"] == {"train": 270, "test": 90}
    ids = [(r["model"], r["setting"]) for r in res["rows"]]
    # every run but LCALE's summed reading (a --set extra, measured once in docs/zeroshot.md)
    assert ids == [(m, s) for m, s, *_ in _CMR_RUNS if s != "summed terms"] + [("random", "floor")]
    for r in res["rows"]:
        assert r["dataset"] == "toywiki"
        assert all(0.0 <= r[k] <= 1.0 for k in CMR_KEYS)
        assert r["avg_map"] == pytest.approx((r["i2t_map"] + r["t2i_map"]) / 2)
    floor = res["rows"][-1]["avg_map"]
    best = max(r["avg_map"] for r in res["rows"][:-1])
    # both modalities are linear images of one class code: unseen pairs are matched far above random
    assert best > floor + 0.3
    assert len(cfg["floor_per_split"]) == 2 and all(r["n_runs"] == 2 for r in res["rows"])
    given = reproduce("zscmr-mat", tmp_path / "given", quick=True, data=path,
                      overrides={"unseen_classes": [0, 5, 11], "runs": ["devise-cmr:all"], "splits": 1})
    assert given["config"]["splits"][0]["unseen"] == [0, 5, 11] and "(given)" in given["config"]["split"]
    with pytest.raises(ValueError, match=r"unseen_classes \[42\] are not classes"):
        reproduce("zscmr-mat", tmp_path / "bad", quick=True, data=path, overrides={"unseen_classes": [42]})


def test_zscmr_mat_file_defined_split_and_text_prototypes(tmp_path, crossmodal_writer):
    from visem.experiments.benchmarks import cmr_mat_split, load_cmr_mat

    path = _crossmodal(tmp_path / "disjoint.mat", crossmodal_writer, disjoint=True)
    d = load_cmr_mat(path)
    assert d["class_names"] is None
    split, how = cmr_mat_split(d, seed=3)
    assert "file's split" in how
    assert split.unseen.tolist() == [10, 11] and split.seen.tolist() == list(range(10))
    assert not set(split.train_label.tolist()) & {10, 11}
    # class embedding = mean training text of each seen class (unit norm); unseen rows unused (zero)
    assert torch.allclose(split.class_emb[split.seen].norm(dim=1), torch.ones(10), atol=1e-5)
    assert float(split.class_emb[split.unseen].abs().sum()) == 0.0
    # training statistics only: the training features are z-scored, the test ones are not forced to be
    assert torch.allclose(split.train_image.mean(0), torch.zeros(split.train_image.shape[1]), atol=1e-4)


# --------------------------------------------------------------------------
# retrieval-precomp
# --------------------------------------------------------------------------
def test_precomp_protocols():
    from visem.experiments.benchmarks import precomp_protocols

    p = precomp_protocols("coco", np.arange(100, 5100))
    assert [x.dataset for x in p] == ["coco 1K (5-fold)", "coco 5K"]
    assert [len(f) for f in p[0].folds] == [1000] * 5 and p[0].folds[1][0] == 1100 and len(p[1].folds[0]) == 5000
    assert p[0].cross_attention and not p[1].cross_attention  # SCAN is not scored on 25M pairs
    assert [x.dataset for x in precomp_protocols("f30k", np.arange(1000))] == ["f30k 1K"]
    assert [x.dataset for x in precomp_protocols("mine", np.arange(40))] == ["mine test (40 images)"]


def test_fold_protocols_in_the_sparse_grid(tmp_path):
    from visem.experiments.benchmarks import precomp_protocols
    from visem.experiments.retrieval import Budget, synthetic_corpus
    from visem.experiments.sparse import sparse_grid

    corpus = synthetic_corpus(n_concepts=30)  # 60 images
    names = ("vsepp", "scan-xattn")
    budget = Budget(steps={m: 2 for m in names}, batch_size={m: 8 for m in names}, lr={m: 1e-3 for m in names},
                    model={m: {"embed_dim": 8, "word_dim": 8} for m in names}, log_every=1)
    test_rows = np.arange(20, 60)
    res = sparse_grid(corpus, tmp_path, budget, np.arange(20), precomp_protocols("toy", test_rows, fold_size=8),
                      settings=((1.0, 0),), models=names, pseudo=lambda caps, imgs: ["x"] * len(imgs))
    got = [(r["model"], r["setting"], r["dataset"]) for r in res["rows"]]
    assert got == [("vsepp", "full", "toy 8 (5-fold)"), ("vsepp", "full", "toy 40"),
                   ("scan-xattn", "full", "toy 8 (5-fold)")]
    five_fold, whole = res["rows"][0], res["rows"][1]
    # each fold ranks its own 8 images only, so text-to-image R@10 is 100 there; over all 40 it is not
    assert five_fold["t2i_r10"] == 100.0
    assert whole["t2i_r10"] < 100.0


def test_retrieval_precomp_quick(tmp_path, precomp_writer):
    from visem.experiments.benchmarks import PRECOMP_DEFAULTS
    from visem.experiments.sparse import RETRIEVAL_MODELS

    assert PRECOMP_DEFAULTS["models"] == list(RETRIEVAL_MODELS)  # DPC and DAN run too (the next test)
    folder = _precomp(tmp_path / "f30k_precomp", precomp_writer)
    res = reproduce("retrieval-precomp", tmp_path / "out", quick=True, data=folder,
                    overrides={"models": ["vsepp", "scan-xattn", "a3vse"]})
    cfg = res["config"]
    assert cfg["test_split"] == "testall"
    assert cfg["settings"]["models"] == ["vsepp", "scan-xattn", "a3vse"]
    assert cfg["quick"] is True and cfg["seeds"] == [0, 1]
    ids = {(r["model"], r["setting"]) for r in res["rows"]}
    assert ids == {(m, s) for m in cfg["settings"]["models"] for s in ("sparse-10-1", "full")}
    assert all(r["n_runs"] == 2 and "rsum_std" in r for r in res["rows"])
    assert cfg["validation"].startswith("none")  # the fixture has no dev split
    # every model's weighted terms were measured: the triplets carry the encoders' gradient
    assert cfg["term_shares"]["a3vse@full"]["end"]["triplet_pair"] > 0.01
    chance_r10 = 100.0 * 10 / 40
    for r in res["rows"]:
        assert r["dataset"] == "f30k test (40 images)"
        assert all(0.0 <= r[k] <= 100.0 for k in RECALL_KEYS[:-1])
        assert r["rsum"] == pytest.approx(sum(r[k] for k in RECALL_KEYS[:-1]), abs=1e-4)
    # captions name the words whose codes make the regions: with every pair, retrieval is far above chance
    full = {r["model"]: r for r in res["rows"] if r["setting"] == "full"}
    assert max(r["t2i_r10"] for r in full.values()) > 2 * chance_r10


def test_retrieval_precomp_trains_dpc_on_instance_classes_and_dan_on_regions(tmp_path, precomp_writer):
    folder = _precomp(tmp_path / "f30k_precomp", precomp_writer)
    res = reproduce("retrieval-precomp", tmp_path / "out", quick=True, data=folder,
                    overrides={"models": ["dpc", "dan"], "seeds": 1, "settings": ["full"],
                               "train": {"dpc": {"steps": 20}, "dan": {"steps": 20}}})
    cfg = res["config"]
    assert [(r["model"], r["setting"]) for r in res["rows"]] == [("dpc", "full"), ("dan", "full")]
    # every training image is its own instance (one image per caption set in a precomp folder)
    assert cfg["splits"]["seed0"]["full"]["instance_classes"] == cfg["splits"]["seed0"]["full"]["paired_images"] == 240
    assert set(cfg["term_shares"]["dpc@full"]["end"]) == {"ranking", "instance_img", "instance_txt"}
    assert set(cfg["term_shares"]["dan@full"]["end"]) == {"ranking"}
    # DPC keeps its own rate cut (stage II's last third), the others the experiment's
    assert cfg["settings"]["train"]["dpc"]["lr_decay_at"] == pytest.approx(0.8 + 0.2 * 2 / 3)
    assert "lr_decay_at" not in cfg["settings"]["train"]["dan"]
    for r in res["rows"]:
        assert r["dataset"] == "f30k test (40 images)" and r["n_runs"] == 1
        assert r["rsum"] == pytest.approx(sum(r[k] for k in RECALL_KEYS[:-1]), abs=1e-4)
    assert {("dpc", "Flickr30K 1K"), ("dan", "MS-COCO 5K")} <= {(r["model"], r["dataset"]) for r in res["paper"]}


def test_nearest_caption_pseudo_uses_only_kept_captions():
    from visem.experiments.benchmarks import nearest_caption_pseudo
    from visem.experiments.retrieval import Corpus

    pooled = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    caps = ["a0", "a1", "b0", "b1", "c0", "c1", "d0", "d1"]
    corpus = Corpus(pooled, None, np.array(["train"] * 4), np.arange(4), caps, np.repeat(np.arange(4), 2),
                    [[] for _ in range(4)], glove=False)
    pseudo = nearest_caption_pseudo(corpus)
    # images 0 and 2 annotated with one caption each (a1, c0); images 1 and 3 take their neighbour's
    assert pseudo(np.array([1, 4]), np.array([1, 3])) == ["a1", "c0"]
    # an annotated image never gets its own caption
    assert pseudo(np.array([1, 4]), np.array([0])) == ["c0"]


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_data_errors(tmp_path, capsys):
    bad = tmp_path / "no_such_folder"
    assert main(["reproduce", "zsl-xian", "--quick", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "res101.mat" in err
    assert main(["reproduce", "zsl-xian", "--quick", "--out", str(tmp_path / "o")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["reproduce", "synthetic-retrieval", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "takes no --data" in capsys.readouterr().err
    # a folder that exists but is not in the layout: the reader names the missing file
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "zsl-xian", "--quick", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "res101.mat" in capsys.readouterr().err


def test_cli_list_marks_data_experiments(capsys):
    from visem.cli.core import cmd_list

    assert cmd_list(None) == 0
    out = capsys.readouterr().out
    line = next(i for i, s in enumerate(out.splitlines()) if s.strip().startswith("zsl-xian"))
    assert "--data PATH (required)" in out.splitlines()[line + 1]
    assert get_experiment("retrieval-precomp").data_layout in out
