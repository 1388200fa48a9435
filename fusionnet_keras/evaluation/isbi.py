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

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.checks import (
    _as_sections,
    _binarize,
    _binary_labels,
    _check_proposal,
    _check_same_shape,
    _shape_str,
)
from fusionnet_keras.evaluation.contingency import (
    _contingency,
    _scores_from_contingency,
)
from fusionnet_keras.evaluation.thinning import label_components, thin_borders

__all__ = ["DEFAULT_THRESHOLDS", "isbi_scores", "vrand_vinfo_section"]



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




# --------------------------------------------------------------------------
# input validation helpers
# --------------------------------------------------------------------------












# --------------------------------------------------------------------------
# thinning (Fiji's classic watershed on the two-level binary image)
# --------------------------------------------------------------------------














# --------------------------------------------------------------------------
# contingency statistics
# --------------------------------------------------------------------------










# --------------------------------------------------------------------------
# ISBI 2012 scores
# --------------------------------------------------------------------------


def vrand_vinfo_section(proposal_binary_or_seg, gt, thin: bool = True) -> dict:
    """Foreground-restricted V^Rand / V^Info of one 2-D section.

    Args:
        proposal_binary_or_seg: (H, W) array. Either a boolean map (``True`` = cell interior), which is
            labelled into 4-connected components and thinned with :func:`thin_borders` (unless
            ``thin=False``, then the components are used as they are), or an integer segmentation (0 =
            border / unassigned, used as it is).
        gt: (H, W) array. Binary ground truth (0 = membrane; 1, 255 or True = cell). Cells are its
            4-connected components; membrane pixels are ignored.

    Returns:
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




_KEYS = ("vrand", "vrand_split", "vrand_merge", "vinfo", "vinfo_split", "vinfo_merge")


def isbi_scores(proposal, labels, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """ISBI 2012 V^Rand and V^Info (after border thinning) of a proposal.

    Args:
        proposal: (H, W) or (Z, H, W) array of floats in [0, 1]. Cell-interior probability (high = cell, low
            = membrane). Booleans are accepted (True = cell).
        labels: same shape. Binary ground truth: 0 = membrane, cell = 255, 1 or True.
        thresholds: sequence of float. Binarisation thresholds (interior = ``proposal > threshold``),
            default :data:`DEFAULT_THRESHOLDS`: Fiji's 0.0, 0.1, ... accumulated in double precision up to
            0.9999999999999999, as in the challenge.

    Returns:
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






# --------------------------------------------------------------------------
# instance-volume metrics (3-D or any dimension)
# --------------------------------------------------------------------------








