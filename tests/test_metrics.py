"""Tests for fusionnet_keras.metrics (hand-computed cases + ISBI reference figure)."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.metrics import (
    adapted_rand_error,
    dice,
    isbi_scores,
    pixel_error,
    thin_borders,
    variation_of_information,
    vrand_vinfo_3d,
    vrand_vinfo_section,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _two_cells():
    """3x7 ground truth: two 3x3 cells separated by a membrane column (0/255)."""
    gt = np.full((3, 7), 255, dtype=np.uint8)
    gt[:, 3] = 0
    return gt


# --------------------------------------------------------------------------
# thinning
# --------------------------------------------------------------------------


def test_thin_borders_even_width_dam_follows_fifo_order():
    # seeds in columns 0 and 5, a 4-pixel-wide border in between
    b = np.zeros((3, 6), dtype=bool)
    b[:, 0] = True
    b[:, 5] = True
    seg = thin_borders(b)
    left, right = seg[0, 0], seg[0, 5]
    assert left > 0 and right > 0 and left != right
    # columns 1-2 flood from the left seed first (column-by-column scan), so
    # the right front meets them in column 3, which becomes the dam
    assert np.all(seg[:, :3] == left)
    assert np.all(seg[:, 3] == 0)
    assert np.all(seg[:, 4:] == right)


def test_thin_borders_odd_width_dam_in_the_middle():
    b = np.zeros((4, 5), dtype=bool)
    b[:, 0] = True
    b[:, 4] = True
    seg = thin_borders(b)
    assert np.all(seg[:, :2] == seg[0, 0])
    assert np.all(seg[:, 2] == 0)
    assert np.all(seg[:, 3:] == seg[0, 4])
    assert seg[0, 0] != seg[0, 4]


def test_thin_borders_single_seed_absorbs_everything_and_unseeded_stays_zero():
    b = np.zeros((5, 5), dtype=bool)
    b[2, 2] = True
    seg = thin_borders(b)
    assert np.all(seg == seg[2, 2]) and seg[2, 2] > 0
    assert np.all(thin_borders(np.zeros((4, 4), dtype=bool)) == 0)
    full = thin_borders(np.ones((3, 3), dtype=bool))
    assert np.all(full == 1)


def test_thin_borders_diagonal_seeds_are_separate_components():
    # 4-connectivity: diagonal interior pixels are different seeds
    b = np.array([[1, 0], [0, 1]], dtype=bool)
    seg = thin_borders(b)
    assert seg[0, 0] != seg[1, 1]
    # each border pixel touches both seeds -> both are dams
    assert seg[0, 1] == 0 and seg[1, 0] == 0


# --------------------------------------------------------------------------
# 2-D V^Rand / V^Info
# --------------------------------------------------------------------------


def test_perfect_proposal_scores_one():
    gt = _two_cells()
    res = isbi_scores(gt / 255.0, gt)
    assert res["vrand"] == pytest.approx(1.0)
    assert res["vinfo"] == pytest.approx(1.0)
    assert res["vrand_split"] == pytest.approx(1.0)
    assert res["vrand_merge"] == pytest.approx(1.0)
    assert len(res["per_threshold"]) == 11


def test_merge_of_two_cells_hand_computed():
    gt = _two_cells()
    # one segment covering both 9-pixel cells: n=18, t=(9,9), s=(18,), n_ij=(9,9)
    sc = vrand_vinfo_section(np.ones((3, 7), dtype=bool), gt)
    assert sc["vrand_split"] == pytest.approx(162 / 162)
    assert sc["vrand_merge"] == pytest.approx(162 / 324)
    assert sc["vrand"] == pytest.approx(2 / 3)
    assert sc["vinfo_merge"] == pytest.approx(0.0)  # I = 0 < H(T) = log 2
    assert sc["vinfo"] == pytest.approx(0.0)


def test_isbi_scores_maximise_rand_and_info_independently():
    gt = _two_cells()
    res = isbi_scores(np.ones((3, 7)), gt)
    # thresholds 0.0 .. 0.9: one merged segment (see above)
    assert res["vrand"] == pytest.approx(2 / 3)
    assert res["vrand_threshold"] == pytest.approx(0.0)
    assert res["vrand_split"] == pytest.approx(1.0)
    assert res["vrand_merge"] == pytest.approx(0.5)
    # threshold 1.0: no interior left, all 18 pixels are single-pixel segments:
    # H(S) = log 18, H(T) = log 2, I = log 2 -> V^Info = 2 log 2 / log 36
    assert res["vinfo"] == pytest.approx(2 * math.log(2) / math.log(36))
    assert res["vinfo_threshold"] == pytest.approx(1.0)
    assert res["vinfo_merge"] == pytest.approx(1.0)
    assert res["vinfo_split"] == pytest.approx(math.log(2) / math.log(18))
    last = res["per_threshold"][-1]
    # Rand at threshold 1.0: sum s^2 = 18, sum n_ij^2 = 18, sum t^2 = 162
    assert last["vrand_merge"] == pytest.approx(1.0)
    assert last["vrand_split"] == pytest.approx(18 / 162)


def test_split_of_one_cell_hand_computed():
    gt = np.ones((4, 4), dtype=np.uint8)  # one 16-pixel cell (0/1 labels)
    prop = np.ones((4, 4), dtype=bool)
    prop[:, 2] = False  # border column -> dam pixels (between two seeds)
    sc = vrand_vinfo_section(prop, gt)
    # segments: 8 px, 4 px, 4 dam singletons
    sum_t2, sum_s2, sum_n2 = 256, 64 + 16 + 4, 64 + 16 + 4
    split, merge = sum_n2 / sum_t2, sum_n2 / sum_s2
    assert sc["vrand_split"] == pytest.approx(split)
    assert sc["vrand_merge"] == pytest.approx(merge)
    assert sc["vrand"] == pytest.approx(2 * split * merge / (split + merge))
    # one ground-truth cell: H(T) = 0, so I = 0 and V^Info split = 0
    assert sc["vinfo_split"] == pytest.approx(0.0)
    assert sc["vinfo"] == pytest.approx(0.0)


def test_membrane_pixels_of_ground_truth_are_ignored():
    gt = _two_cells()
    prop = gt > 0
    prop2 = prop.copy()
    prop2[:, 3] = True  # proposal merges through the membrane column...
    prop2[1, 3] = False  # ...except one pixel; still only membrane pixels differ
    a = vrand_vinfo_section(prop, gt)
    assert a["vrand"] == pytest.approx(1.0) and a["vinfo"] == pytest.approx(1.0)
    b = vrand_vinfo_section(prop2, gt)
    assert b["vrand"] < 1.0  # the two cells are now one connected segment


def test_integer_segmentation_is_used_as_is():
    gt = _two_cells()
    seg = np.zeros((3, 7), dtype=np.int32)
    seg[:, :3] = 5
    seg[:, 4:] = 9
    sc = vrand_vinfo_section(seg, gt)
    assert sc["vrand"] == pytest.approx(1.0)
    assert sc["vinfo"] == pytest.approx(1.0)


def test_isbi_scores_3d_is_mean_over_sections():
    gt = np.stack([_two_cells(), _two_cells()])
    prop = np.stack([gt[0] / 255.0, np.ones((3, 7))])
    res = isbi_scores(prop, gt, thresholds=[0.5])
    assert res["vrand"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert res["vrand_merge"] == pytest.approx((1.0 + 0.5) / 2)


# --------------------------------------------------------------------------
# pixel metrics
# --------------------------------------------------------------------------


def test_pixel_error_hand_case():
    prop = np.array([[0.2, 0.8], [0.6, 0.4]])
    labels = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    assert pixel_error(prop, labels) == pytest.approx(0.5)
    assert pixel_error(labels / 255.0, labels) == 0.0
    assert pixel_error(prop, labels, threshold=0.7) == pytest.approx(0.25)


def test_dice_hand_cases():
    assert dice([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert dice([1, 0], [0, 1]) == 0.0
    assert dice([True, True], [True, True]) == 1.0


# --------------------------------------------------------------------------
# 3-D instance metrics
# --------------------------------------------------------------------------


def _two_cubes():
    gt = np.zeros((2, 2, 4), dtype=np.int32)
    gt[:, :, :2] = 1
    gt[:, :, 2:] = 2
    return gt


def test_3d_perfect():
    gt = _two_cubes()
    seg = gt * 7  # label values do not matter
    assert variation_of_information(seg, gt) == (pytest.approx(0.0), pytest.approx(0.0))
    are, prec, rec = adapted_rand_error(seg, gt)
    assert are == pytest.approx(0.0) and prec == pytest.approx(1.0) and rec == pytest.approx(1.0)
    s = vrand_vinfo_3d(seg, gt)
    assert s["vrand"] == pytest.approx(1.0) and s["vinfo"] == pytest.approx(1.0)


def test_3d_merge_of_two_equal_objects():
    gt = _two_cubes()  # two 8-voxel objects
    seg = np.ones_like(gt)  # merged into one
    vi_split, vi_merge = variation_of_information(seg, gt)
    assert vi_split == pytest.approx(0.0)
    assert vi_merge == pytest.approx(1.0)  # H(T|S) = 1 bit
    are, prec, rec = adapted_rand_error(seg, gt)
    # sum t^2 = 128, sum s^2 = 256, sum n^2 = 128
    assert prec == pytest.approx(0.5)
    assert rec == pytest.approx(1.0)
    assert are == pytest.approx(1 - 2 / 3)
    s = vrand_vinfo_3d(seg, gt)
    assert s["vrand"] == pytest.approx(2 / 3)
    assert s["vrand_merge"] == pytest.approx(0.5)


def test_3d_split_and_ignore_gt_zero():
    gt = np.ones((2, 2, 4), dtype=np.int32)
    seg = _two_cubes()
    vi_split, vi_merge = variation_of_information(seg, gt)
    assert vi_split == pytest.approx(1.0) and vi_merge == pytest.approx(0.0)
    are, prec, rec = adapted_rand_error(seg, gt)
    assert prec == pytest.approx(1.0) and rec == pytest.approx(0.5)
    assert are == pytest.approx(1 - 2 / 3)
    # gt background is ignored: whatever seg does there does not matter
    gt2 = np.pad(gt, ((0, 0), (0, 0), (0, 3)))
    seg2 = np.pad(seg, ((0, 0), (0, 0), (0, 3)), constant_values=1)
    assert adapted_rand_error(seg2, gt2)[0] == pytest.approx(are)
    assert variation_of_information(seg2, gt2) == (pytest.approx(1.0), pytest.approx(0.0))


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


def _one_line_error(func, *args, match):
    with pytest.raises(FusionNetError, match=match) as info:
        func(*args)
    assert "\n" not in str(info.value)


def test_bad_inputs_raise_one_line_errors():
    gt = _two_cells()
    _one_line_error(isbi_scores, np.zeros((3, 6)), gt, match=r"shape \(3, 6\) differs from labels shape \(3, 7\)")
    bad_labels = gt.copy()
    bad_labels[0, 0] = 128
    _one_line_error(isbi_scores, gt / 255.0, bad_labels, match="labels are not binary: found 3 distinct values")
    nan_pred = gt / 255.0
    nan_pred[1, 1] = np.nan
    _one_line_error(isbi_scores, nan_pred, gt, match="NaN")
    _one_line_error(isbi_scores, gt * 2.0, gt, match=r"\[0, 1\]")
    _one_line_error(pixel_error, np.zeros((2, 2)), np.zeros((2, 3)), match="differs from")
    _one_line_error(dice, np.zeros(3), np.zeros(4), match="differs from")
    _one_line_error(adapted_rand_error, np.zeros((2, 2)), np.zeros((2, 2, 1)), match="differs from")
    _one_line_error(isbi_scores, np.zeros((3, 7)), np.zeros((3, 7)), match="no cell")


# --------------------------------------------------------------------------
# ISBI 2012 reference figure (Fiji's values)
# --------------------------------------------------------------------------


def _find_train_labels():
    candidates = []
    env = os.environ.get("FUSIONNET_DATA_DIR")
    for base in ([Path(env)] if env else []) + [REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "datasets"]:
        candidates += [base / "train-labels.tif", base / "isbi2012" / "train-labels.tif"]
    for c in candidates:
        if c.is_file():
            return c
    return None


def test_isbi_reference_figure():
    path = _find_train_labels()
    if path is None:
        pytest.skip("ISBI 2012 train-labels.tif not found (set FUSIONNET_DATA_DIR)")
    tifffile = pytest.importorskip("tifffile")
    from scipy import ndimage

    labels = tifffile.imread(str(path))
    assert labels.shape == (30, 512, 512)
    yy, xx = np.mgrid[-2:3, -2:3]
    disk = (xx**2 + yy**2) <= 4  # 13-pixel disk of radius 2
    prop = np.stack([~ndimage.binary_dilation(s == 0, structure=disk) for s in labels]).astype(np.float32)
    res = isbi_scores(prop, labels)
    # Fiji: V^Rand = 0.9979948184, V^Info = 0.9966767228
    assert res["vrand"] == pytest.approx(0.9979948184, abs=1e-6)
    assert res["vinfo"] == pytest.approx(0.9966767228, abs=2e-5)
    assert 0.99 < res["vrand_split"] < 1.0 and 0.99 < res["vrand_merge"] < 1.0
