"""Every registered model trained and evaluated on a CUDA device: does it run there, and how fast.

    python bench/gpu_smoke.py [--steps 50] [--batch 256] [--precision fp32,bf16] [--models a,b] [--json OUT]

For each registered model (built at the sizes below, the larger ones of the
built-in experiments), on ``cuda``: ``--steps`` training steps through the
same :meth:`~visem.models.base.EmbeddingModel.train_step` the trainer runs
(each precision in ``--precision``; the first steps are warm-up and not
timed), then :meth:`evaluate` on held-out data of the model's own kind
(:meth:`example_eval_data`), on the GPU. Then the metrics (retrieval R@K and
MAP at COCO-5K size) and the losses on the GPU against the CPU. It prints
one row per model and precision: steps/s, the loss after the last step, the
peak GPU memory, and whether evaluation ran; a model that fails prints its
error and the script exits non-zero at the end.

With no CUDA device it says so and exits with status 2 (this machine's CPUs
are timed by ``bench/bench_train.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch

from visem.models import build_model, list_models
from visem.train.precision import Precision

#: model -> config overrides; dims below are those of the emoji experiments (EfficientNet-Lite0 1,280-d, MiniLM 384-d)
DIMS = {"image_dim": 1280, "text_dim": 384, "class_dim": 50, "n_classes": 20, "vocab_size": 2500}
CONFIGS = {
    "lcale": {"latent_dim": 64, "hidden": [256], "reg_hidden": [256]},
    "cada-vae-cmr": {"latent_dim": 64, "hidden_image": [256], "hidden_side": [256]},
    "a3vse": {"embed_dim": 256, "disc_hidden": 128},
    "vsepp": {"embed_dim": 512},
    "scan-xattn": {"embed_dim": 256},
}
#: models whose inputs are 28 x 28 images (the PSE family of seed 002)
IMAGE_784 = ("pse", "pse-star", "cvae", "jmvae", "trelbo", "scan-bvae")


def _dims(name: str) -> dict:
    if name in IMAGE_784:
        return {"image_dim": 784, "class_dim": 10, "n_classes": 10}
    return DIMS


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def smoke_model(name: str, device: torch.device, precision: str, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, CONFIGS.get(name, {}), dims=_dims(name)).to(device)
    g = torch.Generator().manual_seed(0)
    batches = [_to(model.example_batch(batch, g), device) for _ in range(4)]
    opts = model.make_optimizers(1e-4)
    prec = Precision(precision, device)
    warm = min(5, steps)
    torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps):
        if i == warm:
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        terms = model.train_step(batches[i % len(batches)], opts, i / steps, grad_clip=2.0, precision=prec)
    torch.cuda.synchronize(device)
    rate = (steps - warm) / (time.perf_counter() - t0) if steps > warm else float("nan")
    if hasattr(model, "prepare"):
        model.prepare(batches[0])
    if hasattr(model, "finalize"):
        model.finalize(batches[0])
    metrics = model.evaluate(_to(model.example_eval_data(min(batch, 512), g), device))
    return {"model": name, "precision": precision, "steps_per_s": rate, "loss": float(terms["loss"].detach()),
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "eval_keys": len(metrics), "eval_finite": all(v == v for v in metrics.values())}


def smoke_metrics(device: torch.device) -> list[dict]:
    """R@K and MAP on the GPU against the CPU, at COCO-5K (5,000 x 25,000, d 1024) and 5,000 x 5,000."""
    from visem.metrics import mean_average_precision, retrieval_recall

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5000, 1024, generator=g), dim=1)
    cap = torch.nn.functional.normalize(img.repeat_interleave(5, 0) + 0.8 * torch.randn(25000, 1024, generator=g), dim=1)
    owner = torch.arange(5000).repeat_interleave(5)
    rows = []
    for label, fn in (("retrieval_recall 5k x 25k", lambda d: retrieval_recall(img.to(d), cap.to(d), owner.to(d))),
                      ("mean_average_precision 5k x 5k", lambda d: {"map": mean_average_precision(
                          img.to(d), cap[:5000].to(d), torch.arange(5000).to(d) % 50, owner[:5000].to(d) % 50)})):
        t0 = time.perf_counter()
        cpu = fn(torch.device("cpu"))
        t_cpu = time.perf_counter() - t0
        fn(device)  # warm-up
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        gpu = fn(device)
        torch.cuda.synchronize(device)
        t_gpu = time.perf_counter() - t0
        same = all(abs(float(cpu[k]) - float(gpu[k])) < 1e-6 * max(1.0, abs(float(cpu[k]))) for k in cpu)
        rows.append({"task": label, "cpu_s": t_cpu, "gpu_s": t_gpu, "same_values": same})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--models", default=None, help="comma-separated names (default: every registered model)")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); nothing to run. "
              "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    names = a.models.split(",") if a.models else [s.name for s in list_models()]
    rows, failed = [], []
    print(f"{'model':<16} {'prec':<5} {'steps/s':>9} {'loss':>10} {'peak MB':>8}  eval")
    for name in names:
        for prec in a.precision.split(","):
            try:
                r = smoke_model(name, device, prec, a.steps, a.batch)
            except Exception as exc:  # report every model, then fail
                failed.append(f"{name} ({prec}): {type(exc).__name__}: {exc}")
                traceback.print_exc()
                print(f"{name:<16} {prec:<5} FAILED: {exc}")
                continue
            rows.append(r)
            print(f"{name:<16} {prec:<5} {r['steps_per_s']:>9.1f} {r['loss']:>10.4g} {r['peak_mb']:>8.0f}  "
                  f"{r['eval_keys']} metrics{'' if r['eval_finite'] else ' NOT FINITE'}")
    for m in smoke_metrics(device):
        rows.append(m)
        print(f"{m['task']:<34} cpu {m['cpu_s']:.2f} s  gpu {m['gpu_s']:.3f} s  "
              f"({m['cpu_s'] / m['gpu_s']:.0f}x)  same values: {m['same_values']}")
        if not m["same_values"]:
            failed.append(f"{m['task']}: GPU and CPU values differ")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(device), "rows": rows, "failed": failed}, f, indent=2)
    if failed:
        print("\nfailed:\n  " + "\n  ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
