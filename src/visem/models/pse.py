"""Probabilistic Semantic Embedding (seed 002): PSE, PSE* and the four baselines it is compared with.

Images and labels are both encoded as diagonal Gaussians in one latent space.
All six models share the MLP blocks of seed 002 Appendix A: image encoder
``image_dim-512-64-z`` (to a mean and a log-variance), image decoder
``z-64-512-image_dim`` (Bernoulli logits), ReLU throughout; the label encoder
is a single dense layer from the label vector to a mean and a log-variance.

============  =====================================================================
name          objective (each loss below is the *negative* of the paper's bound)
============  =====================================================================
``pse``       Eq. 2: ``-E_q(z|x)[log p(x|z)] + KL(q(z|x) || q(z|l))``
``pse-star``  Eq. 3: PSE plus ``-E_q(z|x)[log p(l | Cla(x_hat))]``, a classifier on
              the reconstruction ``x_hat``
``cvae``      Eq. 4: ``-E_q(z|x,l)[log p(x|z,l)] + KL(q(z|x,l) || N(0, I))``
``jmvae``     Eq. 5 (JMVAE-kl): joint ELBO + ``alpha (KL(q(z|x,l)||q(z|x)) +
              KL(q(z|x,l)||q(z|l)))``
``trelbo``    Eq. 6: joint ELBO (label term weighted ``lambda_1``) + image ELBO +
              label ELBO (label term weighted ``lambda_2``), all priors N(0, I)
``scan-bvae`` SCAN (Higgins et al. 2018): a beta-VAE (``beta = 10``) and label
              Gaussians fitted to its image posteriors by ``KL(q(z|x) || q(z|l))``
============  =====================================================================

Batches (what the data tasks of :mod:`visem.data.label_tasks` give):

* ``image`` ``(B, image_dim)`` float in ``[0, 1]``: the targets of the
  Bernoulli likelihood (grey levels, see ``docs/pse.md``);
* ``label`` ``(B,)`` int64 class index;
* ``class_emb`` ``(n_classes, class_dim)``: the label vector of every class
  (the identity for one-hot labels, GloVe vectors of the class names for
  seed 002 section 5). Row ``label`` is the ``l`` of the equations.

Every model implements :meth:`~visem.models.base.EmbeddingModel.objective`:
the paper's terms unweighted, and the weights they enter the bound with
(``alpha`` of JMVAE, ``lambda_1``/``lambda_2`` of TrELBO, ``beta`` of SCAN,
the weight of PSE*'s label term). Every term is summed over pixels / latent
dimensions / label dimensions and averaged over the batch, so ``loss`` is the
negative ELBO per image in nats. This is the reduction each weight assumes:
the reference codes of the baselines (JMVAE, TrELBO, beta-VAE) sum every
log-likelihood and KL over its dimensions per sample, and the batch mean
rescales all terms alike, so it changes no weight. The share of the encoders'
gradient each weighted term carries is measured in ``docs/pse.md``.

Choices where the paper is vague (each also stated in the class docstring):

* The reconstruction ``x_hat`` given to PSE*'s classifier is the decoder's
  Bernoulli mean ``sigmoid(logits)`` of the sampled ``z``; the classifier is an
  MLP ``image_dim-512-64-n`` (Appendix A) trained jointly, end to end.
  One-hot labels use the cross-entropy over classes; word-vector labels the
  Gaussian ``N(l | l_hat, sigma^2 I)`` (negative log-likelihood without its
  constant).
* JMVAE and TrELBO predict the label with a decoder ``p(l|z)``, a single dense
  layer (the mirror of the label encoder; seed 002 does not describe it),
  categorical over the classes.
* ``alpha = 0.1`` for JMVAE-kl (configurable), ``lambda_1 = lambda_2 = 1`` for
  TrELBO: seed 002 reports its TrELBO generation accuracy "when lambda_1 = 1".
* SCAN's two stages run concurrently: the label encoder sees the image
  posteriors with gradients stopped, so the beta-VAE trains exactly as if
  alone and the label Gaussians track its posteriors (see :class:`SCANBetaVAE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.losses import kl_diag_gaussians
from visem.models.base import EmbeddingModel, Objective
from visem.models.layers import mlp
from visem.models.registry import register_model

LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------
# shared blocks
# --------------------------------------------------------------------------
class GaussianEncoder(nn.Module):
    """MLP ``in_dim -> hidden... -> (mu, logvar)`` of a diagonal Gaussian over ``latent_dim``.

    With ``hidden = ()`` it is one dense layer (the label encoder of seed 002 Appendix A).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.body = mlp([in_dim, *hidden]) if hidden else nn.Identity()
        self.head = nn.Linear(hidden[-1] if hidden else in_dim, 2 * latent_dim)
        self.relu = bool(hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        if self.relu:
            h = F.relu(h)
        mu, logvar = self.head(h).chunk(2, dim=-1)
        return mu, logvar


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def bernoulli_nll(logits: Tensor, target: Tensor) -> Tensor:
    """``-log p(x | logits)`` of a factorised Bernoulli, summed over the last dim: ``(B,)`` nats.

    ``target`` may hold grey levels in ``[0, 1]`` (the cross-entropy of
    continuous targets) or binary pixels.
    """
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last dim (broadcasting)."""
    return -0.5 * (((z - mu) ** 2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


class PSEDataError(ValueError):
    """A batch does not fit the model: the message names the key and its shape."""


# --------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------
class GenerativeLabelModel(EmbeddingModel):
    """Common interface of seed 002's models: encode, decode, annotate, generate.

    Subclasses set ``can_annotate`` and implement :meth:`objective`,
    :meth:`encoders`, :meth:`reconstruction_logits` and :meth:`sample_latent`.
    Images generated from a label are the decoder's Bernoulli means.
    """

    can_annotate = True
    conditional_decoder = False

    # -- batch checks -------------------------------------------------------
    def _unpack(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.config
        for key in ("image", "label", "class_emb"):
            if key not in batch:
                raise PSEDataError(f"batch has no {key!r} (keys: {sorted(batch)})")
        x, y, emb = batch["image"], batch["label"], batch["class_emb"]
        if x.dim() != 2 or x.shape[1] != cfg.image_dim:
            raise PSEDataError(f"image must be (B, {cfg.image_dim}), got {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.dtype not in (torch.int64, torch.int32):
            raise PSEDataError(f"label must be an integer (B,) = ({x.shape[0]},) tensor, got {tuple(y.shape)} {y.dtype}")
        if emb.dim() != 2 or emb.shape != (cfg.n_classes, cfg.class_dim):
            raise PSEDataError(f"class_emb must be (n_classes, class_dim) = ({cfg.n_classes}, {cfg.class_dim}), got {tuple(emb.shape)}")
        return x, y.long(), emb

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        cfg = self.config
        return {
            "image": torch.rand(n, cfg.image_dim, generator=generator),
            "label": torch.randint(0, cfg.n_classes, (n,), generator=generator),
            "class_emb": torch.randn(cfg.n_classes, cfg.class_dim, generator=generator),
        }

    # -- what the term-share diagnostics read ----------------------------------
    def encoders(self) -> dict[str, nn.Module]:
        """The networks that make the latent Gaussians, by name (image, label and joint encoders)."""
        raise NotImplementedError

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of :meth:`encoders` (decoders and PSE*'s classifier excluded)."""
        return [p for m in self.encoders().values() for p in m.parameters() if p.requires_grad]

    # -- what the evaluation needs ---------------------------------------------
    def encode_image(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z|x)``: mean and log-variance of the image posterior used for annotation."""
        raise NotImplementedError(f"{type(self).__name__} has no image-only encoder")

    def encode_label(self, label_vectors: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z|l)`` of label vectors ``(K, class_dim)``: the label Gaussians."""
        raise NotImplementedError(f"{type(self).__name__} has no label encoder")

    def decode(self, z: Tensor, label_vectors: Tensor | None = None) -> Tensor:
        """Bernoulli logits ``(N, image_dim)``; ``label_vectors`` only for conditional decoders."""
        return self.image_decoder(z)

    def reconstruction_logits(self, x: Tensor, label_vectors: Tensor, generator: torch.Generator | None = None,
                              sample: bool = True) -> Tensor:
        """Logits of ``x``'s reconstruction from one posterior sample (the ELBO's first term).

        ``sample=False`` decodes the posterior mean instead (a diagnostic).
        """
        raise NotImplementedError

    def sample_latent(self, label_vectors: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` latent samples for each row of ``label_vectors``: ``(K * n, latent_dim)``, label-major."""
        mu, logvar = self.encode_label(label_vectors)
        mu = mu.repeat_interleave(n, dim=0)
        logvar = logvar.repeat_interleave(n, dim=0)
        return reparameterize(mu, logvar, generator)

    @torch.no_grad()
    def generate(self, label_vectors: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(K * n, image_dim)`` Bernoulli means, ``n`` per label vector, label-major."""
        z = self.sample_latent(label_vectors, n, generator)
        cond = label_vectors.repeat_interleave(n, dim=0) if self.conditional_decoder else None
        return torch.sigmoid(self.decode(z, cond))

    @torch.no_grad()
    def annotate(self, x: Tensor, class_emb: Tensor) -> Tensor:
        """Label of each image: the class whose Gaussian gives the image's posterior mean the highest density."""
        if not self.can_annotate:
            raise NotImplementedError(f"{type(self).__name__} cannot annotate images (no label distributions)")
        mu_x, _ = self.encode_image(x)
        mu_c, logvar_c = self.encode_label(class_emb)
        logp = gaussian_log_density(mu_x[:, None, :], mu_c[None], logvar_c[None])
        return logp.argmax(dim=1)

    def evaluate(self, data: Mapping[str, Tensor]) -> dict[str, float]:
        """Reconstruction error (nats/image) and annotation accuracy (%) on ``data``."""
        from visem.models.pse_eval import annotation_accuracy, reconstruction_error

        x, y, emb = self._unpack(data)
        out = {"reconstruction_error": reconstruction_error(self, x, y, emb)}
        if self.can_annotate:
            out["annotation_accuracy"] = annotation_accuracy(self, x, y, emb)
        return out


# --------------------------------------------------------------------------
# PSE and PSE*
# --------------------------------------------------------------------------
@dataclass
class LabelVAEConfig:
    """Fields every label-conditioned VAE here shares: data sizes, latent size, MLP widths (Appendix A)."""

    image_dim: int | None = None
    class_dim: int | None = None
    n_classes: int | None = None
    latent_dim: int = 10
    hidden: tuple[int, ...] = (512, 64)


@dataclass
class PSEConfig(LabelVAEConfig):
    """PSE has no further settings."""


@dataclass
class PSEStarConfig(PSEConfig):
    classifier_hidden: tuple[int, ...] = (512, 64)
    # "categorical": cross-entropy over the classes (one-hot labels);
    # "gaussian": -log N(l | l_hat, sigma^2 I) on the label vector (word vectors).
    label_likelihood: Literal["categorical", "gaussian"] = "categorical"
    label_sigma: float = 1.0
    label_weight: float = 1.0


@register_model("pse", config=PSEConfig, family="generative", paper="seed 002 Eq. 2 (PSE)")
class PSE(GenerativeLabelModel):
    """PSE: a VAE whose prior is the label encoder's Gaussian q(z|l) (seed 002 Eq. 2).

    ``loss = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || q(z|l))`` with one
    reparameterised sample; the KL is the closed form between diagonal
    Gaussians (:func:`visem.losses.kl_diag_gaussians`) and trains both
    encoders. Generation samples ``z ~ q(z|l)``; annotation takes the mean of
    ``q(z|x)`` and the label of highest density (seed 002 section 2).
    """

    def __init__(self, config: PSEConfig) -> None:
        super().__init__(config)
        c = config
        self.image_encoder = GaussianEncoder(c.image_dim, c.hidden, c.latent_dim)
        self.label_encoder = GaussianEncoder(c.class_dim, (), c.latent_dim)
        self.image_decoder = mlp([c.latent_dim, *reversed(c.hidden), c.image_dim])

    def encoders(self) -> dict[str, nn.Module]:
        return {"image_encoder": self.image_encoder, "label_encoder": self.label_encoder}

    def encode_image(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.image_encoder(x)

    def encode_label(self, label_vectors: Tensor) -> tuple[Tensor, Tensor]:
        return self.label_encoder(label_vectors)

    def reconstruction_logits(self, x, label_vectors, generator=None, sample=True):
        mu, logvar = self.image_encoder(x)
        return self.image_decoder(reparameterize(mu, logvar, generator) if sample else mu)

    def _pse_terms(self, batch: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        x, y, emb = self._unpack(batch)
        mu_x, logvar_x = self.image_encoder(x)
        mu_l, logvar_l = self.label_encoder(emb[y])
        z = reparameterize(mu_x, logvar_x)
        logits = self.image_decoder(z)
        rec = bernoulli_nll(logits, x).mean()
        kl = kl_diag_gaussians(mu_x, logvar_x, mu_l, logvar_l).mean()
        return {"reconstruction": rec, "kl": kl}, logits, y, emb

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 2, negated: ``reconstruction + kl``, both with weight 1."""
        terms, _, _, _ = self._pse_terms(batch)
        return Objective(terms)


@register_model("pse-star", config=PSEStarConfig, family="generative", paper="seed 002 Eq. 3 (PSE*)")
class PSEStar(PSE):
    """PSE*: PSE plus a classifier on the reconstructed image (seed 002 Eq. 3).

    ``loss = PSE loss + label_weight * E_q(z|x)[-log p(l | Cla(x_hat))]`` where
    ``x_hat = sigmoid(Dec(z))`` is the Bernoulli mean of the same sample ``z``
    and ``Cla`` is an MLP ``image_dim-512-64-out`` (Appendix A), trained end to
    end with the rest. ``label_likelihood="categorical"``: cross-entropy over
    the classes (one-hot labels); ``"gaussian"``: ``||l - l_hat||^2 / (2
    sigma^2)`` summed over the label vector's dimensions (word vectors;
    the constant of the Gaussian is left out).

    Scale of the label term: Eq. 3 adds ``log p(l|z)`` with weight 1 to a
    reconstruction summed over 784 pixels, per image, and visem keeps that
    reduction. The paper's "hope is that this addition will both reduce
    reconstruction loss, and also produce improved semantic alignment"; it
    asks no particular size of the term. Measured on MNIST
    (``docs/pse.md``): at initialisation the random classifier passes almost
    no gradient back through ``x_hat`` (0.03% of the encoders' gradient);
    after about 100 steps the term carries 1.5-4% of it, and it keeps that
    share to the end of training. ``tests/models/test_pse.py`` checks both.
    """

    def __init__(self, config: PSEStarConfig) -> None:
        super().__init__(config)
        c = config
        if c.label_sigma <= 0:
            raise ValueError(f"label_sigma must be > 0, got {c.label_sigma}")
        out = c.n_classes if c.label_likelihood == "categorical" else c.class_dim
        self.classifier = mlp([c.image_dim, *c.classifier_hidden, out])

    def label_nll(self, x_hat: Tensor, y: Tensor, emb: Tensor) -> Tensor:
        """Per-image ``-log p(l | Cla(x_hat))``: ``(B,)``."""
        out = self.classifier(x_hat)
        if self.config.label_likelihood == "categorical":
            return F.cross_entropy(out, y, reduction="none")
        return 0.5 * ((out - emb[y]) ** 2).sum(-1) / self.config.label_sigma**2

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 3, negated: ``reconstruction + kl + label_weight * label`` (Eq. 3 has weight 1)."""
        terms, logits, y, emb = self._pse_terms(batch)
        terms["label"] = self.label_nll(torch.sigmoid(logits), y, emb).mean()
        return Objective(terms, {"label": self.config.label_weight})


# --------------------------------------------------------------------------
# CVAE
# --------------------------------------------------------------------------
@dataclass
class CVAEConfig(LabelVAEConfig):
    """CVAE has no further settings."""


@register_model("cvae", config=CVAEConfig, family="generative", paper="seed 002 Eq. 4 (CVAE, Sohn et al. 2015)")
class CVAE(GenerativeLabelModel):
    """CVAE: encoder q(z|x,l) and decoder p(x|z,l) conditioned on the label vector (seed 002 Eq. 4).

    ``loss = E_q(z|x,l)[-log p(x|z,l)] + KL(q(z|x,l) || N(0, I))`` (Eq. 4
    prints ``+ KL`` in the bound; the KL is subtracted, as in Sohn et al.).
    The label vector is concatenated to the flattened image (encoder) and to
    ``z`` (decoder), Appendix A. Generation draws ``z ~ N(0, I)`` and decodes
    it with the label; the model has no label distribution in its latent
    space, so it cannot annotate (``can_annotate = False``).
    """

    can_annotate = False
    conditional_decoder = True

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__(config)
        c = config
        self.encoder = GaussianEncoder(c.image_dim + c.class_dim, c.hidden, c.latent_dim)
        self.image_decoder = mlp([c.latent_dim + c.class_dim, *reversed(c.hidden), c.image_dim])

    def encoders(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}

    def decode(self, z: Tensor, label_vectors: Tensor | None = None) -> Tensor:
        if label_vectors is None:
            raise ValueError("the CVAE decoder needs label_vectors")
        return self.image_decoder(torch.cat([z, label_vectors], dim=-1))

    def reconstruction_logits(self, x, label_vectors, generator=None, sample=True):
        mu, logvar = self.encoder(torch.cat([x, label_vectors], dim=-1))
        return self.decode(reparameterize(mu, logvar, generator) if sample else mu, label_vectors)

    def sample_latent(self, label_vectors: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = label_vectors.shape[0]
        return torch.randn(k * n, self.config.latent_dim, generator=generator, device=label_vectors.device)

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 4, negated: ``reconstruction + kl``, both with weight 1."""
        x, y, emb = self._unpack(batch)
        l = emb[y]
        mu, logvar = self.encoder(torch.cat([x, l], dim=-1))
        logits = self.decode(reparameterize(mu, logvar), l)
        rec = bernoulli_nll(logits, x).mean()
        kl = kl_diag_gaussians(mu, logvar).mean()
        return Objective({"reconstruction": rec, "kl": kl})


# --------------------------------------------------------------------------
# JMVAE and TrELBO
# --------------------------------------------------------------------------
@dataclass
class JMVAEConfig(LabelVAEConfig):
    alpha: float = 0.1


@dataclass
class TrELBOConfig(LabelVAEConfig):
    lambda_1: float = 1.0
    lambda_2: float = 1.0


class _JointModel(GenerativeLabelModel):
    """Joint encoder q(z|x,l), unimodal encoders q(z|x), q(z|l), decoders p(x|z), p(l|z)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        c = config
        self.joint_encoder = GaussianEncoder(c.image_dim + c.class_dim, c.hidden, c.latent_dim)
        self.image_encoder = GaussianEncoder(c.image_dim, c.hidden, c.latent_dim)
        self.label_encoder = GaussianEncoder(c.class_dim, (), c.latent_dim)
        self.image_decoder = mlp([c.latent_dim, *reversed(c.hidden), c.image_dim])
        self.label_decoder = nn.Linear(c.latent_dim, c.n_classes)

    def encoders(self) -> dict[str, nn.Module]:
        return {"joint_encoder": self.joint_encoder, "image_encoder": self.image_encoder,
                "label_encoder": self.label_encoder}

    def encode_image(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.image_encoder(x)

    def encode_label(self, label_vectors: Tensor) -> tuple[Tensor, Tensor]:
        return self.label_encoder(label_vectors)

    def encode_joint(self, x: Tensor, label_vectors: Tensor) -> tuple[Tensor, Tensor]:
        return self.joint_encoder(torch.cat([x, label_vectors], dim=-1))

    def reconstruction_logits(self, x, label_vectors, generator=None, sample=True):
        """Through the joint encoder q(z|x,l), the posterior of the model's bound."""
        mu, logvar = self.encode_joint(x, label_vectors)
        return self.image_decoder(reparameterize(mu, logvar, generator) if sample else mu)

    def label_nll(self, z: Tensor, y: Tensor) -> Tensor:
        """``-log p(l|z)``, categorical over the classes: ``(B,)``."""
        return F.cross_entropy(self.label_decoder(z), y, reduction="none")


@register_model("jmvae", config=JMVAEConfig, family="generative", paper="seed 002 Eq. 5 (JMVAE-kl, Suzuki et al. 2016)")
class JMVAE(_JointModel):
    """JMVAE-kl: joint ELBO plus alpha-weighted KLs from the joint posterior to the unimodal ones (seed 002 Eq. 5).

    ``loss = E_q(z|x,l)[-log p(x|z) - log p(l|z)] + KL(q(z|x,l) || N(0, I))
    + alpha (KL(q(z|x,l) || q(z|x)) + KL(q(z|x,l) || q(z|l)))``, one sample of
    the joint posterior. ``alpha = 0.1`` (seed 002 gives no value; 0.1 is the
    default of the MultiVae reimplementation of JMVAE-kl). Annotation uses q(z|x) and
    the label Gaussians q(z|l); generation samples q(z|l). ``p(l|z)`` is one
    dense layer, categorical.
    """

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 5, negated: ``reconstruction + label + kl + alpha (kl_image + kl_label)``."""
        x, y, emb = self._unpack(batch)
        l = emb[y]
        mu, logvar = self.encode_joint(x, l)
        mu_x, logvar_x = self.image_encoder(x)
        mu_l, logvar_l = self.label_encoder(l)
        z = reparameterize(mu, logvar)
        terms = {
            "reconstruction": bernoulli_nll(self.image_decoder(z), x).mean(),
            "label": self.label_nll(z, y).mean(),
            "kl": kl_diag_gaussians(mu, logvar).mean(),
            "kl_image": kl_diag_gaussians(mu, logvar, mu_x, logvar_x).mean(),
            "kl_label": kl_diag_gaussians(mu, logvar, mu_l, logvar_l).mean(),
        }
        a = self.config.alpha
        return Objective(terms, {"kl_image": a, "kl_label": a})


@register_model("trelbo", config=TrELBOConfig, family="generative", paper="seed 002 Eq. 6 (TrELBO, Vedantam et al. 2018)")
class TrELBO(_JointModel):
    """TrELBO: the sum of a joint, an image-only and a label-only ELBO with shared decoders (seed 002 Eq. 6).

    ``loss = E_q(z|x,l)[-log p(x|z) - lambda_1 log p(l|z)] + KL(q(z|x,l)||N(0,I))
    + E_q(z|x)[-log p(x|z)] + KL(q(z|x)||N(0,I))
    + E_q(z|l)[-lambda_2 log p(l|z)] + KL(q(z|l)||N(0,I))``, one sample per
    posterior, no inference-network freezing (seed 002 section 4). Defaults
    ``lambda_1 = lambda_2 = 1``, the setting seed 002 reports.

    ``lambda_1 = 1`` is a weak label term on purpose: seed 002 reports it as
    the setting where "the conditional generation accuracy is the lowest
    (61.0 +- 0.5), this trend is similar to that found by Vedantam et al.
    (2018)", and Figure 3: "the TrELBO can not create accurate images without
    a higher hyperparameter lambda_1". Measured on MNIST (``docs/pse.md``),
    the term carries 4% of the encoders' gradient at initialisation and
    about 0.6% after 2,000 steps (1.2% of the joint encoder's), once
    ``p(l|z)`` fits. The label-only ELBO (``label_label``, ``kl_label``) is
    the label encoder's only gradient; that one dense layer is small beside
    the image networks, so its share of all encoder parameters is small
    (0.2% each at the end) while its share of the label encoder is all of it.
    """

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 6, negated. Joint ELBO: ``reconstruction + lambda_1 label + kl``; image ELBO:
        ``reconstruction_image + kl_image``; label ELBO: ``lambda_2 label_label + kl_label``."""
        c = self.config
        x, y, emb = self._unpack(batch)
        l = emb[y]
        mu, logvar = self.encode_joint(x, l)
        mu_x, logvar_x = self.image_encoder(x)
        mu_l, logvar_l = self.label_encoder(l)
        z = reparameterize(mu, logvar)
        z_x = reparameterize(mu_x, logvar_x)
        z_l = reparameterize(mu_l, logvar_l)
        terms = {
            "reconstruction": bernoulli_nll(self.image_decoder(z), x).mean(),
            "label": self.label_nll(z, y).mean(),
            "kl": kl_diag_gaussians(mu, logvar).mean(),
            "reconstruction_image": bernoulli_nll(self.image_decoder(z_x), x).mean(),
            "kl_image": kl_diag_gaussians(mu_x, logvar_x).mean(),
            "label_label": self.label_nll(z_l, y).mean(),
            "kl_label": kl_diag_gaussians(mu_l, logvar_l).mean(),
        }
        return Objective(terms, {"label": c.lambda_1, "label_label": c.lambda_2})


# --------------------------------------------------------------------------
# SCAN
# --------------------------------------------------------------------------
@dataclass
class SCANConfig(LabelVAEConfig):
    beta: float = 10.0


@register_model("scan-bvae", config=SCANConfig, family="generative",
                paper="seed 002 section 3 (SCAN, Higgins et al. 2018, on a beta-VAE)")
class SCANBetaVAE(PSE):
    """SCAN: a beta-VAE (beta = 10) with label Gaussians fitted to its image posteriors.

    ``loss = E_q(z|x)[-log p(x|z)] + beta KL(q(z|x) || N(0, I))
    + KL(sg[q(z|x)] || q(z|l))`` where ``sg`` stops the gradient. The last
    term only reaches the label encoder, so the beta-VAE is trained exactly as
    on its own (SCAN's first stage) while the label Gaussians are fitted to
    its posteriors by the forward KL of seed 002 section 3 (SCAN's second
    stage, run concurrently rather than after: with one-hot labels its optimum
    is the moment match of the class's posteriors, which the label encoder
    tracks). No capacity annealing, as seed 002 states.

    ``label_fit`` is the label encoder's only gradient (100% of it); measured
    over all encoder parameters it is 14% at initialisation and 0.2% after
    2,000 steps, as the one dense layer's Gaussians settle on the posteriors
    (``docs/pse.md``).
    """

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """``reconstruction + beta kl + label_fit`` (the beta-VAE bound and SCAN's concept KL)."""
        x, y, emb = self._unpack(batch)
        mu_x, logvar_x = self.image_encoder(x)
        z = reparameterize(mu_x, logvar_x)
        mu_l, logvar_l = self.label_encoder(emb[y])
        terms = {
            "reconstruction": bernoulli_nll(self.image_decoder(z), x).mean(),
            "kl": kl_diag_gaussians(mu_x, logvar_x).mean(),
            "label_fit": kl_diag_gaussians(mu_x.detach(), logvar_x.detach(), mu_l, logvar_l).mean(),
        }
        return Objective(terms, {"kl": self.config.beta})


GENERATIVE_MODELS = ("cvae", "jmvae", "trelbo", "scan-bvae", "pse", "pse-star")
