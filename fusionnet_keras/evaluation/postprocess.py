"""Post-processing of probability maps."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from fusionnet_keras.errors import FusionNetError


def disk(radius: float) -> np.ndarray:
    """ImageJ's circular kernel of ``radius``: pixels with x^2 + y^2 <= radius^2 + 1."""
    r2 = radius * radius + 1
    r = int(math.sqrt(r2 + 1e-10))  # ImageJ's kRadius: radius 0.5 -> 1, radius 2.9 -> 3
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r2 + 1e-10


def median_filter(prob: np.ndarray, radius: float = 2) -> np.ndarray:
    """2-D median filter of every section (the 2016 paper's "median filter with radius = 2px").

    ``prob`` is ``(H, W)`` or ``(Z, H, W)``; sections are filtered independently,
    with mirrored borders and ImageJ's circular kernel (:func:`disk`). Integer
    and floating-point inputs keep their dtype; others become float32.
    """
    prob = np.asarray(prob)
    if prob.dtype.kind not in "uif":
        prob = prob.astype(np.float32)
    if prob.ndim not in (2, 3):
        raise FusionNetError(f"median filter: expected a 2-D image or 3-D stack (Z, H, W), got shape {prob.shape}")
    footprint = disk(radius)
    if prob.ndim == 2:
        return ndimage.median_filter(prob, footprint=footprint, mode="mirror")
    return np.stack([ndimage.median_filter(s, footprint=footprint, mode="mirror") for s in prob])
