"""Fragments from affinities: the z-watershed of Zlateski & Seung (2015).

*Image segmentation by size-dependent single linkage clustering of a
watershed basin graph* (Zlateski, Seung; arXiv 1505.00249, 2015), as used by
the third paper (Parag et al.) to over-segment anisotropic EM before the
agglomeration:

1. affinities ``>= high`` join their voxels unconditionally (connected
   components at ``T_high``); links ``<= low`` are cut, and a voxel none of
   whose six links exceeds ``low`` is background (label 0: the only place 0
   appears);
2. steepest-ascent watershed on what is left: every voxel follows its
   strongest link(s), plateaus are divided by breadth-first search, every
   basin (seeded by a local affinity maximum) becomes a fragment;
3. size-dependent single linkage on the basin graph (edge weight = the maximum
   affinity between two basins): edges in decreasing weight, down to
   ``merge_affinity`` (``T_e``), join two basins when either is smaller than
   ``size`` voxels (``T_size``; 0 = off).

Steps 1-2 are waterz's watershed (``waterz.agglomerate`` without fragments,
threshold 0: no agglomeration), which implements them as the paper does;
waterz has no step 3, implemented here. Not implemented: the paper's final
"dust" step that sets leftover small fragments to background (here they stay
fragments, so background comes only from the input), and size thresholds
that vary with the affinity (one constant ``size`` above ``merge_affinity``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.postprocess import relabel
from fusionnet_keras.segmentation import defaults



@contextlib.contextmanager
def quiet_stdout():
    """Silence output of compiled code (waterz prints progress to the C++ ``std::cout``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        with contextlib.redirect_stdout(io.StringIO()):  # its Python-level prints
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _basins(affs: np.ndarray, low: float, high: float) -> np.ndarray:
    import waterz

    with quiet_stdout():
        return next(iter(waterz.agglomerate(
            np.ascontiguousarray(affs, dtype=np.float32), [0.0],
            aff_threshold_low=float(low), aff_threshold_high=float(high),
        )))


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        parent[i], i = root, parent[i]
    return root


def first_voxels(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The scan-order (C-order) index of the first voxel of each label in ``ids`` (all present in ``labels``)."""
    found, first = np.unique(np.asarray(labels).ravel(), return_index=True)
    return first[np.searchsorted(found, ids)].astype(np.int64)


def size_merge(graph, size: int, merge_affinity: float, keys=None) -> np.ndarray:
    """Step 3: the root row of every node of ``graph`` after size-dependent single linkage.

    Edges are taken in decreasing weight; equally strong edges (common: the
    affinities of a boundary map repeat the map's values) in increasing order
    of their nodes' ``keys`` (smaller key first, then the larger), one distinct
    number per node. The scan-order index of each fragment's first voxel
    (:func:`first_voxels`, the default's order for the watershed's ids) makes
    the result independent of how the fragments are numbered, e.g. block by block.
    """
    n = graph.num_nodes
    parent = np.arange(n)
    if size <= 0 or graph.num_edges == 0:
        return parent
    sizes = graph.size.astype(np.int64).copy()
    weight = graph.max.max(axis=1)
    ui, vi = graph.node_index(graph.u), graph.node_index(graph.v)
    key = np.arange(n) if keys is None else np.asarray(keys, np.int64)
    lo, hi = np.minimum(key[ui], key[vi]), np.maximum(key[ui], key[vi])
    order = np.lexsort((hi, lo, -weight))
    order = order[weight[order] >= merge_affinity]
    for a, b in zip(ui[order].tolist(), vi[order].tolist()):
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb and (sizes[ra] < size or sizes[rb] < size):
            if sizes[ra] < sizes[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            sizes[ra] += sizes[rb]
    return np.array([_find(parent, i) for i in range(n)])


def watershed(affs, low: float = defaults.WATERSHED_LOW, high: float = defaults.WATERSHED_HIGH,
              size: int = defaults.WATERSHED_SIZE,
              merge_affinity: float = defaults.WATERSHED_MERGE_AFFINITY) -> np.ndarray:
    """z-watershed fragments of ``affs`` (Zlateski & Seung 2015), uint64, 1..K, 0 = background.

    Args:
        affs: ``(3, Z, Y, X)`` affinities in [0, 1] (channel order z, y, x).
        low: ``T_low``: links at or below it are cut; voxels without a link
            above it are background.
        high: ``T_high``: links at or above it always join.
        size: ``T_size``: fragments smaller than this merge with their
            strongest neighbour (0: no size merging).
        merge_affinity: ``T_e``: only basin-graph edges at least this strong
            take part in the size merging.

    Examples:
        >>> affs = np.ones((3, 2, 4, 8), np.float32); affs[2, :, :, 4] = 0   # a cut between x=3 and x=4
        >>> np.unique(watershed(affs, size=0)).tolist()
        [1, 2]
    """
    from fusionnet_keras.utils.validate import check_int

    affs = np.asarray(affs)
    if affs.ndim != 4 or affs.shape[0] != 3:
        raise FusionNetError(f"watershed needs affinities (3, Z, Y, X), got shape {tuple(affs.shape)}")
    size = check_int("watershed size", size, minimum=0)
    if not 0.0 <= low < high <= 1.0:
        raise FusionNetError(f"watershed thresholds need 0 <= low < high <= 1, got low {low:g}, high {high:g}")
    if not 0.0 <= merge_affinity <= 1.0:
        raise FusionNetError(f"watershed merge affinity must lie in [0, 1], got {merge_affinity:g}")
    return merge_small_regions(affs, _basins(affs, low, high), size, merge_affinity)


def merge_small_regions(affs, labels, size: int, merge_affinity: float = 0.0) -> np.ndarray:
    """``labels`` with every region under ``size`` voxels merged into its strongest neighbour across a
    boundary of at least ``merge_affinity`` (:func:`size_merge` on their region graph of the
    ``(3, Z, Y, X)`` ``affs``), renumbered ``1..K`` (uint64; 0 stays background)."""
    if size > 0:
        from fusionnet_keras.segmentation.graph import region_graph

        graph = region_graph(affs, labels)
        roots = size_merge(graph, size, merge_affinity, first_voxels(labels, graph.nodes))
        lut = np.zeros(int(labels.max()) + 1, np.uint64)
        lut[graph.nodes.astype(np.int64)] = graph.nodes[roots]
        labels = lut[labels]
    return relabel(labels.astype(np.uint64, copy=False))[0]
