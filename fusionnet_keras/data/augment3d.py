"""3-D training samples for the affinity networks: augmented EM blocks and their affinity targets.

A sample is drawn from a labelled block (torch-em style: the transforms act on
the raw image and instance labels, the targets are computed last):

1. **Crop with xy transforms** (:func:`sample_sections`): an input block around
   a random output box inside the volume; every section is read through its own
   smooth elastic displacement field in xy (the coarse field with zero border
   and its interpolation are :func:`~fusionnet_keras.data.warp.interpolation_matrix`,
   as for the 2-D :class:`~fusionnet_keras.data.augment.ElasticDeform`), plus
   optionally a **section misalignment** (the sections from a random z on are
   shifted by a few pixels). Image bilinearly, labels by nearest neighbour, both
   at the same coordinates, reflected at the volume border (numpy "reflect", the
   convention of the rest of the package).
2. One of the **8 xy orientations** (:func:`~fusionnet_keras.data.orient.orient`)
   of image and labels together.
3. Image-only defects: a **missing section** (set to 0) and Gaussian **noise**.
4. **Targets** from the transformed labels (:func:`affinity_y_true`): the
   packed ``y_true`` of :mod:`fusionnet_keras.data.affinities` for the
   network's output box, its first slices' edges included (they link to the
   voxel before the box, which the input holds).

Everything is numpy, seeded by a ``numpy.random.Generator``: a sample is a pure
function of the volume, the settings and the seed.

Example:
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 255, (8, 40, 40)).astype(np.uint8)
    >>> labels = np.repeat(np.arange(8)[:, None, None], 40, 1).repeat(40, 2) // 4 + 1
    >>> aug = AffinityAugment((5, 20, 20), (1, 4, 4), elastic_amplitude=2.0)
    >>> x, y = aug.sample(image, labels, rng)
    >>> x.shape, y.shape
    ((5, 20, 20, 1), (1, 4, 4, 7))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionnet_keras.data.affinities import OFFSETS, AffinityTargets, check_label_zero, check_network_offsets, offset_reach
from fusionnet_keras.data.orient import NUM_ORIENTATIONS, orient
from fusionnet_keras.data.warp import interpolation_matrix
from fusionnet_keras.errors import FusionNetError


def elastic_fields(n_sections: int, shape, amplitude: float, grid_size: int, rng) -> np.ndarray:
    """Dense displacement fields ``(n_sections, 2, Y, X)`` (dy, dx in pixels), one per section.

    Each is a ``grid_size x grid_size`` field of ``uniform(-amplitude, amplitude)`` nodes with a zero
    border, interpolated bilinearly (align corners), as :class:`~fusionnet_keras.data.augment.ElasticDeform`.
    """
    height, width = shape
    inner = rng.uniform(-amplitude, amplitude, (n_sections, 2, grid_size - 2, grid_size - 2))
    coarse = np.pad(inner, ((0, 0), (0, 0), (1, 1), (1, 1)))
    my = interpolation_matrix(height, grid_size, "bilinear")
    mx = interpolation_matrix(width, grid_size, "bilinear")
    return (my @ coarse.astype(np.float32) @ mx.T).astype(np.float32)


def reflect_index(index, size: int):
    """Indices folded into ``[0, size)`` with the numpy "reflect" convention (edge not repeated)."""
    index = np.asarray(index)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def sample_sections(image, labels, origin, shape, fields=None, shifts=None):
    """Read the block ``shape`` at ``origin`` (z, y, x; may lie partly outside: reflected) of ``image`` and
    ``labels``, section ``i`` displaced by ``fields[i]`` (``(2, Y, X)`` pixels) and ``shifts[i]`` (dy, dx).

    Returns ``(image float32 in [0, 1], labels)``: the image sampled bilinearly (uint8 scaled by 1/255),
    the labels by nearest neighbour at the same coordinates.
    """
    z0, y0, x0 = origin
    depth, height, width = shape
    _, size_y, size_x = image.shape
    rows = np.broadcast_to(np.arange(height, dtype=np.float32)[None, :, None] + y0, shape)
    cols = np.broadcast_to(np.arange(width, dtype=np.float32)[None, None, :] + x0, shape)
    if fields is not None:
        rows, cols = rows + fields[:, 0], cols + fields[:, 1]
    if shifts is not None:
        rows, cols = rows + shifts[:, 0, None, None], cols + shifts[:, 1, None, None]
    sections = reflect_index(np.arange(z0, z0 + depth), image.shape[0])[:, None, None] * (size_y * size_x)
    nearest = sections + reflect_index(np.rint(rows).astype(np.int64), size_y) * size_x \
        + reflect_index(np.rint(cols).astype(np.int64), size_x)
    out_labels = labels.reshape(-1)[nearest]
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    flat = image.reshape(-1)
    rr = [reflect_index(r0, size_y) * size_x, reflect_index(r0 + 1, size_y) * size_x]
    cc = [reflect_index(c0, size_x), reflect_index(c0 + 1, size_x)]
    top = flat[sections + rr[0] + cc[0]] * (1 - fc) + flat[sections + rr[0] + cc[1]] * fc
    bottom = flat[sections + rr[1] + cc[0]] * (1 - fc) + flat[sections + rr[1] + cc[1]] * fc
    out_image = (top * (1 - fr) + bottom * fr).astype(np.float32)
    if image.dtype == np.uint8:
        out_image *= np.float32(1.0 / 255.0)
    return out_image, out_labels


def check_context(context, offsets=OFFSETS) -> tuple:
    """``context`` (z, y, x) if the input block around the output box holds every edge's second voxel
    (each offset's reach, :func:`~fusionnet_keras.data.affinities.offset_reach`), else a one-line error."""
    context = tuple(int(c) for c in context)
    reach = tuple(max(b, a) for b, a in zip(*offset_reach(offsets)))
    if any(c < max(r, 1) for c, r in zip(context, reach)):
        raise FusionNetError(f"the network's context {context} (z, y, x) is smaller than its offsets' reach "
                             f"{reach} (at least 1): shorten model.offsets or use a deeper network")
    return context


def affinity_y_true(labels, context, label_zero: str = "background", offsets=None) -> np.ndarray:
    """The packed ``y_true`` ``(z, y, x, 2C + 1)`` (7 channels for the nearest neighbours) of the output box
    of an input block of ``labels``.

    ``context`` (z, y, x) is where the box starts in the input (the network's ``geometry.context``); the
    box is the centre, ``input - 2 * context``. Targets are computed on the box grown by each offset's
    reach on every axis (one voxel before it for the nearest neighbours), then cropped, so the edges of the
    box's border voxels (to voxels just outside the box, which the input holds) are targets too.
    ``label_zero``: what id 0 means (:data:`~fusionnet_keras.data.affinities.LABEL_ZERO`); ``offsets``: the
    network's channels (default the three nearest neighbours).
    """
    targets = AffinityTargets(label_zero, offsets)
    context = check_context(context, targets.offsets)
    before, after = offset_reach(targets.offsets)
    box = tuple(slice(c - b, n - c + a) for c, b, a, n in zip(context, before, after, labels.shape))
    y = targets.y_true(labels[box])
    return y[tuple(slice(b, y.shape[i] - a) for i, (b, a) in enumerate(zip(before, after)))]


@dataclass
class AffinityAugment:
    """Random training samples ``(x, y_true)`` for a network with input ``input_shape`` and output
    ``output_shape`` (z, y, x; centred: ``input = output + 2 * context``).

    Args:
        input_shape: the network's input block (z, y, x).
        output_shape: its output block.
        orientations: draw one of the 8 xy orientations (needs input y == x).
        elastic_amplitude: maximal displacement (pixels) of the coarse field's inner nodes; 0 = off.
        elastic_grid: nodes per side of the coarse field (border nodes are 0).
        noise_sigma: standard deviation of the Gaussian noise on the [0, 1] image.
        missing_section: probability that one random section of the input is missing (all 0).
        misalign: probability of a misalignment: the sections from a random z on shift by up to
            ``misalign_max`` pixels in y and x (image and labels).
        misalign_max: largest misalignment shift (pixels).
        label_zero: what label 0 means in the targets, ``"background"`` or ``"unknown"``
            (:data:`~fusionnet_keras.data.affinities.LABEL_ZERO`).
        offsets: the network's affinity channels (default the three nearest neighbours).
    """

    input_shape: tuple
    output_shape: tuple
    orientations: bool = True
    elastic_amplitude: float = 0.0
    elastic_grid: int = 6
    noise_sigma: float = 0.0
    missing_section: float = 0.0
    misalign: float = 0.0
    misalign_max: int = 0
    label_zero: str = "background"
    offsets: tuple | None = None

    def __post_init__(self):
        check_label_zero(self.label_zero)
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.output_shape = tuple(int(v) for v in self.output_shape)
        diff = [i - o for i, o in zip(self.input_shape, self.output_shape)]
        if len(self.input_shape) != 3 or len(self.output_shape) != 3 or any(d < 2 or d % 2 for d in diff):
            raise FusionNetError(f"output block {self.output_shape} must lie centred in the input block "
                                 f"{self.input_shape} with at least one voxel of context on every side")
        if self.orientations and self.input_shape[1] != self.input_shape[2]:
            raise FusionNetError(f"the 8 xy orientations need square input sections, got {self.input_shape[1:]}")
        if self.elastic_grid < 3:
            raise FusionNetError(f"elastic grid must have at least 3 nodes per side, got {self.elastic_grid}")
        self.offsets = check_network_offsets(self.offsets)
        self.context = check_context(tuple(d // 2 for d in diff), self.offsets)

    def check_volume(self, shape, what: str = "training block") -> None:
        """Refuse a volume smaller than the output box (the box must lie inside it)."""
        if any(s < o for s, o in zip(shape, self.output_shape)):
            raise FusionNetError(f"{what} {tuple(shape)} is smaller than the network's output block "
                                 f"{self.output_shape}; use a smaller train.input_shape")

    def transform(self, image, labels, rng):
        """The augmented input block (image float32, labels) at a random place of the volume."""
        self.check_volume(image.shape)
        box = [int(rng.integers(0, s - o + 1)) for s, o in zip(image.shape, self.output_shape)]
        origin = tuple(b - c for b, c in zip(box, self.context))
        depth, height, width = self.input_shape
        fields = shifts = None
        if self.elastic_amplitude > 0:
            fields = elastic_fields(depth, (height, width), self.elastic_amplitude, self.elastic_grid, rng)
        if self.misalign > 0 and self.misalign_max > 0 and rng.random() < self.misalign:
            shifts = np.zeros((depth, 2), np.float32)
            shifts[int(rng.integers(1, depth)):] = rng.integers(-self.misalign_max, self.misalign_max + 1, 2)
        x, y = sample_sections(image, labels, origin, self.input_shape, fields, shifts)
        if self.orientations:
            k = int(rng.integers(0, NUM_ORIENTATIONS))
            x, y = orient(x, k), orient(y, k)
        if self.missing_section > 0 and rng.random() < self.missing_section:
            x = x.copy()
            x[int(rng.integers(0, depth))] = 0.0
        if self.noise_sigma > 0:
            x = np.clip(x + rng.normal(0.0, self.noise_sigma, x.shape).astype(np.float32), 0.0, 1.0)
        return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y)

    def sample(self, image, labels, rng):
        """``(x (Z, Y, X, 1) float32, y_true (z, y, x, 7) float32)``: :meth:`transform`, then the targets."""
        x, y = self.transform(image, labels, rng)
        return x[..., None], affinity_y_true(y, self.context, self.label_zero, self.offsets)

    def batch(self, image, labels, rng, size: int):
        """``size`` samples stacked: ``(x (N, Z, Y, X, 1), y_true (N, z, y, x, 7))``."""
        pairs = [self.sample(image, labels, rng) for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
