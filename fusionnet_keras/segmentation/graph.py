"""Region adjacency graph of fragments with mergeable statistics of their boundaries and interiors.

The graph is a plain set of arrays (:class:`RegionGraph`): one row per
fragment (its size and the statistics of the affinities inside it) and one row
per pair of touching fragments ``u < v`` (contact area, sum, maximum and
histogram of the affinities across their boundary), each per affinity channel
(z, y, x). Every statistic is a sum (or a maximum), so graphs of blocks of a
volume combine into the graph of the whole with :func:`merge_graphs`: build each
block with a one-voxel halo on its low sides and ``start=(1, 1, 1)`` (only the
block's own voxels count, each boundary link once), merge, agglomerate
globally, relabel block by block. Graphs save to and load from ``.npz``.

Fragment id 0 is background: it has no row and no boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fusionnet_keras.errors import FusionNetError

#: Version of the ``.npz`` layout written by :meth:`RegionGraph.save`.
GRAPH_FORMAT = 1


@dataclass
class RegionGraph:
    """Statistics of fragments (nodes) and of their boundaries (edges), all per channel (z, y, x).

    Attributes:
        bins: bins of the affinity histograms over [0, 1] (0: no histograms).
        nodes: ``(N,)`` uint64 fragment ids, sorted, no 0.
        size: ``(N,)`` voxels of each fragment.
        inner_count, inner_sum: ``(N, 3)`` number and sum of the affinities
            linking two voxels of the same fragment.
        inner_hist: ``(N, 3, bins)`` their histogram (or None).
        u, v: ``(E,)`` uint64 fragment ids of each edge, ``u < v``, sorted.
        count, sum: ``(E, 3)`` number (the contact area per direction) and sum
            of the affinities linking a voxel of ``u`` with one of ``v``.
        max: ``(E, 3)`` float32 their maximum (0 where the count is 0).
        hist: ``(E, 3, bins)`` their histogram (or None).
    """

    bins: int
    nodes: np.ndarray
    size: np.ndarray
    inner_count: np.ndarray
    inner_sum: np.ndarray
    inner_hist: np.ndarray | None
    u: np.ndarray
    v: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    max: np.ndarray
    hist: np.ndarray | None

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.size)

    @property
    def num_edges(self) -> int:
        return int(self.u.size)

    def node_index(self, ids) -> np.ndarray:
        """Row of each fragment id in the node arrays (ids must be nodes)."""
        ids = np.asarray(ids, dtype=np.uint64)
        idx = np.searchsorted(self.nodes, ids)
        idx = np.minimum(idx, max(self.num_nodes - 1, 0))
        if ids.size and (self.num_nodes == 0 or np.any(self.nodes[idx] != ids)):
            raise FusionNetError("region graph: an edge or id refers to a fragment that is not a node")
        return idx

    def save(self, path) -> None:
        """Write the graph as ``.npz``, atomically."""
        from fusionnet_keras.utils.atomic import atomic_path

        arrays = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        arrays["bins"] = np.int64(self.bins)
        arrays["format"] = np.int64(GRAPH_FORMAT)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path) -> "RegionGraph":
        from fusionnet_keras.utils.npz import read_npz

        data = read_npz(path, "region graph")
        if int(data.pop("format", -1)) != GRAPH_FORMAT:
            raise FusionNetError(f"{path} is not a region graph of this version (format {GRAPH_FORMAT})")
        data["bins"] = int(data["bins"])
        for name in ("inner_hist", "hist"):
            data.setdefault(name, None)
        return cls(**data)


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((values * bins).astype(np.int64), bins - 1)


def _links(affs: np.ndarray, fragments: np.ndarray, start):
    """For each channel: (fragment at v, fragment at v - e_c, affinity) over the voxels v >= start."""
    z0, y0, x0 = (int(s) for s in start)
    for c in range(3):
        lo = [z0, y0, x0]
        lo[c] = max(lo[c], 1)
        here = tuple(slice(s, None) for s in lo)
        there = tuple(slice(s - (d == c), fragments.shape[d] - (d == c)) for d, s in enumerate(lo))
        yield c, fragments[here].ravel(), fragments[there].ravel(), affs[c][here].ravel()


def _empty_graph(bins: int) -> RegionGraph:
    z = np.zeros
    return RegionGraph(
        bins, z(0, np.uint64), z(0, np.int64), z((0, 3), np.int64), z((0, 3), np.float64),
        z((0, 3, bins), np.int64) if bins else None,
        z(0, np.uint64), z(0, np.uint64), z((0, 3), np.int64), z((0, 3), np.float64),
        z((0, 3), np.float32), z((0, 3, bins), np.int64) if bins else None,
    )


def region_graph(affs, fragments, bins: int = 0, start=(0, 0, 0)) -> RegionGraph:
    """Build the region graph of ``fragments`` with the statistics of ``affs``.

    Args:
        affs: ``(3, Z, Y, X)`` affinities in [0, 1] (see
            :mod:`fusionnet_keras.segmentation.inputs`).
        fragments: ``(Z, Y, X)`` integer fragment ids (0 = background).
        bins: histogram bins over [0, 1] per channel (0: none; the learned
            agglomeration's features need them).
        start: only voxels at or after this index count (a block's halo of
            one voxel on its low sides: ``(1, 1, 1)``).

    Examples:
        >>> frag = np.array([[[1, 1, 2, 2]]], np.uint64)
        >>> g = region_graph(np.full((3, 1, 1, 4), 0.5, np.float32), frag)
        >>> g.u.tolist(), g.v.tolist(), g.count.tolist()
        ([1], [2], [[0, 0, 1]])
    """
    affs = np.asarray(affs)
    fragments = np.asarray(fragments)
    if affs.ndim != 4 or affs.shape[0] != 3 or affs.shape[1:] != fragments.shape:
        raise FusionNetError(
            f"affinities shape {tuple(affs.shape)} does not match fragments shape {tuple(fragments.shape)}"
        )
    if bins < 0:
        raise FusionNetError(f"bins must be >= 0, got {bins}")
    nodes, inv = np.unique(fragments, return_inverse=True)
    codes = inv.reshape(fragments.shape)
    has_zero = nodes.size > 0 and nodes[0] == 0
    n_all = nodes.size
    size_all = np.bincount(codes[tuple(slice(int(s), None) for s in start)].ravel(), minlength=n_all)
    inner_count = np.zeros((n_all, 3), np.int64)
    inner_sum = np.zeros((n_all, 3), np.float64)
    inner_hist = np.zeros((n_all, 3, bins), np.int64) if bins else None
    keys, chans, weights = [], [], []
    for c, a, b, w in _links(affs, codes, start):
        w = w.astype(np.float64)
        inside = a == b
        if has_zero:
            inside &= a != 0
        ai = a[inside]
        inner_count[:, c] = np.bincount(ai, minlength=n_all)
        inner_sum[:, c] = np.bincount(ai, weights=w[inside], minlength=n_all)
        if bins:
            inner_hist[:, c, :] = np.bincount(
                ai * bins + _bin_index(w[inside], bins), minlength=n_all * bins
            ).reshape(n_all, bins)
        across = a != b
        if has_zero:
            across &= (a != 0) & (b != 0)
        lo = np.minimum(a[across], b[across]).astype(np.int64)
        hi = np.maximum(a[across], b[across]).astype(np.int64)
        keys.append(lo * n_all + hi)
        chans.append(np.full(lo.size, c, np.int64))
        weights.append(w[across])
    keep = size_all > 0
    if has_zero:
        keep[0] = False
    key = np.concatenate(keys)
    if key.size == 0 and not keep.any():
        return _empty_graph(bins)
    chan = np.concatenate(chans)
    w = np.concatenate(weights)
    ekeys, eidx = np.unique(key, return_inverse=True)
    n_e = ekeys.size
    flat = eidx * 3 + chan
    count = np.bincount(flat, minlength=n_e * 3).reshape(n_e, 3)
    total = np.bincount(flat, weights=w, minlength=n_e * 3).reshape(n_e, 3)
    amax = np.zeros(n_e * 3, np.float64)
    np.maximum.at(amax, flat, w)
    hist = None
    if bins:
        hist = np.bincount(flat * bins + _bin_index(w, bins), minlength=n_e * 3 * bins).reshape(n_e, 3, bins)
    return RegionGraph(
        bins=int(bins),
        nodes=nodes[keep].astype(np.uint64),
        size=size_all[keep].astype(np.int64),
        inner_count=inner_count[keep],
        inner_sum=inner_sum[keep],
        inner_hist=inner_hist[keep] if bins else None,
        u=nodes[ekeys // n_all].astype(np.uint64),
        v=nodes[ekeys % n_all].astype(np.uint64),
        count=count.astype(np.int64),
        sum=total,
        max=amax.reshape(n_e, 3).astype(np.float32),
        hist=hist.astype(np.int64) if bins else None,
    )


def merge_graphs(graphs) -> RegionGraph:
    """Combine graphs of disjoint parts of a volume (e.g. blocks) into one: statistics add up.

    Examples:
        >>> frag = np.array([[[1, 1, 2, 2]]], np.uint64); affs = np.full((3, 1, 1, 4), 0.5, np.float32)
        >>> whole = region_graph(affs, frag)
        >>> left, right = region_graph(affs[..., :2], frag[..., :2]), region_graph(affs[..., 1:], frag[..., 1:], start=(0, 0, 1))
        >>> merge_graphs([left, right]).size.tolist() == whole.size.tolist()
        True
    """
    graphs = list(graphs)
    if not graphs:
        raise FusionNetError("no region graphs to merge")
    bins = graphs[0].bins
    if any(g.bins != bins for g in graphs):
        raise FusionNetError("cannot merge region graphs with different histogram bins")
    cat = lambda name: np.concatenate([getattr(g, name) for g in graphs])  # noqa: E731
    nodes, ninv = np.unique(cat("nodes"), return_inverse=True)
    n = nodes.size

    def node_sum(name):
        arr = cat(name)
        out = np.zeros((n,) + arr.shape[1:], arr.dtype)
        np.add.at(out, ninv, arr)
        return out

    ids = np.unique(np.concatenate([nodes, cat("u"), cat("v")]))
    m = ids.size
    key = np.searchsorted(ids, cat("u")).astype(np.int64) * m + np.searchsorted(ids, cat("v"))
    ekeys, einv = np.unique(key, return_inverse=True)

    def edge_reduce(name, ufunc):
        arr = cat(name)
        out = np.zeros((ekeys.size,) + arr.shape[1:], arr.dtype)
        ufunc.at(out, einv, arr)
        return out

    return RegionGraph(
        bins=bins,
        nodes=nodes.astype(np.uint64),
        size=node_sum("size"),
        inner_count=node_sum("inner_count"),
        inner_sum=node_sum("inner_sum"),
        inner_hist=node_sum("inner_hist") if bins else None,
        u=ids[ekeys // m].astype(np.uint64),
        v=ids[ekeys % m].astype(np.uint64),
        count=edge_reduce("count", np.add),
        sum=edge_reduce("sum", np.add),
        max=edge_reduce("max", np.maximum),
        hist=edge_reduce("hist", np.add) if bins else None,
    )
