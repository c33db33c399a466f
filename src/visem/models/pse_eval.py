"""The evaluation of seed 002 section 4, for the label-conditioned generative models of :mod:`visem.models.pse`.

* :func:`reconstruction_error` - negative Bernoulli log-likelihood of each
  test image under its reconstruction from **one posterior sample**, summed
  over the pixels, averaged over images (nats per image). The targets are the
  grey levels in ``[0, 1]`` (see ``docs/pse.md`` for why). ``decode="mean"``
  decodes the posterior mean instead (a diagnostic, not the paper's number).
* :func:`annotation_accuracy` - the image's posterior mean, labelled with the
  class whose label Gaussian gives it the highest density (percent).
* :func:`generation_accuracy` - ``n_per_label`` latent samples per label
  Gaussian, decoded to Bernoulli means and classified by the scoring CNN of
  :mod:`visem.models.classifier`; the percent classified as the label they
  were drawn from, repeated ``repeats`` times (mean and sample standard
  deviation).
* :func:`classify_generated` - the class distribution of images generated
  from arbitrary label vectors (unseen words, label averages; section 5).
* :func:`floor_scores` - what a model that ignores its input scores: the
  random-floor row of the tables.

The models are put in eval mode for the call and restored afterwards. All
randomness comes from a seeded ``torch.Generator``, so a number is
reproducible from its seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visem.models.pse import bernoulli_nll

__all__ = ["reconstruction_error", "annotation_accuracy", "generation_accuracy", "classify_generated",
           "generated_predictions", "floor_scores"]

#: images per classifier call: larger chunks run slower on CPU (they leave the cache), measured in docs/pse.md
SCORE_CHUNK = 1000


def _check_eval_inputs(images: Tensor, labels: Tensor | None, class_emb: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 2:
        raise ValueError(f"images must be an (N, D) tensor, got {tuple(getattr(images, 'shape', ()))}")
    if labels is not None and tuple(labels.shape) != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    if class_emb.dim() != 2:
        raise ValueError(f"class_emb must be (n_classes, class_dim), got {tuple(class_emb.shape)}")


class _EvalMode:
    """``with _EvalMode(*modules):`` eval mode inside, each module's own mode restored after."""

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = [m for m in modules if isinstance(m, nn.Module)]

    def __enter__(self) -> None:
        self.was = [m.training for m in self.modules]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, was in zip(self.modules, self.was):
            m.train(was)


@torch.no_grad()
def reconstruction_error(model, images: Tensor, labels: Tensor, class_emb: Tensor, seed: int = 0,
                         chunk: int = 5000, decode: str = "sample") -> float:
    """Mean over images of ``-log p(x | x_hat)`` (Bernoulli, summed over pixels): nats/image.

    ``decode="sample"`` (the default, the ELBO's first term as seed 002
    reports it): ``x_hat`` decoded from one sample of the posterior the model
    reconstructs through (``q(z|x)``; ``q(z|x,l)`` for CVAE, JMVAE, TrELBO).
    ``decode="mean"``: from the posterior mean (no sampling noise).
    """
    _check_eval_inputs(images, labels, class_emb)
    if decode not in ("sample", "mean"):
        raise ValueError(f"decode must be 'sample' or 'mean', got {decode!r}")
    gen = torch.Generator(device=images.device).manual_seed(seed)
    total = 0.0
    with _EvalMode(model):
        for i in range(0, images.shape[0], chunk):
            x = images[i : i + chunk]
            l = class_emb[labels[i : i + chunk]]
            logits = model.reconstruction_logits(x, l, generator=gen, sample=decode == "sample")
            total += float(bernoulli_nll(logits, x).sum())
    return total / images.shape[0]


@torch.no_grad()
def annotation_accuracy(model, images: Tensor, labels: Tensor, class_emb: Tensor, chunk: int = 5000) -> float:
    """Percent of images whose most likely label Gaussian (at the posterior mean) is their own class."""
    _check_eval_inputs(images, labels, class_emb)
    with _EvalMode(model):
        pred = torch.cat([model.annotate(images[i : i + chunk], class_emb) for i in range(0, images.shape[0], chunk)])
    return float((pred == labels).float().mean()) * 100.0


@torch.no_grad()
def generated_predictions(model, classifier: nn.Module, vectors: Tensor, n: int, generator: torch.Generator,
                          chunk: int = SCORE_CHUNK) -> Tensor:
    """Classifier's class index for ``n`` images generated from each row of ``vectors``: ``(K, n)`` int64.

    The latent samples of all ``K`` labels are drawn at once (label-major, as
    :meth:`~visem.models.pse.GenerativeLabelModel.sample_latent`), then
    decoded and classified ``chunk`` images at a time, with no loop over
    labels; only one chunk of images is held at once.
    """
    k = vectors.shape[0]
    z = model.sample_latent(vectors, n, generator)
    cond = vectors.repeat_interleave(n, dim=0) if model.conditional_decoder else None
    out = torch.empty(k * n, dtype=torch.long, device=z.device)
    with _EvalMode(model, classifier):
        for i in range(0, k * n, chunk):
            c = cond[i : i + chunk] if cond is not None else None
            images = torch.sigmoid(model.decode(z[i : i + chunk], c))
            out[i : i + chunk] = classifier(images).argmax(1)
    return out.view(k, n)


@torch.no_grad()
def generation_accuracy(model, classifier: nn.Module, class_emb: Tensor, n_per_label: int = 10000,
                        repeats: int = 10, seed: int = 0, chunk: int = SCORE_CHUNK) -> dict[str, Any]:
    """Seed 002's generation accuracy: ``n_per_label`` images per label, scored by ``classifier``.

    Returns ``{"mean", "std", "per_repeat"}`` in percent; ``std`` is the
    sample standard deviation over the ``repeats`` (0 for one repeat).
    """
    if n_per_label < 1 or repeats < 1:
        raise ValueError(f"n_per_label and repeats must be >= 1, got {n_per_label}, {repeats}")
    _check_eval_inputs(class_emb, None, class_emb)
    gen = torch.Generator(device=class_emb.device).manual_seed(seed)
    target = torch.arange(class_emb.shape[0], device=class_emb.device)[:, None]
    accs = []
    for _ in range(repeats):
        pred = generated_predictions(model, classifier, class_emb, n_per_label, gen, chunk)
        accs.append(100.0 * float((pred == target).double().mean()))
    std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    return {"mean": float(np.mean(accs)), "std": std, "per_repeat": accs}


@torch.no_grad()
def classify_generated(model, classifier: nn.Module, vectors: Tensor, n: int, seed: int = 0,
                       n_classes: int | None = None, chunk: int = SCORE_CHUNK) -> Tensor:
    """``(K, n_classes)`` fraction of ``n`` images generated from each label vector given to each class."""
    gen = torch.Generator(device=vectors.device).manual_seed(seed)
    pred = generated_predictions(model, classifier, vectors, n, gen, chunk)
    if n_classes is None:
        n_classes = int(getattr(getattr(classifier, "head", [None])[-1], "out_features", int(pred.max()) + 1))
    counts = torch.zeros(vectors.shape[0], n_classes, dtype=torch.float64, device=pred.device)
    counts.scatter_add_(1, pred, torch.ones_like(pred, dtype=torch.float64))
    return (counts / n).float()


@torch.no_grad()
def floor_scores(train_images: Tensor, test_images: Tensor, n_classes: int) -> dict[str, float]:
    """The random floor of seed 002's three numbers, for a model that ignores its input.

    * reconstruction: every test image "reconstructed" as the per-pixel mean
      of the training images (the best image-independent Bernoulli decoder),
      nats per image;
    * annotation: a label drawn uniformly at random is right ``100 / K``
      percent of the time;
    * generation: images that do not depend on the label are classified as
      that label ``100 / K`` percent of the time, whatever the classifier.
    """
    _check_eval_inputs(test_images, None, test_images)
    p = train_images.double().mean(0).clamp(1e-6, 1 - 1e-6)
    logits = torch.logit(p).expand(test_images.shape[0], -1)
    rec = float(bernoulli_nll(logits, test_images.double()).mean())
    return {"reconstruction_error": rec, "annotation_accuracy": 100.0 / n_classes,
            "generation_accuracy": 100.0 / n_classes}
