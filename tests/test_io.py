"""visem.io: folders replaced whole or not at all."""

import stat

import pytest

from visem.io import atomic_dir


def test_atomic_dir_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "data" / "set"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # readers see the old folder until the end
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in target.parent.iterdir()) == ["set"]  # no temporary folder left


def test_atomic_dir_leaves_the_old_folder_on_error(tmp_path):
    target, work = tmp_path / "set", tmp_path / "work"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, work_dir=work) as tmp:
            assert tmp.parent == work
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("stopped")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert not any(work.iterdir())
