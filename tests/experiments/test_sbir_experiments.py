"""``zs-sbir-emoji``: the --data layout and its errors, balanced splits, same-class pairs, the quick run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from visem.data.paths import DataError
from visem.experiments import reproduce
from visem.experiments.sbir import SBIR_RUNS, SEED004_SBIR, class_pairs, make_sbir_split, npz_sbir_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_sbir import planted_sbir  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROW_KEYS = {"model", "setting", "map", "p_at_100", "map_std", "p_at_100_std", "binary"}


def _write_npz(path, **changes):
    d = planted_sbir(n_classes=12, per_class=8)
    arrays = {"sketch_features": d["sketch"], "sketch_labels": d["sketch_label"], "image_features": d["image"],
              "image_labels": d["image_label"], "class_names": np.array([f"class {c}" for c in range(12)]),
              "unseen_classes": np.array(["class 2", "class 5", "class 9"]), "class_embeddings": d["class_emb"]}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("change, message", [
    ({"sketch_labels": None}, "no array 'sketch_labels'"),
    ({"image_labels": np.zeros(5, dtype=np.int64)}, "image_labels must be integers, one per row of image_features"),
    ({"sketch_features": np.zeros((96, 20), dtype=np.float32) * np.nan}, "sketch_features holds NaN"),
    ({"image_labels": np.full(192, 12)}, "image_labels holds 12, outside the 12 class_names"),
    ({"unseen_classes": np.array(["class 2", "no such class"])}, "not in class_names"),
    ({"class_embeddings": np.zeros((11, 10), dtype=np.float32)}, r"class_embeddings must be a finite \(12, A\)"),
    ({"class_names": np.array(["a"] * 12)}, "class_names must be distinct"),
])
def test_npz_layout_errors_name_the_file_and_the_field(tmp_path, change, message):
    path = _write_npz(tmp_path / "feats.npz", **change)
    with pytest.raises(DataError, match=message) as err:
        npz_sbir_data(path)
    assert str(path) in str(err.value)


def test_npz_unseen_classes_by_index_or_name_and_a_fixed_split(tmp_path):
    by_name = npz_sbir_data(_write_npz(tmp_path / "a.npz"))
    by_index = npz_sbir_data(_write_npz(tmp_path / "b.npz", unseen_classes=np.array([9, 2, 5])))
    assert by_name["unseen_classes"].tolist() == by_index["unseen_classes"].tolist() == [2, 5, 9]
    for seed in (0, 1):
        sp = make_sbir_split(by_name, seed=seed, max_class_share=None)
        assert sp.unseen.tolist() == [2, 5, 9]
        assert not set(sp.train_sketch_label.tolist()) & {2, 5, 9}
        assert set(sp.test_sketch_label.tolist()) == set(sp.test_image_label.tolist()) == {2, 5, 9}


def test_splits_are_balanced_and_pairs_share_the_class():
    d = planted_sbir(n_classes=40, per_class=4)
    d["image_label"] = np.concatenate([d["image_label"], np.full(300, 3)])  # class 3 would dominate a gallery
    d["image"] = np.concatenate([d["image"], np.zeros((300, d["image"].shape[1]), dtype=np.float32)])
    for seed in range(5):
        sp = make_sbir_split(d, seed=seed, unseen_fraction=0.25, max_class_share=0.15)
        _, counts = np.unique(sp.test_image_label.numpy(), return_counts=True)
        assert counts.max() / counts.sum() <= 0.15 + 1e-9
        assert len(sp.unseen) == 10 and not set(sp.seen.tolist()) & set(sp.unseen.tolist())
        s_idx, i_idx = class_pairs(sp.train_sketch_label.numpy(), sp.train_image_label.numpy(), seed, rounds=2)
        assert (sp.train_sketch_label[s_idx] == sp.train_image_label[i_idx]).all()
        # every training sketch and image takes part in every round
        assert set(s_idx.tolist()) == set(range(len(sp.train_sketch)))
        assert set(i_idx.tolist()) == set(range(len(sp.train_image)))


def _check_results(res, out_dir):
    rows = res["rows"]
    want = [r for label in res["config"]["settings"]["runs"] for r in SBIR_RUNS[label][2]]
    assert [(r["model"], r["setting"], r["binary"]) for r in rows[:len(want)]] == want
    n = res["config"]["settings"]["splits"]
    assert [(r["model"], r["setting"]) for r in rows[len(want):]] == \
        [("random", "floor")] + [("random", f"floor, split {i}") for i in range(n)]
    for r in rows[:len(want) + 1]:
        assert ROW_KEYS <= set(r) and r["n_runs"] == n
        assert 0.0 <= r["map"] <= 1.0 and 0.0 <= r["p_at_100"] <= 1.0
    assert res["paper"] == SEED004_SBIR
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["rows"] == rows and saved["config"]["quick"] is True
    cfg = res["config"]
    runs = cfg["settings"]["runs"]
    assert ("lcale - gn-triplet" in cfg["paired_map"]) == ("gn-triplet" in runs)
    assert ("lcale (binary) - gdh (binary)" in cfg["paired_map"]) == ("gdh" in runs)
    assert ("lcale - lcale wo L_CR" in cfg["paired_map"]) == ("lcale:wo L_CR" in runs)
    assert (out_dir / cfg["figures"]["figure3"]).is_file()
    return cfg


def test_zs_sbir_on_a_data_file_quick(tmp_path):
    path = _write_npz(tmp_path / "feats.npz")
    res = reproduce("zs-sbir-emoji", tmp_path / "out", quick=True, data=path, overrides={"runs": ["lcale", "gdh"]})
    cfg = _check_results(res, tmp_path / "out")
    assert cfg["dataset"] == "feats.npz" and cfg["class_embedding"] == "class_embeddings of the file"
    assert cfg["figures"]["figure4"].startswith("not drawn")  # features only, no pictures
    assert (tmp_path / "out" / cfg["figures"]["figure5"]).is_file()
    assert all(sp["unseen"] == [2, 5, 9] for sp in cfg["splits"])
    # every (run, split) cell is kept; a second run over the same folder reuses them instead of training again
    cells = sorted((tmp_path / "out" / "cells").glob("*.json"))
    assert len(cells) == 2 * cfg["settings"]["splits"]
    stamps = [c.stat().st_mtime_ns for c in cells]
    again = reproduce("zs-sbir-emoji", tmp_path / "out", quick=True, data=path, overrides={"runs": ["lcale", "gdh"]})
    assert again["rows"] == res["rows"] and [c.stat().st_mtime_ns for c in cells] == stamps


@pytest.mark.slow  # the built-in data end to end (thumbnails of 40 classes, every run, Figures 3-5)
def test_zs_sbir_emoji_quick_from_the_command_line(tmp_path, capsys):
    from visem.cli import main

    from visem.data.sketch import STAMP, emoji_sketch_dir

    if not (emoji_sketch_dir() / STAMP).is_file():
        pytest.fail("emoji sketches not rendered (run `visem data fetch`)")
    assert main(["reproduce", "zs-sbir-emoji", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "QUICK RUN" in printed and "(0.476)" in printed  # ours beside the paper's LCALE value
    res = json.loads((tmp_path / "results.json").read_text())
    cfg = _check_results(res, tmp_path)
    assert cfg["dataset"] == "emoji-sketch" and set(cfg["dropped_classes"]) == {"keycap", "alphanum"}
    for sp in cfg["splits"]:
        assert sp["largest_unseen_class_share"] <= 0.15 + 1e-9
    for fig in ("figure3", "figure4", "figure5"):
        assert (tmp_path / cfg["figures"][fig]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # zscmr-emoji's quick data: pools the 1,906 emoji images' pixels
def test_lcale_sensitivity_quick(tmp_path):
    res = reproduce("lcale-sensitivity", tmp_path, quick=True)
    cfg = res["config"]
    assert set(cfg["curves"]) == {"alpha", "beta", "lam", "gamma", "latent_dim"}
    assert all(set(c) == {"0.01", "1", "100"} for w, c in cfg["curves"].items() if w != "latent_dim")
    # the run at seed 004's defaults is shared: alpha=1 and gamma=0.01 point at it
    assert cfg["points"]["alpha"]["1"] == cfg["points"]["gamma"]["0.01"] == "default"
    assert (tmp_path / cfg["figure"]).is_file()
