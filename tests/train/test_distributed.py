"""Data-parallel training: two gloo processes under torchrun against one process.

The torchrun runs are real launches (``python -m torch.distributed.run``), as a
user runs visem; everything else here is in-process. The checks of the
launched worker (tests/train/ddp_worker.py) are read back from its JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from visem.cli import main
from visem.models import list_models
from visem.train import BatchSampler, IndexSampler, MultiSampler, TrainConfig, Trainer
from visem.train.distributed import DistributedError, device_for, shard_size
from visem.train.precision import Precision

HERE = Path(__file__).parent


def _torchrun(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _torchrun([str(HERE / "ddp_worker.py"), str(out)], cwd=out)
    return out


def test_every_registered_model_trains_the_one_process_objective_on_two_processes(worker):
    report = json.loads((worker / "walk.json").read_text())
    assert sorted(report) == sorted(s.name for s in list_models()), "the walk must cover the whole registry"
    for name, r in report.items():
        assert r["grad_rel"], f"{name}: no phase had a gradient"
        # the DDP-averaged gradient of each phase is the one-process gradient of the global batch
        assert max(r["grad_rel"]) < 1e-4, f"{name}: gradient differs from one process by {max(r['grad_rel']):.2e}"
        # the ranks hold identical parameters after every step
        assert max(r["ranks_max_abs"]) == 0.0, f"{name}: ranks diverged by {max(r['ranks_max_abs'])}"
        assert max(r["param_rel"]) < 1e-3, f"{name}: parameters differ from one process by {max(r['param_rel']):.2e}"


def test_a_run_killed_under_torchrun_resumes_from_rank_0s_checkpoint(worker):
    resumed = json.loads((worker / "resumed.json").read_text())
    straight = json.loads((worker / "straight.json").read_text())
    assert resumed["step"] == straight["step"] == 20
    assert resumed["params"] == pytest.approx(straight["params"], rel=1e-6, abs=1e-7)
    # rank 0 alone wrote the run directory: one log row per 5 steps, no duplicate rows
    rows = (worker / "resumed" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["5", "10", "15", "20"]


def test_visem_reproduce_under_torchrun_gives_the_one_process_table(worker, tmp_path):
    two = json.loads((worker / "reproduce" / "results.json").read_text())
    assert main(["reproduce", "synthetic-retrieval", "--quick", "--out", str(tmp_path)]) == 0
    one = json.loads((tmp_path / "results.json").read_text())
    assert two["config"]["world_size"] == 2 and "world_size" not in one["config"]
    assert [(r["model"], r["setting"]) for r in two["rows"]] == [(r["model"], r["setting"]) for r in one["rows"]]
    for a, b in zip(one["rows"], two["rows"]):
        assert b["rsum"] == pytest.approx(a["rsum"], abs=1.0)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_visem_train_on_two_processes_ends_where_one_process_ends(tmp_path):
    sets = ["--set", "train.steps=40", "--set", "train.batch_size=32", "--set", "train.device=cpu"]
    assert main(["train", "--synthetic", "--out", str(tmp_path / "one"), *sets]) == 0
    proc = _torchrun(["-m", "visem", "train", "--synthetic", "--out", str(tmp_path / "two"), *sets], cwd=tmp_path)
    assert proc.stdout.count("run written to") == 1, "rank 1 must not print"
    one, two = _load_weights(tmp_path / "one" / "model.safetensors"), _load_weights(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        rel = float((one[k] - two[k]).norm() / one[k].norm().clamp(min=1e-12))
        assert rel < 1e-3, f"{k}: 2 processes end {rel:.2e} away from 1 process"
    log1 = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    log2 = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert log1[0] == log2[0]
    col = log1[0].split(",").index("loss")
    for a, b in zip(log1[1:], log2[1:]):
        assert float(a.split(",")[col]) == pytest.approx(float(b.split(",")[col]), rel=1e-4)
    assert json.loads((tmp_path / "one" / "eval.json").read_text()) == pytest.approx(
        json.loads((tmp_path / "two" / "eval.json").read_text()), abs=0.5)


# -- in-process pieces --------------------------------------------------------
def test_shards_of_a_global_batch_are_the_one_process_batch_whatever_the_world_size():
    data = {"x": torch.arange(60)}
    for world in (2, 3, 4):
        one = BatchSampler(data, 12, seed=5)
        shards = [BatchSampler(data, 12, seed=5).shard(r, world) for r in range(world)]
        for _ in range(12):  # past an epoch boundary (60 / 12 = 5 batches an epoch)
            full = next(one)["x"]
            parts = [next(s)["x"] for s in shards]
            assert all(len(p) == 12 // world for p in parts)
            assert torch.equal(torch.cat(parts), full)
        assert all(s.state_dict() == one.state_dict() for s in shards)


def test_index_and_multi_samplers_shard_every_group():
    idx = IndexSampler({"i": torch.arange(10)}, {"v": ("i", torch.arange(10) * 10)}, 4, seed=0)
    multi = MultiSampler({"a": idx, "b": BatchSampler({"y": torch.arange(8)}, 4, seed=1)}).shard(1, 2)
    batch = next(multi)
    assert batch["a.v"].shape == (2,) and batch["b.y"].shape == (2,)
    ref = next(MultiSampler({"a": IndexSampler({"i": torch.arange(10)}, {"v": ("i", torch.arange(10) * 10)}, 4, 0),
                             "b": BatchSampler({"y": torch.arange(8)}, 4, seed=1)}))
    assert torch.equal(batch["a.v"], ref["a.v"][2:]) and torch.equal(batch["b.y"], ref["b.y"][2:])


def test_a_global_batch_that_does_not_split_is_refused_with_the_numbers():
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        BatchSampler({"x": torch.arange(20)}, 8, seed=0).shard(0, 3)
    assert shard_size(64) == 64  # one process
    with pytest.raises(DistributedError, match="must be divisible"):
        import visem.train.distributed as d

        orig = d.world_size
        d.world_size = lambda: 3
        try:
            shard_size(64)
        finally:
            d.world_size = orig


def test_device_setting():
    assert device_for("cpu") == torch.device("cpu")
    assert device_for("auto") == (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                                  else torch.device("cpu"))
    for bad in ("tpu", "gpu0", "cuda:x"):
        with pytest.raises(ValueError, match="auto .* cpu .* cuda"):
            device_for(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            device_for("cuda")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        Precision("fp64", "cpu")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_training_runs_and_learns_on_the_cpu(precision):
    from visem.data.tasks import build_task
    from visem.models import build_model, resolve_config

    task = build_task({"name": "synthetic", "n_classes": 10, "per_class": 20})
    torch.manual_seed(0)
    model = build_model("linear-vse", resolve_config("linear-vse", {"embed_dim": 16}, task.dims))
    before = model.evaluate(task.test)["rsum"]
    cfg = TrainConfig(steps=60, batch_size=32, lr=0.01, progress=False, device="cpu", precision=precision)
    trainer = Trainer(model, BatchSampler(task.train, 32, seed=0), cfg)
    rows = trainer.fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "parameters stay float32 under autocast"
    assert model.evaluate(task.test)["rsum"] > before + 50
    if precision == "fp16":
        assert trainer.precision.scaler is not None and trainer.precision.state_dict()["scale"] > 0
