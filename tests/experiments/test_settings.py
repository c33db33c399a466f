"""Experiment settings from ``--set``, what results.json records, and parallel runs."""

import json

import numpy as np
import pytest

from visem.cli import main
from visem.config import ConfigError
from visem.experiments import reproduce, settings
from visem.experiments.parallel import run_parallel
from visem.experiments.stats import mean_std

DEFAULTS = {"seeds": 5, "train": {"vsepp": {"steps": 500, "lr": 1e-3}}, "settings": ["full"]}


def test_settings_merge_overrides_and_refuse_unknown_keys():
    got = settings(DEFAULTS, {"train": {"vsepp": {"steps": 20000}}, "seeds": 10}, "x")
    assert got == {"seeds": 10, "train": {"vsepp": {"steps": 20000, "lr": 1e-3}}, "settings": ["full"]}
    assert DEFAULTS["train"]["vsepp"]["steps"] == 500  # the defaults are not changed
    with pytest.raises(ConfigError, match=r"no setting 'train\.vsepp\.step'; known: seeds, train\.vsepp\.steps"):
        settings(DEFAULTS, {"train": {"vsepp": {"step": 1}}}, "x")
    with pytest.raises(ConfigError, match="no setting 'lr'"):
        settings(DEFAULTS, {"lr": 1}, "x")
    with pytest.raises(ConfigError, match="group of settings"):
        settings(DEFAULTS, {"train": 3}, "x")
    assert settings(DEFAULTS, {"settings": ["sparse-10-1", "full"]}, "x")["settings"] == ["sparse-10-1", "full"]


def test_reproduce_applies_and_records_the_overrides(tmp_path):
    res = reproduce("synthetic-retrieval", tmp_path, quick=True, overrides={"train": {"steps": 7}})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["quick"] is True and saved["config"]["overrides"] == {"train": {"steps": 7}}
    assert res["config"]["settings"]["train"]["steps"] == 7
    assert res["config"]["sum"]["train"]["steps"] == 7
    with pytest.raises(ConfigError, match="no setting 'train.stepz'"):
        reproduce("synthetic-retrieval", tmp_path / "b", quick=True, overrides={"train": {"stepz": 7}})


def test_cli_set_reaches_the_experiment_and_errors_are_one_line(tmp_path, capsys):
    assert main(["reproduce", "synthetic-retrieval", "--quick", "--out", str(tmp_path), "--set", "train.steps=5",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("QUICK RUN") and "train.steps=5" in out
    assert main(["reproduce", "synthetic-retrieval", "--quick", "--out", str(tmp_path), "--set", "nope=1"]) == 2
    assert "no setting 'nope'" in capsys.readouterr().err


def _square(x, offset=0):
    import torch

    return x * x + offset, torch.get_num_threads()


def test_run_parallel_keeps_job_order_and_one_thread_per_worker():
    jobs = [{"x": i, "offset": 1} for i in range(5)]
    out = run_parallel(_square, jobs, workers=2)
    assert [v for v, _ in out] == [1, 2, 5, 10, 17]
    assert all(t == 1 for _, t in out)
    assert [v for v, _ in run_parallel(_square, jobs, workers=1)] == [1, 2, 5, 10, 17]  # in this process


def test_mean_std_is_the_sample_std():
    out = mean_std([{"a": 1.0}, {"a": 3.0}])
    assert out == {"a": 2.0, "a_std": pytest.approx(2 ** 0.5), "n_runs": 2}
    assert mean_std([{"a": 1.0}])["a_std"] == 0.0
    with pytest.raises(ValueError, match="keys"):
        mean_std([{"a": 1.0}, {"b": 2.0}])


def test_paired_difference_of_runs_on_the_same_splits():
    from visem.experiments.stats import paired_difference

    out = paired_difference([0.30, 0.50, 0.40], [0.28, 0.47, 0.41])
    assert out["mean"] == pytest.approx(0.0133333, abs=1e-6) and out["n"] == 3 and out["wins"] == 2
    assert out["std"] == pytest.approx(float(np.std([0.02, 0.03, -0.01], ddof=1)))
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0], [1.0, 2.0])
