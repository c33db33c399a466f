"""WordNet 3.0 (Debian wordnet-base) through nltk, with the lexnames file visem writes."""

from __future__ import annotations

import os

import pytest

from visem.data.wordnet import LEXNAMES, WORDNET_SRC, _lexnames_text, synonyms, wordnet_dir


def test_lexnames_file_format():
    lines = _lexnames_text().splitlines()
    assert len(lines) == 45 == len(LEXNAMES)
    assert lines[0] == "00\tadj.all\t3" and lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"


def test_synonyms_from_the_debian_database():
    if not WORDNET_SRC.is_dir() and os.environ.get("VISEM_OFFLINE_TESTS") == "1":
        pytest.skip("wordnet-base not installed and VISEM_OFFLINE_TESTS=1")
    car = synonyms("car")
    assert {"car", "automobile", "auto", "motorcar"} <= car
    assert "domestic dog" in synonyms("dogs")  # morphology: dogs -> dog, underscores -> spaces
    assert synonyms("qwzxv") == set() and synonyms("  ") == set()
    assert (wordnet_dir() / "lexnames").is_file()
