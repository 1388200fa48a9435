"""3-D affinity prediction: a volume ``(Z, Y, X)`` in, its affinities ``(3, Z, Y, X)`` out, block by block.

:func:`predict_affinities` runs a 3-D affinity network
(:class:`~fusionnet_keras.models.unet3d.UNet3D`,
:class:`~fusionnet_keras.models.fusionnet3d.FusionNet3D`: valid convolutions,
sizes from ``model.geometry``) over a volume of any size and returns float32
affinities in [0, 1] of the same spatial shape, in the convention of
:mod:`fusionnet_keras.data.affinities` (channel order z, y, x; channel ``c`` at
``v`` = affinity between ``v`` and ``v - e_c``).

* **Context and borders.** Each block is read with the network's context
  (``geometry.context`` voxels on each side, more after the block to reach a
  valid input size), mirrored past the volume border, through the shared tiling
  core (:func:`~fusionnet_keras.inference.halo.predict_with_halo`).
* **Any block gives the same numbers.** A block's window starts on the
  network's pooling grid (multiples of ``geometry.multiple`` from the volume's
  origin, less the context), so every voxel sees the pooling windows it sees
  when the whole volume is one block: blocks of any shape, odd ones included,
  join exactly (to float round-off) and a block computed alone (the blockwise
  engine, :mod:`fusionnet_keras.blockwise.affinities`) equals the same part of
  the whole-volume result.
* **Test-time orientations** (``orientations`` = 1, 4 or 8): the volume is
  flipped in y and/or x (4), and also transposed in xy (8); every orientation
  is predicted on its own pooling grid (anchored at the oriented volume's
  origin, as if the oriented volume were the input), mapped back and averaged.
  Mapping back moves channels: a transpose swaps the y and x channels, and
  under a flip along an axis the affinity of ``v`` to ``v - e`` becomes the
  affinity of the neighbour ``v + e`` to ``v``, so that channel is shifted back
  by one voxel (the first slice along the axis, which is not an edge, repeats
  its neighbour). The average is exactly equivariant under the orientations
  used: an x-flipped volume gives the x-flipped affinity graph.
* **Input values** are normalised by dtype, block by block (the rule of the
  blockwise 2-D predictor, :func:`fusionnet_keras.inference.grid.normalize_block`):
  unsigned integers divided by their dtype's maximum, floats taken as they
  are and refused outside [0, 1] or when not finite.

**Long-range networks** (``model.offsets``, :mod:`fusionnet_keras.data.affinities`)
give one channel per offset, ``(C, Z, Y, X)``; every voxel's channels come from
the same input context as the nearest-neighbour ones (the network's context
holds both voxels of every edge), so blocks need no more halo. Their test-time
orientations are refused (an orientation maps an offset to one the network
may not predict): ``orientations`` must be 1.

``precision`` (``float32``, ``bfloat16``, ``float16``) runs the convolutions in
that format (:func:`fusionnet_keras.models.precision.with_precision`); the
output and the orientation average stay float32. The network runs with its
batch norms folded into its convolutions
(:func:`fusionnet_keras.models.inference_graph.inference_model`).
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.data.orient import XY_ORIENTATIONS
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.inference.grid import BlockGrid, normalize_block, parse_block

__all__ = ["predict_affinities", "AffinityPredictor", "DEFAULT_BLOCK", "check_affinity_model",
           "check_volume", "check_block"]

#: Default block (z, y, x) of the affinity predictor (capped at the volume).
DEFAULT_BLOCK = (16, 128, 128)

N_CHANNELS = 3
#: The attribute of a written affinity array (HDF5 dataset, OME-Zarr group) holding the offset of each channel.
OFFSETS_ATTR = "affinity_offsets"


def offsets_attrs(offsets) -> dict:
    """The :attr:`~fusionnet_keras.data.io.ome.ImageMeta.attributes` of an affinity output:
    ``{OFFSETS_ATTR: [[dz, dy, dx], ...]}``."""
    return {OFFSETS_ATTR: [[int(v) for v in o] for o in offsets]}


def model_offsets(model) -> tuple:
    """The affinity offset of each output channel of a 3-D affinity network (the 3 nearest neighbours for
    networks saved without ``offsets``)."""
    from fusionnet_keras.data.affinities import check_network_offsets

    return check_network_offsets(getattr(model, "offsets", None))


def check_affinity_model(model, what="the model"):
    """``model.geometry`` of a 3-D affinity network; a one-line error (naming ``predict``) for anything else."""
    from fusionnet_keras.models.geometry import ValidGeometry

    geometry = getattr(model, "geometry", None)
    if not isinstance(geometry, ValidGeometry):
        raise FusionNetError(
            f"{what} is not a 3-D affinity network (UNet3D or FusionNet3D, input (z, y, x, 1)); "
            "for a 2-D probability-map model use 'fusionnet-keras predict'"
        )
    return geometry


def _check_orientations(orientations):
    if isinstance(orientations, bool) or orientations not in (1, 4, 8):
        raise FusionNetError(f"orientations must be 1, 4 (xy flips) or 8 (xy flips and transposes), "
                             f"got {orientations!r}")
    return int(orientations)


def check_volume(volume):
    """``(volume, shape)``: a numeric 3-D ``(Z, Y, X)`` array-like that is not empty, or a one-line error."""
    if not hasattr(volume, "shape"):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise FusionNetError(f"expected a 3-D volume (Z, Y, X), got shape {shape}")
    if 0 in shape:
        raise FusionNetError(f"the volume is empty (shape {shape})")
    dtype = np.dtype(volume.dtype)
    if dtype.names or dtype.kind not in "biuf":
        raise FusionNetError(f"the volume must hold numbers, got dtype {dtype}")
    return volume, shape


def check_block(block, shape):
    """The block ``(z, y, x)`` (``None``: :data:`DEFAULT_BLOCK`; one int: all axes) capped at ``shape``."""
    block = DEFAULT_BLOCK if block is None else parse_block(block, 3, "block")
    return tuple(min(b, s) for b, s in zip(block, shape))


class _Oriented:
    """A lazy view of a ``(Z, Y, X)`` array in one xy orientation, normalised to float32 [0, 1] on reading.

    Supports what :func:`~fusionnet_keras.inference.tiling.read_block` needs: ``shape`` and a tuple of
    in-bounds slices. Only the requested region of the source is read.
    """

    def __init__(self, array, orientation, name="the input"):
        self.array = array
        self.orientation = orientation
        z, y, x = (int(s) for s in array.shape)
        self.shape = (z, x, y) if orientation.transpose else (z, y, x)
        self.name = name

    def __getitem__(self, key):
        zs, *yx = (slice(*s.indices(n)[:2]) for s, n in zip(key, self.shape))
        block = normalize_block(self.array[(zs, *self.orientation.unregion(self.shape[1:], yx))], self.name)
        return np.ascontiguousarray(self.orientation.apply(block), dtype=np.float32)


class _Window:
    """An ``out`` for :func:`predict_with_halo` that keeps only ``region`` (writes outside it are errors)."""

    def __init__(self, full_shape, region, channels=N_CHANNELS):
        self.shape = (channels, *full_shape)
        self.region = region
        self.data = np.zeros((channels, *(r.stop - r.start for r in region)), np.float32)

    def __setitem__(self, key, value):
        local = tuple(slice(k.start - r.start, k.stop - r.start) for k, r in zip(key[1:], self.region))
        self.data[(key[0], *local)] = value


class AffinityPredictor:
    """Settings of 3-D affinity prediction resolved once for a model; predicts any region of a volume.

    Args:
        model: a 3-D affinity network (``model.geometry``: a :class:`ValidGeometry`).
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or None (the model's own).
        orientations: 1, 4 or 8 xy orientations averaged (see the module docstring).

    Examples:
        >>> import fusionnet_keras as fk
        >>> p = AffinityPredictor(fk.UNet3D(nb_filters=2, depth=1), orientations=4)
        >>> volume = np.random.default_rng(0).random((5, 20, 22), dtype=np.float32)
        >>> part = p.predict_region(volume, (slice(1, 4), slice(3, 11), slice(0, 22)))
        >>> whole = p.predict_region(volume, (slice(0, 5), slice(0, 20), slice(0, 22)))
        >>> part.shape, bool(np.allclose(part, whole[:, 1:4, 3:11], atol=1e-5))
        ((3, 3, 8, 22), True)
    """

    def __init__(self, model, precision=None, orientations=1):
        self.geometry = check_affinity_model(model)
        if precision is not None:
            from fusionnet_keras.models.precision import with_precision

            model = with_precision(model, precision)
        self.model = model
        from fusionnet_keras.models.inference_graph import for_inference

        #: what runs: ``model`` with its batch norms folded into the convolutions
        self.network = for_inference(model)
        self.offsets = model_offsets(model)
        self.channels = len(self.offsets)
        self.orientations = XY_ORIENTATIONS[:_check_orientations(orientations)]
        if self.channels > N_CHANNELS and len(self.orientations) > 1:
            raise FusionNetError(f"test-time orientations are for nearest-neighbour networks; this one predicts "
                                 f"{self.channels - N_CHANNELS} long-range offsets: use 1 orientation")

    def _network(self, window):
        y = self.network.predict_on_batch(np.asarray(window, np.float32)[None, ..., None])
        if isinstance(y, (list, tuple)):
            y = y[-1]
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 5 or y.shape[-1] != self.channels:
            raise FusionNetError(f"the model must output {self.channels} affinity channels (batch, z, y, x, "
                                 f"{self.channels}), one per offset, got shape {y.shape}")
        return np.moveaxis(y[0], -1, 0)

    def _run(self, view, region):
        """Affinities (C, region) of ``view`` in its own frame: one window on its pooling grid."""
        from fusionnet_keras.inference.halo import predict_with_halo

        m = self.geometry.multiple
        origin = tuple(r.start // k * k for r, k in zip(region, m))
        core = tuple(-(-(r.stop - o) // k) * k for r, o, k in zip(region, origin, m))
        _, halo = self.geometry.block(core)
        window = _Window(view.shape, region, self.channels)
        predict_with_halo(view, self._network, core, halo, out=window, multiple=m, origin=origin, region=region,
                          out_channel_axis=0)
        return window.data

    def predict_region(self, volume, region, name="the input"):
        """Affinities ``(C, *region shape)`` float32 (``C`` = ``len(self.offsets)``) in [0, 1] of ``region`` (z, y, x slices) of ``volume``.

        Equal (to float round-off) to the same part of the whole volume's result, for any region.
        """
        shape = tuple(int(s) for s in volume.shape)
        region = tuple(slice(*r.indices(n)[:2]) for r, n in zip(region, shape))
        total = np.zeros((self.channels, *(r.stop - r.start for r in region)), np.float32)
        for orientation in self.orientations:
            transpose, *flips = orientation  # an Orientation: (transpose, flip_y, flip_x)
            # the region in the flipped frame; a flipped axis needs one more voxel before it (the shift back)
            lows = [r.start for r in region]
            frame = list(region)
            for axis, flip in zip((1, 2), flips):
                if flip:
                    n, r = shape[axis], region[axis]
                    lows[axis] = max(0, r.start - 1)
                    frame[axis] = slice(n - r.stop, n - lows[axis])
            view = _Oriented(volume, orientation, name)
            y = self._run(view, (frame[0], frame[2], frame[1]) if transpose else tuple(frame))
            if transpose:  # back to the flipped frame: swap the y and x axes and channels
                y = y.transpose(0, 1, 3, 2)[[0, 2, 1]]
            for axis, flip in zip((1, 2), flips):
                if flip:
                    y = self._unflip(y, axis, region[axis], lows[axis])
            total += y
        total /= len(self.orientations)
        np.clip(total, 0.0, 1.0, out=total)
        return total

    @staticmethod
    def _unflip(y, axis, target, low):
        """Undo a flip of spatial ``axis``: ``y`` covers ``[low, target.stop)`` flipped; returns ``target``.

        Channel ``axis`` of the flipped prediction at ``v`` is the affinity of ``v`` to its successor
        in the original frame, which is the original channel at ``v + 1``: shift it by one voxel (the
        first voxel of the volume, not an edge along ``axis``, takes its neighbour's value).
        """
        y = np.flip(y, axis=1 + axis)
        positions = np.arange(target.start, target.stop)
        out = np.take(y, positions - low, axis=1 + axis)
        out[axis] = np.take(y[axis], np.maximum(positions - 1, 0) - low, axis=axis)
        return out


def predict_affinities(model, volume, *, block=None, precision=None, orientations=1, progress=False, out=None):
    """Affinities of a 3-D EM volume with a 3-D affinity network, block by block.

    Args:
        model: a 3-D affinity network (:class:`~fusionnet_keras.models.unet3d.UNet3D`,
            :class:`~fusionnet_keras.models.fusionnet3d.FusionNet3D`). ``fk.predict_affinities``
            (:func:`fusionnet_keras.pretrained.resolve.predict_affinities`) also takes the path of one
            (``.keras``), a registry name or URL, or None (the shipped default), and calls this.
        volume: ``(Z, Y, X)`` array-like (numpy, h5py, zarr, :class:`fusionnet_keras.io.Volume`),
            uint8/uint16 (divided by the dtype's maximum) or float in [0, 1]; read block by block.
        block: block shape ``(z, y, x)`` (or one int for all axes); any shape gives the same
            numbers (to float round-off). Default :data:`DEFAULT_BLOCK`, capped at the volume.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` convolutions (default: the model's own).
        orientations: xy test-time orientations averaged: 1 (plain), 4 (flips) or 8 (flips and transposes).
        progress: show a tqdm progress bar over blocks.
        out: array-like ``(C, Z, Y, X)`` to write into block by block (zarr, h5py, memmap); returned.

    Returns:
        float32 ``(3, Z, Y, X)`` in [0, 1] (or ``out``), channel order (z, y, x), channel ``c`` at
            ``v`` = affinity between ``v`` and ``v - e_c`` (:mod:`fusionnet_keras.data.affinities`); for a
            long-range network ``(C, Z, Y, X)``, channel ``c`` linking ``v`` and ``v + model.offsets[c]``.

    Raises:
        FusionNetError: not a 3-D affinity network, a volume that is not 3-D, empty, non-finite or
            a float volume outside [0, 1], bad settings.

    Examples:
        >>> import fusionnet_keras as fk
        >>> net = fk.UNet3D(nb_filters=2, depth=1)
        >>> volume = (np.random.default_rng(0).random((6, 21, 19)) * 255).astype(np.uint8)
        >>> aff = fk.predict_affinities(net, volume, block=(3, 8, 8))
        >>> aff.shape, aff.dtype.name, bool(np.allclose(aff, fk.predict_affinities(net, volume), atol=1e-5))
        ((3, 6, 21, 19), 'float32', True)
    """
    from fusionnet_keras.models.loading import check_network

    check_network(model, "fusionnet_keras.predict_affinities")
    predictor = AffinityPredictor(model, precision=precision, orientations=orientations)
    volume, shape = check_volume(volume)
    block = check_block(block, shape)
    from fusionnet_keras.data.io import Volume

    name = volume.name if isinstance(volume, Volume) else "the volume"
    source = volume.lazy if isinstance(volume, Volume) else volume  # HDF5/zarr: read only each block
    out_shape = (predictor.channels, *shape)
    if out is None:
        out = np.zeros(out_shape, np.float32)
    elif tuple(out.shape) != out_shape:
        raise FusionNetError(f"out has shape {tuple(out.shape)}, expected {out_shape}")

    blocks = BlockGrid(shape, block)
    steps = iter(blocks)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=len(blocks), desc="affinities", unit="block", disable=None)  # on a terminal
    for b in steps:
        out[(slice(None), *b.region)] = predictor.predict_region(source, b.region, name)
    return out
