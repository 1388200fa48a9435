"""Grey images and stacks: shape checks and intensity normalisation to float32 [0, 1]."""

from __future__ import annotations

import os

import numpy as np

from fusionnet_keras.data.io.volumes import Volume, open_volume
from fusionnet_keras.errors import FusionNetError


def _check_image_shape(shape, dtype, name, channel_axis=None) -> None:
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    if dtype.names or dtype.kind not in "biuf":
        raise FusionNetError(f"unsupported data type {dtype} in {name}; expected integer, float or bool")
    ndim = len(shape)
    if ndim < 2:
        raise FusionNetError(
            f"expected a 2-D image or 3-D stack (Z, H, W), got {ndim}-D shape {shape} in {name}"
        )
    if 0 in shape:
        raise FusionNetError(f"empty image (shape {shape}) in {name}")
    looks_rgb = shape[-1] in (3, 4) and ndim >= 3 and min(shape[-3], shape[-2]) > 4
    colour = channel_axis is not None or (ndim == 3 and looks_rgb) or (ndim == 4 and shape[-1] in (3, 4))
    if colour and ndim >= 3:
        raise FusionNetError(
            f"{name} looks like a colour (RGB/RGBA) image, shape {shape}; convert to greyscale first"
        )
    if ndim > 3:
        raise FusionNetError(
            f"expected a 2-D image or 3-D stack (Z, H, W), got {ndim}-D shape {shape} in {name}"
        )


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise FusionNetError(f"{name} contains NaN or infinite values")


def open_image(path: str | os.PathLike) -> Volume:
    """Like :func:`open_volume`, but check that it is a grey 2-D image or 3-D stack.

    Only the shape and dtype are checked (nothing is read); values are not checked
    for NaN/inf. For chunked processing of volumes too large for memory.
    """
    vol = open_volume(path)
    try:
        _check_image_shape(vol.shape, vol.dtype, vol.name, vol.channel_axis)
    except BaseException:
        vol.close()
        raise
    return vol


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a grey image (H, W) or stack (Z, H, W), validated, dtype as stored.

    Raises :class:`FusionNetError` for colour images, arrays that are not 2-D or
    3-D, empty arrays, non-numeric dtypes and NaN/infinite values.
    """
    with open_image(path) as vol:
        arr = vol.read()
        _check_finite(arr, vol.name)
    return arr


def normalize(array) -> np.ndarray:
    """Convert an image to ``float32`` in ``[0, 1]`` by the module's documented rule."""
    a = np.asarray(array)
    kind = a.dtype.kind
    if kind == "b":
        return a.astype(np.float32)
    if kind not in "uif":
        raise FusionNetError(f"cannot normalise data type {a.dtype}; expected integer, float or bool")
    if a.size == 0:
        return a.astype(np.float32)
    if kind == "u" or (kind == "i" and a.min() >= 0):
        top = np.iinfo(a.dtype).max
        if a.dtype.itemsize <= 2:
            return a.astype(np.float32) / np.float32(top)
        return (a.astype(np.float64) / float(top)).astype(np.float32)
    if kind == "f":
        if not np.isfinite(a).all():
            raise FusionNetError("cannot normalise an image with NaN or infinite values")
        lo, hi = a.min(), a.max()
        if lo >= 0 and hi <= 1:
            return a.astype(np.float32)
    else:
        lo, hi = a.min(), a.max()
    if lo == hi:
        return np.zeros(a.shape, dtype=np.float32)
    work = np.float32 if a.dtype in (np.float16, np.float32) else np.float64
    lo, hi = work(lo), work(hi)
    out = (a.astype(work) - lo) / (hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def as_probability(array, name: str) -> np.ndarray:
    """``array`` as float32 in [0, 1]: integers scaled by their dtype maximum (uint8 / 255), floats
    checked, not rescaled: values outside [0, 1] (logits, NaN) are a :class:`FusionNetError`.

    The reading of probability maps and affinities, unlike :func:`normalize` (images), which
    min-max rescales any float range.
    """
    a = np.asarray(array)
    if a.dtype.names or a.dtype.kind not in "biuf":
        raise FusionNetError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.size == 0:
        raise FusionNetError(f"{name} is empty (shape {tuple(a.shape)})")
    if a.dtype.kind == "b":
        return a.astype(np.float32)
    if a.dtype.kind in "iu":
        if a.min() < 0:
            raise FusionNetError(f"{name} has negative values (dtype {a.dtype}); expected values in [0, 1]")
        return (a / np.float64(np.iinfo(a.dtype).max)).astype(np.float32)
    a = a.astype(np.float32, copy=False)
    bad = np.count_nonzero(~np.isfinite(a))
    if bad:
        raise FusionNetError(f"{name} contains {bad} NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise FusionNetError(
            f"{name} values must lie in [0, 1], found range [{lo:g}, {hi:g}] (apply a sigmoid to logits first)"
        )
    return a


def load_probability(path: str | os.PathLike) -> np.ndarray:
    """:func:`read_image` followed by :func:`as_probability`: float32 in [0, 1], or an error naming the file."""
    with open_image(path) as vol:
        return as_probability(vol.read(), vol.name)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """:func:`read_image` followed by :func:`normalize`: float32 in [0, 1]."""
    return normalize(read_image(path))

