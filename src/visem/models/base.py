"""Base classes of visem models: the training and evaluation interface."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from visem.distributed import gather, gathered_rows, shard_map
from visem.losses import ranking_hinges, ranking_loss
from visem.metrics import retrieval_recall


@dataclass
class Objective:
    """One batch's objective as the paper writes it: ``total = sum_k weights[k] * terms[k]``.

    ``terms`` are the paper's terms, unweighted and still in the autograd
    graph; ``weights`` the factor each enters the total with (the current
    value of a schedule included; a term missing from ``weights`` has weight
    1); ``extras`` are diagnostics that are logged but not optimised
    (accuracies, schedule values). Keeping the terms apart is what lets
    :func:`visem.train.shares.gradient_shares` measure how much of the
    encoders' gradient each weighted term carries.
    """

    terms: dict[str, Tensor]
    weights: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    def weighted(self) -> dict[str, Tensor]:
        """``{name: weight * term}`` of the terms whose weight is not 0."""
        return {k: self.weight(k) * t for k, t in self.terms.items() if self.weight(k) != 0.0}

    @property
    def total(self) -> Tensor:
        parts = list(self.weighted().values())
        if not parts:
            raise ValueError(f"objective has no term with a non-zero weight (terms: {sorted(self.terms)})")
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out

    def log(self) -> dict[str, Tensor]:
        """``{"loss": total, term: value (unweighted, detached), extra: value}``, what :meth:`EmbeddingModel.loss` returns."""
        return {"loss": self.total, **{k: t.detach() for k, t in self.terms.items()},
                **{k: v.detach() for k, v in self.extras.items()}}


def adam(params, lr: float, weight_decay: float = 0.0, **kwargs: Any) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where torch has it for the parameters' device.

    The fused implementation computes the same update as the default one
    (the same formula, up to float rounding); on a CPU its step over 1.3M
    parameters takes about a quarter of the foreach implementation's time,
    which makes a whole LCALE or VSE++ training step 7-13% cheaper
    (``bench/bench_train.py``).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kwargs)


@dataclass(frozen=True)
class Phase:
    """One update of a training step: a forward through the model, a backward, the named optimisers step.

    ``optimizers``: indices into :meth:`EmbeddingModel.make_optimizers`'
    list (``None``: all of them); their parameters are the ones clipped.
    ``log``: the loss terms of this phase are the step's logged terms (the
    first such phase wins). A step is the phases in order on one batch,
    gradients zeroed before each.
    """

    name: str = "main"
    optimizers: tuple[int, ...] | None = None
    log: bool = True


class EmbeddingModel(nn.Module):
    """Base class of registered models.

    Subclasses implement :meth:`objective` (the paper's weighted terms for one
    batch, see :class:`Objective`) and :meth:`example_batch`; :meth:`loss` is
    the dict of named scalar terms the trainer logs, whose key ``"loss"`` is
    the total to minimise.

    **Training steps are phases** (:class:`Phase`), so that one step
    function (:meth:`train_step`) serves every model on one device, under
    autocast, and under ``DistributedDataParallel``, whose gradient
    synchronisation fires only through ``forward``. A model with one
    objective and one optimiser needs nothing more. A model with several
    optimisers or alternating updates (LCALE's Algorithm 1, a GAN's critic
    and generator, adversarial training) overrides :meth:`make_optimizers`,
    :meth:`phases` and :meth:`forward` (which returns the loss dict of the
    phase it is given); it never overrides :meth:`train_step`.

    **Distributed objectives.** A term that looks across the batch (in-batch
    negatives, MMD, a correlation, a sum over the batch) is computed on
    :func:`visem.distributed.gather` ed tensors; per-sample terms averaged
    over the batch need nothing (the rule in :mod:`visem.distributed`).

    :meth:`encoder_parameters` are the parameters whose gradient the
    term-share diagnostics measure (default: all).
    """

    config: Any

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    # -- training -------------------------------------------------------
    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """The weighted terms of the objective on one batch; ``progress`` is the fraction of training done."""
        raise NotImplementedError(f"{type(self).__name__} does not define objective()")

    def loss(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> dict[str, Tensor]:
        """Named loss terms for one batch (``"loss"`` = the total); ``progress`` is the fraction of training done."""
        return self.objective(batch, progress).log()

    def forward(self, batch: Mapping[str, Tensor], progress: float = 0.0, phase: str = "main") -> dict[str, Tensor]:
        """The loss dict (``"loss"`` = what this phase minimises) of ``phase`` on ``batch``.

        What ``DistributedDataParallel`` calls; the default serves the one
        phase ``"main"`` with :meth:`loss`.
        """
        if phase != "main":
            raise ValueError(f"{type(self).__name__} has no training phase {phase!r}")
        return self.loss(batch, progress)

    def phases(self) -> tuple[Phase, ...]:
        """The updates of one training step, in order (default: one, all optimisers)."""
        return (Phase(),)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters that produce the embeddings (what :func:`visem.train.shares.gradient_shares` reads)."""
        return [p for p in self.parameters() if p.requires_grad]

    def make_optimizers(self, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        return [adam(self.parameters(), lr=lr, weight_decay=weight_decay)]

    def train_step(
        self,
        batch: Mapping[str, Tensor],
        optimizers: list[torch.optim.Optimizer],
        progress: float = 0.0,
        grad_clip: float | None = None,
        engine: nn.Module | None = None,
        precision: Any = None,
    ) -> dict[str, Tensor]:
        """One step: each of :meth:`phases` in turn. Raises :class:`NonFiniteError` before stepping on NaN/Inf.

        ``engine``: what the forward runs through (``self``, or the
        ``DistributedDataParallel`` wrapper of ``self``); ``precision``: a
        :class:`visem.train.precision.Precision` (autocast and the fp16
        gradient scaler), ``None`` for float32. Cross-batch terms gather
        across ranks inside this step (:func:`visem.distributed.gathering`).
        """
        from visem.distributed import any_rank, gathering

        engine = self if engine is None else engine
        logged: dict[str, Tensor] | None = None
        for phase in self.phases():
            chosen = [optimizers[i] for i in (phase.optimizers if phase.optimizers is not None
                                              else range(len(optimizers)))]
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            with gathering(engine is not self), (precision.autocast() if precision is not None
                                                  else contextlib.nullcontext()):
                terms = engine(batch, progress, phase.name)
            if engine is self:
                check_finite(terms)
            elif any_rank(bool(non_finite(terms))):  # every rank stops alike, or the others would hang
                check_finite(terms)
                raise NonFiniteError(f"non-finite loss term(s) on another rank (phase {phase.name!r})")
            loss = terms["loss"]
            (precision.scale(loss) if precision is not None else loss).backward()
            if grad_clip:
                if precision is not None:
                    for opt in chosen:
                        precision.unscale_(opt)
                params = [p for opt in chosen for g in opt.param_groups for p in g["params"]]
                nn.utils.clip_grad_norm_(params, grad_clip)
            for opt in chosen:
                if precision is not None:
                    precision.step(opt)
                else:
                    opt.step()
            if precision is not None:
                precision.update()
            if phase.log and logged is None:
                logged = terms
        if logged is None:
            raise ValueError(f"{type(self).__name__}.phases() marks no phase to log")
        return logged

    # -- evaluation -----------------------------------------------------
    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Metrics on held-out ``data`` (keys as the model's task defines them)."""
        raise NotImplementedError(f"{type(self).__name__} does not define evaluate()")

    # -- tests ----------------------------------------------------------
    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """A valid random training batch of ``n`` samples, for registry-walking tests."""
        raise NotImplementedError

    def example_eval_data(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Valid random held-out data of ``n`` samples for :meth:`evaluate` (default: a training batch)."""
        return self.example_batch(n, generator)


class NonFiniteError(FloatingPointError):
    """A loss term became NaN or Inf; the message names the term."""


def non_finite(terms: Mapping[str, Tensor]) -> list[str]:
    """The names of the terms holding a NaN or an Inf."""
    return [k for k, v in terms.items() if not bool(torch.isfinite(v.detach()).all())]


def check_finite(terms: Mapping[str, Tensor]) -> None:
    bad = non_finite(terms)
    if bad:
        vals = ", ".join(f"{k}={terms[k].detach().flatten()[:1].item()}" for k in bad)
        raise NonFiniteError(f"non-finite loss term(s): {vals}")


class RetrievalModel(EmbeddingModel):
    """A model that embeds images and texts into one space scored by dot product.

    Subclasses implement :meth:`embed_image` and :meth:`embed_text`; held-out
    data with ``image``, ``text`` and ``txt_to_img`` tensors is evaluated with
    :func:`visem.metrics.retrieval_recall`.
    """

    def embed_image(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def embed_text(self, text: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def embed_pair(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings of held-out ``image`` and ``text`` in eval mode (the training mode is restored).

        The inputs go to the model's device; under a process group each rank
        embeds its share and every rank gets all of them
        (:func:`visem.distributed.shard_map`).
        """
        was_training = self.training
        self.eval()
        device = next((p.device for p in self.parameters()), image.device)
        try:
            return (shard_map(self.embed_image, image.to(device)), shard_map(self.embed_text, text.to(device)))
        finally:
            self.train(was_training)

    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        return retrieval_recall(*self.embed_pair(data["image"], data["text"]), data["txt_to_img"])

    def example_eval_data(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        return paired_eval_data(self.example_batch(n, generator))


def paired_eval_data(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Held-out retrieval data from a training batch: its ``image`` / ``text`` pairs (whatever their group
    prefix) and ``txt_to_img``, caption ``k`` belonging to image ``k``."""
    prefix = next(p for p in ("", "pair.", "src.") if f"{p}image" in batch)
    out = {k: batch[f"{prefix}{k}"] for k in ("image", "text")}
    return {**out, "txt_to_img": torch.arange(out["text"].shape[0], device=out["text"].device)}


def batch_ranking_loss(img: Tensor, txt: Tensor, margin: float = 0.2, hardest: bool = False,
                       reduction: str = "sum") -> Tensor:
    """:func:`visem.losses.ranking_loss` over the GLOBAL batch (every process's pairs are negatives).

    In one process it is ``ranking_loss`` itself. Under data-parallel
    training each rank scores its own pairs against the gathered batch
    (:func:`visem.losses.ranking_hinges`, the rectangular "local loss") and
    the per-pair terms are gathered before the reduction, so every rank holds
    the one-process value (the rule of :mod:`visem.distributed`).
    """
    img_g, offset = gathered_rows(img)
    if img_g is img:
        return ranking_loss(img, txt, margin=margin, hardest=hardest, reduction=reduction)
    txt_g = gather(txt)
    per = gather(ranking_hinges(img @ txt_g.T, txt @ img_g.T, offset, margin=margin, hardest=hardest))
    return per.sum() if reduction == "sum" else per.mean()


class PairRankingLoss:
    """Mixin: the objective is the bidirectional hinge triplet loss on ``image`` / ``text`` pair batches.

    :func:`visem.losses.ranking_loss` with the model's ``config.margin``,
    ``config.hardest`` (sum of violations, or the hardest negative of VSE++)
    and ``config.reduction`` (``"sum"`` over the batch as VSE++'s code, or
    ``"mean"``).
    """

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        img = self.embed_image(batch["image"])
        txt = self.embed_text(batch["text"])
        c = self.config
        return Objective({"ranking": batch_ranking_loss(img, txt, margin=c.margin, hardest=c.hardest,
                                                        reduction=c.reduction)})
