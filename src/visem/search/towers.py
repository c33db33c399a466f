"""The text side of an index: how captions and queries become model input for each text tower.

``gru`` (the models' own word-level encoders): token ids over a vocabulary of
the training captions and pseudo captions (:class:`visem.features.text.TextTable`);
a query word outside it is ignored and reported. ``minilm``: MiniLM's
WordPiece ids, so no query word is out of vocabulary (a word MiniLM can only
spell as ``[UNK]``, e.g. most Han characters, is reported instead); a frozen
tower trains on precomputed token states
(:func:`visem.models.pretrained_text.minilm_token_states`).
"""

from __future__ import annotations

from typing import Any, Sequence

from visem.features.text import TextTable, Vocabulary
from visem.features.tokenize import tokenize

__all__ = ["MAX_LEN", "TextSide", "text_encoder_of"]

#: longest caption, in tokens, a model reads (longer ones are cut)
MAX_LEN = 30


def text_encoder_of(model: Any) -> str:
    """``gru`` or ``minilm``: the text tower of a trained model."""
    return getattr(model.config, "text_encoder", "gru")


class TextSide:
    """Captions -> model input for one text tower; ``vocab`` is the training texts' word vocabulary either way."""

    def __init__(self, encoder: str, vocab: Vocabulary, max_len: int = MAX_LEN, finetune: bool = False,
                 states: dict[str, Any] | None = None) -> None:
        if encoder not in ("gru", "minilm"):
            raise ValueError(f"text encoder must be gru or minilm, got {encoder!r}")
        self.encoder = encoder
        self.vocab = vocab
        self.max_len = max_len
        self.finetune = finetune
        self._states: dict[str, Any] = states if states is not None else {}  # text -> frozen MiniLM states

    @classmethod
    def from_texts(cls, encoder: str, train_texts: Sequence[str], max_len: int = MAX_LEN,
                   finetune: bool = False, states: dict[str, Any] | None = None) -> "TextSide":
        """``states``: a dict shared by several sides (the build's fits), so each text runs through MiniLM once."""
        return cls(encoder, TextTable(list(train_texts), max_len=max_len).vocab, max_len, finetune, states)

    @property
    def vocab_size(self) -> int:
        if self.encoder == "minilm":
            from visem.models.pretrained_text import MINILM_VOCAB

            return MINILM_VOCAB
        return len(self.vocab)

    def word_vectors(self):
        """GloVe rows of the vocabulary (gru), ``None`` for MiniLM (it has its own)."""
        if self.encoder == "minilm":
            return None
        import torch

        from visem.features.text import glove_matrix

        return torch.from_numpy(glove_matrix(self.vocab)[0])

    def ids(self, texts: Sequence[str]):
        """``(B, L)`` int64 token ids (word ids, or MiniLM's)."""
        import torch

        texts = list(texts)
        if self.encoder == "minilm":
            from visem.models.pretrained_text import minilm_token_ids

            return minilm_token_ids(texts, max_len=self.max_len + 2) if texts else torch.zeros((0, 1), dtype=torch.long)
        return torch.from_numpy(self.vocab.encode_batch(texts, max_len=self.max_len)[0])

    def training(self, texts: Sequence[str], progress: bool = False):
        """What a model trains on: ids, or (frozen MiniLM) float16 token states, computed once per distinct text."""
        if self.encoder != "minilm" or self.finetune:
            return self.ids(texts)
        import torch

        from visem.models.pretrained_text import MINILM_DIM, minilm_token_states

        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self._states]
        if todo:
            states = minilm_token_states(todo, max_len=self.max_len + 2, progress=progress)
            for t, s in zip(todo, states):
                self._states[t] = s[: max(1, int((s.abs().sum(-1) > 0).sum()))]
        if not texts:
            return torch.zeros((0, 1, MINILM_DIM), dtype=torch.float16)
        width = max(len(self._states[t]) for t in texts)
        out = torch.zeros((len(texts), width, MINILM_DIM), dtype=torch.float16)
        for i, t in enumerate(texts):
            s = self._states[t]
            out[i, : len(s)] = s
        return out

    def explain(self, tokens: Sequence[str]) -> tuple[list[str], list[str]]:
        """``(used, unknown)`` words of a tokenised query for this tower."""
        if self.encoder == "minilm":
            from visem.models.pretrained_text import minilm_tokenizer

            tok = minilm_tokenizer()
            unk = tok.unk_token
            unknown = [t for t in tokens if all(p == unk for p in tok.tokenize(t))]
            return [t for t in tokens if t not in unknown], unknown
        return [t for t in tokens if t in self.vocab], [t for t in tokens if t not in self.vocab]

    def query(self, text: str):
        """``(1, L)`` ids of one query, or ``None`` when the tower knows none of its words."""
        used, unknown = self.explain(tokenize(text))
        if not used:
            return None
        if self.encoder == "minilm":  # ignored words are left out, as with the word vocabulary
            return self.ids([" ".join(used) if unknown else text])
        import torch

        return torch.as_tensor([[self.vocab.index[w] for w in used[: self.max_len]]])
