"""Atomic writes: build the output under a temporary name beside the target, then rename it.

A reader (or a run resumed after ``kill -9``) sees either the old output or the
complete new one, never a partial write. This is the package's one mechanism
for files (:func:`atomic_path`: TIFF, new HDF5 files, CSV, figures, JSON,
``.keras``) and for directories (:func:`atomic_dir`: zarr stores);
:func:`check_overwrite` is the one "never overwrite without ``--overwrite``"
check for single-file outputs.

Temporary names: ``.NAME.tmp-XXXXXXXXXXXX[.suffix]`` (12 hex digits) for what
is being written and ``.NAME.old-XXXXXXXXXXXX`` for a directory being swapped
out; :func:`is_temporary_name` recognises exactly these (HDF5 datasets written
in place use the same names inside the file), and
:func:`remove_stale_temporaries` cleans what a killed writer left in a folder.

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
import re
import shutil
import uuid
from pathlib import Path

from fusionnet_keras.errors import FusionNetError, OutputExistsError


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree; never raises."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()


_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<tag>tmp|old)-[0-9a-f]{12}(\.[A-Za-z0-9]+)?$")


def temporary_name(name: str, tag: str = "tmp", suffix: str = "") -> str:
    """A fresh temporary name for ``name``: ``.NAME.TAG-<12 hex digits>SUFFIX``."""
    return f".{name}.{tag}-{uuid.uuid4().hex[:12]}{suffix}"


def is_temporary_name(name: str) -> bool:
    """True for the names :func:`atomic_path`, :func:`atomic_dir` and in-place writers use while writing."""
    return _TEMPORARY.match(name) is not None


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove what writers killed in ``folder`` left behind; return the removed paths.

    Call it only when no writer can be active in ``folder`` (e.g. when a run is
    resumed). Temporaries (``.NAME.tmp-*``) are removed; a directory swapped
    out by :func:`atomic_dir` (``.NAME.old-*``) is put back when the kill came
    before ``NAME`` was replaced, and removed otherwise.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if match is None:
            continue
        target = folder / match["target"]
        if match["tag"] == "old" and not (target.exists() or target.is_symlink()):
            os.rename(entry, target)
            continue
        _remove(entry)
        removed.append(entry)
    return removed


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
    suffix = path.suffix if suffix is None else suffix
    while True:
        tmp = path.parent / temporary_name(path.name, suffix=suffix)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name beside ``path`` (nothing is created)."""
    return path.parent / temporary_name(path.name, tag)


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
    :class:`FusionNetError` when it is a directory or cannot be created
    (:func:`check_writable_parent`).
    """
    path = Path(path)
    if path.is_dir():
        raise FusionNetError(f"output is a directory: {path}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"output exists: {path} (use --overwrite)")
    check_writable_parent(path)
    return path


def check_writable_parent(path) -> None:
    """:class:`FusionNetError` unless ``path`` can be created: its nearest existing ancestor must be a
    directory this process may write to (the missing folders between are created when writing)."""
    ancestor = Path(path).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise FusionNetError(f"cannot create {path}: {ancestor} is not a directory")
    if ancestor.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise FusionNetError(f"cannot write to directory {ancestor}: permission denied")


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_save_model(model, path) -> None:
    """``model.save(path)`` atomically (``path`` must end in ``.keras``)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
