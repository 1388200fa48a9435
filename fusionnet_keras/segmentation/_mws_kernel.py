"""The compiled loop of :mod:`fusionnet_keras.segmentation.mws` (imports numba)."""

import numba
import numpy as np
from numba import types
from numba.typed import Dict, List


@numba.njit(cache=True)
def _find(parent, x):  # pragma: no cover - compiled
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


@numba.njit(cache=True)
def mutex_kruskal(n, u, v, attractive, order):  # pragma: no cover - compiled
    """Edges in ``order``: an attractive one joins its clusters unless a mutex separates them, a repulsive
    one puts a mutex between them. Mutexes are kept per cluster as the set of their edge numbers, so two
    clusters are separated when their sets meet. Returns the root of each node."""
    parent = np.arange(n)
    mutex = List()
    for _ in range(n):
        mutex.append(Dict.empty(types.int64, types.boolean))
    for e in order:
        a, b = _find(parent, u[e]), _find(parent, v[e])
        if a == b:
            continue
        small, large = (a, b) if len(mutex[a]) <= len(mutex[b]) else (b, a)
        separated = False
        for m in mutex[small]:
            if m in mutex[large]:
                separated = True
                break
        if attractive[e]:
            if not separated:
                parent[small] = large
                for m in mutex[small]:
                    mutex[large][m] = True
                mutex[small].clear()
        elif not separated:
            mutex[a][e] = True
            mutex[b][e] = True
    for x in range(n):
        _find(parent, x)
    return parent
