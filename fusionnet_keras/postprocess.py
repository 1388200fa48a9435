"""Post-processing of probability maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def disk(radius: float) -> np.ndarray:
    """ImageJ's circular kernel of ``radius``: pixels with x^2 + y^2 <= radius^2 + 1."""
    r = int(np.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= radius * radius + 1


def median_filter(prob: np.ndarray, radius: float = 2) -> np.ndarray:
    """2-D median filter of every section (the 2016 paper's "median filter with radius = 2px").

    ``prob`` is ``(H, W)`` or ``(Z, H, W)``; sections are filtered independently,
    with mirrored borders and ImageJ's circular kernel (:func:`disk`).
    """
    prob = np.asarray(prob, dtype=np.float32)
    footprint = disk(radius)
    if prob.ndim == 2:
        return ndimage.median_filter(prob, footprint=footprint, mode="mirror")
    return np.stack([ndimage.median_filter(s, footprint=footprint, mode="mirror") for s in prob])
