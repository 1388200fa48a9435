"""One writer at a time per container: an exclusive advisory lock on a hidden file beside it.

HDF5 files and zarr groups hold several datasets that different processes may
write (``predict ... out.h5:a`` and ``predict ... out.h5:b`` at once). Every
writer of the package holds :func:`exclusive_lock` on the container while it
adds its dataset, so none can drop another's: the second waits until the first
is done (up to ``$FUSIONNET_LOCK_TIMEOUT`` seconds, default 600), then adds
its own. The lock is ``flock`` on ``.NAME.lock`` beside the container, which
exists only while a writer holds it (a process killed with ``-9`` releases its
lock and leaves the empty file, which the next writer reuses).

A blockwise run holds :func:`claim` on each of its outputs for the whole run
(``.NAME.run.lock``): a second run into the same output is refused at once,
naming the process that holds it, instead of computing every block again.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.h5"
    >>> with exclusive_lock(target):
    ...     print(sorted(p.name for p in target.parent.iterdir()))
    ['.out.h5.lock']
    >>> sorted(p.name for p in target.parent.iterdir())
    []
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from fusionnet_keras.errors import FusionNetError

_POLL = 0.02  # s between attempts
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def lock_path(target) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` in the same folder."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def wait_until(attempt, what: str, timeout: float | None = None):
    """Call ``attempt()`` until it returns something other than None; that value.

    Raises :class:`FusionNetError` naming ``what`` after ``timeout`` seconds
    (default: :func:`fusionnet_keras.settings.lock_timeout`).
    """
    from fusionnet_keras.settings import LOCK_TIMEOUT_ENV, lock_timeout

    timeout = lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise FusionNetError(
                f"{what} is in use by another process after waiting {timeout:g} s; try again later "
                f"(or set {LOCK_TIMEOUT_ENV})"
            )
        time.sleep(_POLL)


def _acquire(path: Path):
    """One attempt: the descriptor of ``path`` locked by us, or None if another process holds it.

    The holder removes the lock file when it is done; a waiter that locked the
    removed file (not the one now at ``path``) lets go and tries again.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if _try_lock(fd):
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


@contextlib.contextmanager
def exclusive_lock(target, timeout: float | None = None):
    """Hold the exclusive lock of ``target`` (a file or folder that need not exist yet) in the block.

    Waits while another process holds it; :class:`FusionNetError` after
    ``timeout`` seconds. Where the lock file cannot be created (a read-only
    folder) the block runs unlocked: nothing can be created there either, and
    HDF5's own file locking still keeps two writers of one file apart.
    """
    path = lock_path(target)
    try:
        fd = wait_until(lambda: _acquire(path), str(target), timeout)
    except OSError as e:
        if e.errno not in _READ_ONLY:
            raise
        yield
        return
    try:
        yield
    finally:
        _release(path, fd)


def _release(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # before the release, so no waiter keeps a removed file locked for long
    os.close(fd)


@contextlib.contextmanager
def claim(target, what: str | None = None):
    """Hold ``target`` (an output) for one run; :class:`FusionNetError` at once if another run holds it.

    The lock is ``.NAME.run.lock`` beside ``target`` (apart from the writers'
    :func:`exclusive_lock`, which the run takes for its writes); it holds the
    process id of the run, named in the error. ``what`` names the output in it.
    """
    target = Path(target)
    path = target.parent / f".{target.name}.run.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path)
    except OSError as e:
        if e.errno not in _READ_ONLY:
            raise
        yield  # nothing can be written there either: the run fails on its own
        return
    if fd is None:
        try:
            holder = f" (process {int(path.read_text().strip())})"
        except (OSError, ValueError):
            holder = ""
        raise FusionNetError(f"{what or target} is being written by another run{holder}; wait until it ends, "
                             "then run again (finished blocks are kept)")
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        _release(path, fd)
