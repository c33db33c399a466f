"""Text side of the retrieval family: vocabulary, token ids and text encoders.

Captions enter the retrieval models as padded token ids: ``(B, L)`` int64
with ``PAD = 0`` after the last token and ``UNK = 1`` for out-of-vocabulary
words (the ids of :class:`visem.features.text.Vocabulary`, built from
*training* captions only); the length of a caption is its number of non-pad
ids. Word vectors (GloVe 50d, :func:`visem.features.text.glove_matrix`)
initialise the embedding tables through each model's ``load_word_vectors``.

Encoders:

* :class:`RNNTextEncoder` -- word embeddings + GRU/LSTM, the text branch of
  VSE++ (last hidden state, Faghri et al. 2018), of A3VSE (every step's
  output, seed 003 Sec. 3.2) and of SCAN (bidirectional GRU, halves averaged).
* :class:`ConvTextAutoEncoder` -- the convolutional encoder and
  deconvolutional decoder of seed 001 Sec. 3.1 (Eq. 1-3), after Zhang et al.
  2017 (deconvolutional paragraph representation learning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD, UNK = 0, 1
UNK_TOKEN = "<unk>"


def decode_ids(ids: Tensor, vocab: Sequence[str]) -> list[str]:
    """Space-joined words of each row of ``ids``, stopping at the first ``PAD``."""
    out = []
    for row in ids.tolist():
        words = []
        for i in row:
            if i == PAD:
                break
            words.append(vocab[i] if 0 <= i < len(vocab) else UNK_TOKEN)
        out.append(" ".join(words))
    return out


def lengths_of(ids: Tensor) -> Tensor:
    """Caption lengths: the ids before the first ``PAD`` of each row (at least 1)."""
    return (ids != PAD).long().cumprod(dim=1).sum(dim=1).clamp(min=1)


def check_ids(name: str, ids: Tensor, vocab_size: int) -> Tensor:
    """Validate a ``(B, L)`` integer tensor of token ids below ``vocab_size``."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"{name} must be a (B, L) integer tensor of token ids, got {shape}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids outside [0, {vocab_size}): min {int(ids.min())}, max {int(ids.max())}")
    return ids


# --------------------------------------------------------------------------
# recurrent encoder
# --------------------------------------------------------------------------
class RNNTextEncoder(nn.Module):
    """Word embeddings followed by a one-layer GRU or LSTM over the tokens.

    ``forward(ids)`` returns ``(outputs, last)``: ``outputs`` ``(B, L, H)``
    the per-token states (zero past each caption's length) and ``last``
    ``(B, H)`` the state at each caption's last token. With
    ``bidirectional=True`` the two directions are averaged (SCAN's text
    encoder), so ``H = hidden_dim`` either way.
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, rnn: str = "gru",
                 bidirectional: bool = False) -> None:
        super().__init__()
        if rnn not in ("gru", "lstm"):
            raise ValueError(f"rnn must be 'gru' or 'lstm', got {rnn!r}")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        with torch.no_grad():  # VSE++'s and SCAN's init when no word vectors are loaded: U(-0.1, 0.1)
            self.embed.weight.uniform_(-0.1, 0.1)
            self.embed.weight[PAD].zero_()
        cls = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = cls(word_dim, hidden_dim, batch_first=True, bidirectional=bidirectional)
        self.bidirectional = bidirectional
        self.hidden_dim = hidden_dim

    def load_word_vectors(self, table: Tensor) -> None:
        if tuple(table.shape) != tuple(self.embed.weight.shape):
            raise ValueError(f"word vector table has shape {tuple(table.shape)}, expected {tuple(self.embed.weight.shape)}")
        with torch.no_grad():
            self.embed.weight.copy_(table)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        check_ids("text", ids, self.vocab_size)
        lengths = lengths_of(ids)
        x = self.embed(ids)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        if self.bidirectional:
            out = 0.5 * (out[..., : self.hidden_dim] + out[..., self.hidden_dim:])
        idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        last = out.gather(1, idx).squeeze(1)
        return out, last


def token_mask(ids: Tensor) -> Tensor:
    """``(B, L)`` bool mask of the tokens before each row's first pad (first token always on)."""
    return torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths_of(ids)[:, None]


# --------------------------------------------------------------------------
# convolutional auto-encoder (seed 001 Sec. 3.1)
# --------------------------------------------------------------------------
def conv_lengths(t0: int, filter_size: int, strides: Sequence[int]) -> list[int]:
    """Sequence lengths through the encoder, seed 001 Eq. 1.

    ``T(n+1) = floor((T(n) - z) / r(n) + 1)`` for every layer but the last,
    whose filter spans its whole input (``T = 1``). Returns
    ``[T(0), T(1), ..., 1]``.
    """
    lengths = [int(t0)]
    for r in strides[:-1]:
        t = math.floor((lengths[-1] - filter_size) / r + 1)
        if t < 1:
            raise ValueError(
                f"max_len={t0} is too short for filter {filter_size} and strides {tuple(strides)}: "
                f"a layer's output length would be {t}"
            )
        lengths.append(t)
    lengths.append(1)
    return lengths


def _tiles_exactly(t0: int, filter_size: int, strides: Sequence[int]) -> bool:
    try:
        lengths = conv_lengths(t0, filter_size, strides)
    except ValueError:
        return False
    return all((t - filter_size) % r == 0 for t, r in zip(lengths[:-2], strides))


class ConvTextAutoEncoder(nn.Module):
    """Convolutional sentence encoder and deconvolutional decoder (seed 001 Eq. 1-3).

    Encoder: unit-norm word embeddings ``x_t = W_e[w_t] / |W_e[w_t]|`` of the
    padded caption (``T(0) = max_len`` tokens) go through ``N`` 1-D
    convolutions over time (a 2-D convolution whose filter spans the whole
    embedding, as in Zhang et al. 2017): layer ``n`` has filter ``z`` and
    stride ``r(n)`` (Eq. 1) and the last one a filter of its whole input
    length ``T(N-1)``, which leaves a ``hidden_dim`` vector ``h_c``. ReLU
    between layers, none after the last (the code is used as it is).

    Decoder: ``N`` transposed convolutions mirroring the encoder give back a
    ``(T(0), word_dim)`` matrix ``x_hat``; the probability of word ``v`` at
    step ``t`` is the softmax over the vocabulary of
    ``cos(x_hat_t, W_e[v]) / tau`` (Eq. 2), and the loss is the negative
    log-likelihood of the input words summed over the ``T(0)`` steps (Eq. 3).
    The pad positions are reconstructed too (the pad token is a word), as in
    Zhang et al.'s code, so a decoded caption ends at its first pad.

    ``max_len`` must tile exactly (``(T(n) - z)`` divisible by ``r(n)`` for
    every strided layer, e.g. 30 for ``z = 4``, ``r = (2, 2, 1)``): where Eq. 1
    floors, trailing positions fall outside every window, and the tokens there
    can be neither encoded nor reconstructed; such a ``max_len`` is an error
    that lists nearby valid ones.
    """

    def __init__(self, vocab_size: int, word_dim: int, max_len: int, hidden_dim: int,
                 channels: Sequence[int], filter_size: int, strides: Sequence[int],
                 temperature: float, decoder: bool = True) -> None:
        super().__init__()
        if len(channels) != len(strides) - 1:
            raise ValueError(f"channels needs one entry per layer but the last: {len(strides) - 1}, got {len(channels)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.temperature = temperature
        self.lengths = conv_lengths(max_len, filter_size, strides)
        for t_in, t_out, r in zip(self.lengths[:-2], self.lengths[1:-1], strides):
            if (t_in - filter_size) % r:
                valid = [t for t in range(max(1, max_len - 12), max_len + 13)
                         if _tiles_exactly(t, filter_size, strides)]
                raise ValueError(
                    f"max_len={max_len} does not tile exactly with filter {filter_size} and strides "
                    f"{tuple(strides)}: a layer of length {t_in} leaves {(t_in - filter_size) % r} trailing "
                    f"position(s) outside every window (Eq. 1 floors them away, so those tokens could never be "
                    f"encoded nor reconstructed); nearby valid max_len: {valid}"
                )
        self.embed = nn.Embedding(vocab_size, word_dim)
        widths = [word_dim, *channels, hidden_dim]
        n = len(strides)
        enc = []
        for i in range(n):
            k = filter_size if i < n - 1 else self.lengths[-2]
            s = strides[i] if i < n - 1 else 1
            enc.append(nn.Conv1d(widths[i], widths[i + 1], kernel_size=k, stride=s))
        self.encoder_layers = nn.ModuleList(enc)
        self.decoder_layers: nn.ModuleList | None = None
        if decoder:
            dec = []
            for i in reversed(range(n)):
                k = filter_size if i < n - 1 else self.lengths[-2]
                s = strides[i] if i < n - 1 else 1
                t_in, t_out = self.lengths[i + 1], self.lengths[i]
                pad_out = t_out - ((t_in - 1) * s + k)
                dec.append(nn.ConvTranspose1d(widths[i + 1], widths[i], kernel_size=k, stride=s,
                                              output_padding=pad_out))
            self.decoder_layers = nn.ModuleList(dec)

    def load_word_vectors(self, table: Tensor) -> None:
        if tuple(table.shape) != tuple(self.embed.weight.shape):
            raise ValueError(f"word vector table has shape {tuple(table.shape)}, expected {tuple(self.embed.weight.shape)}")
        with torch.no_grad():
            self.embed.weight.copy_(table)
            # the pad row must not be zero: it is normalised and reconstructed like a word
            self.embed.weight[PAD].normal_(0.0, 0.1)

    def word_table(self) -> Tensor:
        """``(V, word_dim)`` unit-norm word embeddings ``W_e``."""
        return F.normalize(self.embed.weight, dim=-1)

    def _fit_length(self, ids: Tensor) -> Tensor:
        check_ids("text", ids, self.vocab_size)
        if ids.shape[1] > self.max_len:
            return ids[:, : self.max_len]
        if ids.shape[1] < self.max_len:
            return F.pad(ids, (0, self.max_len - ids.shape[1]), value=PAD)
        return ids

    def encode(self, ids: Tensor) -> Tensor:
        """``(B, hidden_dim)`` codes ``h_c`` of ``(B, L)`` token ids."""
        ids = self._fit_length(ids)
        x = self.word_table()[ids].transpose(1, 2)  # (B, word_dim, T0)
        for i, layer in enumerate(self.encoder_layers):
            x = layer(x)
            if i < len(self.encoder_layers) - 1:
                x = F.relu(x)
        return x.squeeze(-1)

    def decode(self, h: Tensor) -> Tensor:
        """``(B, T0, word_dim)`` reconstructed word embeddings ``x_hat``."""
        if self.decoder_layers is None:
            raise ValueError("this text auto-encoder was built without a decoder")
        x = h.unsqueeze(-1)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x)
            if i < len(self.decoder_layers) - 1:
                x = F.relu(x)
        return x.transpose(1, 2)

    def word_logits(self, x_hat: Tensor) -> Tensor:
        """``(B, T0, V)`` logits ``cos(x_hat_t, W_e[v]) / tau`` of Eq. 2."""
        return F.normalize(x_hat, dim=-1) @ self.word_table().T / self.temperature

    def reconstruction_loss(self, ids: Tensor, h: Tensor) -> Tensor:
        """Eq. 3 per caption, ``(B,)``: ``-sum_t log p(w_hat_t = w_t)`` over the ``T0`` steps."""
        ids = self._fit_length(ids)
        logits = self.word_logits(self.decode(h))
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none")
        return nll.view(ids.shape).sum(dim=1)

    @torch.no_grad()
    def reconstruct(self, ids: Tensor) -> Tensor:
        """``(B, T0)`` most likely word ids of the reconstruction of ``ids``."""
        return self.word_logits(self.decode(self.encode(ids))).argmax(dim=-1)


# --------------------------------------------------------------------------
# choosing the text tower (``text_encoder`` of the retrieval models)
# --------------------------------------------------------------------------
#: ``gru``: the model's own word-level encoder learned from GloVe-initialised word embeddings (VSE++'s GRU,
#: A3VSE's ``rnn``, VSA's convolutional auto-encoder); ``minilm``: all-MiniLM-L6-v2 with a trained projection
#: (:mod:`visem.models.pretrained_text`).
TEXT_ENCODERS = ("gru", "minilm")


def check_text_encoder(config) -> None:
    """Validate ``config.text_encoder`` / ``config.text_lr`` of a retrieval model's config."""
    if config.text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got {config.text_encoder!r}")
    if config.text_lr < 0:
        raise ValueError(f"text_lr must be >= 0 (0 = MiniLM frozen), got {config.text_lr}")
    if config.text_lr > 0 and config.text_encoder != "minilm":
        raise ValueError("text_lr fine-tunes the pretrained text tower: it needs text_encoder='minilm'")


def recurrent_or_pretrained(config, hidden_dim: int, rnn: str = "gru", bidirectional: bool = False) -> nn.Module:
    """The text tower a config asks for: :class:`RNNTextEncoder` or :class:`~visem.models.pretrained_text.MiniLMTextEncoder`.

    Both return ``(outputs (B, L, hidden_dim), last (B, hidden_dim))``.
    """
    check_text_encoder(config)
    if config.text_encoder == "minilm":
        from visem.models.pretrained_text import MiniLMTextEncoder

        return MiniLMTextEncoder(hidden_dim, finetune=config.text_lr > 0)
    return RNNTextEncoder(config.vocab_size, config.word_dim, hidden_dim, rnn=rnn, bidirectional=bidirectional)


def check_text(name: str, text: Tensor, config) -> Tensor:
    """Token ids below ``vocab_size``, or (MiniLM tower) precomputed ``(B, L, 384)`` states."""
    if getattr(config, "text_encoder", "gru") == "minilm":
        if isinstance(text, Tensor) and text.is_floating_point():
            return text
        from visem.models.pretrained_text import MINILM_VOCAB

        return check_ids(name, text, MINILM_VOCAB)
    return check_ids(name, text, config.vocab_size)


def text_token_mask(text: Tensor) -> Tensor:
    """``(B, L)`` real-token mask of token ids (:func:`token_mask`) or of precomputed states (non-zero rows)."""
    if text.is_floating_point():
        m = text.abs().sum(-1) > 0
        m[:, 0] = True
        return m
    return token_mask(text)
