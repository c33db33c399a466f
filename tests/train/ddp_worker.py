"""Run under ``torchrun`` by tests/train/test_distributed.py (not collected by pytest: no ``test_`` prefix).

Writes into the folder given as its argument. ``walk``: every registered model, 3 data-parallel steps on shards of
one global batch (at training progress 0.1, 0.5 and 0.9), against the same model trained in one process on the whole
batch (noise off: ``torch.randn_like`` and ``torch.rand_like`` return zeros and
dropout keeps every unit, so sampling and dropout models are deterministic).
Per phase and step it records the relative difference of the
DDP-averaged gradient from the one-process gradient, and after each step the
largest difference of the parameters between ranks and from the one-process
model.

``reproduce``: ``visem reproduce synthetic-retrieval --quick`` (rank 0 writes
``reproduce/results.json``).

``resume``: a Trainer on the synthetic task
that raises at step ``CRASH_AT`` (0: never), then a second Trainer on the
same run directory that finishes; rank 0 writes the final weights' checksum.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from visem.distributed import gathering, rank, world_size
from visem.models import build_model, list_models
from visem.models import pse
from visem.train import distributed as dist

DIMS = {"image_dim": 12, "text_dim": 7, "class_dim": 5, "n_classes": 4, "vocab_size": 30, "sketch_dim": 9}
N = 8  # the global batch; every rank takes N / world of the per-sample tensors
# the training progress of the 3 steps: early, middle and late, so that terms a schedule switches on late in
# training (a second stage, a warm-up that ends) are stepped too
PROGRESS = (0.1, 0.5, 0.9)


def _flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                      for p in model.parameters()])


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double() for p in model.parameters()])


def _shard(batch: dict, r: int, w: int) -> dict:
    b = N // w
    return {k: (v[r * b:(r + 1) * b] if v.shape[0] == N else v) for k, v in batch.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def walk(out: str) -> None:
    dist.init_from_env()
    r, w = rank(), world_size()
    # noise off, so sampling models are deterministic and comparable: z = mu
    torch.randn_like = lambda x, **kw: torch.zeros_like(x, **kw)
    # and no dropout nor random placement (DPC's classifier dropout and text position shift)
    torch.rand_like = lambda x, **kw: torch.zeros_like(x, **kw)
    torch.nn.functional.dropout = lambda x, p=0.5, training=True, inplace=False: x
    pse.reparameterize = lambda mu, logvar, generator=None: mu
    report = {}
    for spec in list_models():
        torch.manual_seed(0)
        model = build_model(spec.name, {}, dims=DIMS)
        ref = copy.deepcopy(model)
        batch = model.example_batch(N, torch.Generator().manual_seed(0))
        local = _shard(batch, r, w)
        engine = dist.wrap(model, torch.device("cpu"))
        opts, ref_opts = model.make_optimizers(1e-3), ref.make_optimizers(1e-3)
        # Adam's first step moves a parameter by lr * g / (|g| + eps) whatever the size of g: a gradient that is
        # exactly 0 in one process and 2e-9 (rounding of the all-reduce) in two would move it by lr / 6 in one and
        # not at all in the other (FRWGAN's critic biases). eps 1e-6 in both runs keeps rounding-size gradients
        # from moving parameters; every gradient the models really have is far above it.
        for o in (*opts, *ref_opts):
            for g in o.param_groups:
                if "eps" in g:
                    g["eps"] = max(g["eps"], 1e-6)
        grads, between, from_ref = [], [], []
        for step, progress in enumerate(PROGRESS):
            for phase in model.phases():
                for m in (model, ref):
                    m.zero_grad(set_to_none=True)
                ref(batch, progress, phase.name)["loss"].backward()
                with gathering():
                    engine(local, progress, phase.name)["loss"].backward()
                g_ref, g = _flat_grads(ref), _flat_grads(model)
                if float(g_ref.norm()) > 0:
                    grads.append(_rel(g, g_ref))
            ref.train_step(batch, ref_opts, progress)
            model.train_step(local, opts, progress, engine=engine)
            p = _flat_params(model)
            every = [torch.zeros_like(p) for _ in range(w)]
            torch.distributed.all_gather(every, p)
            between.append(max(float((e - p).abs().max()) for e in every))
            from_ref.append(_rel(p, _flat_params(ref)))
        report[spec.name] = {"grad_rel": grads, "ranks_max_abs": between, "param_rel": from_ref}
    if r == 0:
        Path(out).write_text(json.dumps(report))
    dist.barrier()


def resume(run_dir: str, out: str, steps: int, crash_at: int) -> None:
    from visem.data.tasks import build_task
    from visem.models import resolve_config
    from visem.train import BatchSampler, TrainConfig, Trainer

    class Crash(RuntimeError):
        pass

    def hook(step, terms):
        if step == crash_at:
            raise Crash(f"simulated kill at step {step}")

    task = build_task({"name": "synthetic", "n_classes": 10, "per_class": 20})
    cfg = TrainConfig(steps=steps, batch_size=16, lr=0.01, log_every=5, checkpoint_every=5, progress=False,
                      device="cpu")

    def trainer(on_step=None) -> Trainer:
        torch.manual_seed(0)
        model = build_model("linear-vse", resolve_config("linear-vse", {"embed_dim": 8}, task.dims))
        return Trainer(model, BatchSampler(task.train, cfg.batch_size, seed=0), cfg, run_dir, on_step=on_step)

    if crash_at:
        try:
            trainer(hook).fit()
        except Crash:
            pass
    t = trainer()
    t.fit()
    if rank() == 0:
        Path(out).write_text(json.dumps({"step": t.step, "params": _flat_params(t.model).tolist()}))
    dist.barrier()


if __name__ == "__main__":
    # one launch runs every check (a torchrun start costs seconds): OUT_DIR gets walk.json, resumed.json, straight.json
    out = Path(sys.argv[1])
    resume(str(out / "resumed"), str(out / "resumed.json"), steps=20, crash_at=12)
    resume(str(out / "straight"), str(out / "straight.json"), steps=20, crash_at=0)
    walk(str(out / "walk.json"))
    from visem.cli import main

    assert main(["reproduce", "synthetic-retrieval", "--quick", "--out", str(out / "reproduce")]) == 0
