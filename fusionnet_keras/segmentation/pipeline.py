"""From affinities to neuron labels: z-watershed fragments, then agglomeration or multicut; or the mutex watershed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults
from fusionnet_keras.segmentation.agglomeration import MeanAffinity, agglomerate, check_thresholds, map_ids
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
            watershed_options: WatershedOptions | None = None, hops: int = defaults.LIFTED_HOPS,
            offsets=None, stride=(1, 1, 1), mws_size: int = 0, weighting: str | None = None):
    """Segment ``affs``; yields ``(threshold, labels)`` per threshold (uint64, 0 = background).

    Args:
        affs: ``(3, Z, Y, X)`` affinities in [0, 1] (see
            :mod:`fusionnet_keras.segmentation.inputs`; a long-range network's ``(C, Z, Y, X)``: the
            methods other than ``"mws"`` read the first 3 channels).
        method: ``"watershed"`` (the fragments; one result, threshold None),
            ``"mean"`` (hierarchical agglomeration by mean boundary affinity),
            ``"learned"`` (by a trained
            :class:`~fusionnet_keras.segmentation.learned.BoundaryClassifier`),
            ``"multicut"`` / ``"lifted-multicut"`` of the fragments' region
            graph (:mod:`~fusionnet_keras.segmentation.multicut`; costs from
            the classifier when one is given, else from the mean affinity) or
            ``"mws"``, the mutex watershed of the voxels
            (:mod:`~fusionnet_keras.segmentation.mws`).
        thresholds: agglomeration thresholds in [0, 1] (default 0.5), all
            computed in one pass; higher = more merging. For the multicuts and
            the mutex watershed: boundary biases beta in (0, 1) (default 0.5),
            one solution each; higher = more splitting.
        fragments: an over-segmentation to agglomerate instead of the
            z-watershed's (same shape as the affinities).
        classifier: the classifier of ``"learned"`` (optional for the multicuts).
        watershed_options: :class:`WatershedOptions` of the fragments.
        hops: ``"lifted-multicut"`` without long-range channels: lifted edges up to this many boundaries
            apart.
        offsets: ``"mws"`` and ``"lifted-multicut"``: the offsets ``(dz, dy, dx)`` of the long-range
            channels that follow the three nearest-neighbour ones in ``affs``
            (``(3 + len(offsets), Z, Y, X)``): the mutex watershed's repulsive edges, or the lifted
            multicut's lifted edges (:func:`~fusionnet_keras.segmentation.multicut.affinity_lifted_edges`,
            instead of ``hops``).
        stride: ``"mws"``: the voxel grid that keeps repulsive edges.
        mws_size: ``"mws"``: segments smaller than this (voxels) merge into their strongest neighbour
            (:func:`~fusionnet_keras.segmentation.mws.merge_small`; 0: off).
        weighting: the multicuts' edge weighting, ``"none"`` or ``"size"`` (costs times contact area;
            :mod:`~fusionnet_keras.segmentation.multicut`); None: the method's default
            (:data:`~fusionnet_keras.segmentation.defaults.MULTICUT_WEIGHTING`).

    Examples:
        >>> affs = np.ones((3, 2, 4, 8), np.float32); affs[2, :, :, 4] = 0.3
        >>> ws = WatershedOptions(size=0)
        >>> [(t, np.unique(s).tolist()) for t, s in segment(affs, "mean", [0.5, 0.8], watershed_options=ws)]
        [(0.5, [1, 2]), (0.8, [1])]
    """
    from fusionnet_keras.segmentation.graph import region_graph
    from fusionnet_keras.segmentation.inputs import as_affinities, check_labels

    if method not in defaults.METHODS:
        raise FusionNetError(f"unknown method {method!r}; choose one of {', '.join(defaults.METHODS)}")
    if method == "mws":
        yield from _mutex_watershed(affs, thresholds, fragments, classifier, offsets, stride, mws_size)
        return
    if (offsets is not None and method != "lifted-multicut") or mws_size:
        raise FusionNetError("offsets (long-range affinity channels) are used by the mws and lifted-multicut "
                             "methods, the mws size by mws only")
    if weighting is not None and method not in ("multicut", "lifted-multicut"):
        raise FusionNetError("the edge weighting is for the multicut and lifted-multicut methods")
    long_range = None
    if offsets is not None:
        from fusionnet_keras.segmentation.mws import check_offsets

        offsets, affs = check_offsets(offsets), np.asarray(affs)
        if affs.ndim != 4 or affs.shape[0] != 3 + len(offsets):
            raise FusionNetError(f"affinities of shape {tuple(affs.shape)} do not hold 3 nearest-neighbour "
                                 f"channels and {len(offsets)} long-range ones")
        affs, long_range = affs[:3], affs[3:]
    affs = as_affinities(affs)
    options = watershed_options or WatershedOptions()
    if method == "watershed":
        if fragments is not None:
            raise FusionNetError("the watershed method computes the fragments; give fragments only to the "
                                 "agglomerations and multicuts")
        if thresholds is not None:
            raise FusionNetError("the watershed method takes no agglomeration threshold")
        yield None, options.run(affs)
        return
    if method in defaults.BETA_METHODS:
        from fusionnet_keras.segmentation.multicut import check_betas

        thresholds = check_betas([defaults.BETA] if thresholds is None else thresholds)
    else:
        thresholds = check_thresholds([defaults.THRESHOLD] if thresholds is None else thresholds)
    if method == "learned" and classifier is None:
        raise FusionNetError("the learned method needs a classifier (train one with train-agglomeration)")
    if method == "mean" and classifier is not None:
        raise FusionNetError("a classifier is only used by the learned method and the multicuts")
    if fragments is None:
        fragments = options.run(affs)
    else:
        fragments = check_labels(fragments, "fragments", shape=affs.shape[1:])
    if method in ("multicut", "lifted-multicut"):
        from fusionnet_keras.data.io.images import as_probability
        from fusionnet_keras.segmentation.multicut import affinity_lifted_edges, multicut_graph

        graph = region_graph(affs, fragments, bins=0 if classifier is None else classifier.bins)
        lifted = None
        if long_range is not None:
            lifted = affinity_lifted_edges(graph, fragments, as_probability(long_range, "affinities"), offsets)
        lifted_hops = hops if method == "lifted-multicut" and lifted is None else 0
        for beta, ids in multicut_graph(graph, thresholds, classifier, hops=lifted_hops, weighting=weighting,
                                        lifted=lifted):
            yield beta, map_ids(fragments, graph.nodes, ids)
        return
    if method == "learned":
        from fusionnet_keras.segmentation.learned import LearnedScore

        graph, scorer = region_graph(affs, fragments, bins=classifier.bins), LearnedScore(classifier)
    else:
        graph, scorer = region_graph(affs, fragments), MeanAffinity()
    for t, ids in agglomerate(graph, thresholds, scorer):
        yield t, map_ids(fragments, graph.nodes, ids)


def _mutex_watershed(affs, betas, fragments, classifier, offsets, stride, size=0):
    """The ``"mws"`` method of :func:`segment`: one mutex watershed per beta (segments under ``size`` voxels
    merged into their strongest neighbour)."""
    from fusionnet_keras.data.affinities import OFFSETS
    from fusionnet_keras.segmentation.multicut import check_betas
    from fusionnet_keras.segmentation.mws import check_offsets, merge_small, mutex_watershed

    if fragments is not None or classifier is not None:
        raise FusionNetError("the mws method partitions the voxels: it takes no fragments and no classifier")
    if not offsets:
        raise FusionNetError("the mws method needs long-range affinity channels and their offsets")
    offsets = list(OFFSETS) + check_offsets(offsets)
    for beta in check_betas([defaults.BETA] if betas is None else betas):
        labels = mutex_watershed(affs, offsets, attractive=len(OFFSETS), beta=beta, stride=stride)
        yield beta, merge_small(affs, labels, size)
