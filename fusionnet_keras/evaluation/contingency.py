"""Contingency tables of two labellings and the Rand / information scores computed from them."""

from __future__ import annotations

import math

import numpy as np


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


def _contingency(seg: np.ndarray, gt: np.ndarray, ignore_gt_zero: bool = True, seg_zero_is_label: bool = False):
    """Contingency statistics of ``seg`` against ``gt``.

    Returns ``(n, nij, a, b, n0)``: ``n`` counted pixels (gt > 0 when
    ``ignore_gt_zero``), ``nij`` the non-zero counts of (gt label, seg label > 0)
    pairs, ``a`` the gt object sizes, ``b`` the seg object sizes (seg > 0),
    ``n0`` the number of counted pixels with seg == 0 (singletons). With
    ``seg_zero_is_label`` seg 0 is an ordinary label (one segment; ``n0 = 0``).
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
    fg = np.ones(seg.shape, bool) if seg_zero_is_label else seg != 0
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

