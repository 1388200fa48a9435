"""Argument validators shared by the whole package (one implementation each)."""

from __future__ import annotations

import os

import numpy as np

from fusionnet_keras.errors import FusionNetError


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None, allow_none: bool = False):
    """``value`` as a Python int, or :class:`FusionNetError` naming ``name``.

    Booleans are refused (``True`` is not a size); numpy integers are accepted.
    ``None`` is returned as is when ``allow_none``.

    Examples:
        >>> check_int("tile", np.int64(64), minimum=16)
        64
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise FusionNetError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise FusionNetError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise FusionNetError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def check_weights_path(path) -> str:
    """``path`` as a string if it names an existing, readable ``.keras`` file; :class:`FusionNetError` otherwise.

    Cheap (nothing is read), so commands call it before any heavy work.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FusionNetError(f"weights not found: {path}")
    if os.path.isdir(path):
        raise FusionNetError(f"weights {path} is a directory; give a .keras file saved by fusionnet-keras")
    if not path.endswith(".keras"):
        raise FusionNetError(f"weights must be a .keras file saved by fusionnet-keras, got {path}")
    if not os.access(path, os.R_OK):
        raise FusionNetError(f"cannot read weights {path}: permission denied")
    return path
