"""Multicut and lifted multicut of the region graph: GAEC followed by Kernighan-Lin refinement.

The multicut partitions the fragments so that the sum of the costs of the cut
boundaries is least; a cost ``w > 0`` says "join" (cutting it costs ``w``),
``w < 0`` says "cut". From a boundary's probability ``p`` of being real (the
learned classifier's, or ``1 - mean affinity`` without one; clipped to
``[EPS, 1 - EPS]``) and a boundary bias ``beta`` in (0, 1)::

    w = log((1 - p) / p) + log((1 - beta) / beta)

so higher ``beta`` cuts more (0.5: no bias).

The *lifted* multicut (Keuper et al. 2015, Beier et al. 2016) adds lifted
edges between fragments that do not touch: they count in the objective (cut
when the two fragments end in different segments) but never join anything
themselves; every segment is connected by local boundaries. Here the lifted
edges join the fragments 2..``hops`` boundaries apart in the region graph
(breadth-first search); the merge probability of a lifted pair is that of its
most likely joining path of at most ``hops`` boundaries, the product of the
``1 - p`` along it (the boundaries taken as independent), and its cost the
same formula. A network that predicts long-range affinities (``model.offsets``)
gives the lifted edges directly instead (:func:`affinity_lifted_edges`): every
pair of fragments that do not touch but are linked by a long-range offset, with
the merge probability the mean long-range affinity over their linked voxel
pairs.

``weighting="size"`` multiplies each local cost by the boundary's contact
area (voxel links, over the graph's mean), so that a tiny contact weighs
little against a large face, the multicut of the voxel graph restricted to the
fragments (lifted edges from affinities: by their voxel pairs over the mean;
lifted edges by hops: weight 1). ``"none"``: every boundary counts once.

Solver (both problems): greedy additive edge contraction (GAEC, Keuper et al.
2015: contract the local edge of largest positive cost, parallel edges add
up), then passes of Kernighan-Lin refinement: single fragments move to a
neighbouring segment or a new one, the largest gain first (negative gains too,
so groups can follow a first fragment), each pass kept up to its best point;
after a pass GAEC joins segments again where that pays, segments are split
into their locally connected parts, and the pass is kept only when the
objective drops. The result is never worse than GAEC alone. Compiled with
numba (:mod:`~fusionnet_keras.segmentation._multicut_kernel`).
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation.defaults import MULTICUT_WEIGHTING, MULTICUT_WEIGHTINGS

#: Probabilities are clipped to [EPS, 1 - EPS] before the log-odds.
EPS = 1e-3
#: Default lifted-edge reach (boundaries) of the lifted multicut.
HOPS = 2
#: Moves a Kernighan-Lin pass tries past its best point.
EXPLORE = 64
#: Most Kernighan-Lin passes.
PASSES = 100


def check_betas(betas) -> list[float]:
    """Boundary biases as a sorted list of distinct floats in (0, 1)."""
    from fusionnet_keras.segmentation.agglomeration import check_values

    return check_values(betas, "beta", lambda b: 0.0 < b < 1.0, "(0, 1) (open)")


def costs(p, beta: float) -> np.ndarray:
    """Edge costs ``log((1 - p) / p) + log((1 - beta) / beta)`` from boundary probabilities ``p``.

    Examples:
        >>> costs([0.5, 0.9], 0.5).round(3).tolist(), costs([0.5], 0.9).round(3).tolist()
        ([0.0, -2.197], [-2.197])
    """
    (beta,) = check_betas([beta])
    p = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
    return np.log((1.0 - p) / p) + np.log((1.0 - beta) / beta)


def _edges(n, u, v, w):
    n = int(n)
    u, v = np.asarray(u, np.int64).ravel(), np.asarray(v, np.int64).ravel()
    w = np.asarray(w, np.float64).ravel()
    if not u.size == v.size == w.size:
        raise FusionNetError(f"edges: u, v and costs differ in length ({u.size}, {v.size}, {w.size})")
    if u.size and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= n):
        raise FusionNetError(f"edges: a node is outside 0..{n - 1}")
    if not np.all(np.isfinite(w)):
        raise FusionNetError("edges: costs must be finite")
    return u, v, w


def _compact(roots) -> np.ndarray:
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _csr(n, u, v, w, local):
    order = np.argsort(np.concatenate([u, v]), kind="stable")
    nbr = np.concatenate([v, u])[order]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(np.concatenate([u, v]), minlength=n), out=indptr[1:])
    return indptr, nbr, np.concatenate([w, w])[order], np.concatenate([local, local])[order]


def objective(u, v, w, labels) -> float:
    """Sum of the costs of the edges whose ends have different labels (the multicut objective)."""
    labels = np.asarray(labels)
    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    return float(np.asarray(w, np.float64)[labels[u] != labels[v]].sum())


def solve(n, u, v, w, lifted=None, refine: bool = True, explore: int = EXPLORE, passes: int = PASSES) -> np.ndarray:
    """Minimise the (lifted) multicut objective; returns a label ``0..k-1`` for each node.

    Args:
        n: number of nodes (rows ``0..n-1``).
        u: first node of each local edge.
        v: second node of each local edge.
        w: the local edges' costs (> 0: join).
        lifted: optional ``(u, v, w)`` of lifted edges (counted, never contracted).
        refine: Kernighan-Lin after GAEC (False: GAEC alone).
        explore: moves per pass past its best point.
        passes: most passes.

    Examples:
        >>> solve(4, [0, 1, 2], [1, 2, 3], [2.0, -1.0, 1.5]).tolist()
        [0, 0, 1, 1]
        >>> solve(3, [0, 1], [1, 2], [1.0, 1.0], lifted=([0], [2], [-5.0])).tolist()  # 0 and 2 kept apart
        [0, 0, 1]
    """
    from fusionnet_keras.segmentation import _multicut_kernel as k

    u, v, w = _edges(n, u, v, w)
    local = np.ones(u.size, bool)
    if lifted is not None:
        lu, lv, lw = _edges(n, *lifted)
        u, v, w = np.concatenate([u, lu]), np.concatenate([v, lv]), np.concatenate([w, lw])
        local = np.concatenate([local, np.zeros(lu.size, bool)])
    keep = u != v
    u, v, w, local = u[keep], v[keep], w[keep], local[keep]
    labels = _compact(k.gaec(n, u, v, w, local))
    if not refine or u.size == 0:
        return labels
    energy = objective(u, v, w, labels)
    indptr, nbr, wt, loc = _csr(n, u, v, w, local)
    for _ in range(int(passes)):
        trial = labels.copy()
        if k.move_pass(trial, indptr, nbr, wt, loc, int(explore)) <= 1e-9:
            break
        trial = _compact(trial)
        cu, cv = trial[u], trial[v]
        across = cu != cv
        trial = k.gaec(int(trial.max()) + 1, cu[across], cv[across], w[across], local[across])[trial]
        trial = _compact(k.local_components(trial, u, v, local))
        new = objective(u, v, w, trial)
        if new >= energy - 1e-9:
            break
        labels, energy = trial, new
    return labels


def lifted_edges(n, u, v, p, hops: int = HOPS):
    """Lifted edges of nodes 2..``hops`` local edges apart: ``(lu, lv, q)``, q the merge probability.

    ``q`` is the largest product of ``1 - p`` (``p`` clipped) over the paths of
    at most ``hops`` local edges joining the pair.

    Examples:
        >>> [np.round(a, 6).tolist() for a in lifted_edges(3, [0, 1], [1, 2], [0.5, 0.2])]
        [[0], [2], [0.4]]
    """
    from fusionnet_keras.segmentation import _multicut_kernel as k

    if int(hops) < 2:
        raise FusionNetError(f"lifted edges need hops >= 2, got {hops}")
    u, v, p = _edges(n, u, v, p)
    p = np.clip(p, EPS, 1.0 - EPS)
    indptr, nbr, length, _ = _csr(int(n), u, v, -np.log1p(-p), np.ones(u.size, bool))
    lu, lv, dist = k.hop_paths(int(n), indptr, nbr, length, int(hops))
    return lu, lv, np.exp(-dist)


def boundary_probabilities(graph, classifier=None) -> np.ndarray:
    """P(boundary is real) of every edge of ``graph``: the classifier's, or ``1 - mean affinity``."""
    from fusionnet_keras.segmentation.agglomeration import Agglomerator, MeanAffinity

    if graph.num_edges == 0:
        raise FusionNetError("the region graph has no edges: the fragments do not touch, nothing to partition")
    agg = Agglomerator(graph, MeanAffinity())
    edges = np.arange(graph.num_edges)
    if classifier is None:
        return MeanAffinity()(agg, edges)
    from fusionnet_keras.segmentation.learned import LearnedScore

    if graph.bins != classifier.bins:
        raise FusionNetError(f"the classifier needs a region graph with {classifier.bins} histogram bins, "
                             f"the graph has {graph.bins}")
    return LearnedScore(classifier)(agg, edges)


def check_weighting(weighting: str) -> str:
    """``weighting`` if it is one of :data:`~fusionnet_keras.segmentation.defaults.MULTICUT_WEIGHTINGS`."""
    if weighting not in MULTICUT_WEIGHTINGS:
        raise FusionNetError(f"multicut weighting must be one of {', '.join(MULTICUT_WEIGHTINGS)}, got {weighting!r}")
    return weighting


def _weights(counts, weighting: str) -> np.ndarray:
    """1 per edge (``"none"``), or ``counts`` over their mean (``"size"``)."""
    counts = np.asarray(counts, np.float64)
    if check_weighting(weighting) == "none" or counts.size == 0:
        return np.ones(counts.size)
    return counts / max(counts.mean(), 1e-12)


def affinity_lifted_edges(graph, fragments, affs, offsets):
    """Lifted edges from long-range affinities: ``(lu, lv, q, n)`` node rows of ``graph``, the mean affinity
    ``q`` (the merge probability) and the number ``n`` of voxel pairs, for every pair of fragments that are
    linked by one of ``offsets`` (channel ``c`` of ``affs`` links ``v`` and ``v + offsets[c]``) and are not
    neighbours in ``graph``; pairs touching background (0) are left out.

    Example:
        >>> from fusionnet_keras.segmentation.graph import region_graph
        >>> frag = np.array([[[1, 1, 1, 2, 3, 3, 3]]], np.uint64)      # 1 and 3 do not touch
        >>> g = region_graph(np.ones((3, 1, 1, 7), np.float32), frag)
        >>> long = np.array([[[[0, 0, 0, 0, 0.1, 0.3, 0.2]]]], np.float32)  # offset (0, 0, -4): x links x - 4
        >>> [np.round(a, 3).tolist() for a in affinity_lifted_edges(g, frag, long, [(0, 0, -4)])]
        [[0], [2], [0.2], [3]]
    """
    from fusionnet_keras.data.affinities import offset_pairs

    affs, fragments = np.asarray(affs), np.asarray(fragments)
    if affs.ndim != 4 or affs.shape[0] != len(offsets) or affs.shape[1:] != fragments.shape:
        raise FusionNetError(f"long-range affinities of shape {tuple(affs.shape)} do not match {len(offsets)} "
                             f"offsets and fragments of shape {tuple(fragments.shape)}")
    n = graph.num_nodes
    keys, values = [], []
    for c, (here, there) in enumerate(offset_pairs(fragments.shape, offsets)):
        a, b = fragments[here].ravel(), fragments[there].ravel()
        keep = (a != b) & (a != 0) & (b != 0)
        a, b = graph.node_index(a[keep]), graph.node_index(b[keep])
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        values.append(affs[c][here].ravel()[keep].astype(np.float64))
    keys, values = np.concatenate(keys), np.concatenate(values)
    pairs, inverse = np.unique(keys, return_inverse=True)
    count, total = np.bincount(inverse, minlength=pairs.size), np.bincount(inverse, values, minlength=pairs.size)
    u, v = graph.node_index(graph.u), graph.node_index(graph.v)
    lifted = ~np.isin(pairs, np.minimum(u, v) * n + np.maximum(u, v))
    pairs, count, total = pairs[lifted], count[lifted], total[lifted]
    return pairs // n, pairs % n, total / np.maximum(count, 1), count


def multicut_graph(graph, betas, classifier=None, hops: int = 0, refine: bool = True, weighting: str | None = None,
                   lifted=None):
    """(Lifted) multicut of a region graph for each beta; yields ``(beta, segment id of every node)``.

    Args:
        graph: :class:`~fusionnet_keras.segmentation.graph.RegionGraph` (with
            the classifier's histogram bins when one is given).
        betas: boundary biases in (0, 1), in any order (solved in increasing order).
        classifier: :class:`~fusionnet_keras.segmentation.learned.BoundaryClassifier`
            giving ``p`` (default: ``1 - mean affinity``).
        hops: 0 for the multicut, >= 2 for the lifted multicut with lifted
            edges up to this many boundaries apart.
        refine: Kernighan-Lin after GAEC.
        weighting: ``"none"`` or ``"size"`` (costs times contact area; see the module docstring); None:
            the method's default (:data:`~fusionnet_keras.segmentation.defaults.MULTICUT_WEIGHTING`: none
            for the multicut, size for the lifted multicut).
        lifted: ``(lu, lv, q, n)`` of :func:`affinity_lifted_edges`: the lifted multicut with these lifted
            edges (instead of ``hops``).

    Segment ids are the smallest fragment id of each segment, as
    :func:`~fusionnet_keras.segmentation.agglomeration.agglomerate` gives
    them (apply with :func:`~fusionnet_keras.segmentation.agglomeration.map_ids`).

    Examples:
        >>> from fusionnet_keras.segmentation.graph import region_graph
        >>> affs = np.full((3, 1, 1, 3), 0.9, np.float32); affs[2, 0, 0, 2] = 0.2
        >>> g = region_graph(affs, np.array([[[1, 2, 3]]], np.uint64))
        >>> [(b, ids.tolist()) for b, ids in multicut_graph(g, [0.5, 0.95])]
        [(0.5, [1, 1, 3]), (0.95, [1, 2, 3])]
    """
    betas = check_betas(betas)
    hops = int(hops)
    if hops == 1 or hops < 0:
        raise FusionNetError(f"lifted multicut hops must be >= 2 (0: no lifted edges), got {hops}")
    if hops and lifted is not None:
        raise FusionNetError("lifted edges come either from hops or from long-range affinities, not both")
    if weighting is None:
        weighting = MULTICUT_WEIGHTING["lifted-multicut" if hops or lifted is not None else "multicut"]
    p = boundary_probabilities(graph, classifier)
    weights = _weights(graph.count.sum(axis=1), weighting)
    u, v = graph.node_index(graph.u), graph.node_index(graph.v)
    n = graph.num_nodes
    if hops:
        lu, lv, q = lifted_edges(n, u, v, p, hops)
        lifted_weights = np.ones(lu.size)
    elif lifted is not None:
        lu, lv, q, count = lifted
        lifted_weights = _weights(count, weighting)
    for beta in betas:
        lifted_costs = None if not hops and lifted is None else (lu, lv, lifted_weights * costs(1.0 - q, beta))
        labels = solve(n, u, v, weights * costs(p, beta), lifted=lifted_costs, refine=refine)
        first = np.full(labels.max(initial=-1) + 1, n, np.int64)
        np.minimum.at(first, labels, np.arange(n))
        yield beta, graph.nodes[first[labels]]


#: :func:`solve` under the name the package exports (``fusionnet_keras.segmentation.solve_multicut``).
solve_multicut = solve


# -- 2-D maps ----------------------------------------------------------------------------------------------
def multicut_map(prob: np.ndarray, beta: float = 0.5, ws_size: int = 25, variant: str = "segments") -> np.ndarray:
    """Per-section multicut of a cell-probability map's watershed fragments, back to a map for the ISBI scoring.

    Each section's boundary map ``1 - prob`` gives affinities and z-watershed fragments (size threshold
    ``ws_size`` px; :mod:`fusionnet_keras.segmentation.zwatershed`), whose region graph is partitioned by
    the multicut (GAEC + Kernighan-Lin, costs from the mean affinity of each boundary with bias ``beta``;
    :mod:`fusionnet_keras.segmentation.multicut`). ``variant``: ``"segments"`` gives the segmentation's
    :func:`~fusionnet_keras.evaluation.postprocess.segment_borders` (1 inside, 0 on borders: merged
    boundaries vanish, cut ones close); ``"cuts"``
    keeps ``prob`` and draws the borders between different segments into it (gaps closed, nothing removed).

    Args:
        prob: ``(H, W)`` or ``(Z, H, W)`` cell probabilities in [0, 1] (1 = cell, 0 = membrane).
        beta: the multicut's boundary bias in (0, 1) (higher: more segments).
        ws_size: fragments smaller than this (px) merge with their strongest neighbour first.
        variant: ``"segments"`` or ``"cuts"``.

    Example:
        >>> p = np.ones((1, 6, 8), np.float32); p[0, :, 4] = 0.0; p[0, 2, 4] = 0.6  # a membrane with a gap
        >>> multicut_map(p, 0.5, ws_size=0)[0, 2].tolist()  # the gap is closed
        [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    """
    from fusionnet_keras.data.io.images import as_probability
    from fusionnet_keras.evaluation.postprocess import segment_borders
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment
    from fusionnet_keras.utils.validate import check_int

    if variant not in MULTICUT_VARIANTS:
        raise FusionNetError(f"multicut map variant must be one of {', '.join(MULTICUT_VARIANTS)}, got {variant!r}")
    prob = as_probability(prob, "probability map")
    if prob.ndim not in (2, 3):
        raise FusionNetError(f"multicut map: expected a 2-D image or 3-D stack (Z, H, W), got shape {prob.shape}")
    sections = prob[None] if prob.ndim == 2 else prob
    options = WatershedOptions(size=check_int("watershed size", ws_size, minimum=0))
    out = np.empty(sections.shape, np.float32)
    for z, section in enumerate(sections):
        (_, labels), = segment(1.0 - section[None], "multicut", [beta], watershed_options=options)
        borders = segment_borders(labels[0])
        out[z] = borders if variant == "segments" else np.minimum(section, borders)
    return out[0] if prob.ndim == 2 else out


MULTICUT_VARIANTS = ("segments", "cuts")
