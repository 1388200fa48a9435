"""Nucleus instance segmentation of a probability volume, and its scores (the zebrafish experiment).

:func:`segment_nuclei` thresholds a probability volume and labels it in 3-D
(connected components, or the mask split by a seeded watershed of its distance
transform); :func:`nucleus_table3_scores` scores a probability volume the 2016
paper's way (Table 3: the ISBI 2012 scores per section, and Dice), and
:func:`nucleus_scores` scores nucleus instances in 3-D against the ground
truth's nucleus ids (not to be confused with the neuron-segmentation scores
:func:`fusionnet_keras.evaluation.volume.instance_scores`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation import dice, isbi_scores, vrand_vinfo_3d
from fusionnet_keras.evaluation.postprocess import relabel


def segment_nuclei(prob: np.ndarray, threshold=0.5, min_voxels=0, method="components", voxel_size=None,
            min_radius_um=2.0) -> np.ndarray:
    """Nucleus instances from a probability volume: threshold, then label in 3-D.

    ``method="components"``: 3-D connected components (6-connectivity).
    ``method="watershed"`` (the project's split): the same mask split by a
    watershed of its distance transform (with the anisotropic ``voxel_size``,
    nm), seeded at the distance maxima that are at least ``min_radius_um`` (the
    smallest nucleus radius) apart -- so a round nucleus, whose distance
    transform has one maximum at its centre and none within its radius, gives
    one seed, and each of two touching nuclei (centres farther apart than
    either radius) gets its own. Holes enclosed by the mask are filled for the
    distance transform. Every component keeps at least one seed.
    Objects smaller than ``min_voxels`` are removed; labels are 1..N.

    Examples:
        >>> z, y, x = np.mgrid[:24, :24, :48]
        >>> two = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 13) ** 2 <= 100) | ((z - 12) ** 2 + (y - 12) ** 2 + (x - 32) ** 2 <= 100)
        >>> int(segment_nuclei(two.astype("float32"), method="watershed", voxel_size=(100, 100, 100), min_radius_um=0.8).max())
        2
    """
    mask = np.asarray(prob) > threshold
    labels, n = ndimage.label(mask)
    if method == "watershed" and n:
        labels = _split_touching(mask, labels, voxel_size, min_radius_um)
    elif method not in ("components", "watershed"):
        raise FusionNetError(f"unknown instance method {method!r}; use components or watershed")
    if labels.max() and min_voxels:
        labels, _ = relabel(labels, min_size=min_voxels)
    return labels.astype(np.int32)


def _split_touching(mask, components, voxel_size, min_radius_um: float) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    vs_um = (np.full(3, 1000.0) if voxel_size is None else np.asarray(voxel_size, float)) / 1000.0
    # enclosed holes (a nucleolus predicted as background) would put distance maxima around them
    dist = ndimage.distance_transform_edt(ndimage.binary_fill_holes(mask), sampling=vs_um)
    min_distance = max(1, int(round(min_radius_um / vs_um.min())))  # in voxels of the finest axis
    peaks = peak_local_max(dist, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    missing = np.setdiff1d(np.arange(1, components.max() + 1), components[tuple(peaks.T)])
    for i, c in enumerate(missing, start=len(peaks) + 1):  # a component without a maximum keeps one seed
        markers[np.unravel_index(np.argmax(np.where(components == c, dist, -1)), mask.shape)] = i
    return watershed(-dist, markers, mask=mask).astype(np.int32)


def nucleus_table3_scores(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict:
    """Table 3 the paper's way: V^Rand / V^Info of the ISBI 2012 challenge per section, and Dice.

    ``isbi_scores`` of the probability volume against the binary nucleus mask
    of ``gt`` (the Fiji script on a stack: per section, the 4-connected
    components of the thresholded prediction, border thinning,
    foreground-restricted, averaged over sections, maximised over thresholds
    0.0..1.0); Dice of ``prob > threshold`` against the mask.
    """
    mask = np.asarray(gt) > 0
    s = isbi_scores(np.asarray(prob, np.float32), mask.astype(np.uint8))
    return {"vrand": s["vrand"], "vinfo": s["vinfo"], "vrand_threshold": s["vrand_threshold"],
            "vinfo_threshold": s["vinfo_threshold"], "dice": float(dice(np.asarray(prob) > threshold, mask))}


def nucleus_scores(instances: np.ndarray, gt: np.ndarray) -> dict:
    """The project's 3-D scores: V^Rand / V^Info of the instances against the nucleus ids of ``gt``
    (restricted to nucleus voxels, no thinning), and the numbers of nuclei."""
    s = vrand_vinfo_3d(instances, gt)
    return {"vrand": float(s["vrand"]), "vinfo": float(s["vinfo"]), "n_nuclei": int(instances.max()),
            "n_gt_nuclei": int(len(np.unique(gt[gt > 0])))}
