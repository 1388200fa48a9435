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


def test_temporary_names_are_recognised_exactly(tmp_path):
    from fusionnet_keras.utils.atomic import is_temporary_name, remove_stale_temporaries, temporary_name

    assert is_temporary_name(temporary_name("out.tif", suffix=".tif"))
    assert is_temporary_name(temporary_name("store.zarr", "old"))
    for name in ("out.tif", ".out.tif", "notes.tmp", ".x.tmp-123", ".x.tmp-0123456789abcdef"):
        assert not is_temporary_name(name), name
    # a folder swapped out by atomic_dir before the new one arrived is put back, not deleted
    (tmp_path / temporary_name("store", "old")).mkdir()
    (tmp_path / temporary_name("other", "old")).mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / temporary_name("a.json", suffix=".json")).write_text("half")
    (tmp_path / "keep.tmp").write_text("mine")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "other", "store"]


def test_exclusive_lock_waits_then_times_out(tmp_path):
    import subprocess
    import sys
    import time

    from fusionnet_keras.utils.locking import exclusive_lock, lock_path

    target = tmp_path / "out.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from fusionnet_keras.utils.locking import exclusive_lock\n"
         f"with exclusive_lock({str(target)!r}):\n    print('held', flush=True); time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(FusionNetError, match="in use by another process"):
            with exclusive_lock(target, timeout=0.3):
                pass
        assert time.monotonic() - start >= 0.3
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(target, timeout=5):  # released by the kill
        assert lock_path(target).exists()
    assert not lock_path(target).exists()


def test_docstring_examples():
    import doctest

    import fusionnet_keras.utils.atomic as atomic
    import fusionnet_keras.utils.locking as locking
    import fusionnet_keras.utils.validate as validate

    for module in (atomic, locking, validate):
        assert doctest.testmod(module).failed == 0, module.__name__
