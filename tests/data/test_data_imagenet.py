"""ImageNet class names: the .js object parser on a known fixture, and the fetched file."""

from __future__ import annotations

import pytest

from visem.data import DataError
from visem.data.imagenet import imagenet_classes, parse_classes_js


def _js(entries: dict[int, str]) -> str:
    body = ",\n".join(f"    {i}: {v}" for i, v in entries.items())
    return f'"use strict";\nexports.IMAGENET_CLASSES = {{\n{body}\n}};\n'


def test_parser_joins_concatenated_strings_and_unescapes():
    entries = {i: f"'class {i}'" for i in range(1000)}
    entries[2] = "'great white shark, white shark, ' +\n        'Carcharodon carcharias'"
    entries[607] = r"'jack-o\'-lantern'"
    names = parse_classes_js(_js(entries))
    assert len(names) == 1000 and names[0] == "class 0" and names[999] == "class 999"
    assert names[2] == "great white shark, white shark, Carcharodon carcharias"
    assert names[607] == "jack-o'-lantern"


def test_parser_rejects_incomplete_files():
    with pytest.raises(DataError, match="expected classes 0..999"):
        parse_classes_js(_js({i: f"'c{i}'" for i in range(999)}), "x.js")


def test_fetched_names_are_the_standard_order():
    try:
        names = imagenet_classes()
    except DataError as exc:
        pytest.skip(f"ImageNet class names not fetched: {exc}")
    assert names[0] == "tench, Tinca tinca" and names[281] == "tabby, tabby cat"
    assert names[999].startswith("toilet tissue")
