"""Hierarchical agglomeration of fragments: greedy merging of the lowest-scoring boundary first.

One engine (:class:`Agglomerator`) for every scoring function: it keeps the
region graph's statistics up to date while it merges (the two regions' sizes
and interior statistics add up, the boundary becomes interior, parallel
boundaries to a common neighbour are combined), rescores the boundaries that
changed and always merges the boundary with the lowest current score next
(a binary heap with lazy deletion of outdated entries). ``merge_until(t)``
merges while the lowest score is below ``t``; thresholds in increasing order
give one segmentation each, in one pass (each level starts from the last).

Scores are "boundary strength" in [0, 1]: low = merge. :class:`MeanAffinity`
is ``1 - mean affinity across the boundary`` (all three channels pooled):
waterz's ``OneMinus<MeanAffinity>``, the common unlearned baseline; the
learned classifier (:mod:`fusionnet_keras.segmentation.learned`) scores the
probability that the boundary is real.

Segment ids are the smallest fragment id of each segment, so a segmentation
is a lookup table from fragment ids (:func:`map_ids`), e.g. block by block.
"""

from __future__ import annotations

import heapq

import numpy as np

from fusionnet_keras.errors import FusionNetError


class MeanAffinity:
    """Score = 1 - mean affinity over the boundary (all channels): waterz's default, the baseline."""

    uses_regions = False
    name = "mean"

    def __call__(self, agg: "Agglomerator", edges: np.ndarray) -> np.ndarray:
        return 1.0 - agg.sum[edges].sum(axis=1) / agg.count[edges].sum(axis=1)


class Agglomerator:
    """Merge the regions of a :class:`~fusionnet_keras.segmentation.graph.RegionGraph` greedily.

    Args:
        graph: the region graph of the fragments (not modified).
        scorer: callable ``scorer(agg, edges) -> scores`` (lower = merge first)
            with an attribute ``uses_regions``: True when a score depends on
            the regions' statistics, so every boundary of a merged region is
            rescored, False when only on the boundary's own statistics.
        may_merge: optional callable ``(agg, edge) -> bool`` asked before each
            merge (the ground-truth oracle when training); a refused boundary
            stays until a merge changes it (then it is rescored and queued
            again).

    Examples:
        >>> from fusionnet_keras.segmentation.graph import region_graph
        >>> affs = np.full((3, 1, 1, 3), 0.9, np.float32); affs[2, 0, 0, 2] = 0.2
        >>> g = region_graph(affs, np.array([[[1, 2, 3]]], np.uint64))
        >>> agg = Agglomerator(g, MeanAffinity())
        >>> agg.merge_until(0.5), agg.segment_ids().tolist()
        (1, [1, 1, 3])
    """

    def __init__(self, graph, scorer, may_merge=None):
        self.graph = graph
        self.scorer = scorer
        self.may_merge = may_merge
        g = graph
        self.size = g.size.astype(np.int64).copy()
        self.inner_count = g.inner_count.astype(np.int64).copy()
        self.inner_sum = g.inner_sum.astype(np.float64).copy()
        self.inner_hist = None if g.inner_hist is None else g.inner_hist.astype(np.int64).copy()
        self.count = g.count.astype(np.int64).copy()
        self.sum = g.sum.astype(np.float64).copy()
        self.max = g.max.astype(np.float32).copy()
        self.hist = None if g.hist is None else g.hist.astype(np.int64).copy()
        self.eu = g.node_index(g.u).astype(np.int64)
        self.ev = g.node_index(g.v).astype(np.int64)
        n, m = g.num_nodes, g.num_edges
        self.alive = np.ones(m, bool)
        self.version = np.zeros(m, np.int64)
        self.parent = np.arange(n, dtype=np.int64)
        self.adj = [dict() for _ in range(n)]
        for e, (a, b) in enumerate(zip(self.eu.tolist(), self.ev.tolist())):
            self.adj[a][b] = e
            self.adj[b][a] = e
        self.threshold = -np.inf
        self.merges = 0
        self._heap = []
        if m:
            edges = np.arange(m)
            scores = self._scores(edges)
            self._heap = list(zip(scores.tolist(), edges.tolist(), [0] * m))
            heapq.heapify(self._heap)

    # -- scoring ---------------------------------------------------------------------------------
    def _scores(self, edges: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.scorer(self, edges), dtype=np.float64)
        if scores.shape != edges.shape or not np.all(np.isfinite(scores)):
            raise FusionNetError("agglomeration: the scoring function returned invalid scores")
        return scores

    def _rescore(self, edges) -> None:
        if not edges:
            return
        edges = np.fromiter(edges, np.int64, len(edges))
        self.version[edges] += 1
        for s, e, ver in zip(self._scores(edges).tolist(), edges.tolist(), self.version[edges].tolist()):
            heapq.heappush(self._heap, (s, e, ver))

    def live_edges(self) -> np.ndarray:
        """Indices of the boundaries between the current regions."""
        return np.flatnonzero(self.alive)

    # -- merging ---------------------------------------------------------------------------------
    def merge_until(self, threshold: float) -> int:
        """Merge while the lowest boundary score is below ``threshold``; returns the merges made."""
        threshold = float(threshold)
        if threshold < self.threshold:
            raise FusionNetError(f"thresholds must increase: {threshold:g} after {self.threshold:g}")
        self.threshold = threshold
        done = 0
        heap = self._heap
        while heap and heap[0][0] < threshold:
            score, e, ver = heapq.heappop(heap)
            if not self.alive[e] or ver != self.version[e]:
                continue
            if self.may_merge is not None and not self.may_merge(self, e):
                self.version[e] += 1  # set aside until a merge changes it (then it is rescored)
                continue
            self._merge(e, int(self.eu[e]), int(self.ev[e]))
            done += 1
        self.merges += done
        return done

    def _merge(self, e: int, a: int, b: int) -> None:
        adj = self.adj
        keep, gone = (a, b) if len(adj[a]) >= len(adj[b]) else (b, a)
        self.parent[gone] = keep
        self.size[keep] += self.size[gone]
        self.inner_count[keep] += self.inner_count[gone] + self.count[e]
        self.inner_sum[keep] += self.inner_sum[gone] + self.sum[e]
        if self.inner_hist is not None:
            self.inner_hist[keep] += self.inner_hist[gone] + self.hist[e]
        self.alive[e] = False
        del adj[keep][gone]
        del adj[gone][keep]
        changed = []
        for w, f in adj[gone].items():
            del adj[w][gone]
            g = adj[keep].get(w)
            if g is None:  # a neighbour of the absorbed region only: the boundary moves
                if self.eu[f] == gone:
                    self.eu[f] = keep
                else:
                    self.ev[f] = keep
                adj[keep][w] = f
                adj[w][keep] = f
            else:  # a common neighbour: the two boundaries become one
                self.count[g] += self.count[f]
                self.sum[g] += self.sum[f]
                np.maximum(self.max[g], self.max[f], out=self.max[g])
                if self.hist is not None:
                    self.hist[g] += self.hist[f]
                self.alive[f] = False
                changed.append(g)
        adj[gone] = {}
        if self.scorer.uses_regions:
            changed = list(adj[keep].values())
        self._rescore(changed)

    # -- results ---------------------------------------------------------------------------------
    def roots(self) -> np.ndarray:
        """Row of the region that each node (fragment) belongs to now."""
        p = self.parent
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    def segment_ids(self) -> np.ndarray:
        """Segment id of each fragment of the graph: the smallest fragment id in its segment."""
        roots = self.roots()
        first = np.full(roots.size, roots.size, np.int64)
        np.minimum.at(first, roots, np.arange(roots.size))
        return self.graph.nodes[first[roots]]


def map_ids(fragments, ids, new_ids) -> np.ndarray:
    """Replace every fragment id in ``ids`` by ``new_ids`` (others, e.g. 0, unchanged); uint64.

    Examples:
        >>> map_ids(np.array([0, 1, 2, 3]), np.array([1, 2, 3]), np.array([1, 1, 3])).tolist()
        [0, 1, 1, 3]
    """
    frag = np.asarray(fragments).astype(np.uint64, copy=False)
    ids = np.asarray(ids, dtype=np.uint64)
    new_ids = np.asarray(new_ids, dtype=np.uint64)
    if ids.size == 0:
        return frag.copy()
    order = np.argsort(ids)
    ids, new_ids = ids[order], new_ids[order]
    idx = np.minimum(np.searchsorted(ids, frag), ids.size - 1)
    found = ids[idx] == frag
    return np.where(found, new_ids[idx], frag)


def check_values(values, what: str, inside, interval: str) -> list[float]:
    """``values`` as a sorted list of distinct floats for which ``inside(v)`` holds; one-line errors naming
    ``what`` (e.g. "thresholds") and the ``interval`` (e.g. "[0, 1]")."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise FusionNetError(f"{what} must be numbers, got {values!r}") from None
    if not numbers:
        raise FusionNetError(f"no {what} given")
    bad = [v for v in numbers if not inside(v)]
    if bad:
        raise FusionNetError(f"{what} must lie in {interval}, got {bad[0]:g}")
    return sorted(set(numbers))


def check_thresholds(thresholds) -> list[float]:
    """Thresholds as a sorted list of distinct floats in [0, 1] (any order given)."""
    return check_values(thresholds, "thresholds", lambda t: 0.0 <= t <= 1.0, "[0, 1]")


def agglomerate(graph, thresholds, scorer=None):
    """Agglomerate ``graph`` up to each threshold; yields ``(threshold, segment id of every node)``.

    Args:
        graph: :class:`~fusionnet_keras.segmentation.graph.RegionGraph` of
            the fragments (histograms only needed by a learned scorer).
        thresholds: scores at which a segmentation is taken (merging goes on
            while the lowest boundary score is below it), in any order; they
            are processed in increasing order, in one pass.
        scorer: default :class:`MeanAffinity`.

    The segment ids map the fragment ids ``graph.nodes``: apply them with
    :func:`map_ids`.

    Examples:
        >>> from fusionnet_keras.segmentation.graph import region_graph
        >>> affs = np.full((3, 1, 1, 3), 0.9, np.float32); affs[2, 0, 0, 2] = 0.4
        >>> frag = np.array([[[1, 2, 3]]], np.uint64)
        >>> [(t, map_ids(frag, g.nodes, ids).ravel().tolist())
        ...  for g in [region_graph(affs, frag)] for t, ids in agglomerate(g, [0.5, 0.7])]
        [(0.5, [1, 1, 3]), (0.7, [1, 1, 1])]
    """
    agg = Agglomerator(graph, scorer or MeanAffinity())
    for t in check_thresholds(thresholds):
        agg.merge_until(t)
        yield t, agg.segment_ids()
