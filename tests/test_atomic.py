"""fusionnet_keras.utils.atomic: the one atomic-write mechanism (files and directories)."""

import os

import pytest

from fusionnet_keras.errors import FusionNetError, OutputExistsError
from fusionnet_keras.utils.atomic import atomic_dir, atomic_path, atomic_write_text, check_overwrite


def test_atomic_path_replaces_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "old")
    assert target.read_text() == "old" and oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(target.parent) == ["a.txt"]  # no temporary file left
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp.exists()
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(target.parent) == ["a.txt"]


def test_atomic_dir_swaps_a_whole_directory(tmp_path):
    target = tmp_path / "store"
    with atomic_dir(target) as tmp:
        assert not tmp.exists()
        tmp.mkdir()
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            tmp.mkdir()
            (tmp / "y").write_text("2")
            raise RuntimeError("killed")
    assert sorted(os.listdir(target)) == ["x"] and os.listdir(tmp_path) == ["store"]
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("2")
    assert sorted(os.listdir(target)) == ["y"] and os.listdir(tmp_path) == ["store"]


def test_check_overwrite(tmp_path):
    f = tmp_path / "out.csv"
    assert check_overwrite(f, overwrite=False) == f
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="output exists: .*out.csv \\(use --overwrite\\)"):
        check_overwrite(f, overwrite=False)
    assert check_overwrite(str(f), overwrite=True) == f
    with pytest.raises(FusionNetError, match="output is a directory"):
        check_overwrite(tmp_path, overwrite=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
