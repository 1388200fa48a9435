"""Atomic writes: build the output under a temporary name beside the target, then rename it.

A reader (or a run resumed after ``kill -9``) sees either the old output or the
complete new one, never a partial write. This is the package's one mechanism
for files (:func:`atomic_path`: TIFF, HDF5, CSV, figures, JSON, ``.keras``) and
for directories (:func:`atomic_dir`: zarr stores); :func:`check_overwrite` is
the one "never overwrite without ``--overwrite``" check for single-file outputs.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from fusionnet_keras.errors import FusionNetError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree; never raises."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary file path next to ``path``; on success rename it onto ``path``.

    The temporary file exists (empty) when the block starts; the writer may
    replace it. On an exception it is removed and ``path`` is untouched.
    ``suffix`` defaults to the target's suffix (some writers infer the format
    from it, e.g. Keras needs ``.keras``). Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name beside ``path`` (nothing is created)."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory path next to ``path`` (not yet created); on success swap it in.

    An existing ``path`` (file or directory) is renamed aside, the new directory
    renamed onto ``path``, then the old one removed; if that second rename
    fails the old one is put back. On an exception the temporary directory is
    removed and ``path`` is untouched. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = _sibling(path, "old")
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def check_overwrite(path, overwrite: bool) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a single-file output may be written there.

    Raises :class:`OutputExistsError` when it exists and ``overwrite`` is false,
    :class:`FusionNetError` when it is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise FusionNetError(f"output is a directory: {path}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"output exists: {path} (use --overwrite)")
    return path


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_save_model(model, path) -> None:
    """``model.save(path)`` atomically (``path`` must end in ``.keras``)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
