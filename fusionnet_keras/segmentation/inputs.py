"""Inputs of the segmentation: affinities, boundary maps, fragments and labels, read and checked.

Conventions (waterz / gunpowder):

* **Affinities** are a float array ``(3, Z, Y, X)`` in ``[0, 1]`` in the
  project's one affinity convention, :mod:`fusionnet_keras.data.affinities`
  (channels (z, y, x); channel ``c`` at voxel ``v`` links ``v`` and ``v - e_c``;
  the first slice along each channel's axis is not an edge).
* A **boundary map** is a ``(Z, Y, X)`` array, high = boundary (``invert``
  when high = interior, e.g. a membrane network's "cell interior"
  probability). It becomes affinities as ``1 - max(b(v), b(v - e_c))``.
* Integer inputs are scaled by their dtype's maximum (uint8 / 255); floats
  must already lie in ``[0, 1]`` (logits are refused, not rescaled).

Every problem raises :class:`~fusionnet_keras.errors.FusionNetError` with a
one-line message.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.data.io.images import as_probability
from fusionnet_keras.errors import FusionNetError

#: Names of the affinity channels, in order.
CHANNELS = ("z", "y", "x")


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def boundary_to_affinities(boundary, invert: bool = False) -> np.ndarray:
    """Affinities ``(3, Z, Y, X)`` from a boundary map: ``1 - max(b(v), b(v - e_c))``.

    Args:
        boundary: ``(Z, Y, X)`` boundary probability (high = boundary), in [0, 1].
        invert: the map is high = interior; use ``1 - boundary``.

    Examples:
        >>> b = np.zeros((2, 3, 3), np.float32); b[:, :, 1] = 1
        >>> boundary_to_affinities(b)[2, 0, 0].tolist()   # x-affinities of row 0
        [0.0, 0.0, 0.0]
    """
    b = as_probability(boundary, "boundary map")
    if b.ndim != 3:
        raise FusionNetError(f"a boundary map must be 3-D (Z, Y, X), got shape {_shape(b.shape)}")
    if invert:
        b = 1.0 - b
    affs = np.zeros((3,) + b.shape, dtype=np.float32)
    for c in range(3):
        here = [slice(None)] * 3
        there = [slice(None)] * 3
        here[c] = slice(1, None)
        there[c] = slice(None, -1)
        np.maximum(b[tuple(here)], b[tuple(there)], out=affs[(c, *here)])
        np.subtract(1.0, affs[(c, *here)], out=affs[(c, *here)])
    return affs


def as_affinities(array, invert: bool = False, name: str = "input") -> np.ndarray:
    """Affinities ``(3, Z, Y, X)`` float32 from affinities or a ``(Z, Y, X)`` boundary map.

    A 4-D array must have 3 channels first (z, y, x); a 3-D array is a boundary
    map (see :func:`boundary_to_affinities`); ``invert`` flips either
    (``1 - x``: affinities given as boundary probabilities, or a map that is
    high on the interior).

    Examples:
        >>> as_affinities(np.ones((3, 2, 4, 4), np.float32)).shape
        (3, 2, 4, 4)
    """
    a = np.asarray(array)
    if a.ndim == 3:
        return boundary_to_affinities(a, invert=invert)
    if a.ndim != 4:
        raise FusionNetError(
            f"{name} must be affinities (3, Z, Y, X) or a boundary map (Z, Y, X), got shape {_shape(a.shape)}"
        )
    if a.shape[0] != 3:
        raise FusionNetError(
            f"{name} has {a.shape[0]} channels (shape {_shape(a.shape)}); affinities need 3 (z, y, x) first"
        )
    a = as_probability(a, name)
    return 1.0 - a if invert else np.ascontiguousarray(a)


def load_affinities(path, invert: bool = False) -> np.ndarray:
    """Read affinities or a boundary map from any format of :mod:`fusionnet_keras.data.io`."""
    from fusionnet_keras.data.io import open_volume

    with open_volume(path) as vol:
        return as_affinities(vol.read(), invert=invert, name=vol.name)


def check_labels(array, name: str = "labels", shape=None) -> np.ndarray:
    """An integer label volume (any integer dtype, or floats holding whole numbers) as int64/uint64.

    Negative values are refused; ``shape`` (Z, Y, X), when given, must match.
    """
    a = np.asarray(array)
    if a.size == 0:
        raise FusionNetError(f"{name} is empty (shape {_shape(a.shape)})")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise FusionNetError(f"{name} contains NaN or infinite values; expected integer labels")
        if not np.all(a == np.round(a)):
            raise FusionNetError(f"{name} must be integer labels, got dtype {a.dtype} with fractional values")
        a = a.astype(np.int64)
    elif a.dtype.kind == "b":
        a = a.astype(np.uint8)
    elif a.dtype.kind not in "iu":
        raise FusionNetError(f"{name} must be integer labels, got dtype {a.dtype}")
    if a.ndim != 3:
        raise FusionNetError(f"{name} must be a 3-D (Z, Y, X) label volume, got shape {_shape(a.shape)}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise FusionNetError(f"{name} shape {_shape(a.shape)} differs from the affinities' {_shape(shape)}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise FusionNetError(f"{name} has negative values")
    return a.astype(np.uint64, copy=False)


def load_labels(path, name: str = "labels", shape=None) -> np.ndarray:
    """Read and check a label volume (fragments, ground truth), as uint64."""
    from fusionnet_keras.data.io import open_volume

    with open_volume(path) as vol:
        return check_labels(vol.read(), f"{name} {vol.name}", shape=shape)
