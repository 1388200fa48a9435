"""One tiling core for any number of dimensions: tile plans, mirrored lazy reads, blockwise prediction.

A :class:`TilePlan` cuts the spatial axes of an array (2-D sections, 3-D
blocks, any ``N``) into :class:`Tile` s in the spirit of CSBDeep's
``tile_iterator`` and torch-em's ``predict_with_halo(block_shape, halo)``.
Each tile names

* ``read``: the network input region (array coordinates; it may reach past the
  array, where the voxels are mirrored, see :func:`read_block`),
* ``write``: the output region it produces (array coordinates, inside the array),
* ``crop``: the part of the network output that lands in ``write``,
* ``weights``: separable blend weights over ``write`` (or ``None`` = 1).

Two placements share these tiles:

``mode="grid"`` (blockwise, 3-D, any network)
    Cores of exactly ``tile`` voxels on a regular grid that starts at the
    global ``origin``; every read is the core grown by ``halo`` (all reads have
    one shape). Past the array edge the input is mirrored, so the last core may
    stick out (its output is cropped) and arrays smaller than a tile work.
    Because the grid is anchored at one global origin and ``tile`` is a
    multiple of the network's grid ``multiple`` (its pooling factor), every read
    starts on the same pooling grid: with ``halo`` at least the receptive field,
    a block computed alone (``region=``) gives the numbers the whole volume
    gives there, for any tile shape. Works for "same" networks (output = input
    size) and "valid" ones (output smaller by ``trim`` per side, e.g. a 3-D
    U-Net mapping (33, 204, 204) to (3, 116, 116)).

``mode="fit"`` (the 2-D predictor's padded sections)
    Windows of one size placed inside the array, which is an already padded
    frame: starts are multiples of ``multiple`` and windows at the frame edge
    end there (the network sees the frame edge exactly as when it runs on the
    whole frame); inner window edges give up ``halo`` voxels, and neighbouring
    windows cross-fade with linear ramps where their kept parts overlap. With
    ``halo`` at least the receptive field this equals the whole-frame result.

:func:`fusionnet_keras.inference.halo.predict_with_halo` runs a function
block by block on a ``grid`` plan. Mirroring follows ``numpy.pad(mode="reflect")``: ``(d c b | a b c d | c b a)``,
the edge voxel not repeated, and repeated reflection for pads larger than the
array (:func:`reflect_indices`). The Keras ``mirror_pad`` of the training graph
and the ``tf.data`` pipeline use the same convention.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int

__all__ = [
    "Tile",
    "TilePlan",
    "reflect_indices",
    "read_block",
    "frame_widths",
    "pad_for_model",
    "spatial_axes",
    "with_channel",
]

MODES = ("grid", "fit")


# ----------------------------------------------------------------------------
# mirrored, lazy reads


def reflect_indices(indices, size):
    """Map integer positions onto ``[0, size)`` by mirror reflection (``numpy.pad(mode="reflect")``).

    Position ``-1`` maps to ``1``, ``size`` to ``size - 2``, and so on with
    period ``2 * (size - 1)``, which equals numpy's repeated reflection for pads
    larger than the axis. A one-voxel axis maps everything to ``0``.

    Examples:
        >>> reflect_indices(np.arange(-3, 7), 4).tolist()
        [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    """
    indices = np.asarray(indices, dtype=np.int64)
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= size, period - folded, folded)


def spatial_axes(ndim, channel_axis):
    """The axes of an ``ndim`` array other than ``channel_axis`` (None: all)."""
    if channel_axis is None:
        return tuple(range(ndim))
    if not -ndim <= channel_axis < ndim:
        raise FusionNetError(f"channel_axis {channel_axis} is out of range for a {ndim}-D array")
    channel = channel_axis % ndim
    return tuple(a for a in range(ndim) if a != channel)


def with_channel(spatial, channel_axis, ndim):
    """An index of an ``ndim`` array: ``spatial`` slices plus ``:`` on the channel axis."""
    index = list(spatial)
    if channel_axis is not None:
        index.insert(channel_axis % ndim, slice(None))
    return tuple(index)


def read_block(array, region, channel_axis=None):
    """Read ``region`` of ``array`` into memory; voxels outside the array are mirrored.

    Reads only the bounding box of the (mirrored) voxels, with one basic-slicing
    call, so ``array`` may be anything with ``shape`` and numpy slicing: a numpy
    array or memmap, an h5py or zarr dataset, a :class:`fusionnet_keras.io.Volume`.

    Args:
        array: the array-like.
        region: one ``slice(start, stop)`` per spatial axis, in array
            coordinates; ``start`` may be negative and ``stop`` past the end.
        channel_axis: axis of ``array`` that is not spatial (read whole), or None.

    Returns:
        numpy array of the region's shape (with the channel axis in place).

    Examples:
        >>> read_block(np.arange(5), (slice(-2, 7),)).tolist()
        [2, 1, 0, 1, 2, 3, 4, 3, 2]
    """
    shape = tuple(array.shape)
    axes = spatial_axes(len(shape), channel_axis)
    if len(region) != len(axes):
        raise FusionNetError(f"a region of {len(region)} axes does not fit an array of shape {shape}")
    box, picks = [], []
    for s, axis in zip(region, axes):
        size = shape[axis]
        s = slice(0 if s.start is None else s.start, size if s.stop is None else s.stop)
        if s.stop <= s.start:
            raise FusionNetError(f"empty region {region}")
        if 0 <= s.start and s.stop <= size:
            box.append(slice(s.start, s.stop))
            picks.append(None)
            continue
        idx = reflect_indices(np.arange(s.start, s.stop), size)
        low = int(idx.min())
        box.append(slice(low, int(idx.max()) + 1))
        picks.append(idx - low)
    block = np.asarray(array[with_channel(box, channel_axis, len(shape))])
    for axis, pick in zip(axes, picks):
        if pick is not None:
            block = np.take(block, pick, axis=axis)
    return block


def frame_widths(shape, pad, multiple):
    """Mirror widths ``((before, after), ...)`` that pad ``shape`` by ``pad`` and up to a multiple.

    Each axis gets ``pad`` voxels on both sides plus the extra needed to reach a
    multiple of ``multiple``, split between the sides (the odd voxel after).
    """
    multiple = _per_axis(multiple, len(shape), "multiple", 1)
    widths = []
    for size, m in zip(shape, multiple):
        extra = -(size + 2 * pad) % m
        widths.append((pad + extra // 2, pad + extra - extra // 2))
    return tuple(widths)


def pad_for_model(array, pad, multiple):
    """Mirror-pad every axis of ``array`` by ``pad``, then up to a multiple of ``multiple``.

    Returns ``(padded, offsets)``: the input occupies
    ``padded[offsets[0]:offsets[0] + shape[0], ...]`` (see :func:`frame_widths`).

    Examples:
        >>> padded, offsets = pad_for_model(np.ones((5, 7)), 3, 4)
        >>> padded.shape, offsets
        ((12, 16), (3, 4))
    """
    array = np.asarray(array)
    widths = frame_widths(array.shape, pad, multiple)
    region = tuple(slice(-lo, size + hi) for size, (lo, hi) in zip(array.shape, widths))
    return read_block(array, region), tuple(lo for lo, _ in widths)


# ----------------------------------------------------------------------------
# the plan


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile of a :class:`TilePlan` (all regions are tuples of slices, one per spatial axis).

    Attributes:
        index: position in the plan's grid of tiles.
        read: network input region in array coordinates; it may reach past
            the array (mirrored voxels): read it with :func:`read_block`.
        write: output region in array coordinates (inside the plan's region).
        crop: the part of the network output (spatial axes) that lands in ``write``.
        weights: per-axis 1-D blend weights over ``write`` (``None`` for an axis
            without blending), or ``None`` when every weight is 1.
    """

    index: tuple
    read: tuple
    write: tuple
    crop: tuple
    weights: tuple | None = None

    @property
    def write_shape(self) -> tuple:
        return tuple(s.stop - s.start for s in self.write)

    def weight(self):
        """The blend weights over ``write`` as one array (outer product), or None (= 1)."""
        if self.weights is None:
            return None
        w = np.ones(self.write_shape, np.float64)
        for axis, aw in enumerate(self.weights):
            if aw is not None:
                w *= aw.reshape((-1,) + (1,) * (len(self.write) - axis - 1))
        return w


class _Span(NamedTuple):
    """One tile along one axis: read ``[read0, read1)``, write ``[write0, write1)``."""

    read0: int
    read1: int
    write0: int
    write1: int
    weights: np.ndarray | None


def _per_axis(value, ndim, name, minimum):
    values = (value,) * ndim if np.isscalar(value) else tuple(value)
    if len(values) != ndim:
        raise FusionNetError(f"{name} needs {ndim} values (one per spatial axis), got {value!r}")
    return tuple(check_int(name, v, minimum) for v in values)


def _pairs(value, ndim, name):
    """``value`` as ``((before, after), ...)``: an int, one int per axis, or one pair per axis."""
    if np.isscalar(value):
        value = (value,) * ndim
    value = tuple(value)
    if len(value) != ndim:
        raise FusionNetError(f"{name} needs {ndim} values (one per spatial axis), got {value!r}")
    out = []
    for v in value:
        lo, hi = (v, v) if np.isscalar(v) else tuple(v)
        out.append((check_int(name, lo, 0), check_int(name, hi, 0)))
    return tuple(out)


def _round_up(x, m):
    return -(-x // m) * m


def _grid_axis(lo, hi, tile, before, after, origin):
    """Cores ``[origin + k tile, origin + (k + 1) tile)`` meeting ``[lo, hi)``, reads grown by the halo."""
    first = (lo - origin) // tile
    last = -(-(hi - origin) // tile)
    spans = []
    for k in range(first, last):
        c0 = origin + k * tile
        spans.append(_Span(c0 - before, c0 + tile + after, max(c0, lo), min(c0 + tile, hi), None))
    return spans


def _fit_axis(length, lo, hi, window, before, after, multiple, blend):
    """Windows of ``window`` voxels inside ``[0, length)``, starts on the ``multiple`` grid.

    Inner window edges give up ``before`` / ``after`` voxels; neighbouring kept
    parts overlap by at least ``blend`` voxels and cross-fade linearly; weights
    are normalised to sum to one at every position.
    """
    if window >= length:
        return [_Span(0, length, lo, hi, None)]
    step = (window - before - after - blend) // multiple * multiple  # >= multiple: see TilePlan.window
    units = (length - window) // multiple
    gaps = -(-units // (step // multiple))
    starts = [multiple * ((i * units) // gaps) for i in range(gaps + 1)]
    last = len(starts) - 1
    kept = [(s + before if i else 0, s + window - after if i < last else length) for i, s in enumerate(starts)]
    x = np.arange(length, dtype=np.float64)
    weights = np.zeros((len(starts), length), np.float64)
    for i, (v0, v1) in enumerate(kept):
        w = np.ones(v1 - v0, np.float64)
        if i > 0 and kept[i - 1][1] > v0:
            w = np.minimum(w, (x[v0:v1] - v0 + 0.5) / (kept[i - 1][1] - v0))
        if i < last and v1 > kept[i + 1][0]:
            w = np.minimum(w, (v1 - x[v0:v1] - 0.5) / (v1 - kept[i + 1][0]))
        weights[i, v0:v1] = w
    weights /= weights.sum(axis=0)  # > 0 everywhere: consecutive kept parts overlap
    spans = []
    for s, (v0, v1), w in zip(starts, kept, weights):
        a, b = max(v0, lo), min(v1, hi)
        if a < b:
            part = w[a:b]
            spans.append(_Span(s, s + window, a, b, None if np.all(part == 1.0) else part))
    return spans


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering the spatial axes of an array; iterate it to get :class:`Tile` s.

    Args:
        shape: spatial shape of the array (without channel axes).
        tile: core shape: the output each tile writes (``grid``: exactly, a
            multiple of ``multiple``; ``fit``: at least, before even spacing).
        halo: input context beyond the core per axis: an int, one int per axis
            or ``(before, after)`` pairs. For exact tiling: at least the
            network's receptive field (``models.analysis.receptive_field_margin``).
        multiple: grid multiple per axis (the network's pooling factor); reads
            start on this grid relative to the global origin.
        origin: global grid origin (``grid`` mode): cores start at
            ``origin + k * tile``. Keep it fixed for every block of one volume.
        region: the part of the array to produce (slices; default all).
        mode: ``"grid"`` (regular cores, mirrored reads past the edge) or
            ``"fit"`` (windows inside the array, the array edge is the network's
            border); see the module docstring.
        blend: ``fit`` mode: the least overlap of neighbouring kept parts,
            cross-faded with linear ramps (0: only where windows happen to overlap).
        trim: voxels per side the network's output is smaller than its input
            ("valid" convolutions; ``grid`` mode, at most the halo).

    Examples:
        >>> plan = TilePlan((10, 7), tile=4, halo=2)
        >>> len(plan), plan.window
        (6, (8, 8))
        >>> t = next(iter(plan))
        >>> t.read, t.write, t.crop
        ((slice(-2, 6, None), slice(-2, 6, None)), (slice(0, 4, None), slice(0, 4, None)), (slice(2, 6, None), slice(2, 6, None)))
    """

    shape: tuple
    tile: tuple
    halo: tuple = 0
    multiple: tuple = 1
    origin: tuple = 0
    region: tuple | None = None
    mode: str = "grid"
    blend: tuple = 0
    trim: tuple = 0

    def __post_init__(self):
        if np.isscalar(self.shape):
            raise FusionNetError(f"shape must be a sequence of sizes, got {self.shape!r}")
        shape = tuple(check_int("shape", s, 1) for s in self.shape)
        n = len(shape)
        if self.mode not in MODES:
            raise FusionNetError(f"mode must be one of {MODES}, got {self.mode!r}")
        region = self.region if self.region is not None else (slice(None),) * n
        if len(region) != n or not all(isinstance(r, slice) for r in region):
            raise FusionNetError(f"region needs {n} slices, got {region!r}")
        region = tuple(slice(0 if r.start is None else r.start, s if r.stop is None else r.stop)
                       for r, s in zip(region, shape))
        if any(r.step not in (None, 1) for r in self.region or ()) or not all(
                0 <= r.start < r.stop <= s for r, s in zip(region, shape)):
            raise FusionNetError(f"region {self.region!r} is not a non-empty part of an array of shape {shape}")
        values = {
            "shape": shape,
            "tile": _per_axis(self.tile, n, "tile", 1),
            "halo": _pairs(self.halo, n, "halo"),
            "multiple": _per_axis(self.multiple, n, "multiple", 1),
            "origin": _per_axis(self.origin, n, "origin", None),
            "region": region,
            "blend": _per_axis(self.blend, n, "blend", 0),
            "trim": _pairs(self.trim, n, "trim"),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self):
        if self.mode == "grid":
            if any(t % m for t, m in zip(self.tile, self.multiple)):
                nearest = tuple(_round_up(t, m) for t, m in zip(self.tile, self.multiple))
                raise FusionNetError(
                    f"tile {self.tile} must be a multiple of the grid multiple {self.multiple}; use {nearest}"
                )
            if any(self.blend):
                raise FusionNetError("blend needs mode='fit' (grid tiles write disjoint cores)")
            if any(t0 > h0 or t1 > h1 for (t0, t1), (h0, h1) in zip(self.trim, self.halo)):
                raise FusionNetError(f"trim {self.trim} must not exceed the halo {self.halo}")
        else:
            if any(s % m for s, m in zip(self.shape, self.multiple)):
                raise FusionNetError(
                    f"mode 'fit' needs an array shape {self.shape} divisible by the multiple {self.multiple}"
                )
            if any(lo or hi for lo, hi in self.trim):
                raise FusionNetError("mode 'fit' needs an output of the input's size (trim 0)")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def window(self) -> tuple:
        """The read shape every tile has (the network's input shape)."""
        if self.mode == "grid":
            return tuple(t + lo + hi for t, (lo, hi) in zip(self.tile, self.halo))
        return tuple(
            min(s, _round_up(max(t, b + m) + lo + hi, m))
            for s, t, (lo, hi), m, b in zip(self.shape, self.tile, self.halo, self.multiple, self.blend)
        )

    @property
    def output_window(self) -> tuple:
        """The spatial shape of the network output for one tile (``window`` less ``trim``)."""
        return tuple(w - lo - hi for w, (lo, hi) in zip(self.window, self.trim))

    @functools.cached_property
    def _spans(self):
        spans = []
        for axis, (size, r) in enumerate(zip(self.shape, self.region)):
            before, after = self.halo[axis]
            if self.mode == "grid":
                spans.append(_grid_axis(r.start, r.stop, self.tile[axis], before, after, self.origin[axis]))
            else:
                spans.append(_fit_axis(size, r.start, r.stop, self.window[axis], before, after,
                                       self.multiple[axis], self.blend[axis]))
        return spans

    @property
    def grid_shape(self) -> tuple:
        """Number of tiles along each axis."""
        return tuple(len(s) for s in self._spans)

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape, dtype=np.int64))

    def __iter__(self):
        for index in itertools.product(*(range(n) for n in self.grid_shape)):
            spans = [self._spans[axis][i] for axis, i in enumerate(index)]
            weights = tuple(s.weights for s in spans)
            yield Tile(
                index=index,
                read=tuple(slice(s.read0, s.read1) for s in spans),
                write=tuple(slice(s.write0, s.write1) for s in spans),
                crop=tuple(
                    slice(s.write0 - s.read0 - lo, s.write1 - s.read0 - lo)
                    for s, (lo, _) in zip(spans, self.trim)
                ),
                weights=None if all(w is None for w in weights) else weights,
            )

    def with_trim(self, trim) -> "TilePlan":
        """The same tiles for a network whose output is smaller by ``trim`` per side."""
        return dataclasses.replace(self, trim=trim)
