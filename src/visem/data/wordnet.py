"""WordNet 3.0 from the Debian package ``wordnet-base``, read with nltk.

``/usr/share/wordnet`` holds the WordNet 3.0 database files but not the
``lexnames`` file nltk's :class:`~nltk.corpus.reader.wordnet.WordNetCorpusReader`
needs, and this nltk refuses to read corpora outside its data path and through
symlinks. :func:`prepare_wordnet` therefore copies the dictionary files (about
27 MB) into ``<data_dir>/wordnet/``, writes the standard 45-line ``lexnames``
there, and the reader is opened on that folder (added to ``nltk.data.path``).
Nothing is downloaded.

:func:`synonyms` serves the ``s_g`` tag-matching baseline of A3VSE (seed 003,
section 4.2), which expands each sentence token with its WordNet synsets.
"""

from __future__ import annotations

import shutil
import warnings
from functools import lru_cache
from pathlib import Path

from visem.data.paths import DataError, atomic_path, source_dir

__all__ = ["WORDNET_SRC", "prepare_wordnet", "wordnet_reader", "synonyms"]

WORDNET_SRC = Path("/usr/share/wordnet")
_FILES = (
    "data.noun", "data.verb", "data.adj", "data.adv",
    "index.noun", "index.verb", "index.adj", "index.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc",
    "cntlist.rev",
)  # fmt: skip
#: The 45 lexicographer files of WordNet 3.0, in file-number order (the ``lexnames`` file).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_SYNTACTIC = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def _lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_SYNTACTIC[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def wordnet_dir() -> Path:
    return source_dir("wordnet")


def prepare_wordnet(force: bool = False, src: str | Path | None = None) -> tuple[Path, bool]:
    """Copy the WordNet files into the data dir and write ``lexnames`` if missing. Idempotent."""
    src = Path(src) if src is not None else WORDNET_SRC
    dest = wordnet_dir()
    created = False
    for name in _FILES:
        out = dest / name
        if out.is_file() and not force:
            continue
        if not (src / name).is_file():
            if name == "cntlist.rev":  # optional (sense counts)
                continue
            raise DataError(
                f"{src / name}: file not found (expected the WordNet 3.0 database of the Debian package "
                "wordnet-base; install it with apt-get install wordnet-base)"
            )
        with atomic_path(out) as tmp:
            shutil.copyfile(src / name, tmp)
        created = True
    lex = dest / "lexnames"
    if force or not lex.is_file():
        with atomic_path(lex) as tmp:
            tmp.write_text(_lexnames_text())
        created = True
    if created:
        wordnet_reader.cache_clear()
    return dest, created


@lru_cache(maxsize=1)
def wordnet_reader():
    """An nltk WordNetCorpusReader over ``<data_dir>/wordnet`` (prepared on first use)."""
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _WordNet30(WordNetCorpusReader):
        # No Open Multilingual WordNet here; WordNet 3.0 needs no version mapping.
        def map_wn(self, version="wordnet"):  # noqa: D401
            return None

    root, _ = prepare_wordnet()
    root_str = str(root.resolve())
    if root_str not in nltk.data.path:
        nltk.data.path.append(root_str)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available"
            return _WordNet30(root_str, None)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{root}: could not be read as a WordNet 3.0 database ({type(exc).__name__}: {exc})") from exc


def synonyms(word: str, pos: str | None = None) -> set[str]:
    """All lemma names of all synsets of ``word`` (any part of speech, or ``pos`` in n/v/a/r).

    Lowercased, underscores turned into spaces, the word itself included when it
    is in WordNet; inflected forms are found through WordNet's morphology
    (``dogs`` -> synsets of ``dog``). Unknown words give an empty set.
    """
    wn = wordnet_reader()
    key = word.strip().lower().replace(" ", "_")
    if not key:
        return set()
    out: set[str] = set()
    for synset in wn.synsets(key, pos=pos):
        for lemma in synset.lemmas():
            out.add(lemma.name().replace("_", " ").lower())
    return out
