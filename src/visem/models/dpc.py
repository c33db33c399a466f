"""DPC, dual-path convolutional image-text embedding with instance loss (Zheng et al.).

Seed 003's baseline [52] (Tables 2 and 4): Zheng, Zheng, Garrett, Yang, Shen,
*Dual-Path Convolutional Image-Text Embedding*, arXiv:1711.05535 (2017;
journal version *Dual-Path Convolutional Image-Text Embeddings with
Instance Loss*, ACM TOMM 16(2), 2020). The paper is not among visem's seed
copies, so its equations are cited by name and written out in full below;
where the paper is vague, the authors' MatConvNet code
(``layumi/Image-Text-Embedding``: ``resnet52_new_hope_word2_pool.m`` and
``train_flickr_word2_1_pool.m`` for stage I,
``resnet52_new_hope_word_Rankloss.m``, ``matlab/+dagnn/RankLoss.m`` and
``train_flickr_word_Rankloss_shift_hard.m`` for stage II) settles it.

**Two paths.**

* *Deep image CNN*: an ImageNet ResNet-50 whose pooled 2048-d
  output goes through ``fc 2048 -> BN -> ReLU -> fc 2048 -> BN -> ReLU``
  (the code's ``fc1``, ``fc1_1``). visem's images are precomputed features,
  so the ResNet is the fixed feature extractor and the image path is the
  trainable part after it: ``img_layers`` fully connected layers of
  ``embed_dim``, each followed by the normalisation and a ReLU.
* *Deep text CNN*: the caption as ``text_len`` word slots (32 in
  the paper; longer captions are cut, shorter ones padded with zeros),
  word embeddings (``word_dim``, word2vec-initialised in the paper, GloVe in
  visem's emoji experiment), then residual bottleneck blocks of 1 x 2
  convolutions in four stages (the code's ResNet-50-like layout: channels
  256, 512, 1024, 2048 with 3, 4, 6, 1 blocks, strides 1, 2, 2, 1), average
  pooling over the remaining positions and ``fc 2048 -> BN -> ReLU``. Each
  bottleneck is ``1x1 (C/4) -> 1x2 (C/4, stride s) -> 1x1 (C)`` plus a
  shortcut (a strided 1x1 projection where the shape changes). *Position
  shift*: in training each caption starts at a random slot, the
  pad split before and after it (``position_shift``); at test time captions
  are left-aligned.

Both paths end in ``f_img``, ``f_txt`` (``embed_dim``); L2-normalised they are
the embeddings, scored by cosine similarity.

**Losses.**

* Ranking loss ``L_rank``: ``max[0, alpha - (D(I_a, T_a) - D(I_a, T_n))] +
  max[0, alpha - (D(T_a, I_a) - D(T_a, I_n))]`` with ``D`` the cosine
  similarity and ``alpha`` = ``margin``. The negatives: DPC's code mines
  the hardest of 256 random training captions for each image anchor and
  takes a random other image for each caption anchor; visem takes the
  hardest in-batch negative in both directions (``hardest=True``; the batch
  is the candidate pool), or the sum over the batch's negatives
  (``hardest=False``). The margin is the code's ``RankLoss('rate', 1)``:
  ``alpha = 1``.
* Instance loss ``L_img``, ``L_txt``: every training image with its captions is one
  class; one classifier ``W_share`` (with bias), shared by both paths, reads
  ``f_img`` and ``f_txt`` after dropout (0.75 in the code, before the
  classifier only; the ranking loss sees the features without it):
  ``L_img = -log softmax(W_share^T f_img)[c]``,
  ``L_txt = -log softmax(W_share^T f_txt)[c]``. The batch carries the class
  of each pair in ``label``; ``n_classes`` is the number of training
  instances. Where several images share one caption set (emoji's two
  styles of a concept), the experiments make them one class (the text
  cannot tell them apart); see :mod:`visem.experiments.sparse`.
* Total: ``lambda_1 L_rank + lambda_2 L_img + lambda_3 L_txt``.

**Two-stage schedule**, through ``progress`` (never a custom
training step): stage I, the image CNN fixed, the instance loss only
(``lambda_1 = 0``, ``lambda_2 = lambda_3 = 1``); stage II, end-to-end,
``lambda_1 = lambda_2 = lambda_3 = 1``. Stage I is the first
``stage1_fraction`` of training: 0.8, the code's 240 stage-I epochs before
its 60 stage-II epochs. With precomputed features "the image CNN fixed" is
always so: visem cannot fine-tune the ResNet in stage II (the one part of
DPC that does not carry over); the trainable image layers learn in both
stages, as the code's ``fc1`` / ``fc1_1`` do.

**Reductions.** DPC's code sums each loss over the batch in its layers
(``vl_nnloss``; ``RankLoss`` returns ``sum(Loss1) + sum(Loss2)``) and its
solver divides every gradient by the batch size, so every term reaches the
parameters as a batch mean with the weights 1 : 1 : 1. ``reduction="mean"``
(default) is that; ``reduction="sum"`` sums all three terms (the ratio of
the terms, which the weights mean, is the same either way). The instance
loss is not averaged while the ranking loss is summed: that would divide
``lambda_2`` and ``lambda_3`` by the batch size against the code. Under
data-parallel training the batch is the global one: the ranking loss's
negatives come from every process (:func:`visem.models.base.batch_ranking_loss`)
and a summed instance loss is the global batch's sum
(:func:`visem.distributed.batch_sum`); a mean needs nothing across processes.

**Normalisation.** DPC puts BatchNorm after every convolution and fully
connected layer. visem models use no batch statistics (they would need
SyncBatchNorm under data parallelism and make a sample's embedding depend
on its batch); ``norm="layer"`` (default) puts a per-sample layer
normalisation in the same places (``GroupNorm`` with one group over the
channels and positions of the text CNN, ``LayerNorm`` on the fully
connected layers); ``norm="none"`` removes them.

Batches: ``image`` ``(B, image_dim)`` pooled features, ``text`` ``(B, L)``
token ids, ``label`` ``(B,)`` instance classes in ``[0, n_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visem.distributed import batch_sum
from visem.models.base import Objective, RetrievalModel, batch_ranking_loss
from visem.models.registry import register_model
from visem.models.text import PAD, check_ids, lengths_of
from visem.models.vsepp import TokenRetrievalModel, check_features, random_token_ids


@dataclass
class DPCConfig:
    image_dim: int | None = None
    vocab_size: int | None = None
    n_classes: int | None = None  # training instances (images with their captions)
    word_dim: int = 300
    embed_dim: int = 2048
    img_layers: int = 2  # fully connected layers after the fixed image CNN (the code's fc1, fc1_1)
    text_len: int = 32  # word slots of the text CNN's input
    text_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    text_blocks: tuple[int, ...] = (3, 4, 6, 1)
    text_strides: tuple[int, ...] = (1, 2, 2, 1)
    position_shift: bool = True
    norm: str = "layer"  # "layer" (per-sample stand-in for the paper's BatchNorm) or "none"
    dropout: float = 0.75  # before the shared classifier (the code's rate 0.75)
    margin: float = 1.0
    hardest: bool = True
    reduction: str = "mean"  # of every term over the batch: "mean" (DPC's solver) or "sum"
    stage1_fraction: float = 0.8  # stage I (instance loss only) for this fraction of training
    lambda_rank: float = 1.0  # lambda_1 in stage II (0 in stage I)
    lambda_img: float = 1.0  # lambda_2
    lambda_txt: float = 1.0  # lambda_3
    max_len: int = 10  # caption length in example_batch


def _norm1d(kind: str, channels: int) -> nn.Module:
    """The per-sample normalisation of a ``(B, C, L)`` activation (``GroupNorm`` with one group)."""
    return nn.GroupNorm(1, channels) if kind == "layer" else nn.Identity()


class _Bottleneck(nn.Module):
    """``1x1 (C/4) -> 1x2 (C/4, stride) -> 1x1 (C)`` plus a shortcut, ReLU after the sum (DPC's text blocks)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        mid = max(1, c_out // 4)
        self.conv1 = nn.Conv1d(c_in, mid, 1, bias=False)
        self.conv2 = nn.Conv1d(mid, mid, 2, stride=stride, bias=False)
        self.conv3 = nn.Conv1d(mid, c_out, 1, bias=False)
        self.n1, self.n2, self.n3 = _norm1d(norm, mid), _norm1d(norm, mid), _norm1d(norm, c_out)
        self.shortcut: nn.Module | None = None
        if c_in != c_out or stride != 1:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), _norm1d(norm, c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.n1(self.conv1(x)))
        # a 1 x 2 filter with one zero slot before the sequence: ceil(L / stride) positions out
        y = F.relu(self.n2(self.conv2(F.pad(y, (1, 0)))))
        y = self.n3(self.conv3(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class TextCNN(nn.Module):
    """DPC's deep text CNN: word slots -> residual 1 x 2 convolutions -> average pool -> fc -> ReLU.

    ``forward(ids, shift)`` returns ``(B, out_dim)``. ``shift``: ``(B,)`` the
    slot where each caption starts (0 = left-aligned); captions longer than
    ``length`` are cut.
    """

    def __init__(self, vocab_size: int, word_dim: int, length: int, channels: tuple[int, ...],
                 blocks: tuple[int, ...], strides: tuple[int, ...], out_dim: int, norm: str) -> None:
        super().__init__()
        if not (len(channels) == len(blocks) == len(strides)) or not channels:
            raise ValueError(f"text_channels, text_blocks and text_strides need one entry per stage, got "
                             f"{tuple(channels)}, {tuple(blocks)}, {tuple(strides)}")
        if min(blocks) < 1 or min(strides) < 1 or min(channels) < 1:
            raise ValueError("text_channels, text_blocks and text_strides must be positive")
        if length < 1:
            raise ValueError(f"text_len must be >= 1, got {length}")
        self.vocab_size = vocab_size
        self.length = length
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        with torch.no_grad():
            self.embed.weight.uniform_(-0.1, 0.1)
            self.embed.weight[PAD].zero_()
        self.embed_norm = _norm1d(norm, word_dim)
        layers: list[nn.Module] = []
        c_in = word_dim
        for c, n, s in zip(channels, blocks, strides):
            for i in range(n):
                layers.append(_Bottleneck(c_in, c, s if i == 0 else 1, norm))
                c_in = c
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, out_dim)
        self.fc_norm = nn.LayerNorm(out_dim) if norm == "layer" else nn.Identity()

    def load_word_vectors(self, table: Tensor) -> None:
        if tuple(table.shape) != tuple(self.embed.weight.shape):
            raise ValueError(f"word vector table has shape {tuple(table.shape)}, "
                             f"expected {tuple(self.embed.weight.shape)}")
        with torch.no_grad():
            self.embed.weight.copy_(table)

    def slots(self, ids: Tensor, shift: Tensor | None = None) -> Tensor:
        """``(B, length)`` ids: each caption (cut to ``length``) placed from slot ``shift`` on, pad elsewhere."""
        n = ids.shape[0]
        lengths = lengths_of(ids).clamp(max=self.length)
        out = torch.full((n, self.length), PAD, dtype=ids.dtype, device=ids.device)
        pos = torch.arange(self.length, device=ids.device)[None, :]
        start = torch.zeros(n, dtype=torch.long, device=ids.device) if shift is None else shift.to(ids.device)
        src = pos - start[:, None]
        keep = (src >= 0) & (src < lengths[:, None])
        width = min(ids.shape[1], self.length)
        gathered = ids[:, :width].gather(1, src.clamp(0, width - 1))
        return torch.where(keep, gathered, out)

    def forward(self, ids: Tensor, shift: Tensor | None = None) -> Tensor:
        check_ids("text", ids, self.vocab_size)
        x = self.embed(self.slots(ids, shift)).transpose(1, 2)  # (B, word_dim, length)
        x = self.blocks(self.embed_norm(x))
        return F.relu(self.fc_norm(self.fc(x.mean(dim=2))))


@register_model("dpc", config=DPCConfig, family="retrieval",
                paper="Zheng et al. 2017 (DPC, arXiv:1711.05535), baseline of seed 003 Tables 2 and 4")
class DPC(RetrievalModel):
    """DPC: image fc path and deep text CNN, instance loss with a shared classifier, then the ranking loss.

    :meth:`objective` is the paper's total ``lambda_1 L_rank + lambda_2 L_img +
    lambda_3 L_txt`` with ``lambda_1 = 0`` in stage I (the first
    ``stage1_fraction`` of ``progress``) and 1 after (module docstring).
    Not a search-index method: its batches carry instance classes
    (``label``), which an index's image-caption pairs do not name.
    """

    eval_chunk = 512
    #: chunked embedding at evaluation, the one of the token-id retrieval models
    evaluate = TokenRetrievalModel.evaluate

    def __init__(self, config: DPCConfig) -> None:
        super().__init__(config)
        c = config
        if c.vocab_size is None:
            raise ValueError("dpc needs vocab_size (set model.vocab_size or train on data with a vocabulary)")
        if c.n_classes is None or c.n_classes < 1:
            raise ValueError(f"dpc needs n_classes >= 1 (the number of training instances), got {c.n_classes}")
        if c.norm not in ("layer", "none"):
            raise ValueError(f"norm must be 'layer' or 'none', got {c.norm!r}")
        if c.reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {c.reduction!r}")
        if not 0.0 <= c.stage1_fraction <= 1.0:
            raise ValueError(f"stage1_fraction must be in [0, 1], got {c.stage1_fraction}")
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {c.dropout}")
        if c.img_layers < 1:
            raise ValueError(f"img_layers must be >= 1, got {c.img_layers}")
        layers: list[nn.Module] = []
        d = c.image_dim
        for _ in range(c.img_layers):
            layers += [nn.Linear(d, c.embed_dim), nn.LayerNorm(c.embed_dim) if c.norm == "layer" else nn.Identity(),
                       nn.ReLU()]
            d = c.embed_dim
        self.image_path = nn.Sequential(*layers)
        self.text_path = TextCNN(c.vocab_size, c.word_dim, c.text_len, tuple(c.text_channels), tuple(c.text_blocks),
                                 tuple(c.text_strides), c.embed_dim, c.norm)
        self.classifier = nn.Linear(c.embed_dim, c.n_classes)  # W_share, read by both paths
        self.drop = nn.Dropout(c.dropout)

    def load_word_vectors(self, table: Tensor) -> None:
        self.text_path.load_word_vectors(table)

    # -- the two paths ------------------------------------------------------
    def image_features(self, image: Tensor) -> Tensor:
        """``f_img`` ``(B, embed_dim)`` before normalisation."""
        check_features("image", image, self.config.image_dim)
        return self.image_path(image)

    def text_features(self, text: Tensor) -> Tensor:
        """``f_txt`` ``(B, embed_dim)`` before normalisation; position-shifted in training."""
        check_ids("text", text, self.config.vocab_size)
        shift = None
        if self.training and self.config.position_shift:
            room = (self.config.text_len - lengths_of(text).clamp(max=self.config.text_len)).to(torch.float32)
            shift = (torch.rand_like(room) * (room + 1)).floor().long()
        return self.text_path(text, shift)

    def embed_image(self, image: Tensor) -> Tensor:
        return F.normalize(self.image_features(image), dim=-1)

    def embed_text(self, text: Tensor) -> Tensor:
        return F.normalize(self.text_features(text), dim=-1)

    # -- loss ---------------------------------------------------------------
    def stage(self, progress: float) -> int:
        """1 during the first ``stage1_fraction`` of training, else 2."""
        return 1 if progress < self.config.stage1_fraction else 2

    def objective(self, batch: Mapping[str, Tensor], progress: float = 0.0) -> Objective:
        """The total on one batch: the ranking loss and the image and text instance losses, stage-weighted."""
        c = self.config
        if "label" not in batch:
            raise ValueError("dpc batches need 'label': the instance class of each pair (its image's class)")
        f_img = self.image_features(batch["image"])
        f_txt = self.text_features(batch["text"])
        label = batch["label"]
        if not isinstance(label, Tensor) or label.dim() != 1 or label.is_floating_point() \
                or label.shape[0] != f_img.shape[0]:
            shape = tuple(label.shape) if isinstance(label, Tensor) else type(label).__name__
            raise ValueError(f"label must be a ({f_img.shape[0]},) integer tensor of instance classes, got {shape}")
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= c.n_classes):
            raise ValueError(f"label holds classes outside [0, {c.n_classes}): min {int(label.min())}, "
                             f"max {int(label.max())}")
        # per-sample cross-entropies: a batch mean needs nothing across processes, a sum is over the global batch
        reduce = batch_sum if c.reduction == "sum" else torch.mean
        ce_img = F.cross_entropy(self.classifier(self.drop(f_img)), label, reduction="none")
        ce_txt = F.cross_entropy(self.classifier(self.drop(f_txt)), label, reduction="none")
        rank = batch_ranking_loss(F.normalize(f_img, dim=-1), F.normalize(f_txt, dim=-1), margin=c.margin,
                                  hardest=c.hardest, reduction=c.reduction)
        terms = {"ranking": rank, "instance_img": reduce(ce_img), "instance_txt": reduce(ce_txt)}
        stage = self.stage(progress)
        weights = {"ranking": c.lambda_rank if stage == 2 else 0.0, "instance_img": c.lambda_img,
                   "instance_txt": c.lambda_txt}
        return Objective(terms, weights, {"stage": torch.tensor(float(stage), device=f_img.device)})

    def example_batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        c = self.config
        return {
            "image": torch.randn(n, c.image_dim, generator=generator),
            "text": random_token_ids(n, c.vocab_size, c.max_len, generator),
            "label": torch.randint(0, c.n_classes, (n,), generator=generator),
        }
