"""Unicode-aware word tokenisation of captions, tags and queries.

One tokenizer for every caption visem reads (the word vocabulary of the GRU
towers, GloVe look-ups, the lexical index of :mod:`visem.search.lexical`,
query explanation):

* the text is put in Unicode normal form NFKC (a decomposed ``e`` + combining
  accent and the composed ``é`` become one character; full-width letters
  become ordinary ones) and lower-cased; accents are kept (``café`` stays
  ``café``: ``cafe`` would merge distinct words of many languages);
* a word is a run of letters, digits and combining marks of any script
  (Latin, Cyrillic, Greek, Arabic, Devanagari, Thai, ...), joined across
  ``-``, ``'`` and ``.`` (``t-shirt``, ``o'clock``, ``3.5``);
* Han characters and Japanese kana, written without spaces, are one token
  each (character unigrams, the usual fallback of lexical search for those
  scripts when no dictionary segmenter is installed);
* English clitics split the way GloVe's corpus was tokenised (``don't`` ->
  ``do n't``, ``dog's`` -> ``dog 's``);
* everything else (punctuation, symbols, emoji, underscores) separates words.

For ASCII text this is exactly the tokenizer visem had before (``[a-z0-9]``
words with the same joiners and clitics), so vocabularies and cached results
of English captions do not change.
"""

from __future__ import annotations

import unicodedata

import regex

__all__ = ["tokenize"]

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_START = rf"[[\p{{L}}\p{{N}}]--[{_CJK}]]"
_CONT = rf"[[\p{{L}}\p{{M}}\p{{N}}]--[{_CJK}]]"
_TOKEN = regex.compile(
    rf"n't|'(?:s|re|ve|ll|d|m)\b|[{_CJK}]|{_START}{_CONT}*(?:[-'.]{_START}{_CONT}*)*",
    regex.V1,
)
_CLITIC = regex.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of any script.

    >>> tokenize("A T-shirt, don't!")
    ['a', 't-shirt', 'do', "n't"]
    >>> tokenize("Café crème, красное сердце")
    ['café', 'crème', 'красное', 'сердце']
    >>> tokenize("猫が好き")
    ['猫', 'が', '好', 'き']
    """
    out: list[str] = []
    norm = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    for tok in _TOKEN.findall(norm):
        m = _CLITIC.match(tok)
        if m and m.group(1) not in ("", "n"):
            out.extend([m.group(1), m.group(2)])
        else:
            out.append(tok)
    return out
