"""The compiled loop of :mod:`fusionnet_keras.segmentation.mws` (imports numba)."""

import numba
import numpy as np
from numba import types
from numba.typed import Dict, List

from fusionnet_keras.segmentation._multicut_kernel import _find  # the compiled union-find of both kernels


@numba.njit(cache=True)
def mutex_kruskal(n, u, v, attractive, order):  # pragma: no cover - compiled
    """Edges in ``order``: an attractive one joins its clusters unless a mutex separates them, a repulsive
    one puts a mutex between them. Each cluster keeps the set of clusters it is separated from (updated
    when one of them joins another: the one with fewer mutexes is merged into the other). Returns the
    root of each node."""
    parent = np.arange(n)
    mutex = List()
    for _ in range(n):
        mutex.append(Dict.empty(types.int64, types.boolean))
    for e in order:
        a, b = _find(parent, u[e]), _find(parent, v[e])
        if a == b or b in mutex[a]:
            continue
        if attractive[e]:
            small, large = (a, b) if len(mutex[a]) <= len(mutex[b]) else (b, a)
            parent[small] = large
            for m in mutex[small]:
                mutex[m].pop(small)
                mutex[m][large] = True
                mutex[large][m] = True
            mutex[small].clear()
        else:
            mutex[a][b] = True
            mutex[b][a] = True
    for x in range(n):
        _find(parent, x)
    return parent
