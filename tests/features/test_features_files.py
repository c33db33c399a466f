"""The file pass: one read per file, decoding in DataLoader workers, unreadable files reported, ranks sharing a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visem.features.cache import FeatureStore
from visem.features.files import extract_files
from visem.features.image import EfficientNetLite0, extract_image_features


def _png(path: Path, seed: int, size: int = 48) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(path)
    return path


@pytest.fixture()
def folder(tmp_path) -> list[Path]:
    files = [_png(tmp_path / f"im{i}.png", i) for i in range(6)]
    (tmp_path / "dup.png").write_bytes(files[2].read_bytes())  # same bytes, another name
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    return files + [tmp_path / "dup.png", tmp_path / "broken.png"]


class CountingReads:
    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        real = Path.read_bytes

        def read_bytes(p):
            self.paths.append(p.name)
            return real(p)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)


def test_each_file_is_read_once_and_decoded_only_when_missing(folder, tmp_path, monkeypatch):
    reads = CountingReads(monkeypatch)
    enc = EfficientNetLite0()
    scan = extract_files(folder, ["pooled"], encoder=enc, store_root=tmp_path / "st", workers=0, batch_size=4)
    assert sorted(reads.paths) == sorted(p.name for p in folder)  # one read each, the broken file included
    assert scan.keys[6] == scan.keys[2] and scan.keys[7] is None and "broken.png" in scan.errors[7]
    assert scan.encoded == 6  # the duplicate's bytes were encoded once
    store = FeatureStore(tmp_path / "st" / enc.encoder_id / "pooled")
    assert len(store) == 6
    reads.paths.clear()
    calls = enc.calls
    again = extract_files(folder, ["pooled"], encoder=enc, store_root=tmp_path / "st", workers=0)
    assert again.keys == scan.keys and again.encoded == 0 and enc.calls == calls  # hashed, not decoded
    assert sorted(reads.paths) == sorted(p.name for p in folder)
    reads.paths.clear()
    known = extract_files(folder[:6], ["pooled"], encoder=enc, store_root=tmp_path / "st", keys=scan.keys[:6])
    assert known.keys == scan.keys[:6] and reads.paths == []  # known and stored: not even opened


def test_workers_give_the_same_keys_and_features(folder, tmp_path):
    enc = EfficientNetLite0()
    a = extract_files(folder, ["grid"], encoder=enc, store_root=tmp_path / "a", workers=0)
    b = extract_files(folder, ["grid"], encoder=enc, store_root=tmp_path / "b", workers=2, batch_size=2)
    assert a.keys == b.keys and a.errors.keys() == b.errors.keys()
    good = [k for k in a.keys if k is not None]
    for kind in ("grid", "pooled"):  # the grid pass stores pooled too
        fa = FeatureStore(tmp_path / "a" / enc.encoder_id / kind).get(good)
        fb = FeatureStore(tmp_path / "b" / enc.encoder_id / kind).get(good)
        np.testing.assert_array_equal(fa, fb)


def test_store_rows_read_only_what_is_asked(tmp_path):
    st = FeatureStore(tmp_path)
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((5, 3, 4)).astype(np.float16) for _ in range(3)]
    for c, v in enumerate(values):
        st.put([f"k{c}{r}" for r in range(5)], v)
    every = np.concatenate(values)
    keys = [f"k{c}{r}" for c in range(3) for r in range(5)]
    view = FeatureStore(tmp_path).view(keys)
    assert view.shape == (15, 3, 4) and view.dtype == np.float16
    idx = np.array([14, 0, 7, 7, 3])
    np.testing.assert_array_equal(view[idx], every[idx])
    np.testing.assert_array_equal(np.concatenate(list(view.blocks(4))), every)
    np.testing.assert_array_equal(view[9], every[9])
    with pytest.raises(KeyError, match="1 keys not in the store"):
        FeatureStore(tmp_path).view(keys + ["absent"])


def test_unreadable_file_is_a_data_error_for_the_array_api(folder, tmp_path):
    from visem.data.paths import DataError

    with pytest.raises(DataError, match="broken.png"):
        extract_image_features(folder, "pooled", store_root=tmp_path / "st")


def _rank_main(rank: int, world: int, init: str, files: list[str], store: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        scan = extract_files([Path(f) for f in files], ["pooled"], encoder=EfficientNetLite0(), store_root=store,
                             workers=0, batch_size=2, chunk_size=2)
        Path(out, f"{rank}.json").write_text(json.dumps({"keys": scan.keys, "encoded": scan.encoded,
                                                         "errors": sorted(scan.errors)}))
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_the_work_and_one_store(folder, tmp_path):
    import json

    import torch.multiprocessing as mp

    files = [str(p) for p in folder]
    out = tmp_path / "out"
    out.mkdir()
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_rank_main, args=(2, init, files, str(tmp_path / "st"), str(out)), nprocs=2,
                       start_method="fork")
    r0, r1 = (json.loads((out / f"{r}.json").read_text()) for r in (0, 1))
    single = extract_files(folder, ["pooled"], store_root=tmp_path / "one", workers=0)
    assert r0["keys"] == r1["keys"] == single.keys  # every rank returns the whole scan
    assert r0["errors"] == r1["errors"] == [7]
    # each rank read and encoded only its share (files 0, 2, 4, 6 / 1, 3, 5, 7); the duplicate of file 2
    # is file 6, on the same rank, so it is encoded once
    assert (r0["encoded"], r1["encoded"]) == (3, 3)
    enc_id = EfficientNetLite0().encoder_id
    shared = FeatureStore(tmp_path / "st" / enc_id / "pooled")
    good = [k for k in single.keys if k is not None]
    np.testing.assert_allclose(shared.get(good), FeatureStore(tmp_path / "one" / enc_id / "pooled").get(good),
                               atol=1e-5)
    assert not list((tmp_path / "st").rglob("*.tmp"))
