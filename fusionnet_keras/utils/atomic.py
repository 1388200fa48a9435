"""Atomic writes: write to a temporary file in the target's directory, then rename.

A reader (or a run resumed after ``kill -9``) sees either the old file or the
complete new one, never a partial write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``suffix`` defaults to the target's suffix (some writers infer the format
    from it, e.g. Keras needs ``.keras``).
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
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save_model(model, path) -> None:
    """``model.save(path)`` atomically (``path`` must end in ``.keras``)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
