"""Instance-volume metrics (3-D or any dimension): variation of information, adapted Rand error."""

from __future__ import annotations

import math

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.checks import _check_same_shape
from fusionnet_keras.evaluation.contingency import (
    _contingency,
    _scores_from_contingency,
    _xlogx,
)


def _check_instances(seg, gt):
    s = np.asarray(seg)
    g = np.asarray(gt)
    _check_same_shape(s, g, "segmentation", "ground truth")
    for arr, name in ((s, "segmentation"), (g, "ground truth")):
        if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                continue
            raise FusionNetError(f"{name} must be an integer label volume, got dtype {arr.dtype}")
    return s.astype(np.int64, copy=False), g.astype(np.int64, copy=False)


def variation_of_information(seg, gt, ignore_gt_zero: bool = True):
    """Split / merge variation of information, in bits.

    Returns ``(vi_split, vi_merge)`` = ``(H(S|T), H(T|S))`` with S the
    segmentation and T the ground truth: ``vi_split`` grows when ground-truth
    objects are split, ``vi_merge`` when they are merged; the total VI is
    their sum. With ``ignore_gt_zero`` voxels where ``gt == 0`` are left out;
    segmentation voxels labelled 0 (unassigned) count as single-voxel
    segments.
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, n0 = _contingency(s, g, ignore_gt_zero)
    if n == 0:
        return 0.0, 0.0
    nf = float(n)
    log_n = math.log(nf)
    h_t = log_n - _xlogx(a) / nf
    h_s = log_n - _xlogx(b) / nf
    h_st = log_n - _xlogx(nij) / nf
    ln2 = math.log(2.0)
    split = max(h_st - h_t, 0.0) / ln2
    merge = max(h_st - h_s, 0.0) / ln2
    return float(split), float(merge)


def adapted_rand_error(seg, gt, ignore_gt_zero: bool = True):
    """SNEMI3D adapted Rand error: ``(are, precision, recall)``.

    ``precision = sum n_ij^2 / sum s_j^2`` (merge score),
    ``recall = sum n_ij^2 / sum t_i^2`` (split score) and
    ``are = 1 - F`` with F their harmonic mean. Voxels with ``gt == 0`` are
    ignored (when ``ignore_gt_zero``); segmentation voxels labelled 0 count
    as single-voxel segments, as in the SNEMI3D / Fiji implementation.
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, n0 = _contingency(s, g, ignore_gt_zero)
    if n == 0:
        return 0.0, 1.0, 1.0
    sc = _scores_from_contingency(n, nij, a, b, n0)
    return float(1.0 - sc["vrand"]), float(sc["vrand_merge"]), float(sc["vrand_split"])


def vrand_vinfo_3d(seg, gt) -> dict:
    """Foreground-restricted V^Rand and V^Info of label volumes (no thinning).

    Only voxels with ``gt > 0`` count; segmentation voxels labelled 0 count
    as single-voxel segments. Returns a dict with ``vrand``, ``vrand_split``,
    ``vrand_merge``, ``vinfo``, ``vinfo_split``, ``vinfo_merge`` (1.0 =
    perfect).
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, n0 = _contingency(s, g, True)
    if n == 0:
        raise FusionNetError("ground truth has no labelled (non-zero) voxel: nothing to score")
    return {k: float(v) for k, v in _scores_from_contingency(n, nij, a, b, n0).items()}

