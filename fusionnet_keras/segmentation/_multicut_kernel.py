"""The compiled loops of :mod:`fusionnet_keras.segmentation.multicut` (imports numba).

Graphs are edge lists ``u, v`` (node rows ``0..n-1``), weights ``w`` (> 0:
attractive, the pair gains ``w`` when joined) and ``local`` (True: a local edge
that may be contracted; False: a lifted edge, counted only). The objective is
the sum of the weights of the cut edges (minimised).
"""

import heapq

import numba
import numpy as np
from numba import types
from numba.typed import Dict, List

#: Value type of the contraction's adjacency: (summed weight, local).
_EDGE = types.Tuple((types.float64, types.boolean))


@numba.njit(cache=True)
def _find(parent, x):  # pragma: no cover - compiled
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


@numba.njit(cache=True)
def gaec(n, u, v, w, local):  # pragma: no cover - compiled
    """Greedy additive edge contraction: contract the local edge of largest positive weight while there is one.

    Parallel edges add up (a merged edge is local when one of them is); returns the root row of each node.
    """
    adj = List()  # per node: neighbour -> (weight, local)
    for _ in range(n):
        adj.append(Dict.empty(types.int64, _EDGE))
    for e in range(u.size):
        a, b = u[e], v[e]
        if a == b:
            continue
        s, loc = adj[a].get(b, (0.0, False))
        pair = (s + w[e], loc or local[e])
        adj[a][b] = pair
        adj[b][a] = pair
    heap = [(0.0, np.int64(0), np.int64(0))]
    heap.pop()
    for a in range(n):
        for b, (s, loc) in adj[a].items():
            if a < b and s > 0 and loc:
                heap.append((-s, np.int64(a), b))
    heapq.heapify(heap)
    parent = np.arange(n)
    while heap:
        negs, a, b = heapq.heappop(heap)
        if parent[a] != a or parent[b] != b or b not in adj[a] or adj[a][b][0] != -negs:
            continue  # outdated entry
        keep, gone = (a, b) if len(adj[a]) >= len(adj[b]) else (b, a)
        parent[gone] = keep
        adj[keep].pop(gone)
        for x, (s, loc) in adj[gone].items():
            if x == keep:
                continue
            adj[x].pop(gone)
            s0, loc0 = adj[keep].get(x, (0.0, False))
            pair = (s0 + s, loc0 or loc)
            adj[keep][x] = pair
            adj[x][keep] = pair
            if pair[1] and pair[0] > 0:
                heapq.heappush(heap, (-pair[0], min(keep, x), max(keep, x)))
        adj[gone].clear()
    for x in range(n):
        _find(parent, x)
    return parent


@numba.njit(cache=True)
def _best_move(x, labels, size, indptr, nbr, wt, loc, acc, seen, can):  # pragma: no cover - compiled
    """The best move of node ``x``: (gain, target label or -1 for a new cluster); gain -inf when none."""
    touched = []
    for j in range(indptr[x], indptr[x + 1]):
        lab = labels[nbr[j]]
        if not seen[lab]:
            seen[lab] = True
            touched.append(lab)
        acc[lab] += wt[j]
        if loc[j]:
            can[lab] = True
    own = labels[x]
    stay = acc[own] if seen[own] else 0.0
    best, target = -np.inf, np.int64(-2)
    if size[own] > 1:
        best, target = -stay, np.int64(-1)
    for lab in touched:
        if lab != own and can[lab] and acc[lab] - stay > best:
            best, target = acc[lab] - stay, lab
    for lab in touched:
        seen[lab] = False
        can[lab] = False
        acc[lab] = 0.0
    return best, target


@numba.njit(cache=True)
def move_pass(labels, indptr, nbr, wt, loc, explore):  # pragma: no cover - compiled
    """One Kernighan-Lin pass of single-node moves (to a locally adjacent cluster or a new one).

    Every node moves at most once, always the move of largest gain next (also
    negative gains: a node leaving first lets its neighbours follow); the
    pass stops ``explore`` moves after its best point and is undone back to
    it. ``labels`` (``0..k-1``) are changed in place; returns the gain.
    """
    n = labels.size
    cap = 2 * n + 1
    size = np.zeros(cap, np.int64)
    for x in range(n):
        size[labels[x]] += 1
    next_label = labels.max() + 1 if n else 0
    acc = np.zeros(cap, np.float64)
    seen = np.zeros(cap, np.bool_)
    can = np.zeros(cap, np.bool_)
    version = np.zeros(n, np.int64)
    locked = np.zeros(n, np.bool_)
    heap = [(0.0, np.int64(0), np.int64(0), np.int64(0))]
    heap.pop()
    for x in range(n):
        g, t = _best_move(x, labels, size, indptr, nbr, wt, loc, acc, seen, can)
        if t != -2:
            heap.append((-g, np.int64(x), np.int64(0), t))
    heapq.heapify(heap)
    moved, origin = [], []
    total, best, best_step = 0.0, 0.0, 0
    while heap:
        negg, x, ver, t = heapq.heappop(heap)
        if locked[x] or ver != version[x]:
            continue
        if t == -1:
            t = next_label
            next_label += 1
        own = labels[x]
        size[own] -= 1
        size[t] += 1
        labels[x] = t
        locked[x] = True
        moved.append(x)
        origin.append(own)
        total -= negg
        if total > best + 1e-9:
            best, best_step = total, len(moved)
        elif len(moved) - best_step >= explore:
            break
        for j in range(indptr[x], indptr[x + 1]):
            y = nbr[j]
            if not locked[y]:
                version[y] += 1
                g, t = _best_move(y, labels, size, indptr, nbr, wt, loc, acc, seen, can)
                if t != -2:
                    heapq.heappush(heap, (-g, y, version[y], t))
    for i in range(len(moved) - 1, best_step - 1, -1):
        labels[moved[i]] = origin[i]
    return best


@numba.njit(cache=True)
def local_components(labels, u, v, local):  # pragma: no cover - compiled
    """Connected components of the local edges inside each cluster: the root row of each node."""
    parent = np.arange(labels.size)
    for e in range(u.size):
        if local[e] and labels[u[e]] == labels[v[e]]:
            a, b = _find(parent, u[e]), _find(parent, v[e])
            if a != b:
                parent[max(a, b)] = min(a, b)
    for x in range(labels.size):
        _find(parent, x)
    return parent


@numba.njit(cache=True)
def hop_paths(n, indptr, nbr, length, hops):  # pragma: no cover - compiled
    """Pairs ``s < t`` 2..``hops`` local edges apart, with the least total ``length`` of a path of <= hops edges."""
    dist = np.full(n, np.inf)
    cand = np.full(n, np.inf)
    depth = np.full(n, -1, np.int64)
    out_s, out_t, out_d = [], [], []
    for s in range(n):
        dist[s] = 0.0
        depth[s] = 0
        reached = [s]
        frontier = [s]
        for h in range(1, hops + 1):
            marked = []
            for a in frontier:  # relax from the paths of h - 1 edges only
                for j in range(indptr[a], indptr[a + 1]):
                    b = nbr[j]
                    if depth[b] < 0:
                        depth[b] = h
                        reached.append(b)
                    d = dist[a] + length[j]
                    if d < cand[b]:
                        if cand[b] == np.inf:
                            marked.append(b)
                        cand[b] = d
            frontier = [b for b in marked if cand[b] < dist[b]]
            for b in marked:
                dist[b] = min(dist[b], cand[b])
                cand[b] = np.inf
        for b in reached:
            if b > s and depth[b] >= 2:
                out_s.append(s)
                out_t.append(b)
                out_d.append(dist[b])
            dist[b] = np.inf
            depth[b] = -1
    return np.array(out_s, np.int64), np.array(out_t, np.int64), np.array(out_d, np.float64)
