"""Per-object measures gathered from parts of a volume, for :mod:`~fusionnet_keras.evaluation.morphology`.

A part (the whole volume, or a block of a volume larger than memory:
:mod:`fusionnet_keras.blockwise.morphology`) counts the voxels it owns (volume,
centroid sums, bounding box) and the marching-cubes cells it owns, on the mask
smoothed with the Gaussian's radius of context, so the parts of an object add up
to the whole volume's measures (:func:`combine_parts`; the module docstring of
:mod:`~fusionnet_keras.evaluation.morphology` has the details).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from fusionnet_keras.evaluation.postprocess import relabel

__all__ = ["PART_KEYS", "combine_parts", "margins", "object_parts", "part_regions", "read_part"]


def margins(smooth_sigma: float) -> tuple[int, int]:
    """``(pad, radius)``: the zero margin marching cubes sees around an object (it closes the
    mesh there) and the radius of the smoothing Gaussian (scipy's, truncated at 4 sigma), in voxels."""
    if smooth_sigma <= 0:
        return 1, 0
    return 1 + int(math.ceil(4 * smooth_sigma)), int(4 * smooth_sigma + 0.5)


def part_regions(region, shape, smooth_sigma: float = 0.5) -> tuple[tuple, tuple]:
    """``(read, points)``: what a part ``region`` (slices) of a volume of ``shape`` reads and the lattice points it meshes.

    The part owns the marching-cubes cells whose lowest corner lies in it (the
    first and last parts along an axis also those up to ``pad`` outside the
    volume), so ``points`` are its voxels, one more on the high side, and the
    margins outside the volume; ``read`` adds the Gaussian's radius (zeros
    outside the volume, see :func:`read_part`). Both are global slices.
    """
    pad, radius = margins(smooth_sigma)
    read, points = [], []
    for s, n in zip(region, shape):
        lo = s.start if s.start > 0 else -pad
        hi = s.stop if s.stop < n else n + pad
        points.append(slice(lo, hi + 1))
        read.append(slice(lo - radius, hi + 1 + radius))
    return tuple(read), tuple(points)


def read_part(source, read, shape) -> np.ndarray:
    """``source[read]`` (global slices, possibly outside the volume of ``shape``) with zeros outside the volume."""
    inside = tuple(slice(min(max(r.start, 0), n), max(min(r.stop, n), 0)) for r, n in zip(read, shape))
    data = np.asarray(source[inside])
    out = np.zeros(tuple(r.stop - r.start for r in read), data.dtype)
    out[tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(inside, read))] = data
    return out


def _mesh_area(field: np.ndarray, spacing) -> float:
    """Area of the marching-cubes mesh (level 0.5) of ``field``; 0 without a crossing."""
    from skimage.measure import marching_cubes, mesh_surface_area

    if min(field.shape) < 2 or not field.min() <= 0.5 <= field.max() or field.min() == field.max():
        return 0.0
    verts, faces, _, _ = marching_cubes(field, level=0.5, spacing=tuple(float(s) for s in spacing))
    return float(mesh_surface_area(verts, faces))


PART_KEYS = ("label", "n", "sum", "lo", "hi", "area", "peak", "area_binary")
"""Arrays of :func:`object_parts`, one row per object."""


def object_parts(labels, origin, core, points, spacing, smooth_sigma: float = 0.5) -> dict:
    """The measures of every object of a part of a volume, in sums that parts add up to (:func:`combine_parts`).

    Args:
        labels: instance ids (0 = background) of the part's ``read`` region
            (:func:`part_regions`, :func:`read_part`).
        origin: global coordinates of ``labels[0, 0, 0]``.
        core: the voxels the part counts, as slices of ``labels``.
        points: the lattice points the part meshes, as slices of ``labels``.
        spacing: voxel size (um) for the mesh.
        smooth_sigma: the Gaussian (voxels) of the mask before marching cubes.

    Returns:
        ``{key: array}`` for :data:`PART_KEYS`: ``n`` voxels, ``sum`` of their
            global coordinates, bounding box ``lo`` / ``hi`` (``[lo, hi)``), mesh
            ``area`` in the owned cells, ``peak`` of the smoothed mask there, and
            ``area_binary``, the raw mask's mesh area (NaN where the peak exceeds
            0.5: a smoothed mask that never reaches 0.5 is meshed raw instead).
    """

    labels = np.asarray(labels)
    compact, ids = relabel(labels)
    pad, _ = margins(smooth_sigma)
    rows = {key: [] for key in PART_KEYS}
    origin = np.asarray(origin, np.int64)
    for k, sl in enumerate(ndi.find_objects(compact), start=1):
        if sl is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, labels.shape))
        mask = compact[box] == k
        counted = _within(core, box)
        where = np.nonzero(mask[counted])
        n = int(where[0].size)
        if n:  # global coordinates of the voxels it counts
            coords = [w.astype(np.int64) + b.start + c.start + o for w, b, c, o in zip(where, box, counted, origin)]
            total, lo, hi = [int(c.sum()) for c in coords], [int(c.min()) for c in coords], [int(c.max()) + 1 for c in coords]
        else:
            total, lo, hi = [0, 0, 0], [np.iinfo(np.int64).max] * 3, [np.iinfo(np.int64).min] * 3
        owned = _within(points, box)
        area = peak = 0.0
        area_binary = np.nan
        if all(o.stop > o.start for o in owned):
            field = mask.astype(np.float32)
            if smooth_sigma > 0:
                field = ndi.gaussian_filter(field, smooth_sigma)
            peak = float(field[owned].max())
            area = _mesh_area(field[owned], spacing)
            if peak <= 0.5:
                area_binary = _mesh_area(mask[owned].astype(np.float32), spacing)
        if n or peak > 0:
            for key, value in zip(PART_KEYS, (ids[k - 1], n, total, lo, hi, area, peak, area_binary)):
                rows[key].append(value)
    dtypes = (np.uint64, np.int64, np.int64, np.int64, np.int64, np.float64, np.float64, np.float64)
    return {key: np.asarray(rows[key], dtype).reshape((-1, 3) if key in ("sum", "lo", "hi") else (-1,))
            for key, dtype in zip(PART_KEYS, dtypes)}


def _within(region, box) -> tuple:
    """``region`` (slices of the same array as ``box``) intersected with ``box``, as slices of ``box``."""
    return tuple(slice(min(max(r.start - b.start, 0), b.stop - b.start), max(min(r.stop, b.stop) - b.start, 0))
                 for r, b in zip(region, box))


def combine_parts(parts) -> dict:
    """The parts' rows of the same object added up (counts, sums, areas), min/max-ed (box, peak); sorted by label."""
    parts = list(parts)
    cat = {key: np.concatenate([p[key] for p in parts]) for key in PART_KEYS}
    ids, inv = np.unique(cat["label"], return_inverse=True)
    out = {"label": ids}
    for key, ufunc, init in (("n", np.add, 0), ("sum", np.add, 0), ("lo", np.minimum, np.iinfo(np.int64).max),
                             ("hi", np.maximum, np.iinfo(np.int64).min), ("area", np.add, 0.0),
                             ("peak", np.maximum, 0.0), ("area_binary", np.add, 0.0)):
        arr = cat[key]
        out[key] = np.full((ids.size,) + arr.shape[1:], init, arr.dtype)
        ufunc.at(out[key], inv.ravel(), arr)
    return out
