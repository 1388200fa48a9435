"""MALIS pair counts (Turaga et al. 2009) and the constrained variant (Funke et al. 2018), exact.

For every pair of labelled voxels of an affinity graph (the convention of
:mod:`fusionnet_keras.data.affinities`), the *maximin edge* is the edge of
smallest affinity on the path that maximises the smallest affinity (the path
in the maximum spanning tree). MALIS weighs each edge by the number of pairs it
is the maximin edge of: *positive* pairs (both voxels carry the same non-zero
id) and *negative* pairs (different non-zero ids). Unlabelled voxels (id 0)
are nodes of the graph but are never paired.

Algorithm: Kruskal's maximum spanning tree with a union-find whose components
carry histograms of their ids (counts per id). Edges are taken from the
highest affinity down; an edge joining components A and B is the maximin edge
of exactly the pairs (a, b), a in A, b in B, so it counts
``sum_id A[id] * B[id]`` positive and ``|A| * |B| - positive`` negative pairs
(``|A|`` = labelled voxels of A) from the histograms, never pair by pair.
Histograms merge small into large (a hash map keyed by (component, id)), so
the whole pass is O(E log E) for the sort plus near-linear work; it runs
compiled with numba (imported with this module, which only MALIS users import).

Ties: affinities are compared as float32 (the networks' output type), and
edges of equal affinity are taken in the order of their flat index in the
``(3, Z, Y, X)`` array (earlier first), which makes the spanning tree and so
every maximin edge unique; the counts are exact for that order (the tests
compare them with a brute-force maximin search).

Constrained MALIS (Funke et al. 2018, "Large scale image segmentation with
structured loss based deep learning for connectome reconstruction"): the
positive counts come from a pass over ``min(affinities, target)`` (edges
between different ids forced to 0, so a positive pair's path cannot leave its
object) and the negative counts from a pass over ``max(affinities, target)``
(edges inside one object forced to 1), ``target`` the affinities of the labels;
then, as the authors' implementation does, positive counts that land on
target-0 edges (a pair whose object is cut in pieces inside the block, or joined
only through background) and negative counts that land on target-1 edges are
zeroed.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types

from fusionnet_keras.data.affinities import N_AFFINITIES, affinities_from_labels, edge_mask, relabel_consecutive
from fusionnet_keras.errors import FusionNetError


@numba.njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@numba.njit(cache=True)
def _node_of(table, head, n_nodes, labels, root, label, n_ids):
    """The histogram node of ``label`` in component ``root``, or -1. Components with one id keep
    it in ``head`` only; the hash map holds the nodes of components with two ids or more."""
    if n_nodes[root] == 0:
        return -1
    if n_nodes[root] == 1:
        return head[root] if labels[head[root]] == label else -1
    key = root * n_ids + label
    return table[key] if key in table else -1


@numba.njit(cache=True)
def _kruskal_pair_counts(order, shape, labels, n_ids, positive, negative):
    """Kruskal over the edges in ``order`` (flat indices, strongest first); fills the counts per edge."""
    n = shape[0] * shape[1] * shape[2]
    steps = (shape[1] * shape[2], shape[2], 1)
    parent = np.arange(n)
    # id histograms: per component root a linked list of nodes (id, count); a voxel is the
    # first node of its own id, so nodes never need allocating
    head = np.full(n, -1, np.int64)
    following = np.full(n, -1, np.int64)
    count = np.zeros(n, np.int64)
    n_nodes = np.zeros(n, np.int64)
    labelled = np.zeros(n, np.int64)
    table = numba.typed.Dict.empty(key_type=types.int64, value_type=types.int64)  # (root, id) -> node
    for v in range(n):
        if labels[v] != 0:
            head[v] = v
            count[v] = 1
            n_nodes[v] = 1
            labelled[v] = 1
    for e in order:
        c = e // n
        v = e - c * n
        a = _find(parent, v)
        b = _find(parent, v - steps[c])
        if a == b:
            continue
        if n_nodes[a] < n_nodes[b]:  # merge the smaller histogram (b) into the larger (a)
            a, b = b, a
        same = 0
        node = head[b]
        while node != -1:
            after = following[node]
            label = labels[node]
            other = _node_of(table, head, n_nodes, labels, a, label, n_ids)
            if other >= 0:
                same += count[node] * count[other]
                count[other] += count[node]
            else:
                if n_nodes[a] == 1:  # a gets its second id: its first goes into the hash map
                    table[a * n_ids + labels[head[a]]] = head[a]
                following[node] = head[a]
                head[a] = node
                n_nodes[a] += 1
                if n_nodes[a] > 1:
                    table[a * n_ids + label] = node
            if n_nodes[b] > 1:
                del table[b * n_ids + label]
            node = after
        positive[e] = same
        negative[e] = labelled[a] * labelled[b] - same
        labelled[a] += labelled[b]
        head[b] = -1
        n_nodes[b] = 0
        parent[b] = a


def _strongest_first(affinities, edges):
    """``edges`` (flat indices) sorted by decreasing affinity, ties by increasing index.

    One sort of 64-bit keys (twice as fast as a stable float sort): the high half orders the
    float32 affinity (its bits, made monotonic for negative values), the low half is the index.
    """
    bits = affinities.reshape(-1)[edges].view(np.int32).astype(np.int64)
    monotonic = np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)  # increases with the value; -0.0 == 0.0
    keys = (((2**31 - 1) - monotonic).astype(np.uint64) << np.uint64(32)) | edges.astype(np.uint64)
    return (np.sort(keys) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _pair_counts(affinities, labels):
    """Positive and negative pair counts per edge for one pass (float64, shaped like ``affinities``)."""
    edges = np.flatnonzero(edge_mask(labels.shape).reshape(-1))
    order = _strongest_first(affinities, edges)
    positive = np.zeros(affinities.size, np.float64)
    negative = np.zeros(affinities.size, np.float64)
    ids = labels.reshape(-1).astype(np.int64)
    _kruskal_pair_counts(order, np.array(labels.shape, np.int64), ids, int(ids.max(initial=0)) + 1, positive, negative)
    return positive.reshape(affinities.shape), negative.reshape(affinities.shape)


def malis_weights(affinities, labels, constrained=False):
    """MALIS pair counts of every edge: ``(positive, negative)``, float64 arrays shaped like ``affinities``.

    Args:
        affinities: ``(3, Z, Y, X)`` floats in [0, 1], the convention of
            :mod:`fusionnet_keras.data.affinities` (channel c links v and v - e_c).
        labels: ``(Z, Y, X)`` integer instance ids; voxels of id 0 (background or unknown) are never paired.
        constrained: Funke et al. 2018: positive counts from ``min(affinities, target)``,
            kept on target-1 edges only; negative counts from ``max(affinities, target)``, kept on
            target-0 edges only.

    Returns:
        ``positive[c, z, y, x]`` / ``negative[...]``: the number of same-id / different-id voxel
            pairs whose maximin edge is that edge (0 for edges that do not exist). Without
            ``constrained`` the counts sum to all labelled pairs: ``positive.sum()`` is
            ``sum_id n_id * (n_id - 1) / 2``.

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[[1, 1, 2]]])
        >>> affinities = np.zeros((3, 1, 1, 3)); affinities[2] = [[[0.0, 0.9, 0.2]]]
        >>> positive, negative = malis_weights(affinities, labels)
        >>> positive[2, 0, 0].tolist(), negative[2, 0, 0].tolist()
        ([0.0, 1.0, 0.0], [0.0, 0.0, 2.0])
    """
    affinities = np.asarray(affinities)
    labels = np.asarray(labels)
    if labels.ndim != 3 or affinities.shape != (N_AFFINITIES, *labels.shape):
        raise FusionNetError(
            f"affinities must be (3, *labels.shape) = (3, {', '.join(map(str, labels.shape))}) for labels "
            f"(z, y, x), got affinities {affinities.shape} and labels {labels.shape}"
        )
    if not np.issubdtype(affinities.dtype, np.floating) or not np.all(np.isfinite(affinities)):
        raise FusionNetError("affinities must be finite floating-point values")
    if affinities.size >= 2**32:
        raise FusionNetError(f"a MALIS block holds at most 2**32 edges, got {affinities.size}")
    affinities = affinities.astype(np.float32, copy=False)
    labels = relabel_consecutive(labels)
    if not constrained:
        return _pair_counts(affinities, labels)
    target = affinities_from_labels(labels)[0].astype(affinities.dtype)
    positive = _pair_counts(np.minimum(affinities, target), labels)[0]
    negative = _pair_counts(np.maximum(affinities, target), labels)[1]
    return positive * (target == 1), negative * (target == 0)
