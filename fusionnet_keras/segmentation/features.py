"""Features of a boundary between two regions and of the regions, from affinity statistics.

In the spirit of GALA (Nunez-Iglesias et al. 2013) and NeuroProof (Parag et
al. 2015) without mitochondria: for the boundary, per affinity channel (z, y,
x) and pooled over the three, the contact area, the mean, quantiles and the
maximum of the affinities across it; for each of the two regions (the smaller
first, so the features do not depend on the order of the pair), its size and
the mean and quantiles of the affinities inside it; and how the boundary
compares with the regions' interiors. Everything is computed from the
mergeable statistics of :class:`~fusionnet_keras.segmentation.graph.RegionGraph`
(counts, sums, maxima, fixed-bin histograms), so after a merge the features of
the new region's boundaries are exactly those computed from scratch on the
merged fragments.

Undefined values (no affinity of a channel on a boundary) are -1.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.segmentation.inputs import CHANNELS

#: Quantiles of the boundary affinities.
BOUNDARY_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Quantiles of the affinities inside a region.
REGION_QUANTILES = (0.1, 0.5, 0.9)

_GROUPS = CHANNELS + ("all",)


def feature_names() -> list[str]:
    """Names of the columns of :func:`edge_features`, in order."""
    names = []
    for g in _GROUPS:
        names += [f"boundary_{g}_log_area", f"boundary_{g}_mean", f"boundary_{g}_max"]
        names += [f"boundary_{g}_q{int(q * 100):02d}" for q in BOUNDARY_QUANTILES]
    for r in ("small", "large"):
        names += [f"{r}_log_size", f"{r}_inner_mean"]
        names += [f"{r}_inner_{c}_mean" for c in CHANNELS]
        names += [f"{r}_inner_q{int(q * 100):02d}" for q in REGION_QUANTILES]
    names += ["small_inner_minus_boundary", "large_inner_minus_boundary", "area_per_small_surface"]
    return names


def hist_quantiles(hist: np.ndarray, quantiles) -> np.ndarray:
    """Quantiles of values on [0, 1] from fixed-bin histograms ``(..., bins)``, linear within a bin.

    Returns ``(..., len(quantiles))``; -1 where a histogram is empty.

    Examples:
        >>> hist_quantiles(np.array([[0, 2, 2, 0]]), [0.5]).tolist()   # values in [0.25, 0.75)
        [[0.5]]
    """
    hist = np.asarray(hist, dtype=np.float64)
    lead, bins = hist.shape[:-1], hist.shape[-1]
    h = hist.reshape(-1, bins)
    cum = np.cumsum(h, axis=1)
    total = cum[:, -1]
    target = total[:, None] * np.asarray(quantiles, np.float64)[None, :]          # (n, Q)
    k = np.minimum((cum[:, None, :] < target[:, :, None]).sum(axis=2), bins - 1)  # bin of each quantile
    rows = np.arange(h.shape[0])[:, None]
    inbin = h[rows, k]
    before = cum[rows, k] - inbin
    frac = np.divide(target - before, inbin, out=np.zeros_like(target), where=inbin > 0)
    out = (k + np.clip(frac, 0.0, 1.0)) / bins
    out[total == 0] = -1.0
    return out.reshape(lead + (len(quantiles),))


def _mean(total, count):
    return np.divide(total, count, out=np.full(np.shape(total), -1.0), where=count > 0)


def edge_features(agg, edges) -> np.ndarray:
    """Feature matrix ``(len(edges), len(feature_names()))`` of boundaries of an agglomeration state.

    Args:
        agg: an :class:`~fusionnet_keras.segmentation.agglomeration.Agglomerator`
            (or anything with its statistics arrays), built on a graph with
            histograms.
        edges: indices of the boundaries.

    Examples:
        >>> from fusionnet_keras.segmentation.agglomeration import Agglomerator, MeanAffinity
        >>> from fusionnet_keras.segmentation.graph import region_graph
        >>> g = region_graph(np.full((3, 1, 2, 4), 0.7, np.float32), np.array([[[1, 1, 2, 2]] * 2]), bins=8)
        >>> X = edge_features(Agglomerator(g, MeanAffinity()), [0])
        >>> X.shape, bool(np.isclose(dict(zip(feature_names(), X[0]))["boundary_x_log_area"], np.log(3)))  # 2 links
        ((1, 51), True)
    """
    edges = np.asarray(edges, dtype=np.int64)
    if agg.hist is None:
        from fusionnet_keras.errors import FusionNetError

        raise FusionNetError("learned agglomeration needs a region graph with histograms (bins > 0)")
    count = agg.count[edges].astype(np.float64)                     # (n, 3)
    total = agg.sum[edges]
    hist = agg.hist[edges]                                          # (n, 3, bins)
    count_all = count.sum(1)
    mean_all = _mean(total.sum(1), count_all)
    amax = agg.max[edges].astype(np.float64)
    quant = hist_quantiles(np.concatenate([hist, hist.sum(1, keepdims=True)], axis=1), BOUNDARY_QUANTILES)
    cols = []
    for c in range(4):
        if c < 3:
            cnt, mean, mx = count[:, c], _mean(total[:, c], count[:, c]), amax[:, c]
        else:
            cnt, mean, mx = count_all, mean_all, amax.max(1)
        mx = np.where(cnt > 0, mx, -1.0)
        cols += [np.log1p(cnt)[:, None], mean[:, None], mx[:, None], quant[:, c]]
    a, b = agg.eu[edges], agg.ev[edges]
    swap = agg.size[a] > agg.size[b]
    small, large = np.where(swap, b, a), np.where(swap, a, b)
    inner = {}
    iquant = hist_quantiles(np.stack([agg.inner_hist[small].sum(1), agg.inner_hist[large].sum(1)], 1),
                            REGION_QUANTILES)
    for j, (name, r) in enumerate((("small", small), ("large", large))):
        icount = agg.inner_count[r].astype(np.float64)
        isum = agg.inner_sum[r]
        inner[name] = _mean(isum.sum(1), icount.sum(1))
        cols += [np.log(agg.size[r].astype(np.float64))[:, None], inner[name][:, None],
                 _mean(isum, icount), iquant[:, j]]
    for name in ("small", "large"):
        diff = np.where(inner[name] >= 0, inner[name] - mean_all, 0.0)
        cols.append(diff[:, None])
    cols.append((count_all / agg.size[small].astype(np.float64) ** (2.0 / 3.0))[:, None])
    return np.concatenate(cols, axis=1)
