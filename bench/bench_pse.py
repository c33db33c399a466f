"""Training steps of seed 002's JMVAE next to MultiVae's, same networks, in CPU milliseconds per step (one thread).

    python bench/bench_pse.py [--steps 200] [--batch 100]

MNIST sizes (784-pixel images, 10 one-hot classes, Appendix A's 512-64
MLPs, latent 10). A step is forward, backward and an Adam update, on one
fixed random batch (time, not learning, is measured). MultiVae is an
optional peer: when ``multivae`` is not importable (it is not a visem
dependency, and installing it must not replace the pinned torch) its row
says so and has no number.

MultiVae's JMVAE gets visem's networks (the same layer sizes) as pythae
encoders / decoders; its image decoder returns logits for its
``"bernoulli"`` likelihood (its default decoders end in a Sigmoid, which
that likelihood does not expect), and ``warmup=0`` so the step is the plain
objective. Both sum over dimensions and average over the batch.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _measure import Row, machine, measure_cpu
from torch import Tensor

from visem.models.registry import build_model


def _stepper(opt: torch.optim.Optimizer, loss_fn, steps: int):
    """After one warm-up step, a function that runs ``steps`` optimiser steps on ``loss_fn()`` and returns the
    last loss."""

    def one() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.detach()

    one()  # warm-up

    def run() -> float:
        for _ in range(steps):
            loss = one()
        return float(loss)

    return run


def visem_step(name: str, batch: dict, steps: int):
    torch.manual_seed(0)
    model = build_model(name, {"image_dim": 784, "class_dim": 10, "n_classes": 10})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    return _stepper(opt, lambda: model.loss(batch)["loss"], steps)


def multivae_step(batch: dict, steps: int):
    """MultiVae's JMVAE with visem's layer sizes; raises ImportError when MultiVae is missing."""
    import torch.nn as nn
    from multivae.data.datasets.base import MultimodalBaseDataset
    from multivae.models import JMVAE, JMVAEConfig
    from multivae.models.nn.base_architectures import BaseJointEncoder
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class Encoder(BaseEncoder):
        def __init__(self, in_dim, hidden):
            super().__init__()
            self.body = mlp([in_dim, *hidden]) if hidden else nn.Identity()
            self.head = nn.Linear(hidden[-1] if hidden else in_dim, 20)
            self.relu = bool(hidden)

        def forward(self, x):
            h = self.body(x)
            h = torch.relu(h) if self.relu else h
            mu, logvar = self.head(h).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class JointEncoder(BaseJointEncoder):
        def __init__(self):
            super().__init__()
            self.net = Encoder(794, (512, 64))

        def forward(self, data):
            return self.net(torch.cat([data["image"], data["label"]], dim=-1))

    class Decoder(BaseDecoder):
        def __init__(self, sizes):
            super().__init__()
            self.net = mlp(sizes)

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    torch.manual_seed(0)
    config = JMVAEConfig(n_modalities=2, latent_dim=10, input_dims={"image": (784,), "label": (10,)},
                         decoders_dist={"image": "bernoulli", "label": "categorical"}, alpha=0.1, warmup=0)
    model = JMVAE(config, encoders={"image": Encoder(784, (512, 64)), "label": Encoder(10, ())},
                  decoders={"image": Decoder([10, 64, 512, 784]), "label": Decoder([10, 10])},
                  joint_encoder=JointEncoder())
    onehot = torch.nn.functional.one_hot(batch["label"], 10).float()
    data = MultimodalBaseDataset(data={"image": batch["image"], "label": onehot}, labels=batch["label"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    return _stepper(opt, lambda: model(data, epoch=1).loss, steps)


def rows(steps: int, batch_size: int, command: str) -> list[Row]:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    batch = {"image": (torch.rand(batch_size, 784, generator=g) < 0.3).float(),
             "label": torch.randint(0, 10, (batch_size,), generator=g),
             "class_emb": torch.eye(10)}
    out: list[Row] = []
    visem = visem_step("jmvae", batch, steps)
    try:
        peer = multivae_step(batch, steps)
    except Exception as err:  # MultiVae missing, or an API it no longer has
        _, cpu, _, mem = measure_cpu(visem)
        reason = "not installed" if isinstance(err, ImportError) else f"failed: {type(err).__name__}: {err}"
        print(f"MultiVae {reason}: its JMVAE row is skipped", flush=True)
        out.append(Row(f"JMVAE training step (batch {batch_size}), ms", 1000 * cpu / steps,
                       f"MultiVae JMVAE ({reason}, skipped)", None, mem, command))
        return out
    times, peer_times, mem = [], [], 0.0
    for _ in range(2):
        _, cpu, _, _ = measure_cpu(peer)
        peer_times.append(1000 * cpu / steps)
        _, cpu, _, m = measure_cpu(visem)
        times.append(1000 * cpu / steps)
        mem = max(mem, m)
    out.append(Row(f"JMVAE training step (batch {batch_size}), ms", min(times), "MultiVae JMVAE, same networks",
                   min(peer_times), mem, command))
    print(f"{out[-1].task}: visem {out[-1].visem_s:.2f} ms, MultiVae {out[-1].peer_s:.2f} ms", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--json", help="write the rows here as JSON")
    args = p.parse_args()
    command = "python " + " ".join(sys.argv)
    print(f"command: {command}")
    print("machine: " + json.dumps(machine()))
    result = rows(args.steps, args.batch, command)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ | {"ratio": r.ratio} for r in result], f, indent=1)


if __name__ == "__main__":
    main()
