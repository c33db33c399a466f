"""End-to-end CLI smoke tests, in-process on CPU with synthetic data (no files needed)."""

import json
import os

import torch

import yaml

from visem.cli import main


def test_help_and_list(capsys):
    assert main([]) == 0
    assert "reproduce" in capsys.readouterr().out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "linear-vse" in out and "synthetic-retrieval" in out


def test_train_synthetic_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--synthetic", "--out", str(run), "--set", "train.steps=150",
                 "--set", "train.progress=false"]) == 0
    metrics = json.loads((run / "eval.json").read_text())
    # the synthetic world is linear by construction: retrieval is far above chance (R@1 chance = 1%)
    assert metrics["t2i_r1"] > 20 and metrics["i2t_r10"] > 60
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == {"name": "linear-vse", "image_dim": 32, "text_dim": 16, "embed_dim": 32,
                            "margin": 0.2, "hardest": False, "reduction": "sum"}
    assert cfg["train"]["steps"] == 150
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.csv"):
        assert (run / name).is_file()
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out) == metrics


def test_train_from_yaml_rejects_unknown_keys(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "linear-vse", "embed_dimm": 3},
                                   "data": {"name": "synthetic"}}))
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) model.embed_dimm" in err


def test_rerun_with_other_config_in_same_dir_is_refused(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["train", "--synthetic", "--out", run, "--set", "train.steps=5", "--set", "train.progress=false"]
    assert main(args) == 0
    assert main(args[:-2] + ["--set", "train.lr=0.5", "--set", "train.progress=false"]) == 2
    assert "different config" in capsys.readouterr().err


def test_reproduce_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["reproduce", "synthetic-retrieval", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "synthetic-retrieval"
    assert [r["setting"] for r in results["rows"]] == ["sum", "hardest"]
    assert set(results) == {"experiment", "config", "rows", "paper"}
    printed = capsys.readouterr().out
    assert "i2t_r1" in printed and "hardest" in printed


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["reproduce", "no-such-experiment", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_two_runs_of_one_config_end_at_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    for out in ("a", "b"):
        assert main(["train", "--synthetic", "--out", str(tmp_path / out), "--set", "train.steps=20"]) == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_device_and_precision_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VISEM_DEVICE", raising=False)
    monkeypatch.delenv("VISEM_PRECISION", raising=False)
    assert main(["train", "--synthetic", "--out", str(tmp_path / "x"), "--device", "tpu"]) == 2
    assert "auto" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["train", "--synthetic", "--out", str(tmp_path / "y"), "--set", "train.steps=5",
                 "--device", "cpu", "--precision", "bf16"]) == 0
    # the options last as long as the command: a later in-process call trains at the default again
    assert "VISEM_DEVICE" not in os.environ and "VISEM_PRECISION" not in os.environ
    monkeypatch.setenv("VISEM_PRECISION", "fp16")
    assert main(["train", "--synthetic", "--out", str(tmp_path / "z"), "--set", "train.steps=5",
                 "--precision", "bf16"]) == 0
    assert os.environ["VISEM_PRECISION"] == "fp16"
