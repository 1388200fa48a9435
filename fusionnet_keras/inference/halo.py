"""Blockwise prediction with context: torch-em's ``predict_with_halo`` on the global tile grid.

Built on :class:`fusionnet_keras.inference.tiling.TilePlan` (``mode="grid"``)
and :func:`~fusionnet_keras.inference.tiling.read_block`: each block is read
lazily with its halo (mirrored past the array edge), passed to a function (a
network), and its core written into any array-like (numpy, h5py, zarr). The
3-D affinity predictor and the blockwise volume runner build on it.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.inference.tiling import TilePlan, with_channel, spatial_axes, read_block

__all__ = ["predict_with_halo"]



def _detect_trim(plan, y_shape, out_channel_axis):
    """``(trim, channel_axis, channels)`` from the shape of the first network output."""
    n = plan.ndim
    if len(y_shape) == n:
        channel_axis, spatial = None, tuple(y_shape)
    elif len(y_shape) == n + 1 and out_channel_axis is not None:
        channel_axis = out_channel_axis % (n + 1)
        spatial = tuple(s for a, s in enumerate(y_shape) if a != channel_axis)
    else:
        raise FusionNetError(f"fn returned shape {tuple(y_shape)} for a block of shape {plan.window}")
    excess = [w - s for w, s in zip(plan.window, spatial)]
    if any(e < 0 or e % 2 for e in excess):
        raise FusionNetError(
            f"fn returned spatial shape {spatial} for a block of shape {plan.window}: expected the same "
            "shape or one smaller by the same amount on both sides of each axis"
        )
    channels = None if channel_axis is None else y_shape[channel_axis]
    return tuple(e // 2 for e in excess), channel_axis, channels


def predict_with_halo(array, fn, block_shape, halo, *, out=None, multiple=1, origin=0, region=None,
                      channel_axis=None, out_channel_axis=0, dtype="float32", progress=False):
    """Apply ``fn`` block by block with context (torch-em's ``predict_with_halo``), on a global grid.

    Each block of ``block_shape`` (a :class:`TilePlan` in ``grid`` mode) is read
    with ``halo`` voxels of context, mirrored past the array edge
    (:func:`read_block`: only that block is read, so ``array`` can be a huge
    h5py/zarr dataset), passed to ``fn``, and its core written into ``out``.
    Every output voxel is written exactly once. With ``halo`` at least the
    network's receptive field and ``block_shape`` a multiple of ``multiple``,
    the result does not depend on ``block_shape``, ``origin`` held fixed,
    nor on which blocks are computed together (``region``).

    Args:
        array: input array-like with ``shape`` and slicing (numpy, memmap,
            h5py, zarr, :class:`fusionnet_keras.io.Volume`).
        fn: maps an input block (numpy, the window shape, with the channel axis
            of ``array`` if any) to an output block: either the same spatial
            shape ("same" networks) or smaller by the same amount on both sides
            of each axis ("valid" networks; at most ``halo``), optionally with
            a channel axis at ``out_channel_axis``.
        block_shape: core shape (int or per axis), a multiple of ``multiple``.
        halo: context per side: int, per axis, or ``(before, after)`` per axis.
        out: array-like to write into (spatial shape of ``array``, plus the
            channel axis of ``fn``'s output); default a new numpy array.
        multiple: grid multiple per axis (pooling factor of the network).
        origin: global grid origin; keep it fixed for all blocks of one volume.
        region: slices of the array to produce (default everything).
        channel_axis: non-spatial axis of ``array`` (read whole), or None.
        out_channel_axis: where ``fn``'s output has its channel axis, if it has one.
        dtype: dtype of the new ``out``.
        progress: show a tqdm progress bar over blocks.

    Returns:
        ``out``.

    Examples:
        >>> x = np.random.default_rng(0).random((20, 30), dtype=np.float32)
        >>> box = lambda b: (b[:-2, 1:-1] + b[1:-1, 1:-1] + b[2:, 1:-1]) / 3  # "valid" 3x1 mean
        >>> y = predict_with_halo(x, box, block_shape=8, halo=(1, 1))
        >>> y.shape, bool(np.allclose(y[5, 5], x[4:7, 5].mean()))
        ((20, 30), True)
    """
    shape = tuple(array.shape)
    spatial = tuple(shape[a] for a in spatial_axes(len(shape), channel_axis))
    plan = TilePlan(spatial, block_shape, halo, multiple=multiple, origin=origin, region=region)
    tiles = iter(plan)
    first = next(tiles)
    y = np.asarray(fn(read_block(array, first.read, channel_axis)))
    trim, y_axis, channels = _detect_trim(plan, y.shape, out_channel_axis)
    plan = plan.with_trim(trim)
    out_shape = spatial if y_axis is None else spatial[:y_axis] + (channels,) + spatial[y_axis:]
    if out is None:
        out = np.zeros(out_shape, dtype)
    elif tuple(out.shape) != out_shape:
        raise FusionNetError(f"out has shape {tuple(out.shape)}, expected {out_shape}")
    steps = iter(plan)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=len(plan), desc="blocks", unit="block")
    expected = plan.output_window
    if y_axis is not None:
        expected = expected[:y_axis] + (channels,) + expected[y_axis:]
    for i, tile in enumerate(steps):
        if i:
            y = np.asarray(fn(read_block(array, tile.read, channel_axis)))
        if y.shape != expected:
            raise FusionNetError(f"fn returned shape {y.shape} for block {tile.index}, expected {expected}")
        out[with_channel(tile.write, y_axis, len(out_shape))] = y[with_channel(tile.crop, y_axis, y.ndim)]
    return out
