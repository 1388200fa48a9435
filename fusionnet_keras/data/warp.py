"""Backend-agnostic warp primitives for the augmentation layers: seeds, the bilinear field
interpolation matrix and reflect-mode bilinear sampling (``keras.ops`` only)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fusionnet_keras.errors import FusionNetError


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
class _FixedSeed(keras.random.SeedGenerator):
    """A stand-in seed generator that always returns one given seed tensor.

    ``keras.random`` functions accept an int or a ``SeedGenerator``; this
    lightweight subclass lets us pass an explicit (possibly symbolic) seed
    tensor, which makes the random draws stateless. It deliberately does not
    call ``SeedGenerator.__init__`` (no state variable is created, so it can
    be constructed inside a compiled function or a ``tf.data`` map).
    """

    def __init__(self, seed_tensor):  # noqa: D401 - see class docstring
        self._seed_tensor = seed_tensor

    def next(self, ordered=True):
        return self._seed_tensor

    def get_config(self):  # pragma: no cover - never serialised
        raise TypeError("_FixedSeed is not serialisable")


def _explicit_seed(seed, dtype):
    """Convert an explicit seed (int or integer tensor) to a ``(2,)`` tensor."""
    if isinstance(seed, (bool, np.bool_)):
        raise FusionNetError(f"seed must be an integer or integer tensor, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        value = int(seed) & 0xFFFFFFFF
        if dtype == "int32":
            value = (value ^ 0x80000000) - 0x80000000
        return ops.convert_to_tensor(np.array([value, 0]), dtype=dtype)
    seed = ops.convert_to_tensor(seed)
    if len(seed.shape) == 0:
        seed = ops.stack([seed, ops.zeros_like(seed)])
    return ops.cast(seed, dtype)


def _seed_dtype(generator):
    return keras.backend.standardize_dtype(generator.state.dtype)


def _static_hw(tensor, what="image"):
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        raise FusionNetError(
            f"{what} must have shape (N, H, W, C), got shape {shape}"
        )
    height, width = shape[1], shape[2]
    if height is None or width is None:
        raise FusionNetError(
            f"{what} height and width must be known statically, got shape {shape}"
        )
    return int(height), int(width)


def interpolation_matrix(size, grid_size, method="bilinear"):
    """Return the ``(size, grid_size)`` matrix that upsamples a coarse grid.

    The coarse nodes are spread with "align corners" geometry: node 0 sits on
    pixel 0 and node ``grid_size - 1`` on pixel ``size - 1``, so a field whose
    border nodes are zero is exactly zero on the image border. ``method`` is
    ``"bilinear"`` (convex weights: the dense field never exceeds the coarse
    amplitude) or ``"bicubic"`` (Keys/Catmull-Rom cubic, interpolating, smoother
    but may overshoot slightly). Rows sum to one.
    """
    if grid_size < 2:
        raise FusionNetError(f"grid_size must be at least 2, got {grid_size}")
    if size < 1:
        raise FusionNetError(f"size must be at least 1, got {size}")
    matrix = np.zeros((size, grid_size), dtype=np.float64)
    if size == 1:
        t = np.zeros(1)
    else:
        t = np.arange(size, dtype=np.float64) * (grid_size - 1) / (size - 1)
    rows = np.arange(size)
    if method == "bilinear":
        i0 = np.clip(np.floor(t).astype(np.int64), 0, grid_size - 2)
        f = t - i0
        np.add.at(matrix, (rows, i0), 1.0 - f)
        np.add.at(matrix, (rows, i0 + 1), f)
    elif method == "bicubic":
        i0 = np.clip(np.floor(t).astype(np.int64), 0, grid_size - 1)
        f = t - i0
        weights = [
            -0.5 * f**3 + f**2 - 0.5 * f,
            1.5 * f**3 - 2.5 * f**2 + 1.0,
            -1.5 * f**3 + 2.0 * f**2 + 0.5 * f,
            0.5 * f**3 - 0.5 * f**2,
        ]
        for offset, w in zip((-1, 0, 1, 2), weights):
            idx = np.clip(i0 + offset, 0, grid_size - 1)
            np.add.at(matrix, (rows, idx), w)
    else:
        raise FusionNetError(
            f"interpolation must be 'bilinear' or 'bicubic', got {method!r}"
        )
    return matrix.astype(np.float32)


def _reflect_coordinates(coords, size):
    """Fold real coordinates into ``[0, size - 1]`` (numpy "reflect" mode)."""
    if size == 1:
        return ops.zeros_like(coords)
    period = 2.0 * (size - 1)
    coords = ops.abs(coords)
    coords = coords - period * ops.floor(coords / period)
    return ops.where(coords > size - 1, period - coords, coords)


def _bilinear_warp(x, rows, cols):
    """Sample ``x`` (N, H, W, C) at real coordinates ``rows``/``cols`` (N, H, W).

    Coordinates outside the image are reflected. Implemented with a gather on
    the flattened batch so it works on every backend.
    """
    height, width = _static_hw(x)
    channels = x.shape[-1]
    rows = _reflect_coordinates(rows, height)
    cols = _reflect_coordinates(cols, width)
    r0f = ops.floor(rows)
    c0f = ops.floor(cols)
    fr = ops.expand_dims(rows - r0f, -1)
    fc = ops.expand_dims(cols - c0f, -1)
    r0 = ops.clip(ops.cast(r0f, "int32"), 0, height - 1)
    c0 = ops.clip(ops.cast(c0f, "int32"), 0, width - 1)
    r1 = ops.minimum(r0 + 1, height - 1)
    c1 = ops.minimum(c0 + 1, width - 1)

    batch = ops.shape(x)[0]
    base = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    flat = ops.reshape(x, (-1, channels))

    def gather(r, c):
        idx = ops.reshape(base + r * width + c, (-1,))
        values = ops.take(flat, idx, axis=0)
        return ops.reshape(values, (-1, height, width, channels))

    top = gather(r0, c0) * (1.0 - fc) + gather(r0, c1) * fc
    bottom = gather(r1, c0) * (1.0 - fc) + gather(r1, c1) * fc
    return top * (1.0 - fr) + bottom * fr

