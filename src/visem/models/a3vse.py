"""A3VSE (seed 003, Huang et al. 2019): adversarial attentive alignment.

Sparse parallel corpus: a few annotated (image, caption) pairs ``(v, t)`` and
many un-annotated images ``v^u`` paired with automatically derived *pseudo
captions* ``s`` (regional semantics in the paper; tags in visem's emoji
experiment).

* Feature extractors (Sec. 3.2): regions ``(N, image_dim)`` through a
  trainable linear layer to ``H``; captions through word embeddings and an
  LSTM (``rnn="lstm"``; GRU selectable), both shared by annotated and
  un-annotated data.
* K-head context attention (Eq. 1), per modality with its own parameters:
  for head ``k`` the context is ``c_k = (1/M) sum_i tanh(Q_k x_i)``
  (``K'``-d), the score of element ``i`` is ``a_ik = tanh((P_k x_i) . c_k)``,
  the weights are ``softmax_i(lambda * a_ik)`` over the real elements and the
  head's output is the weighted sum of the elements. The ``K`` heads are
  concatenated (``E = [W_0 V^T, ..., W_{K-1} V^T]``) and L2-normalised.
  Ablation ``attention=False``: mean pooling of the elements.
* Triplet alignment (Eq. 2-3): hardest-negative hinge loss on annotated pairs
  (margin 0.2) and on pseudo pairs (margin 0.3), weighted ``beta`` and
  ``1 - beta`` (0.8). The hinges are summed over the batch
  (``reduction="sum"``), as the VSE++ / SCAN code that seed 003 builds on
  (its features and its hard-negative loss are theirs) returns them; the six
  discriminator losses are batch means (Eq. 4). Eq. 2 prints a ``1/L``
  (``reduction="mean"``): with it the discriminators carry 72% of the
  encoders' gradient at the end of training and the embedding falls to
  chance (rsum 40 at ``sparse-10-all``, seed 0); summed, the triplets keep
  about 70% and the rsum is 124 (``docs/retrieval.md``, "Reductions").
* Adversarial alignment (Eq. 4-8): six domain discriminators on the instance
  embeddings ``G^v(v), G^v(v^u), G^t(t), G^t(s)`` behind a gradient reversal
  layer: intra-modal (v vs v^u, weight 0.2; t vs s, 0.1), cross-modal
  (v vs t, 0.5; v^u vs s, 0.5) and transitive (v vs s, 0.3; v^u vs t, 0.3).
  Each discriminator minimises the binary cross-entropy of Eq. 4 (negated
  log-likelihood); the GRL scales the encoders' gradient by ``-gamma`` with
  ``gamma = 2 / (1 + exp(-10 p)) - 1`` (Sec. 4.3), so one optimiser step is
  the min-max of Eq. 10. The intra-modal pair (v vs v^u, t vs s) has the
  two smallest weights of the six (0.2, 0.1) and seed 003's Table 5 finds it
  the least important (without it rsum 360.5, with it 363.4): at the end of
  a CPU run its two discriminators carry about 1% and 0.7% of the encoders'
  gradient, the other four 5-9% each.

Ablations (Table 5) as config switches: ``use_pseudo`` (no pseudo pairs:
neither the pseudo triplet nor any discriminator that sees ``s``),
``attention`` (mean pooling), ``adversarial`` (no discriminators), and
``intra`` / ``cross`` / ``trans`` (drop one alignment group).

Choices where the paper is vague: the attention temperature ``lambda`` (5;
not given), ``K' = H`` ("the same dimension is shared by all the context
vectors"), discriminators are two-layer MLPs (hidden 512, ReLU; DANN's
domain classifier shape, the paper does not say; ``disc_hidden=0`` makes
them linear) acting on the L2-normalised instance embeddings, and ``H``
defaults to 512 as in the paper.

``text_encoder="minilm"`` (not in the paper) takes the caption's token
states from all-MiniLM-L6-v2 instead of the LSTM, projected to ``H`` and
pooled by the same K-head attention of Eq. 1
(:mod:`visem.models.pretrained_text`).

Batches: ``pair.image`` ``(B, N, image_dim)`` (or ``(B, image_dim)``, one
pooled feature per image taken as a single region: the attention over one
region is the identity, so the image side is a linear projection),, ``pair.text`` ``(B, L)`` ids,
``pseudo.image`` ``(B', N, image_dim)``, ``pseudo.text`` ``(B', L')`` ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.losses import grad_reverse, grl_schedule
from visem.models.base import Objective, batch_ranking_loss
from visem.models.registry import register_model
from visem.models.text import check_text, recurrent_or_pretrained, text_token_mask
from visem.models.vsepp import TokenRetrievalModel, check_features, random_token_ids

# discriminator name -> (domain a, domain b, weight field, group)
DISCRIMINATORS: dict[str, tuple[str, str, str, str]] = {
    "v_vu": ("v", "vu", "lambda_v_vu", "intra"),
    "t_s": ("t", "s", "lambda_t_s", "intra"),
    "v_t": ("v", "t", "lambda_v_t", "cross"),
    "vu_s": ("vu", "s", "lambda_vu_s", "cross"),
    "v_s": ("v", "s", "lambda_v_s", "trans"),
    "vu_t": ("vu", "t", "lambda_vu_t", "trans"),
}


@dataclass
class A3VSEConfig:
    image_dim: int | None = None
    vocab_size: int | None = None
    word_dim: int = 50
    embed_dim: int = 512
    rnn: str = "lstm"
    heads: int = 3
    attn_temperature: float = 5.0
    margin_pair: float = 0.2
    margin_pseudo: float = 0.3
    beta: float = 0.8
    reduction: str = "sum"  # of the triplet hinges over the batch: "sum" (VSE++/SCAN code) or "mean" (Eq. 2's 1/L)
    lambda_v_vu: float = 0.2
    lambda_t_s: float = 0.1
    lambda_v_t: float = 0.5
    lambda_vu_s: float = 0.5
    lambda_v_s: float = 0.3
    lambda_vu_t: float = 0.3
    disc_hidden: int = 512
    grl_gamma: float = 10.0
    use_pseudo: bool = True
    attention: bool = True
    adversarial: bool = True
    intra: bool = True
    cross: bool = True
    trans: bool = True
    n_regions: int = 6  # regions per image in example_batch (data may have any number)
    max_len: int = 10  # caption length in example_batch
    text_encoder: str = "gru"  # "gru": the rnn above; "minilm": MiniLM token states + projection, then Eq. 1
    text_lr: float = 0.0  # > 0: fine-tune MiniLM at this learning rate; 0: frozen


class ContextAttention(nn.Module):
    """K-head context-aware attention pooling (seed 003 Eq. 1)."""

    def __init__(self, dim: int, heads: int, temperature: float) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = temperature
        self.q = nn.Linear(dim, heads * dim, bias=False)
        self.p = nn.Linear(dim, heads * dim, bias=False)

    def weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, M, K)`` attention weights of ``x`` ``(B, M, H)`` over its real elements."""
        b, m, h = x.shape
        maskf = mask.to(x.dtype).unsqueeze(-1)  # (B, M, 1)
        q = torch.tanh(self.q(x)).view(b, m, self.heads, h)
        ctx = (q * maskf.unsqueeze(-1)).sum(1) / maskf.sum(1).unsqueeze(-1)  # (B, K, H)
        p = self.p(x).view(b, m, self.heads, h)
        scores = torch.tanh((p * ctx.unsqueeze(1)).sum(-1))  # (B, M, K)
        scores = (self.temperature * scores).masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return scores.softmax(dim=1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        w = self.weights(x, mask)
        return torch.einsum("bmk,bmh->bkh", w, x).reshape(x.shape[0], -1)


def mean_pool(x: Tensor, mask: Tensor) -> Tensor:
    maskf = mask.to(x.dtype).unsqueeze(-1)
    return (x * maskf).sum(1) / maskf.sum(1)


def domain_loss(disc: nn.Module, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 4 negated: ``-(mean log D(a) + mean log(1 - D(b)))``, and the accuracy of ``D``."""
    la, lb = disc(a).squeeze(-1), disc(b).squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(la, torch.ones_like(la)) + \
        F.binary_cross_entropy_with_logits(lb, torch.zeros_like(lb))
    acc = 0.5 * ((la > 0).float().mean() + (lb <= 0).float().mean())
    return loss, acc.detach()


@register_model("a3vse", config=A3VSEConfig, family="retrieval", paper="seed 003 (Huang et al. 2019), Eq. 1-10")
class A3VSE(TokenRetrievalModel):
    """A3VSE: attentive region/caption encoders, pair + pseudo-pair triplets, six GRL discriminators.

    Eq. 9 as :meth:`objective`: the triplets of Eq. 3 (summed over the batch,
    see the module docstring) and the six weighted discriminator losses of
    Eq. 5-8 behind the gradient reversal. The intra-modal discriminators
    (v vs v^u, t vs s) have the two smallest weights of seed 003 Sec. 4.3
    (0.2 and 0.1) and the smallest effect in its Table 5: their share of the
    encoders' gradient is about 1% (``docs/retrieval.md``).
    """

    training_kind = "pseudo"  # batches: pair.image/pair.text and pseudo.image/pseudo.text
    region_features = True  # images are (B, regions, image_dim)

    def __init__(self, config: A3VSEConfig) -> None:
        super().__init__(config)
        c = config
        if c.vocab_size is None and c.text_encoder != "minilm":
            raise ValueError("a3vse needs vocab_size")
        if not 0.0 <= c.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {c.beta}")
        if c.disc_hidden < 0:
            raise ValueError(f"disc_hidden must be >= 0 (0 = linear discriminators), got {c.disc_hidden}")
        self.region_proj = nn.Linear(c.image_dim, c.embed_dim)
        self.text_encoder = recurrent_or_pretrained(c, c.embed_dim, rnn=c.rnn)
        if c.attention:
            self.img_attn = ContextAttention(c.embed_dim, c.heads, c.attn_temperature)
            self.txt_attn = ContextAttention(c.embed_dim, c.heads, c.attn_temperature)
        out_dim = c.embed_dim * (c.heads if c.attention else 1)
        self.discriminators = nn.ModuleDict({name: self._discriminator(out_dim) for name in self.active_discriminators()})
        pretrained = {id(m) for m in getattr(self.text_encoder, "backbone", nn.Identity()).modules()}
        for mod in self.modules():  # Xavier initialisation (Sec. 4.3), not of a pretrained text tower
            if isinstance(mod, nn.Linear) and id(mod) not in pretrained:
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def _discriminator(self, dim: int) -> nn.Module:
        h = self.config.disc_hidden
        if h == 0:
            return nn.Linear(dim, 1)
        return nn.Sequential(nn.Linear(dim, h), nn.ReLU(), nn.Linear(h, 1))

    def active_discriminators(self) -> list[str]:
        c = self.config
        if not c.adversarial:
            return []
        groups = {"intra": c.intra, "cross": c.cross, "trans": c.trans}
        out = []
        for name, (a, b, weight, group) in DISCRIMINATORS.items():
            if not groups[group] or getattr(c, weight) == 0:
                continue
            if not c.use_pseudo and "s" in (a, b):
                continue
            out.append(name)
        return out

    def load_word_vectors(self, table: Tensor) -> None:
        self.text_encoder.load_word_vectors(table)

    # -- encoders G^v, G^t ------------------------------------------------
    def embed_image(self, image: Tensor) -> Tensor:
        if isinstance(image, Tensor) and image.dim() == 2:  # one pooled feature per image: a single region
            image = image.unsqueeze(1)
        check_features("image", image, self.config.image_dim, ndim=3)
        x = self.region_proj(image)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        pooled = self.img_attn(x, mask) if self.config.attention else mean_pool(x, mask)
        return F.normalize(pooled, dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        check_text("text", text, self.config)
        out, _ = self.text_encoder(text)
        mask = text_token_mask(text)[:, : out.shape[1]]
        pooled = self.txt_attn(out, mask) if self.config.attention else mean_pool(out, mask)
        return F.normalize(pooled, dim=-1)

    # -- loss -------------------------------------------------------------
    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """Eq. 9: ``beta l^p(v, t) + (1 - beta) l^p(v^u, s)`` (Eq. 3) plus the six weighted
        discriminator losses of Eq. 5-8, each behind the GRL."""
        c = self.config
        emb = {"v": self.embed_image(batch["pair.image"]), "t": self.embed_text(batch["pair.text"])}
        emb["vu"] = self.embed_image(batch["pseudo.image"])
        terms = {"triplet_pair": batch_ranking_loss(emb["v"], emb["t"], margin=c.margin_pair, hardest=True,
                                                    reduction=c.reduction)}
        weights = {"triplet_pair": 1.0}
        extras: dict[str, Tensor] = {}
        if c.use_pseudo:
            emb["s"] = self.embed_text(batch["pseudo.text"])
            terms["triplet_pseudo"] = batch_ranking_loss(emb["vu"], emb["s"], margin=c.margin_pseudo, hardest=True,
                                                         reduction=c.reduction)
            weights = {"triplet_pair": c.beta, "triplet_pseudo": 1.0 - c.beta}
        names = self.active_discriminators()
        if names:
            gamma = grl_schedule(min(max(progress, 0.0), 1.0), c.grl_gamma)
            rev = {k: grad_reverse(v, gamma) for k, v in emb.items()}
            for name in names:
                a, b, weight, _ = DISCRIMINATORS[name]
                d_loss, acc = domain_loss(self.discriminators[name], rev[a], rev[b])
                terms[f"d_{name}"] = d_loss
                weights[f"d_{name}"] = getattr(c, weight)
                extras[f"acc_{name}"] = acc
            extras["adversarial"] = sum(weights[f"d_{n}"] * terms[f"d_{n}"].detach() for n in names)
            extras["gamma"] = torch.tensor(gamma)
        return Objective(terms, weights, extras)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """G^v and G^t: every parameter but the discriminators'."""
        disc = {id(p) for p in self.discriminators.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        c = self.config
        return {
            "pair.image": torch.randn(n, c.n_regions, c.image_dim, generator=generator),
            "pair.text": random_token_ids(n, c.vocab_size, c.max_len, generator),
            "pseudo.image": torch.randn(n, c.n_regions, c.image_dim, generator=generator) + 0.5,
            "pseudo.text": random_token_ids(n, c.vocab_size, c.max_len // 2, generator),
        }
