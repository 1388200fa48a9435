"""Paths and formats: ``file.h5:dataset`` / ``volume.zarr:group/array`` specs, extensions, messages."""

from __future__ import annotations

import contextlib

import os
import re
from pathlib import Path
from typing import Sequence

from fusionnet_keras.errors import FusionNetError

TIFF_EXTS = (".tif", ".tiff")


PNG_EXTS = (".png",)


HDF5_EXTS = (".h5", ".hdf5", ".hdf")


ZARR_EXTS = (".zarr",)


SECTION_EXTS = PNG_EXTS + TIFF_EXTS


CONTAINER_EXTS = HDF5_EXTS + ZARR_EXTS


READ_EXTS = TIFF_EXTS + PNG_EXTS + HDF5_EXTS + ZARR_EXTS




DEFAULT_H5_DATASET = "data"


_READ_HINT = "use .tif/.tiff, .png, .h5/.hdf5, .zarr or a directory of sections"


_WRITE_HINT = "use .tif/.tiff, .h5/.hdf5 or .zarr"


_MAX_LISTED = 10


_CHUNK_XY = 512


def _reason(exc: BaseException) -> str:
    """A short, single-line description of ``exc``."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc).strip()
    text = " ".join(text.split())  # one line
    if not text:
        text = type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


@contextlib.contextmanager
def user_errors(what: str, passthrough: tuple = ()):
    """Turn a library error raised in the block (corrupt file, full disk, ...) into the one-line
    :class:`FusionNetError` ``"{what}: {reason}"``; FusionNetError and ``passthrough`` pass unchanged."""
    try:
        yield
    except (FusionNetError, *passthrough):
        raise
    except MemoryError:
        raise FusionNetError(f"{what}: not enough memory") from None
    except Exception as exc:
        raise FusionNetError(f"{what}: {_reason(exc)}") from exc


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``s2`` < ``s10``), for any two names.

    The name's text and number parts alternate (text first), so two keys compare
    text with text and numbers with numbers (``raw`` < ``raw2``); the name itself
    breaks ties (``s01`` and ``s1``).
    """
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def _display(path: Path, key: str | None) -> str:
    return f"{path}:{key}" if key else str(path)


def parse_path(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``file.h5:dataset`` / ``volume.zarr:group/array`` into (path, key).

    The spec is split at the first colon whose left part ends in an HDF5 or zarr
    extension (``.h5``, ``.hdf5``, ``.hdf``, ``.zarr``, any case). Anything else
    (plain paths, Windows drive letters such as ``C:\\data\\x.tif``, or a path
    that exists as written) is returned unsplit with key ``None``. Leading and
    trailing ``/`` are stripped from the key; an empty key becomes ``None``.
    """
    if isinstance(spec, Path):
        text = str(spec)
    else:
        try:
            text = os.fspath(spec)
        except TypeError:
            raise FusionNetError(f"invalid path: {spec!r}") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = text.strip()
    if not text:
        raise FusionNetError("empty path")
    whole = Path(text).expanduser()
    if ":" in text and not whole.exists():
        for match in re.finditer(":", text):
            head = text[: match.start()]
            if head.lower().endswith(CONTAINER_EXTS):
                key = text[match.end():].strip().strip("/")
                return Path(head).expanduser(), (key or None)
    return whole, None


def _real(path) -> str:
    """``path`` made absolute with every symbolic link resolved (``..`` and ``~`` too), as a string."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _is_zarr_store(path: Path) -> bool:
    return path.suffix.lower() in ZARR_EXTS or (
        path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")))


def _member_read(file: Path, hdf5: bool) -> str | None:
    """The dataset (array) a reader takes from a container given without ``:NAME`` (its only one), or
    None when that is not known here (several, none, unreadable: the reader says so)."""
    from fusionnet_keras.data.io import containers

    try:
        if hdf5:
            with containers.open_h5(file, "r", timeout=0) as f:
                names = containers.h5_datasets(f)
        else:
            import zarr

            node = zarr.open(store=str(file), mode="r")
            if not containers.zarr_is_group(node):
                return ""  # the store is the array
            names = containers.zarr_arrays(node)
    except Exception:  # unreadable, locked, ...: the reader reports it
        return None
    return names[0] if len(names) == 1 else None


class _Place:
    """Where a spec's data live: ``path`` (a real path: a file, a folder, a zarr array's folder) and,
    inside an HDF5 file, ``inner`` (the dataset's key parts; None: the whole path). ``known`` is False
    for a container read without ``:NAME`` whose dataset cannot be told (it then overlaps only an
    output that replaces the whole container)."""

    def __init__(self, path: str, inner: tuple | None = None, known: bool = True):
        self.path, self.inner, self.known = path, inner, known

    def same_file(self, other: "_Place") -> bool:
        if self.path == other.path:
            return True
        try:
            return os.path.exists(self.path) and os.path.exists(other.path) and os.path.samefile(self.path,
                                                                                                other.path)
        except OSError:
            return False

    def inside(self, other: "_Place") -> bool:
        """Whether this place lies in the folder ``other``."""
        return self.path.startswith(other.path.rstrip(os.sep) + os.sep)


def _place(spec, *, output: bool, whole: bool) -> _Place:
    """The :class:`_Place` of an input (``output`` False) or output spec; ``whole``: a file or folder
    read or written as a whole at that literal path (a table, a classifier, a run folder): no
    ``:dataset`` part."""
    if whole:
        return _Place(_real(spec))
    file, key = parse_path(spec)
    suffix = file.suffix.lower()
    if suffix in HDF5_EXTS:
        if key is None:
            key = DEFAULT_H5_DATASET if output else _member_read(file, hdf5=True)
            if key is None:
                return _Place(_real(file), None, known=False)
        return _Place(_real(file), tuple(p for p in key.split("/") if p))
    if suffix in ZARR_EXTS or (not output and _is_zarr_store(file)):
        if key is None and not output and file.exists():
            key = _member_read(file, hdf5=False)
            if key is None:
                return _Place(_real(file), known=False)
        return _Place(_real(file / key if key else file))
    return _Place(_real(file))


def _conflict(out: _Place, inp: _Place) -> str | None:
    """How writing ``out`` would change ``inp``: "is", "holds", "is inside"; None if it would not."""
    if out.same_file(inp):
        if out.inner is not None and inp.inner is not None:  # two datasets of one HDF5 file
            n = min(len(out.inner), len(inp.inner))
            if out.inner[:n] != inp.inner[:n]:
                return None
            return "is" if len(out.inner) == len(inp.inner) else "holds" if len(out.inner) < len(inp.inner) \
                else "is inside"
        if out.inner is not None and not inp.known:  # a dataset added beside the one read
            return None
        return "is"
    if inp.inside(out):
        return "holds"
    if inp.known and out.inside(inp):
        return "is inside"
    return None


def check_not_input(output, *inputs, whole: bool = False, files=()) -> None:
    """:class:`FusionNetError` if writing ``output`` would change one of the inputs, even with ``--overwrite``.

    The check every command that writes runs before any work: an output must not
    be an input, resolved through symbolic and hard links and relative paths: not
    the same file, not the same HDF5 dataset or zarr array (``file.h5:dataset``,
    ``x.zarr:group/array``; a container given without ``:NAME`` is its default
    output dataset ``data`` as an output and the dataset a reader takes from it
    as an input), not a folder or group holding an input (replacing it would
    delete the input) and not inside an input's folder (a section folder, a zarr
    array). Writing another dataset into an input's HDF5 file or zarr group is
    allowed.

    Args:
        output: what the command writes: a volume spec (``file.h5:dataset``,
            ``x.zarr:array``, ``x.tif``), or with ``whole`` a file or folder
            written as a whole at that literal path (a CSV table, a classifier,
            a run folder).
        inputs: volume specs the command reads (None is skipped).
        files: files the command reads whole at their literal path (weights,
            a classifier, a configuration).
    """
    if output is None:
        return
    out = _place(output, output=True, whole=whole)
    candidates = [(spec, False) for spec in inputs if spec is not None]
    candidates += [(spec, True) for spec in files if spec is not None]
    for spec, is_file in candidates:
        how = _conflict(out, _place(spec, output=False, whole=is_file))
        if how is not None:
            raise FusionNetError(f"output {output} {how} the input {spec}; write the result elsewhere (--overwrite "
                                 "never replaces an input)")


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    text = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        text += f", ... ({len(names)} in all)"
    return text

