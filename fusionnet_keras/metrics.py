"""Segmentation metrics: ISBI 2012 V^Rand / V^Info, pixel error, Dice, 3-D VI / ARE.

ISBI 2012 scoring (2-D, section by section)
-------------------------------------------
:func:`isbi_scores` reproduces the challenge's reference implementation (Fiji
Trainable Segmentation, ``RandError.getMaximalVRandAfterThinning(0.0, 1.0, 0.1,
true)`` and ``VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0,
0.1)``; Arganda-Carreras et al., Front. Neuroanat. 2015). For every threshold
and every section:

1. The ground truth is binarised (cell = label > 0) and its cells are the
   4-connected components of the cell pixels. Membrane (0) pixels of the
   ground truth are ignored ("foreground-restricted").
2. The proposal (values in [0, 1], high = cell interior) is binarised with
   ``value > threshold`` (the value is first rounded to float32, as ImageJ
   stores it, and compared in double precision, as Fiji does). The
   thresholds are those of Fiji's ``for (th = 0.0; th <= 1.0; th += 0.1)``
   loop (see :data:`DEFAULT_THRESHOLDS`; the last one is 0.9999999999999999).
3. The borders are thinned by :func:`thin_borders`, an exact emulation of
   Fiji's ``trainableSegmentation.utils.WatershedTransform2D(binary, 4)``
   (classic Vincent-Soille flooding) on the binary image with interior = 0
   and border = 255: the interior 4-connected components are the basins; the
   border pixels are flooded in FIFO order from the border pixels touching a
   basin (column-major scan order); a flooded pixel takes the label of its
   final neighbours if they carry exactly one label and becomes a dam pixel
   (0) otherwise -- dam pixels keep flooding, so a pixel reached only from
   dams is a dam too; border regions touching no basin become new basins.
4. Proposal pixels that are dams (0) but lie inside ground-truth cells count
   as single-pixel segments.
5. With ``n_ij`` the contingency table (ground truth ``i`` x proposal ``j``)
   over the ground-truth cell pixels, ``t_i`` / ``s_j`` its marginals:

   * V^Rand split = sum n_ij^2 / sum t_i^2, merge = sum n_ij^2 / sum s_j^2,
     V^Rand = their harmonic mean (F-score with alpha = 0.5);
   * V^Info split = I(S;T) / H(S), merge = I(S;T) / H(T), V^Info = their
     harmonic mean = 2 I / (H(S) + H(T)); as in Fiji, a section whose ground
     truth has one cell (H(T) = 0) or whose proposal has one segment
     (H(S) = 0) scores V^Info = 0.

The per-section scores are averaged over the sections (split, merge and F
each averaged separately), and V^Rand and V^Info are maximised over the
thresholds independently (first threshold reaching the maximum).

Everything is pure numpy / scipy; no Fiji is needed. The thinning is checked
against a literal (pixel-by-pixel) transliteration of Fiji's flooding in the
tests. On the reference case (ISBI train-labels vs. the same labels with
membranes dilated by a radius-2 disk) this module gives V^Rand =
0.997994818376 and V^Info = 0.996676722841, Fiji's 0.9979948184 and
0.9966767228 to within 5e-11 (the precision of the quoted figures).

Known differences from Fiji, all in degenerate cases: sections whose ground
truth has no cell pixel are left out of the means (Fiji's division by zero
makes the whole threshold NaN), a V^Info with I(S;T) = 0 and both entropies
> 0 is 0 (Fiji: 0/0 = NaN, which drops the threshold from the maximum), and
the ground truth is binarised as label > 0 rather than label > threshold
(identical for 0/255 and 0/1 labels at the default thresholds).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from fusionnet_keras.errors import FusionNetError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "isbi_scores",
    "vrand_vinfo_section",
    "thin_borders",
    "label_components",
    "pixel_error",
    "dice",
    "variation_of_information",
    "adapted_rand_error",
    "vrand_vinfo_3d",
]



def _fiji_thresholds(lo: float = 0.0, hi: float = 1.0, step: float = 0.1) -> np.ndarray:
    """Thresholds as Fiji's ``for (th = lo; th <= hi; th += step)`` loop makes
    them (accumulated in double precision)."""
    out = []
    th = float(lo)
    while th <= hi:
        out.append(th)
        th += step
    return np.array(out, dtype=np.float64)


#: Thresholds used by the ISBI 2012 evaluation (``getMaximalVRandAfterThinning(
#: 0.0, 1.0, 0.1, true)``): 0.0, 0.1, 0.2, 0.30000000000000004, ...,
#: 0.7999999999999999, 0.8999999999999999, 0.9999999999999999 -- eleven
#: values accumulated in double precision, the last one just below 1.0 (so a
#: proposal value of exactly 1.0 still counts as cell interior there).
DEFAULT_THRESHOLDS = _fiji_thresholds()

_FOUR = ndimage.generate_binary_structure(2, 1)

# Label states used during the thinning watershed (padded flat label array).
_INIT = -1  # border pixel not reached yet
_INQUEUE = -2  # border pixel waiting in the flooding queue
_OUTSIDE = -3  # padding around the image


# --------------------------------------------------------------------------
# input validation helpers
# --------------------------------------------------------------------------


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _binary_labels(labels, name: str = "labels") -> np.ndarray:
    """Return a boolean cell mask from 0/255, 0/1 or bool labels."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise FusionNetError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise FusionNetError(f"{name} contain NaN or infinite values")
    values = np.unique(arr)
    if values.size > 2:
        shown = ", ".join(f"{v:g}" for v in values[:5])
        more = ", ..." if values.size > 5 else ""
        raise FusionNetError(
            f"{name} are not binary: found {values.size} distinct values "
            f"({shown}{more}); expected 0 = membrane and one cell value (1 or 255)"
        )
    if values.size == 2 and values[0] != 0:
        raise FusionNetError(
            f"{name} are not binary 0/cell: found values {values[0]:g} and "
            f"{values[1]:g}; expected 0 = membrane"
        )
    if values.size and values.min() < 0:
        raise FusionNetError(f"{name} contain negative values")
    return arr > 0


def _check_proposal(proposal, name: str = "prediction") -> np.ndarray:
    arr = np.asarray(proposal)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise FusionNetError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise FusionNetError(f"{name} contains {bad} NaN or infinite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise FusionNetError(
            f"{name} values must lie in [0, 1], found range "
            f"[{float(arr.min()):g}, {float(arr.max()):g}]"
        )
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, a_name="prediction", b_name="labels"):
    if a.shape != b.shape:
        raise FusionNetError(
            f"{a_name} shape {_shape_str(a.shape)} differs from "
            f"{b_name} shape {_shape_str(b.shape)}"
        )


def _as_sections(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise FusionNetError(
        f"{name} must be 2-D (H, W) or 3-D (Z, H, W), got shape {_shape_str(arr.shape)}"
    )


# --------------------------------------------------------------------------
# thinning (Fiji's classic watershed on the two-level binary image)
# --------------------------------------------------------------------------


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

    Parameters
    ----------
    binary : (H, W) array_like of bool
        ``True`` = cell interior, ``False`` = border / membrane.
    seeds : (H, W) int array, optional
        Precomputed labels of the interior components (must be 0 exactly on
        the border pixels); computed with 4-connectivity when omitted.

    Returns
    -------
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


# --------------------------------------------------------------------------
# contingency statistics
# --------------------------------------------------------------------------


def _compact(x: np.ndarray):
    """Codes 0..k-1 of the distinct values of ``x`` and their counts."""
    x = x.astype(np.int64, copy=False)
    if x.size and x.min() >= 0 and x.max() < 4 * x.size + 4096:
        counts = np.bincount(x)
        present = counts > 0
        remap = np.cumsum(present) - 1
        return remap[x], counts[present].astype(np.int64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return inv.ravel(), counts.astype(np.int64)


def _contingency(seg: np.ndarray, gt: np.ndarray, ignore_gt_zero: bool = True):
    """Contingency statistics of ``seg`` against ``gt``.

    Returns ``(n, nij, a, b, n0)``: ``n`` counted pixels (gt > 0 when
    ``ignore_gt_zero``), ``nij`` the non-zero counts of (gt label, seg label > 0)
    pairs, ``a`` the gt object sizes, ``b`` the seg object sizes (seg > 0),
    ``n0`` the number of counted pixels with seg == 0 (singletons).
    """
    seg = np.asarray(seg).ravel()
    gt = np.asarray(gt).ravel()
    if ignore_gt_zero:
        keep = gt != 0
        seg = seg[keep]
        gt = gt[keep]
    n = gt.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return 0, empty, empty, empty, 0
    gt_c, a = _compact(gt)
    fg = seg != 0
    n0 = int(n - np.count_nonzero(fg))
    seg_f = seg[fg]
    gt_f = gt_c[fg]
    if seg_f.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return n, empty, a, empty, n0
    seg_c, b = _compact(seg_f)
    ng = int(a.size)
    ns = int(b.size)
    if ng * ns <= 4_000_000:
        nij = np.bincount(gt_f.astype(np.int64) * ns + seg_c, minlength=ng * ns)
        nij = nij[nij > 0].astype(np.int64)
    else:
        _, nij = np.unique(gt_f.astype(np.int64) * ns + seg_c, return_counts=True)
        nij = nij.astype(np.int64)
    return n, nij, a, b, n0


def _xlogx(counts: np.ndarray) -> float:
    c = counts[counts > 0].astype(np.float64)
    return float(np.sum(c * np.log(c)))


def _scores_from_contingency(n, nij, a, b, n0, fiji_degenerate: bool = False) -> dict:
    """V^Rand and V^Info (with split / merge parts) from contingency stats.

    With ``fiji_degenerate`` the V^Info parts of degenerate sections follow
    Fiji's ``VariationOfInformation.foregroundRestrictedFscore``: a ground
    truth with a single cell (H(T) = 0) gives merge (precision) 0 and split
    (recall) 1, then a proposal with a single segment (H(S) = 0) gives merge 1
    and split 0 -- so V^Info = 0 in both cases. Otherwise a zero entropy gives
    a part of 1.
    """
    if n == 0:
        nan = float("nan")
        return dict(vrand=nan, vrand_split=nan, vrand_merge=nan, vinfo=nan, vinfo_split=nan, vinfo_merge=nan)
    nf = float(n)
    # Rand: pair counts, with seg-0 pixels as singletons (each counts 1 = 1^2)
    sum_a = float(np.sum(a.astype(np.float64) ** 2))
    sum_b = float(np.sum(b.astype(np.float64) ** 2)) + n0
    sum_ab = float(np.sum(nij.astype(np.float64) ** 2)) + n0
    rand_split = sum_ab / sum_a  # recall
    rand_merge = sum_ab / sum_b  # precision
    vrand = 2.0 * rand_split * rand_merge / (rand_split + rand_merge)
    # Information: entropies in nats; singletons contribute (1/n) log n each
    log_n = math.log(nf)
    h_t = log_n - _xlogx(a) / nf
    h_s = log_n - _xlogx(b) / nf
    h_st = log_n - _xlogx(nij) / nf
    mutual = h_s + h_t - h_st
    if abs(mutual) < 1e-12:
        mutual = 0.0
    # zero entropies, decided exactly (the float values may be +-1e-16)
    t_zero = a.size <= 1
    s_zero = (b.size + n0) <= 1
    if fiji_degenerate and s_zero:
        info_split, info_merge = 0.0, 1.0
    elif fiji_degenerate and t_zero:
        info_split, info_merge = 1.0, 0.0
    else:
        info_split = 1.0 if s_zero else mutual / h_s
        info_merge = 1.0 if t_zero else mutual / h_t
    if info_split + info_merge > 0:
        vinfo = 2.0 * info_split * info_merge / (info_split + info_merge)
    else:
        # Fiji gets 0/0 = NaN here (I = 0 with both entropies > 0); 0 is used
        vinfo = 0.0
    return dict(
        vrand=vrand,
        vrand_split=rand_split,
        vrand_merge=rand_merge,
        vinfo=vinfo,
        vinfo_split=info_split,
        vinfo_merge=info_merge,
    )


# --------------------------------------------------------------------------
# ISBI 2012 scores
# --------------------------------------------------------------------------


def vrand_vinfo_section(proposal_binary_or_seg, gt, thin: bool = True) -> dict:
    """Foreground-restricted V^Rand / V^Info of one 2-D section.

    Parameters
    ----------
    proposal_binary_or_seg : (H, W) array
        Either a boolean map (``True`` = cell interior), which is labelled into
        4-connected components and thinned with :func:`thin_borders` (unless
        ``thin=False``, then the components are used as they are), or an
        integer segmentation (0 = border / unassigned, used as it is).
    gt : (H, W) array
        Binary ground truth (0 = membrane; 1, 255 or True = cell). Cells are
        its 4-connected components; membrane pixels are ignored.

    Returns
    -------
    dict with ``vrand``, ``vrand_split``, ``vrand_merge``, ``vinfo``,
    ``vinfo_split``, ``vinfo_merge`` (NaN when the ground truth has no cell
    pixel).
    """
    prop = np.asarray(proposal_binary_or_seg)
    gt_b = _binary_labels(gt, "labels")
    _check_same_shape(prop, gt_b)
    if prop.ndim != 2:
        raise FusionNetError(f"expected a 2-D section, got shape {_shape_str(prop.shape)}")
    if prop.dtype == bool:
        seg = thin_borders(prop) if thin else label_components(prop)
    elif np.issubdtype(prop.dtype, np.integer):
        seg = prop
    else:
        raise FusionNetError(
            "proposal must be a boolean interior map or an integer segmentation, "
            f"got dtype {prop.dtype}"
        )
    gt_lab = label_components(gt_b)
    return _scores_from_contingency(*_contingency(seg, gt_lab, ignore_gt_zero=True), fiji_degenerate=True)


def _binarize(section: np.ndarray, threshold: float) -> np.ndarray:
    # Fiji compares the float32 pixel value with a double threshold.
    return section.astype(np.float64) > float(threshold)


_KEYS = ("vrand", "vrand_split", "vrand_merge", "vinfo", "vinfo_split", "vinfo_merge")


def isbi_scores(proposal, labels, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """ISBI 2012 V^Rand and V^Info (after border thinning) of a proposal.

    Parameters
    ----------
    proposal : (H, W) or (Z, H, W) array of floats in [0, 1]
        Cell-interior probability (high = cell, low = membrane). Booleans are
        accepted (True = cell).
    labels : same shape
        Binary ground truth: 0 = membrane, cell = 255, 1 or True.
    thresholds : sequence of float
        Binarisation thresholds (interior = ``proposal > threshold``),
        default :data:`DEFAULT_THRESHOLDS`: Fiji's 0.0, 0.1, ... accumulated
        in double precision up to 0.9999999999999999, as in the challenge.

    Returns
    -------
    dict with ``vrand`` (best mean V^Rand over the thresholds),
    ``vrand_threshold``, ``vrand_split``, ``vrand_merge`` (at that threshold),
    the same four ``vinfo*`` keys for V^Info, and ``per_threshold``: a list of
    dicts (``threshold``, ``vrand``, ``vrand_split``, ``vrand_merge``,
    ``vinfo``, ``vinfo_split``, ``vinfo_merge``), each the mean over sections.
    Sections whose ground truth has no cell pixel are left out of the means.
    """
    prop = _check_proposal(proposal)
    gt_b = _binary_labels(labels, "labels")
    _check_same_shape(prop, gt_b)
    prop = _as_sections(prop, "prediction")
    gt_b = _as_sections(gt_b, "labels")
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if thresholds.size == 0:
        raise FusionNetError("at least one threshold is needed")
    if not np.all(np.isfinite(thresholds)):
        raise FusionNetError("thresholds must be finite numbers")
    if not np.any(gt_b):
        raise FusionNetError("labels have no cell (non-zero) pixel: nothing to score")

    gt_labs = [label_components(g) if g.any() else None for g in gt_b]
    sums = np.zeros((thresholds.size, len(_KEYS)), dtype=np.float64)
    counted = 0
    for z in range(prop.shape[0]):
        if gt_labs[z] is None:
            continue
        counted += 1
        cache: dict = {}
        for t_i, th in enumerate(thresholds):
            binary = _binarize(prop[z], th)
            key = np.packbits(binary).tobytes()
            if key not in cache:
                seg = thin_borders(binary)
                sc = _scores_from_contingency(
                    *_contingency(seg, gt_labs[z], ignore_gt_zero=True), fiji_degenerate=True
                )
                cache[key] = [sc[k] for k in _KEYS]
            sums[t_i] += cache[key]
    means = sums / counted
    per_threshold = [
        dict(threshold=float(th), **{k: float(means[i, j]) for j, k in enumerate(_KEYS)})
        for i, th in enumerate(thresholds)
    ]
    # first threshold with the maximal score (ties keep the lowest threshold, as Fiji)
    ir = int(np.argmax(means[:, 0]))
    ii = int(np.argmax(means[:, 3]))
    return dict(
        vrand=float(means[ir, 0]),
        vrand_threshold=float(thresholds[ir]),
        vrand_split=float(means[ir, 1]),
        vrand_merge=float(means[ir, 2]),
        vinfo=float(means[ii, 3]),
        vinfo_threshold=float(thresholds[ii]),
        vinfo_split=float(means[ii, 4]),
        vinfo_merge=float(means[ii, 5]),
        per_threshold=per_threshold,
    )


# --------------------------------------------------------------------------
# pixel metrics
# --------------------------------------------------------------------------


def pixel_error(proposal, labels, threshold: float = 0.5) -> float:
    """Fraction of pixels whose binarised class differs from the labels.

    ``proposal > threshold`` is the cell class; the labels are binary
    (0 = membrane, non-zero = cell).
    """
    prop = _check_proposal(proposal)
    gt_b = _binary_labels(labels, "labels")
    _check_same_shape(prop, gt_b)
    if prop.size == 0:
        raise FusionNetError("prediction is empty")
    return float(np.count_nonzero(_binarize(prop, threshold) != gt_b) / prop.size)


def dice(pred_mask, true_mask) -> float:
    """Dice coefficient 2|A n B| / (|A| + |B|) of two masks (1.0 when both are empty)."""
    a = np.asarray(pred_mask)
    b = np.asarray(true_mask)
    _check_same_shape(a, b, "prediction mask", "true mask")
    a = a.astype(bool)
    b = b.astype(bool)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(a & b) / total)


# --------------------------------------------------------------------------
# instance-volume metrics (3-D or any dimension)
# --------------------------------------------------------------------------


def _check_instances(seg, gt):
    s = np.asarray(seg)
    g = np.asarray(gt)
    _check_same_shape(s, g, "segmentation", "ground truth")
    for arr, name in ((s, "segmentation"), (g, "ground truth")):
        if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                continue
            raise FusionNetError(f"{name} must be an integer label volume, got dtype {arr.dtype}")
    return s.astype(np.int64, copy=False), g.astype(np.int64, copy=False)


def variation_of_information(seg, gt, ignore_gt_zero: bool = True):
    """Split / merge variation of information, in bits.

    Returns ``(vi_split, vi_merge)`` = ``(H(S|T), H(T|S))`` with S the
    segmentation and T the ground truth: ``vi_split`` grows when ground-truth
    objects are split, ``vi_merge`` when they are merged; the total VI is
    their sum. With ``ignore_gt_zero`` voxels where ``gt == 0`` are left out;
    segmentation voxels labelled 0 (unassigned) count as single-voxel
    segments.
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, n0 = _contingency(s, g, ignore_gt_zero)
    if n == 0:
        return 0.0, 0.0
    nf = float(n)
    log_n = math.log(nf)
    h_t = log_n - _xlogx(a) / nf
    h_s = log_n - _xlogx(b) / nf
    h_st = log_n - _xlogx(nij) / nf
    ln2 = math.log(2.0)
    split = max(h_st - h_t, 0.0) / ln2
    merge = max(h_st - h_s, 0.0) / ln2
    return float(split), float(merge)


def adapted_rand_error(seg, gt, ignore_gt_zero: bool = True):
    """SNEMI3D adapted Rand error: ``(are, precision, recall)``.

    ``precision = sum n_ij^2 / sum s_j^2`` (merge score),
    ``recall = sum n_ij^2 / sum t_i^2`` (split score) and
    ``are = 1 - F`` with F their harmonic mean. Voxels with ``gt == 0`` are
    ignored (when ``ignore_gt_zero``); segmentation voxels labelled 0 count
    as single-voxel segments, as in the SNEMI3D / Fiji implementation.
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, n0 = _contingency(s, g, ignore_gt_zero)
    if n == 0:
        return 0.0, 1.0, 1.0
    sc = _scores_from_contingency(n, nij, a, b, n0)
    return float(1.0 - sc["vrand"]), float(sc["vrand_merge"]), float(sc["vrand_split"])


def vrand_vinfo_3d(seg, gt) -> dict:
    """Foreground-restricted V^Rand and V^Info of label volumes (no thinning).

    Only voxels with ``gt > 0`` count; segmentation voxels labelled 0 count
    as single-voxel segments. Returns a dict with ``vrand``, ``vrand_split``,
    ``vrand_merge``, ``vinfo``, ``vinfo_split``, ``vinfo_merge`` (1.0 =
    perfect).
    """
    s, g = _check_instances(seg, gt)
    n, nij, a, b, n0 = _contingency(s, g, True)
    if n == 0:
        raise FusionNetError("ground truth has no labelled (non-zero) voxel: nothing to score")
    return {k: float(v) for k, v in _scores_from_contingency(n, nij, a, b, n0).items()}
