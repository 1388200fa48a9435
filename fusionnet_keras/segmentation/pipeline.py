"""From affinities to neuron labels: z-watershed fragments, then mean or learned agglomeration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults
from fusionnet_keras.segmentation.agglomeration import MeanAffinity, agglomerate, check_thresholds, relabel
from fusionnet_keras.segmentation.zwatershed import watershed



@dataclass(frozen=True)
class WatershedOptions:
    """Settings of the z-watershed (see :func:`~fusionnet_keras.segmentation.zwatershed.watershed`)."""

    low: float = defaults.WATERSHED_LOW
    high: float = defaults.WATERSHED_HIGH
    size: int = defaults.WATERSHED_SIZE
    merge_affinity: float = defaults.WATERSHED_MERGE_AFFINITY

    def run(self, affs) -> np.ndarray:
        return watershed(affs, low=self.low, high=self.high, size=self.size, merge_affinity=self.merge_affinity)


def segment(affs, method: str = "mean", thresholds=None, fragments=None, classifier=None,
            watershed_options: WatershedOptions | None = None):
    """Segment ``affs``; yields ``(threshold, labels)`` per threshold (uint64, 0 = background).

    Args:
        affs: ``(3, Z, Y, X)`` affinities in [0, 1] (see
            :mod:`fusionnet_keras.segmentation.inputs`).
        method: ``"watershed"`` (the fragments; one result, threshold None),
            ``"mean"`` (hierarchical agglomeration by mean boundary affinity)
            or ``"learned"`` (by a trained
            :class:`~fusionnet_keras.segmentation.learned.BoundaryClassifier`).
        thresholds: agglomeration thresholds in [0, 1] (default 0.5), all
            computed in one pass; higher = more merging.
        fragments: an over-segmentation to agglomerate instead of the
            z-watershed's (same shape as the affinities).
        classifier: the classifier of ``"learned"``.
        watershed_options: :class:`WatershedOptions` of the fragments.

    Example:
        >>> affs = np.ones((3, 2, 4, 8), np.float32); affs[2, :, :, 4] = 0.3
        >>> ws = WatershedOptions(size=0)
        >>> [(t, np.unique(s).tolist()) for t, s in segment(affs, "mean", [0.5, 0.8], watershed_options=ws)]
        [(0.5, [1, 2]), (0.8, [1])]
    """
    from fusionnet_keras.segmentation.graph import region_graph
    from fusionnet_keras.segmentation.inputs import as_affinities, check_labels

    if method not in defaults.METHODS:
        raise FusionNetError(f"unknown method {method!r}; choose one of {', '.join(defaults.METHODS)}")
    affs = as_affinities(affs)
    options = watershed_options or WatershedOptions()
    if method == "watershed":
        if fragments is not None:
            raise FusionNetError("the watershed method computes the fragments; give fragments only to mean or learned")
        if thresholds is not None:
            raise FusionNetError("the watershed method takes no agglomeration threshold")
        yield None, options.run(affs)
        return
    thresholds = check_thresholds([defaults.THRESHOLD] if thresholds is None else thresholds)
    if method == "learned" and classifier is None:
        raise FusionNetError("the learned method needs a classifier (train one with train-agglomeration)")
    if method == "mean" and classifier is not None:
        raise FusionNetError("a classifier is only used by the learned method")
    if fragments is None:
        fragments = options.run(affs)
    else:
        fragments = check_labels(fragments, "fragments", shape=affs.shape[1:])
    if method == "learned":
        from fusionnet_keras.segmentation.learned import LearnedScore

        graph, scorer = region_graph(affs, fragments, bins=classifier.bins), LearnedScore(classifier)
    else:
        graph, scorer = region_graph(affs, fragments), MeanAffinity()
    for t, ids in agglomerate(graph, thresholds, scorer):
        yield t, relabel(fragments, graph.nodes, ids)
