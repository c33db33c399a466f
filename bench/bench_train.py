"""Training-step cost of the registered models with the optimiser visem uses, against its unfused peer.

    python bench/bench_train.py [--steps 30] [--models lcale,a3vse,vsa-ae-mmd,vsepp] [--threads 1,2]

For each model, at the sizes its built-in experiment trains (batch and
dimensions below), one process times ``train_step`` interleaved with two
optimisers: visem's (``visem.models.base.adam``: Adam with torch's fused
kernel) and the default ``torch.optim.Adam`` (the foreach implementation),
same model, same batches. Rows report CPU ms per step and the ratio; with
``--threads 1,2`` the fused optimiser is also timed on two intra-op threads
against one (CPU seconds, so a ratio above 1 means more CPU per step:
``--threads`` of ``visem train`` / ``reproduce`` exists for that).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _measure import Row, cpu_seconds, machine, rss_mb

from visem.models import build_model
from visem.models.vsepp import random_token_ids

#: model -> (config, dims, batch size): what the built-in experiments train
SIZES = {
    "lcale": ({"latent_dim": 64, "hidden": [256], "reg_hidden": [256]},
              {"image_dim": 1280, "text_dim": 384, "class_dim": 50}, 128),
    "cada-vae-cmr": ({"latent_dim": 64, "hidden_image": [256], "hidden_side": [256]},
                     {"image_dim": 1280, "text_dim": 384}, 128),
    "a3vse": ({"embed_dim": 128, "disc_hidden": 128}, {"image_dim": 128, "vocab_size": 2500}, 64),
    "vsa-ae-mmd": ({"max_len": 14}, {"image_dim": 1280, "vocab_size": 2500}, 32),
    "vsepp": ({"embed_dim": 512}, {"image_dim": 1280, "vocab_size": 2500}, 64),
}


def _batch(name: str, model, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    if name == "a3vse":
        return {"pair.image": torch.randn(n, 9, 128, generator=g), "pair.text": random_token_ids(n, 2500, 6, g),
                "pseudo.image": torch.randn(n, 9, 128, generator=g), "pseudo.text": random_token_ids(n, 2500, 6, g)}
    if name == "vsa-ae-mmd":
        return {"src.image": torch.randn(n, 1280, generator=g), "src.text": random_token_ids(n, 2500, 8, g),
                "tgt.image": torch.randn(n, 1280, generator=g), "tgt.text": random_token_ids(n, 2500, 8, g)}
    if name == "vsepp":
        return {"image": torch.randn(n, 1280, generator=g), "text": random_token_ids(n, 2500, 8, g)}
    return model.example_batch(n, g)


def _step_ms(model, opts, batches) -> float:
    for b in batches[:3]:
        model.train_step(b, opts, 0.5, 2.0)
    c = cpu_seconds()
    for b in batches[3:]:
        model.train_step(b, opts, 0.5, 2.0)
    return 1000 * (cpu_seconds() - c) / (len(batches) - 3)


def _default_optimizers(model, lr: float) -> list[torch.optim.Optimizer]:
    if hasattr(model, "_groups"):  # LCALE: one optimiser per parameter group (Algorithm 1)
        return [torch.optim.Adam(g, lr=lr) for g in model._groups()]
    return [torch.optim.Adam(model.parameters(), lr=lr)]


def rows(models: list[str], steps: int, threads: list[int], command: str) -> list[Row]:
    out = []
    for name in models:
        cfg, dims, n = SIZES[name]
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = build_model(name, cfg, dims=dims)
        batches = [_batch(name, model, n, g) for _ in range(steps + 3)]
        base = rss_mb()
        torch.set_num_threads(1)
        fused, default = [], []
        for _ in range(2):  # interleaved
            fused.append(_step_ms(model, model.make_optimizers(1e-4), batches))
            default.append(_step_ms(model, _default_optimizers(model, 1e-4), batches))
        out.append(Row(f"{name} training step (batch {n}), ms", min(fused), "torch.optim.Adam (foreach)",
                       min(default), rss_mb() - base, command, note="visem's fused Adam"))
        if len(threads) > 1:
            per = {}
            for t in threads:
                torch.set_num_threads(t)
                per[t] = _step_ms(model, model.make_optimizers(1e-4), batches)
            torch.set_num_threads(1)
            t0, t1 = threads[-1], threads[0]
            out.append(Row(f"{name} training step on {t0} threads vs {t1}, CPU ms", per[t0], f"{t1} thread(s)",
                           per[t1], 0.0, command))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--models", default=",".join(SIZES))
    p.add_argument("--threads", default="1,2")
    args = p.parse_args()
    cmd = f"python bench/bench_train.py --steps {args.steps} --models {args.models} --threads {args.threads}"
    print(f"command: {' '.join(['python', *sys.argv])}")
    print(f"machine: {machine()}")
    t = time.perf_counter()
    for r in rows(args.models.split(","), args.steps, [int(x) for x in args.threads.split(",")], cmd):
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        print(f"{r.task}: visem {r.visem_s:.1f}  {r.peer} {r.peer_s:.1f}  ratio {ratio}")
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
