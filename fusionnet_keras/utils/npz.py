"""Reading the package's ``.npz`` files (classifiers, region graphs, resume points) with one-line errors."""

from __future__ import annotations

import os

import numpy as np

from fusionnet_keras.errors import FusionNetError

_ZIP_MAGIC = b"PK\x03\x04"


def _a(what: str) -> str:
    return f"an {what}" if what[:1].lower() in "aeiou" else f"a {what}"


def read_npz(path, what: str) -> dict:
    """Every array of the ``.npz`` file ``path`` (never unpickling anything).

    Raises a one-line :class:`FusionNetError` naming ``path`` as ``what`` (e.g.
    "agglomeration classifier") and the problem: missing, a folder, empty,
    truncated or damaged, not a ``.npz`` archive at all (e.g. a text file), or
    Python objects in it (which are not read).
    """
    import zipfile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FusionNetError(f"cannot read {what} {path}: file not found")
    if os.path.isdir(path):
        raise FusionNetError(f"{what} {path} is a directory, not a .npz file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        whole = zipfile.is_zipfile(path)
    except OSError as e:
        raise FusionNetError(f"cannot read {what} {path}: {e.strerror or type(e).__name__}") from None
    if not head:
        raise FusionNetError(f"{what} {path} is empty")
    if not whole and head == _ZIP_MAGIC:
        raise FusionNetError(f"{what} {path} is truncated or damaged (an incomplete .npz archive)")
    if not whole:
        raise FusionNetError(f"{path} is not {_a(what)} file (not a .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except ValueError as e:
        if "pickle" in str(e):  # numpy's hint is to unpickle it, which this package never does
            raise FusionNetError(f"{path} is not {_a(what)} file (it holds Python objects, which are not "
                                 "read)") from None
        text = " ".join(str(e).split())[:200]
    except MemoryError:
        raise FusionNetError(f"cannot read {what} {path}: not enough memory") from None
    except Exception as e:  # a damaged member: bad CRC, zlib error, bad array header
        text = " ".join(str(e).split())[:200] or type(e).__name__
    raise FusionNetError(f"{what} {path} is damaged ({text})")
