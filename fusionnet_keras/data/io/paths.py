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


def natural_sort_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``s2`` < ``s10``)."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)] + [name]


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


def same_data(a, b) -> bool:
    """Whether specs ``a`` and ``b`` name the same data: the same file, or the same dataset of a container.

    For a container, a spec without ``:NAME`` matches one naming the default
    dataset (``data``) or none. Used to refuse writing an output over the input
    it is computed from.
    """
    (fa, ka), (fb, kb) = parse_path(a), parse_path(b)
    try:
        same_file = fa.resolve() == fb.resolve() or (fa.exists() and fb.exists() and os.path.samefile(fa, fb))
    except OSError:
        same_file = False
    if not same_file:
        return False
    if fa.suffix.lower() not in CONTAINER_EXTS:
        return True
    return (ka or DEFAULT_H5_DATASET) == (kb or DEFAULT_H5_DATASET)


def check_not_input(output, *inputs) -> None:
    """:class:`FusionNetError` if ``output`` names the same data as one of ``inputs``."""
    for spec in inputs:
        if spec is not None and same_data(output, spec):
            raise FusionNetError(f"output {output} is the input {spec}; write the result elsewhere")


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    text = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        text += f", ... ({len(names)} in all)"
    return text

