"""Population statistics of measured nuclei: K-means silhouettes and the left-right symmetry check.

Built on the records of :mod:`fusionnet_keras.evaluation.morphology` (its
:func:`~fusionnet_keras.evaluation.morphology.feature_matrix`,
:func:`~fusionnet_keras.evaluation.morphology.cluster` and
:func:`~fusionnet_keras.evaluation.morphology.whole`).
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.evaluation.morphology import FEATURES, cluster, feature_matrix, whole

__all__ = ["SYMMETRY_FEATURES", "silhouettes", "symmetry"]


def silhouettes(records, ks=range(2, 7), seed: int = 0) -> dict:
    """Mean silhouette of K-means on the standardised features of the whole nuclei, for each k in ``ks``
    (higher = better separated clusters; a k needs more than k nuclei)."""
    from sklearn.metrics import silhouette_score

    x = feature_matrix(whole(records))
    x = x[np.all(np.isfinite(x), axis=1)]
    out = {}
    for k in ks:
        if len(x) > k:
            labels = cluster(x, k=k, seed=seed)
            if len(np.unique(labels)) > 1:
                std = x.std(axis=0)
                out[int(k)] = float(silhouette_score((x - x.mean(axis=0)) / np.where(std > 0, std, 1), labels))
    return out


SYMMETRY_FEATURES = FEATURES + ("midline_distance_um",)
"""What :func:`symmetry` compares between the two sides: the features and the distance to the midline."""


def symmetry(records, midline_x_um: float) -> dict:
    """The 2016 paper's left-right check: feature distributions of the two halves split at the midline.

    The whole nuclei (:func:`whole`) are split by their centroid's x
    (``centroid_x_um``) at ``midline_x_um``; for the volume, surface area,
    sphericity and the distance to the midline (mirror-symmetric positions
    give equal distributions), the two samples are compared with a two-sample
    Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``). Returns ``{"n_left",
    "n_right", "midline_x_um", "features": {name: {"median_left",
    "median_right", "ks", "p"}}}`` (empty ``features`` when a side has no nucleus).

    Examples:
        >>> recs = [dict(volume_um3=v, surface_area_um2=2 * v, sphericity=0.9, centroid_x_um=x)
        ...         for v, x in ((10, 1.0), (20, 2.0), (10, 5.0), (20, 4.0))]
        >>> symmetry(recs, 3.0)["features"]["volume_um3"]["ks"]
        0.0
    """
    from scipy.stats import ks_2samp

    recs = whole(records)
    xs = np.array([float(r["centroid_x_um"]) for r in recs])
    left, right = xs < midline_x_um, xs >= midline_x_um
    values = {name: feature_matrix(recs)[:, i] for i, name in enumerate(FEATURES)} if recs else {}
    values["midline_distance_um"] = np.abs(xs - midline_x_um)
    result = {"n_left": int(left.sum()), "n_right": int(right.sum()), "midline_x_um": float(midline_x_um),
              "features": {}}
    if left.any() and right.any():
        for name in SYMMETRY_FEATURES:
            a, b = values[name][left], values[name][right]
            test = ks_2samp(a, b)
            result["features"][name] = {"median_left": float(np.median(a)), "median_right": float(np.median(b)),
                                        "ks": float(test.statistic), "p": float(test.pvalue)}
    return result
