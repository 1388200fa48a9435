"""Pixel-level metrics: pixel error and Dice."""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.checks import (
    _binarize,
    _binary_labels,
    _check_proposal,
    _check_same_shape,
)


def pixel_error(proposal, labels, threshold: float = 0.5) -> float:
    """Fraction of pixels whose binarised class differs from the labels.

    ``proposal > threshold`` is the cell class; the labels are binary
    (0 = membrane, non-zero = cell).
    """
    prop = _check_proposal(proposal)
    gt_b = _binary_labels(labels, "labels")
    _check_same_shape(prop, gt_b)
    if prop.size == 0:
        raise FusionNetError("prediction is empty")
    return float(np.count_nonzero(_binarize(prop, threshold) != gt_b) / prop.size)


def dice(pred_mask, true_mask) -> float:
    """Dice coefficient 2|A n B| / (|A| + |B|) of two masks (1.0 when both are empty)."""
    a = np.asarray(pred_mask)
    b = np.asarray(true_mask)
    _check_same_shape(a, b, "prediction mask", "true mask")
    a = a.astype(bool)
    b = b.astype(bool)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(a & b) / total)

