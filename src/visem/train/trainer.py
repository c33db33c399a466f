"""The training loop: seeded, resumable, logged, and stopped on NaN/Inf.

A run directory holds::

    config.yaml              the resolved config (written by the caller)
    checkpoint.safetensors   model + optimisers + RNG + sampler, every
                             ``checkpoint_every`` steps and at the end
    metrics.csv              step, lr and the mean of every loss term since
                             the previous row
    model.safetensors        final weights
    best.safetensors         with ``select``: the weights of the best
                             validation score so far (its step and score in
                             the metadata); training ends on them
    shares.json              with ``share_probe``: each weighted term's share
                             of the encoders' gradient on the probe batch,
                             before training and after it

A killed run started again with the same run directory continues from its
last checkpoint; rows of ``metrics.csv`` past that checkpoint are dropped, so
the log equals that of an uninterrupted run.

The model trains on ``train.device`` (``auto``: CUDA when present) in
``train.precision`` (:mod:`visem.train.precision`) and, under ``torchrun``,
data-parallel over every process (:mod:`visem.train.distributed`): the
sampler is sharded so that ``train.batch_size`` is the global batch, the
forward runs through ``DistributedDataParallel``, logged terms are averaged
over ranks, and rank 0 alone writes the run directory. After :meth:`Trainer.fit`
the model is back on the device it came on, so code that evaluates it needs
no change (``fit(keep_device=True)`` leaves it on the training device).
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from visem.io import atomic_write_text
from visem.runtime import resolve_precision
from visem.models.base import EmbeddingModel, NonFiniteError
from visem.train import distributed as dist
from visem.train.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from visem.train.precision import Precision


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_step: int | None = None  # multiply lr by lr_decay from this step on
    lr_decay: float = 0.1
    grad_clip: float | None = None
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    progress: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: $VISEM_DEVICE, else CUDA when present)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: $VISEM_PRECISION, else fp32)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Runs ``model.train_step`` over batches from ``sampler`` for ``cfg.steps`` steps.

    ``sampler`` yields dicts of tensors and has ``state_dict`` /
    ``load_state_dict`` (:class:`visem.train.sampler.BatchSampler`).
    ``static`` tensors (class embeddings, say) join every batch.
    ``on_step(step, terms)`` is called after each step (tests use it to
    simulate a crash). ``share_probe``: a batch (or ``True``: the sampler's
    first batch) on which
    :func:`visem.train.shares.gradient_shares` is measured (schedules at their
    final values) before the first step and after the last; the result is
    ``self.shares = {"start": ..., "end": ...}`` (``start`` only when training
    began here, not on a resume; every share 0 when no term has a gradient on
    the probe batch, e.g. a hinge already met by all its pairs) and
    ``shares.json`` in the run directory.
    ``select=(score_fn, every)``: model selection on held-out data, as seed
    003 Sec. 4.3 selects by validation rsum: ``score_fn(model)`` (higher is
    better, never computed on test data) every ``every`` steps and at the
    end; the model ends with the best-scoring weights, and ``self.best`` is
    ``{"step", "score"}``.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        sampler: Iterator[dict[str, Tensor]],
        cfg: TrainConfig,
        run_dir: str | Path | None = None,
        static: Mapping[str, Tensor] | None = None,
        on_step: Callable[[int, dict[str, Tensor]], None] | None = None,
        share_probe: Mapping[str, Tensor] | bool | None = None,
        select: tuple[Callable[[EmbeddingModel], float], int] | None = None,
    ) -> None:
        self.model = model
        self.sampler = sampler
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        dist.init_from_env()
        self.device = dist.device_for(cfg.device)
        self.precision = Precision(resolve_precision(cfg.precision), self.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self._home = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.to(self.device)
        self.static = dist.to_device(static or {}, self.device)
        self.on_step = on_step
        if share_probe is True:  # the sampler's first batch, without consuming it
            state = sampler.state_dict()
            share_probe = next(sampler)
            sampler.load_state_dict(state)
        self.share_probe = dist.to_device(share_probe, self.device) if share_probe not in (None, False) else None
        if self.world > 1:
            if not hasattr(sampler, "shard"):
                raise dist.DistributedError(
                    f"{type(sampler).__name__} cannot shard its batches over {self.world} processes (no shard())")
            sampler.shard(self.rank, self.world)
        self.shares: dict[str, dict[str, float]] = {}
        if select is not None and (int(select[1]) < 1):
            raise ValueError(f"select: validate every >= 1 steps, got {select[1]!r}")
        self.select = select
        self.best: dict[str, float] = {}
        self._best_state: dict[str, Tensor] | None = None
        self.optimizers = model.make_optimizers(cfg.lr, cfg.weight_decay)
        self._base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]
        self.step = 0

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.safetensors" if self.run_dir else None

    def _set_lr(self) -> float:
        factor = self.cfg.lr_decay if self.cfg.lr_decay_step is not None and self.step >= self.cfg.lr_decay_step else 1.0
        for opt, base in zip(self.optimizers, self._base_lrs):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * factor
        return self.cfg.lr * factor

    def _rng_states(self) -> dict[str, Tensor]:
        """This rank's RNG states (CPU, and the training GPU's), keyed by rank when distributed."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world == 1:
            return {f"rng.{k}": v for k, v in states.items()}
        import torch.distributed as tdist

        every: list = [None] * self.world
        tdist.all_gather_object(every, {k: v.numpy().tobytes() for k, v in states.items()})
        return {f"rng.{k}.rank{r}": torch.frombuffer(bytearray(b), dtype=torch.uint8)
                for r, st in enumerate(every) for k, b in st.items()}

    def _save(self) -> None:
        if self.checkpoint_path is None:
            return
        rng = self._rng_states()  # collective: every rank takes part
        if not dist.is_main():
            return
        meta = {"step": self.step, "log_window": {"sums": self._sums, "count": self._count},
                "world_size": self.world}
        if hasattr(self.sampler, "state_dict"):
            meta["sampler"] = self.sampler.state_dict()
        if self.precision.scaler is not None:
            meta["grad_scaler"] = self.precision.state_dict()
        save_checkpoint(self.checkpoint_path, self.model, self.optimizers, meta, rng=rng)

    def _resume(self) -> None:
        """Continue from rank 0's checkpoint (sent to every rank, so no shared file system is needed)."""
        ckpt = self.checkpoint_path
        if ckpt is None:
            return
        data = dist.broadcast_file(ckpt)
        if data is None:
            return
        best_data = dist.broadcast_file(self.run_dir / "best.safetensors") if self.select is not None else None
        with _local_copy(ckpt, data) as local_ckpt, _local_copy(self.run_dir / "best.safetensors", best_data) as best:
            if best is not None:
                current = {k: v.clone() for k, v in self.model.state_dict().items()}
                self.best = dict(load_weights(best, self.model))
                self._best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
                self.model.load_state_dict(current)
            suffix = f".rank{self.rank}" if self.world > 1 else ""
            meta = load_checkpoint(local_ckpt, self.model, self.optimizers, rng_suffix=suffix,
                                   cuda_device=self.device if self.device.type == "cuda" else None)
        if int(meta.get("world_size", 1)) != self.world:
            # the RNG streams belonged to another number of processes: a fresh, seeded one per rank
            seed_everything(self.cfg.seed + 1_000_003 * self.rank + int(meta["step"]))
        self.precision.load_state_dict(meta.get("grad_scaler", {}))
        self.step = int(meta["step"])
        window = meta.get("log_window", {"sums": {}, "count": 0})
        self._sums, self._count = dict(window["sums"]), int(window["count"])
        if "sampler" in meta and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(meta["sampler"])
        self._truncate_log(self.step)

    # -- metrics log ------------------------------------------------------
    @property
    def log_path(self) -> Path | None:
        return self.run_dir / "metrics.csv" if self.run_dir else None

    def _truncate_log(self, step: int) -> None:
        path = self.log_path
        if path is None or not path.exists() or not dist.is_main():
            return
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        buf = io.StringIO()
        csv.writer(buf).writerows(kept)
        atomic_write_text(path, buf.getvalue())

    def _log(self, row: dict[str, float]) -> None:
        self.history.append(row)
        path = self.log_path
        if path is None or not dist.is_main():
            return
        from visem.train.tensorboard import log_scalars  # also to TensorBoard, when the extra is installed

        log_scalars(self.run_dir, row)
        new = not path.exists()
        if not new:
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header != list(row):
                # a term appeared or vanished (e.g. alternating phases): rewrite with the union
                with path.open(newline="") as f:
                    old = list(csv.DictReader(f))
                fields = list(dict.fromkeys((header or []) + list(row)))
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=fields)
                w.writeheader()
                w.writerows(old + [row])
                atomic_write_text(path, buf.getvalue())
                return
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    # -- loop -------------------------------------------------------------
    def fit(self, keep_device: bool = False) -> list[dict[str, float]]:
        """Train to ``cfg.steps``; returns the logged rows of this call.

        The model ends on the device it came on unless ``keep_device``.
        """
        cfg = self.cfg
        self.history: list[dict[str, float]] = []
        # running sums of the loss terms since the last log row (checkpointed, so a
        # resumed run logs the same rows as an uninterrupted one)
        self._sums: dict[str, float] = {}
        self._count = 0
        if self.run_dir is not None and dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        if self.step == 0:
            seed_everything(cfg.seed)
            self._measure_shares("start")
            # one stream per rank: the noise of a sampling model is drawn independently on each shard
            seed_everything(cfg.seed + 1_000_003 * self.rank)
        engine = dist.wrap(self.model, self.device)
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress, desc="train", leave=False)
        try:
            while self.step < cfg.steps:
                batch = dist.to_device(next(self.sampler), self.device)
                if self.static:
                    batch = {**batch, **self.static}
                lr = self._set_lr()
                try:
                    terms = self.model.train_step(batch, self.optimizers, self.step / cfg.steps, cfg.grad_clip,
                                                  engine=engine, precision=self.precision)
                except NonFiniteError as exc:
                    raise NonFiniteError(
                        f"training stopped at step {self.step + 1}: {exc}. The last good checkpoint"
                        f" is {self.checkpoint_path}; lower the learning rate or check the data."
                    ) from None
                self.step += 1
                values = dist.mean_over_ranks({k: float(v.detach()) for k, v in terms.items()})
                for k, v in values.items():
                    self._sums[k] = self._sums.get(k, 0.0) + v
                self._count += 1
                if self.on_step is not None:
                    self.on_step(self.step, terms)
                if self.select is not None and (self.step % self.select[1] == 0 or self.step == cfg.steps):
                    self._validate()
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    row = {"step": self.step, "lr": lr, **{k: v / self._count for k, v in self._sums.items()}}
                    if self.best:
                        row["best_val"] = self.best["score"]
                    self._log(row)
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4g}")
                    self._sums, self._count = {}, 0
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self._save()
                bar.update(1)
        finally:
            bar.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self._measure_shares("end")
        if self.run_dir is not None and dist.is_main():
            from visem.train.tensorboard import close

            close(self.run_dir)
            save_weights(self.run_dir / "model.safetensors", self.model, {"step": self.step})
        self.model.eval()
        if not keep_device:
            self.model.to(self._home)
        return self.history

    def _validate(self) -> None:
        score_fn = self.select[0]
        was = self.model.training
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            score = float(score_fn(self.model))
        score = dist.broadcast_object(score)  # every rank keeps the same best weights
        self.model.train(was)
        if not self.best or score > self.best["score"]:
            self.best = {"step": self.step, "score": score}
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.run_dir is not None and dist.is_main():
                save_weights(self.run_dir / "best.safetensors", self.model, self.best)

    def _measure_shares(self, when: str) -> None:
        """Rank 0 measures the shares on its own (no collective: gathering is off outside a step)."""
        if self.share_probe is None or not dist.is_main():
            return
        from visem.train.shares import gradient_norms, shares_of

        batch = {**self.share_probe, **self.static}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            norms = gradient_norms(self.model, batch, progress=1.0)
        # every term at zero gradient (a hinge met by every pair of the probe batch, typical at the end
        # of training on few pairs) gives every share 0, not an error that would end the run
        self.shares[when] = shares_of(norms)
        self.model.zero_grad(set_to_none=True)
        if self.run_dir is not None:
            from visem.io import atomic_write_json

            atomic_write_json(self.run_dir / "shares.json", self.shares)


@contextlib.contextmanager
def _local_copy(path: Path, data: bytes | None) -> Iterator[Path | None]:
    """``path`` itself on rank 0; elsewhere a temporary file holding rank 0's ``data`` (``None`` if none)."""
    if data is None:
        yield None
    elif dist.is_main():
        yield path
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="visem-rank") as tmp:
            local = Path(tmp) / path.name
            local.write_bytes(data)
            yield local
