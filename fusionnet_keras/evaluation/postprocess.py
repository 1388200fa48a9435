"""Post-processing: the median filter of probability maps, renumbering and size filtering of instance volumes."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int


def disk(radius: float) -> np.ndarray:
    """ImageJ's circular kernel of ``radius``: pixels with x^2 + y^2 <= radius^2 + 1."""
    r2 = radius * radius + 1
    r = int(math.sqrt(r2 + 1e-10))  # ImageJ's kRadius: radius 0.5 -> 1, radius 2.9 -> 3
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r2 + 1e-10


def check_median_radius(radius: float, shape) -> float:
    """``radius`` if its disk fits inside a section of ``shape`` (``(H, W)`` or ``(Z, H, W)``).

    The window's diameter ``2 r + 1`` may not exceed the smaller side of a
    section: a larger window would see mostly mirrored copies, and its cost
    (and the footprint's memory) grows with ``r^2``. :class:`FusionNetError` otherwise.
    """
    shape = tuple(shape)
    h, w = shape[-2:] if len(shape) >= 2 else (0, 0)
    if not (isinstance(radius, (int, float, np.integer, np.floating)) and math.isfinite(radius) and radius >= 0):
        raise FusionNetError(f"median filter radius must be a number >= 0, got {radius!r}")
    limit = (min(h, w) - 1) // 2
    if radius > limit:
        raise FusionNetError(
            f"median filter radius {radius:g} px does not fit a {h}x{w} section: use at most {max(limit, 0)} px"
        )
    return radius


def median_filter(prob: np.ndarray, radius: float = 2) -> np.ndarray:
    """2-D median filter of every section (the 2016 paper's "median filter with radius = 2px").

    ``prob`` is ``(H, W)`` or ``(Z, H, W)``; sections are filtered independently,
    with mirrored borders and ImageJ's circular kernel (:func:`disk`); the
    radius is bounded by the section size (:func:`check_median_radius`). Integer
    and floating-point inputs keep their dtype; others become float32.
    """
    prob = np.asarray(prob)
    if prob.dtype.kind not in "uif":
        prob = prob.astype(np.float32)
    if prob.ndim not in (2, 3):
        raise FusionNetError(f"median filter: expected a 2-D image or 3-D stack (Z, H, W), got shape {prob.shape}")
    footprint = disk(check_median_radius(radius, prob.shape))
    if prob.ndim == 2:
        return ndimage.median_filter(prob, footprint=footprint, mode="mirror")
    return np.stack([ndimage.median_filter(s, footprint=footprint, mode="mirror") for s in prob])


def _sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, voxel counts)`` of the non-zero ids of a non-negative integer array."""
    flat = labels.reshape(-1)
    top = int(flat.max()) if flat.size else 0
    if top > 4 * flat.size + 1024:  # sparse ids: count by sorting
        ids, counts = np.unique(flat, return_counts=True)
    else:  # dense ids: bincount in chunks (it casts its input to 64 bits)
        counts = np.zeros(top + 1, dtype=np.int64)
        step = 1 << 22
        for start in range(0, flat.size, step):
            c = np.bincount(flat[start:start + step])
            counts[: len(c)] += c
        ids = np.flatnonzero(counts)
        counts = counts[ids]
    return ids[ids != 0], counts[ids != 0]


def relabel(labels, min_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the objects of an instance volume ``1..N`` in the order of their ids; drop small ones.

    Args:
        labels: integer array of any dimension (0 = background, ids >= 0).
        min_size: objects with fewer voxels become background (1 keeps all).

    Returns:
        ``(relabelled, old_ids)``: the renumbered array (the input's dtype when
            it fits) and, for each new id ``i + 1``, its id ``old_ids[i]`` in ``labels``.

    Examples:
        >>> relabel(np.array([0, 7, 7, 3, 9, 9, 9]), min_size=2)
        (array([0, 1, 1, 0, 2, 2, 2]), array([7, 9]))
    """
    from skimage.segmentation import relabel_sequential
    from skimage.util import map_array

    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise FusionNetError(f"instance labels must be non-negative integers, got dtype {labels.dtype}")
    min_size = check_int("min_size", min_size, minimum=0)
    if min_size <= 1:
        out, _, inverse = relabel_sequential(labels)
        old_ids = np.asarray(inverse.out_values)
        return out, old_ids[old_ids != 0]
    ids, counts = _sizes(labels)
    keep = ids[counts >= min_size]
    return map_array(labels, keep, np.arange(1, len(keep) + 1, dtype=labels.dtype)), keep


def segment_borders(labels: np.ndarray) -> np.ndarray:
    """A map of a 2-D segmentation (or a stack): 1 inside segments, 0 on their borders (a pixel whose right
    or lower neighbour lies in another segment) and on label 0, float32. Its 4-connected components of 1s
    lie each inside one segment (the ISBI scoring's cells).

    Example:
        >>> segment_borders(np.array([[1, 1, 2, 2]])).tolist()
        [[1.0, 0.0, 1.0, 1.0]]
    """
    labels = np.asarray(labels)
    out = (labels != 0).astype(np.float32)
    out[..., :, :-1][labels[..., :, :-1] != labels[..., :, 1:]] = 0.0
    out[..., :-1, :][labels[..., :-1, :] != labels[..., 1:, :]] = 0.0
    return out
