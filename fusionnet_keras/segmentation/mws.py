"""Mutex watershed (Wolf et al. 2018, 2020): voxels partitioned from attractive and repulsive affinities.

Input: affinities ``(C, Z, Y, X)`` in [0, 1] with one offset ``(dz, dy, dx)``
per channel, in the convention of :mod:`fusionnet_keras.data.affinities`:
channel ``c`` at voxel ``v`` is the affinity of ``v`` and ``v + offset[c]``
(1 = same object; the edge exists where ``v + offset[c]`` lies in the volume).
The first ``attractive`` channels (default 3: the nearest neighbours,
:data:`~fusionnet_keras.data.affinities.OFFSETS`) are attractive with weight
``a``, the others (long range) repulsive with weight ``1 - a + beta - 0.5``;
``beta`` in (0, 1) biases towards splitting (0.5: the plain mutex watershed).

All edges are visited in order of decreasing weight (Kruskal; equal weights in
channel order, then in scan order of their voxels): an attractive
edge joins the clusters of its voxels unless a mutex constraint lies between
them; a repulsive edge adds a mutex constraint between two different clusters.
The result is the exact optimum of the objective with dominant weights
(Wolf et al. 2020), tested so against exhaustive search. Repulsive edges can be
thinned to the voxels on a grid of ``stride`` (fewer edges, faster, less memory:
the edges of the whole volume are held, about 33 bytes each, C per voxel).
Compiled with numba (:mod:`~fusionnet_keras.segmentation._mws_kernel`).

The offsets of a written affinity file are read from its metadata
(:func:`stored_offsets`; ``fusionnet-keras affinities`` stores them), and
:func:`merge_small` merges the tiny segments noisy affinities leave into their
strongest neighbour.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError


def parse_offsets(text: str) -> list[tuple[int, int, int]]:
    """``"dz,dy,dx;dz,dy,dx;..."`` -> a list of offsets.

    Examples:
        >>> parse_offsets("-3,0,0; 0,-9,0")
        [(-3, 0, 0), (0, -9, 0)]
    """
    try:
        offsets = [tuple(int(x) for x in part.split(",")) for part in str(text).split(";") if part.strip()]
    except ValueError:
        raise FusionNetError(f"offsets must be integers dz,dy,dx separated by ';', got {text!r}") from None
    return check_offsets(offsets)


def check_offsets(offsets) -> list[tuple[int, int, int]]:
    offsets = [tuple(int(x) for x in o) for o in offsets]
    if not offsets:
        raise FusionNetError("no offsets given")
    bad = [o for o in offsets if len(o) != 3 or o == (0, 0, 0)]
    if bad:
        raise FusionNetError(f"an offset must be three integers dz,dy,dx, not all 0; got {bad[0]}")
    return offsets


def merge_small(affs, labels, size: int) -> np.ndarray:
    """``labels`` with every segment smaller than ``size`` voxels merged into its strongest neighbour (the
    highest nearest-neighbour affinity across their boundary; the z-watershed's size merging,
    :func:`~fusionnet_keras.segmentation.zwatershed.size_merge`, on the segments' region graph), renumbered
    ``1..K``. The mutex watershed leaves many tiny segments where the affinities are noisy; this is the
    usual clean-up (Wolf et al. 2020 filter small segments too). ``size`` 0: unchanged.

    Example:
        >>> affs = np.ones((3, 1, 1, 5), np.float32); affs[2, 0, 0, 4] = 0.2
        >>> merge_small(affs, np.array([[[1, 1, 2, 2, 3]]], np.uint64), 2).ravel().tolist()  # 3 joins 2
        [1, 1, 2, 2, 2]
    """
    from fusionnet_keras.segmentation.zwatershed import merge_small_regions
    from fusionnet_keras.utils.validate import check_int

    size = check_int("mws size", size, minimum=0)
    if size == 0:
        return labels
    return merge_small_regions(np.asarray(affs)[:3], labels, size)


def stored_offsets(volume, given=None) -> list[tuple[int, int, int]]:
    """The long-range offsets of an affinity ``volume`` (:class:`fusionnet_keras.data.io.Volume`, ``(C, Z, Y, X)``):
    ``given`` (``--offsets``), else those stored with it by ``fusionnet-keras affinities``
    (:data:`~fusionnet_keras.inference.affinities.OFFSETS_ATTR`, the 3 nearest neighbours first); a
    one-line error when there are none, when they disagree with ``given`` or when they do not match the
    channels."""
    from fusionnet_keras.data.affinities import N_AFFINITIES, check_network_offsets
    from fusionnet_keras.inference.affinities import OFFSETS_ATTR

    channels = volume.shape[0] if len(volume.shape) == 4 else 0
    if channels <= N_AFFINITIES:
        raise FusionNetError(f"{volume.name} has shape {tuple(volume.shape)}: mws and lifted edges from affinities "
                             "need long-range channels after the 3 nearest-neighbour ones (a network trained with "
                             "model.offsets)")
    stored = volume.attributes.get(OFFSETS_ATTR)
    if stored is not None:
        try:
            stored = list(check_network_offsets(stored))[N_AFFINITIES:]
        except FusionNetError as e:
            raise FusionNetError(f"{volume.name}: its stored {OFFSETS_ATTR} are malformed: {e}") from None
        if given is not None and list(given) != stored:
            raise FusionNetError(f"--offsets {_text(given)} disagree with the long-range offsets stored in "
                                 f"{volume.name}: {_text(stored)}")
    offsets = stored if given is None else list(given)
    if offsets is None:
        raise FusionNetError(f"{volume.name} stores no affinity offsets (HDF5 and zarr files written by "
                             "'fusionnet-keras affinities' do): give its long-range channels' --offsets")
    if channels != N_AFFINITIES + len(offsets):
        raise FusionNetError(f"{volume.name} has {channels - N_AFFINITIES} long-range channels after the 3 nearest "
                             f"neighbours, but {len(offsets)} long-range offsets are given")
    return offsets


def _text(offsets) -> str:
    return ";".join(",".join(str(v) for v in o) for o in offsets)


def _edges(shape, offsets, stride, attractive):
    """Per channel: the voxels v (as a slice of the affinities), flat index of v and of v + offset."""
    from fusionnet_keras.data.affinities import offset_pairs

    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    for c, offset in enumerate(offsets):
        (here, there), = offset_pairs(shape, [offset], (1, 1, 1) if c < attractive else stride)
        yield c, here, index[here].ravel(), index[there].ravel()


def mutex_watershed(affinities, offsets, attractive: int = 3, beta: float = 0.5, stride=(1, 1, 1)) -> np.ndarray:
    """Mutex watershed labels ``(Z, Y, X)`` uint64, ids ``1..K`` in scan order of first voxels.

    Args:
        affinities: ``(C, Z, Y, X)`` in [0, 1], channel ``c`` linking ``v`` and ``v + offsets[c]``.
        offsets: ``C`` offsets ``(dz, dy, dx)``.
        attractive: the number of leading channels that attract (the others repel).
        beta: repulsion bias in (0, 1) (0.5: none; higher: more splits).
        stride: ``(z, y, x)`` grid of the voxels that keep their repulsive edges.

    Examples:
        >>> affs = np.ones((4, 1, 1, 4), np.float32); affs[3] = 0.0   # x +-1 attract, x -3 repels
        >>> offsets = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, -3)]
        >>> affs[2, 0, 0, 2] = 0.4                                       # the weakest attraction
        >>> mutex_watershed(affs, offsets).ravel().tolist()
        [1, 1, 2, 2]
    """
    from fusionnet_keras.segmentation import _mws_kernel
    from fusionnet_keras.data.io.images import as_probability
    from fusionnet_keras.segmentation.multicut import check_betas

    affs = np.asarray(affinities)
    offsets = check_offsets(offsets)
    if affs.ndim != 4 or affs.shape[0] != len(offsets):
        raise FusionNetError(f"the mutex watershed needs affinities (C, Z, Y, X) with C = {len(offsets)} "
                             f"(one per offset), got shape {tuple(affs.shape)}")
    if not 1 <= int(attractive) <= len(offsets):
        raise FusionNetError(f"attractive channels must be 1..{len(offsets)}, got {attractive}")
    stride = tuple(int(s) for s in stride)
    if len(stride) != 3 or min(stride) < 1:
        raise FusionNetError(f"stride must be three integers >= 1, got {stride}")
    (beta,) = check_betas([beta])
    affs = as_probability(affs, "affinities")
    shape = affs.shape[1:]
    us, vs, ws, att = [], [], [], []
    for c, here, u, v in _edges(shape, offsets, stride, int(attractive)):
        a = affs[(c,) + here].ravel().astype(np.float64)
        us.append(u)
        vs.append(v)
        ws.append(a if c < attractive else 1.0 - a + beta - 0.5)
        att.append(np.full(u.size, c < attractive))
    u, v, w = np.concatenate(us), np.concatenate(vs), np.concatenate(ws)
    order = np.argsort(-w, kind="stable")
    roots = _mws_kernel.mutex_kruskal(int(np.prod(shape)), u, v, np.concatenate(att), order)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return (rank[inverse] + 1).astype(np.uint64).reshape(shape)
