"""Fiji's border thinning (``WatershedTransform2D(binary, 4)``) and 4-connected labelling, in numpy.

See :mod:`fusionnet_keras.evaluation.isbi` for how the ISBI 2012 scores use it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.checks import _shape_str

_FOUR = ndimage.generate_binary_structure(2, 1)


# Label states used during the thinning watershed (padded flat label array).
_INIT = -1  # border pixel not reached yet


_INQUEUE = -2  # border pixel waiting in the flooding queue


_OUTSIDE = -3  # padding around the image


def label_components(binary) -> np.ndarray:
    """4-connected components of a 2-D boolean image (0 = background)."""
    lab, _ = ndimage.label(np.asarray(binary, dtype=bool), structure=_FOUR)
    return lab


def _next_wave(lab: np.ndarray, src: np.ndarray, offs: np.ndarray, srank: np.ndarray) -> np.ndarray:
    """Unreached neighbours of ``src`` (ordered) in FIFO insertion order.

    A neighbour is queued by the first source pixel (in order) that sees it,
    the four neighbours of a pixel being visited as left, up, right, down, so
    its queue position is given by min over its sources of
    ``4 * rank(source) + direction``. ``srank`` is a scratch array (all -1
    on entry and on exit).
    """
    if src.size == 0:
        return src
    cand = (src[:, None] + offs[None, :]).ravel()
    cand = cand[lab[cand] == _INIT]
    if cand.size == 0:
        return cand
    # one representative per distinct candidate (whichever write wins)
    srank[cand] = np.arange(cand.size)
    uniq = cand[srank[cand] == np.arange(cand.size)]
    srank[cand] = -1
    # queue key: first (source rank, direction) that reaches the candidate
    nsrc = src.size
    srank[src] = np.arange(nsrc)
    big = 4 * nsrc
    key = np.full(uniq.size, big, dtype=np.int64)
    for d in range(4):
        r = srank[uniq - offs[d]]
        key = np.minimum(key, np.where(r >= 0, 4 * r + d, big))
    srank[src] = -1
    slots = np.full(big, -1, dtype=np.int64)
    slots[key] = uniq
    return slots[slots >= 0]


def _unique_positive(cand: np.ndarray) -> np.ndarray:
    """Row-wise: the single positive label of ``cand`` if there is exactly one
    distinct positive value in the row, else 0 (dam)."""
    cmax = cand.max(axis=1)
    cmin = np.where(cand > 0, cand, _BIG_LABEL).min(axis=1)
    return np.where((cmax > 0) & (cmin == cmax), cmax, 0)


_BIG_LABEL = np.iinfo(np.int32).max


_MAX_SWEEPS = 64


def _resolve_wave(pre: np.ndarray, nbpos: np.ndarray) -> np.ndarray:
    """Labels of the pixels of one flooding wave, in queue order.

    ``pre`` (n, 4): labels (> 0) of the neighbours that were final before the
    wave started (0 otherwise); ``nbpos`` (n, 4): queue position of the
    neighbours that belong to the same wave and are taken from the queue
    earlier (-1 otherwise). Pixel ``i`` gets the unique positive label among
    its final neighbours (``pre`` and the already resolved earlier pixels of
    the wave), or 0 (dam) when there are none or several. A pixel only
    depends on earlier pixels of the wave, so repeated sweeps (each one
    recomputing only the pixels whose earlier neighbours changed) reach the
    exact sequential result; a sequential pass finishes rare long chains.
    """
    val = _unique_positive(pre)
    # pixels with two distinct labels before the wave are dams whatever happens
    multi = (pre.max(axis=1) > 0) & (val == 0)
    dep = np.flatnonzero((nbpos >= 0).any(axis=1) & ~multi)
    if dep.size == 0:
        return val
    pre_d = pre[dep]
    pos_d = nbpos[dep]
    has = pos_d >= 0
    safe = np.where(has, pos_d, 0)
    changed = np.zeros(val.size, dtype=bool)
    rows = np.arange(dep.size)
    for _ in range(_MAX_SWEEPS):
        nbv = np.where(has[rows], val[safe[rows]], 0)
        new = _unique_positive(np.concatenate([pre_d[rows], nbv], axis=1))
        idx = dep[rows]
        diff = new != val[idx]
        if not diff.any():
            return val
        val[idx] = new
        changed[:] = False
        changed[idx[diff]] = True
        rows = np.flatnonzero(np.any(has & changed[safe], axis=1))
        if rows.size == 0:
            return val
    # long dependency chains: finish sequentially, in queue order
    for row, i in enumerate(dep):
        labels = {int(v) for v in pre_d[row] if v > 0}
        for d in range(pos_d.shape[1]):
            if has[row, d]:
                v = int(val[pos_d[row, d]])
                if v > 0:
                    labels.add(v)
        val[i] = labels.pop() if len(labels) == 1 else 0
    return val


def thin_borders(binary, seeds=None) -> np.ndarray:
    """Thin the borders of a binary cell map to (at most) one-pixel-wide dams.

    Exact emulation of the thinning used by the ISBI 2012 evaluation: Fiji's
    ``trainableSegmentation.utils.WatershedTransform2D(binaryProposal, 4)``
    (Vincent & Soille flooding with watershed pixels) applied to the binary
    image with interior = 0 and border = 255:

    * the interior pixels (level 0) are labelled as 4-connected components
      (the seeds);
    * the border pixels (level 255) that touch a seed are queued in
      column-major scan order (x outer, y inner); pixels are then taken from
      the FIFO queue one at a time and each queues its not yet queued border
      4-neighbours (visited left, up, right, down) -- dam pixels included;
    * a pixel taken from the queue gets the label of its already final
      4-neighbours if they carry exactly one label, and becomes a dam pixel
      (0) if they carry several labels or only dams;
    * border pixels never reached (a border region that touches no seed, e.g.
      a section with no interior pixel at all) form new catchment basins:
      each of their 4-connected components gets a new label.

    Args:
        binary: (H, W) array_like of bool. ``True`` = cell interior, ``False`` = border / membrane.
        seeds: (H, W) int array, optional. Precomputed labels of the interior components (must be 0 exactly
            on the border pixels); computed with 4-connectivity when omitted.

    Returns:
        (H, W) int32 array: interior and absorbed border pixels carry their
            basin label (> 0), dam pixels are 0.
    """
    b = np.asarray(binary, dtype=bool)
    if b.ndim != 2:
        raise FusionNetError(f"thin_borders expects a 2-D image, got shape {_shape_str(b.shape)}")
    if seeds is None:
        seeds = label_components(b)
    H, W = b.shape
    Wp = W + 2
    lab2 = np.full((H + 2, Wp), _OUTSIDE, dtype=np.int32)
    lab2[1:-1, 1:-1] = np.where(b, seeds, _INIT)
    lab = lab2.ravel()

    offs = np.array([-1, -Wp, 1, Wp], dtype=np.int64)  # left, up, right, down
    if b.any() and not b.all():
        # Border pixels touching a seed, in column-major scan order (x outer, y inner).
        border = ~b
        touch = np.zeros_like(b)
        touch[:, 1:] |= b[:, :-1]
        touch[:-1, :] |= b[1:, :]
        touch[:, :-1] |= b[:, 1:]
        touch[1:, :] |= b[:-1, :]
        touch &= border
        xs, ys = np.nonzero(touch.T)
        wave = ((ys + 1) * Wp + (xs + 1)).astype(np.int64)

        # queue position of every pixel (-1 = not queued yet)
        qpos = np.full(lab.shape, -1, dtype=np.int64)
        srank = np.full(lab.shape, -1, dtype=np.int64)
        start = 0
        while wave.size:
            lab[wave] = _INQUEUE
            n = wave.size
            qpos[wave] = np.arange(start, start + n, dtype=np.int64)
            nb = wave[:, None] + offs[None, :]
            nl = lab[nb]
            pre = np.where(nl > 0, nl, 0)
            # neighbours of the same wave taken from the queue earlier
            nbpos = qpos[nb] - start
            nbpos[(nbpos < 0) | (nbpos >= np.arange(n)[:, None])] = -1
            lab[wave] = _resolve_wave(pre, nbpos)
            # every pixel taken from the queue (dams too) queues its neighbours
            wave = _next_wave(lab, wave, offs, srank)
            start += n

    out = lab2[1:-1, 1:-1]
    unreached = out == _INIT
    if unreached.any():
        # new minima at the border level: one new basin per 4-connected region
        extra, _ = ndimage.label(unreached, structure=_FOUR)
        start = int(out.max(initial=0))
        out = np.where(unreached, extra + max(start, 0), out)
    return np.maximum(out, 0).astype(np.int32)

