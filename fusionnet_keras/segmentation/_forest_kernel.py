"""The compiled loop of :mod:`fusionnet_keras.segmentation.forest` (imports numba)."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def forest_proba(X, feature, threshold, left, right, prob, roots):  # pragma: no cover - compiled
    n = X.shape[0]
    out = np.zeros(n, np.float64)
    for i in range(n):
        acc = 0.0
        for t in range(roots.size):
            node = roots[t]
            while feature[node] >= 0:
                if X[i, feature[node]] <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            acc += prob[node]
        out[i] = acc / roots.size
    return out
