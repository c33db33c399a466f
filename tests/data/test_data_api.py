"""visem.data.load / info / fetch by name, DataError, data_dir, and the `data` CLI in-process."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest

import visem.data as vd
from visem.data import DataError, canonical_name, data_dir, load


def _run(argv: list[str]) -> int:
    from visem.cli.data import add_parser

    parser = argparse.ArgumentParser(prog="visem")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_data_error_is_value_error_and_names():
    assert issubclass(DataError, ValueError)
    assert canonical_name("AwA2") == "xian" and canonical_name("fmnist") == "fashion-mnist"
    assert canonical_name("coco_precomp") == "vsepp" and canonical_name("nus-wide") == "crossmodal"
    with pytest.raises(DataError, match="unknown data set 'imagenet'"):
        load("imagenet")
    with pytest.raises(DataError, match="give path="):
        load("xian")
    with pytest.raises(DataError, match="built-in"):
        load("mnist", path="/tmp")


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VISEM_DATA_DIR", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    monkeypatch.delenv("VISEM_DATA_DIR")
    assert data_dir() == Path("~/.cache/visem").expanduser()


def test_mnist_is_converted_once_into_a_fresh_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VISEM_DATA_DIR", str(tmp_path))
    res = vd.fetch(["fashion-mnist"])
    assert res[0].status == "created" and (tmp_path / "fashion-mnist" / "fashion-mnist.npz").is_file()
    assert vd.fetch(["fashion-mnist"])[0].status == "ok"  # idempotent
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries
    assert load("fashion-mnist", split="test").images.shape == (10000, 28, 28)
    with pytest.raises(DataError, match="unknown source"):
        vd.fetch(["nope"])


def test_cli_info_fashion_mnist(capsys):
    assert _run(["data", "info", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "train: 60000" in out and "test: 10000" in out
    for name in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"):
        assert name in out
    assert "/usr/share/datasets/fashion-mnist" in out


def test_cli_info_emoji(capsys):
    if os.environ.get("VISEM_OFFLINE_TESTS") == "1":
        try:
            load("emoji")
        except DataError:
            pytest.skip("emoji not fetched and VISEM_OFFLINE_TESTS=1")
    assert _run(["data", "info", "emoji"]) == 0
    out = capsys.readouterr().out
    assert "concepts (google):" in out and "concepts (twitter):" in out
    assert "captions (google):" in out and "subgroups (classes):" in out
    assert "emoji-datasource-google@16.0.0" in out


def test_cli_fetch_and_list(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("VISEM_DATA_DIR", str(tmp_path))
    assert _run(["data", "fetch", "glove", "efficientnet"]) == 0
    out = capsys.readouterr().out
    assert "glove" in out and "ok" in out and str(tmp_path) in out
    assert _run(["data", "list"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out


def test_cli_features_writes_cache_and_out(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("VISEM_DATA_DIR", str(tmp_path))
    out = tmp_path / "fm_pixels.npy"
    assert _run(["features", "fashion-mnist", "--kind", "pixels", "--split", "test", "--limit", "7", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "float32 (7, 784) (computed)" in text
    arr = np.load(out)
    np.testing.assert_allclose(arr, load("fashion-mnist", split="test").images[:7].reshape(7, -1) / 255.0, rtol=1e-6)
    assert out.with_suffix(".json").is_file()
    assert _run(["features", "fashion-mnist", "--kind", "pixels", "--split", "test", "--limit", "7", "--no-progress"]) == 0
    assert "(cached)" in capsys.readouterr().out
    assert _run(["features", "fashion-mnist", "--kind", "glove-classes", "--no-progress"]) == 0
    assert "float32 (10, 50)" in capsys.readouterr().out
    with pytest.raises(DataError, match="--style applies to emoji"):
        _run(["features", "fashion-mnist", "--kind", "pixels", "--style", "google"])
