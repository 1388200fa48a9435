"""Labels computed block by block, joined across block faces: global ids, rims, stitches, unions.

A block labels a region around it (its *view*: watershed basins with context,
connected components with one voxel around it), keeps the labels of its own
voxels, numbered ``block.id * block voxels + 1, ...`` so they are unique in the
volume (:func:`number_block`), and saves how its view continues into the
*rim*, the voxels of its neighbours that touch it. Once every block is
numbered, the pairs (the block's label, the neighbour's label) that meet on
the rim are the *stitches* (:func:`rim_stitches`); their connected components
(:func:`union`) join the pieces of an object that the faces cut. Each label
also keeps the scan-order index of its first voxel, so a joined object gets
the same rank (:func:`first_voxels_of`) as when the volume is labelled whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.utils.atomic import atomic_path


def rim_mask(shape, inner, faces_only: bool = True) -> np.ndarray:
    """The voxels of an array of ``shape`` outside the box ``inner`` (slices) that touch it.

    ``faces_only``: only those one step from the box along one axis (the layer
    on each face); else every voxel outside the box (a box one voxel larger,
    with its edges and corners: the 26-neighbours).

    Examples:
        >>> rim_mask((3, 4), (slice(0, 2), slice(1, 3))).astype(int).tolist()
        [[1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]
    """
    if not faces_only:
        rim = np.ones(shape, bool)
        rim[tuple(inner)] = False
        return rim
    rim = np.zeros(shape, bool)
    for axis, s in enumerate(inner):
        for layer in (s.start - 1, s.stop):
            if 0 <= layer < shape[axis]:
                index = list(inner)
                index[axis] = slice(layer, layer + 1)
                rim[tuple(index)] = True
    return rim


def _relative(region, outer) -> tuple:
    return tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, outer))


def number_block(view, grown, block, block_size: int, shape, rim_path, faces_only: bool = True):
    """The block's labels with globally unique ids; saves its rim view and first voxels to ``rim_path``.

    Args:
        view: labels (0 = background) of the region ``grown`` (global slices,
            containing the block and one voxel around it where the volume has one).
        block: the :class:`~fusionnet_keras.inference.grid.Block`.
        block_size: voxels of a whole block (ids of block ``i`` are
            ``i * block_size + 1, ...``, in the order of the view's ids).
        shape: the volume's shape.
        rim_path: the ``.npz`` file for :func:`rim_stitches` and :func:`first_voxels_of`.
        faces_only: the rim is the layer on each face (else with edges and corners).

    Returns:
        ``(labels of the block, number of labels)``.
    """
    view = np.asarray(view)
    inner = _relative(block.region, grown)
    ids, inverse = np.unique(view[inner], return_inverse=True)
    new = np.arange(ids.size, dtype=np.uint64) + np.uint64(0 if ids.size and ids[0] == 0 else 1)
    new[new > 0] += np.uint64(block.id) * np.uint64(block_size)
    core = new[inverse.reshape(block.shape)]
    # the view of the rim in the block's ids (0 where a label misses the block)
    box = block.grown((1,) * len(shape), (1,) * len(shape), shape)
    lut = np.zeros(int(view.max(initial=0)) + 1, np.uint64)
    lut[ids.astype(np.int64)] = new
    rim = lut[view[_relative(box, grown)]]
    rim[~rim_mask(rim.shape, _relative(block.region, box), faces_only)] = 0
    nodes = new[new > 0]
    found, first = np.unique(core.ravel(), return_index=True)
    local = np.unravel_index(first[np.searchsorted(found, nodes)], block.shape)
    first = np.ravel_multi_index(tuple(i + s for i, s in zip(local, block.start)), tuple(shape)).astype(np.int64)
    with atomic_path(Path(rim_path)) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, labels=rim, start=np.array([b.start for b in box]), nodes=nodes, first=first)
    return core, int(nodes.size)


def rim_stitches(rim_path, labels) -> np.ndarray:
    """Pairs ``(the block's label, the neighbour's label)`` meeting on the block's rim; ``labels``: the numbered volume."""
    with np.load(rim_path) as f:
        mine, start = f["labels"], f["start"]
    theirs = np.asarray(labels[tuple(slice(int(s), int(s) + n) for s, n in zip(start, mine.shape))])
    both = (mine > 0) & (theirs > 0)
    return np.unique(np.stack([mine[both], theirs[both]], axis=1), axis=0).astype(np.uint64).reshape(-1, 2)


def first_voxels_of(nodes, rims, blocks) -> np.ndarray:
    """The scan-order index of the first voxel of each label in ``nodes``, from the blocks' rim files in ``rims``."""
    ids, first = [], []
    for b in blocks:
        with np.load(Path(rims) / f"{b.id}.npz") as f:
            ids.append(f["nodes"])
            first.append(f["first"])
    ids, first = np.concatenate(ids), np.concatenate(first)
    order = np.argsort(ids)
    return first[order][np.searchsorted(ids[order], nodes)]


def union(nodes, pairs) -> np.ndarray:
    """The representative (smallest id) of every node's connected component under ``pairs`` of ids.

    Examples:
        >>> union(np.array([1, 2, 3, 4], np.uint64), np.array([[4, 2]], np.uint64)).tolist()
        [1, 2, 3, 2]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = np.asarray(nodes, np.uint64)
    n = nodes.size
    pairs = np.asarray(pairs, np.uint64).reshape(-1, 2)
    i, j = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    _, comp = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)), directed=False)
    first = np.full(comp.max(initial=0) + 1, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    return nodes[first[comp]]
