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
    return _vi_bits(n, nij, a, b)


def _vi_bits(n, nij, a, b):
    """``(H(S|T), H(T|S))`` in bits from contingency counts (singletons need no entry)."""
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



def instance_scores(seg, gt) -> dict:
    """Neuron-segmentation scores of a label volume against ground truth (CREMI / SNEMI3D / skimage).

    Voxels with ``gt == 0`` are ignored; segmentation label 0 (background) is
    an ordinary label, as in ``skimage.metrics`` and the CREMI evaluation (unlike
    :func:`variation_of_information`, where seg-0 voxels are singletons).

    Returns a dict:

    * ``vi_split`` = H(S|T), ``vi_merge`` = H(T|S), ``vi`` their sum, in bits
      (Meila 2003; S the segmentation, T the ground truth: ``vi_split`` grows
      with false splits, ``vi_merge`` with false merges). Equal to
      ``skimage.metrics.variation_of_information(gt, seg, ignore_labels=[0])``,
      which returns (false splits, false merges) in that order.
    * ``arand``: adapted Rand error 1 - F, F the harmonic mean of
      ``rand_split`` = (pairs together in both) / (pairs together in T) and
      ``rand_merge`` = (pairs together in both) / (pairs together in S), pairs
      of distinct voxels; equal to ``skimage.metrics.adapted_rand_error(gt, seg)``
      (whose ``prec``, ``rec`` are ``rand_split``, ``rand_merge``).
    * ``cremi``: the CREMI score ``sqrt(vi * arand)``.
    * ``objects``, ``gt_objects``: distinct non-zero labels of each volume;
      ``voxels``: voxels scored.

    Examples:
        >>> gt = np.array([1, 1, 2, 2]); instance_scores(np.array([5, 5, 5, 5]), gt)["vi_merge"]
        1.0
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, _ = _contingency(s, g, ignore_gt_zero=True, seg_zero_is_label=True)
    if n == 0:
        raise FusionNetError("ground truth has no labelled (non-zero) voxel: nothing to score")
    split, merge = _vi_bits(n, nij, a, b)

    def pairs(x):
        x = x.astype(np.float64)
        return float(np.sum(x * (x - 1.0)))

    both, in_gt, in_seg = pairs(nij), pairs(a), pairs(b)
    rand_split = both / in_gt if in_gt else 1.0
    rand_merge = both / in_seg if in_seg else 1.0
    arand = 1.0 - (2.0 * both / (in_gt + in_seg) if in_gt + in_seg else 1.0)
    vi = split + merge
    return {
        "vi_split": split,
        "vi_merge": merge,
        "vi": vi,
        "arand": float(arand),
        "rand_split": float(rand_split),
        "rand_merge": float(rand_merge),
        "cremi": float(math.sqrt(max(vi * arand, 0.0))),
        "objects": int(np.count_nonzero(np.unique(s))),
        "gt_objects": int(np.count_nonzero(np.unique(g))),
        "voxels": int(n),
    }
