"""Tests for fusionnet_keras.metrics (hand-computed cases + ISBI reference figure)."""

import math
from collections import deque

import numpy as np
import pytest

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.isbi import DEFAULT_THRESHOLDS, isbi_scores, vrand_vinfo_section
from fusionnet_keras.evaluation.volume import adapted_rand_error, variation_of_information, vrand_vinfo_3d
from fusionnet_keras.evaluation.pixel import dice, pixel_error
from fusionnet_keras.evaluation.thinning import thin_borders


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


def test_thin_borders_single_seed_absorbs_everything_and_seedless_border_is_one_basin():
    b = np.zeros((5, 5), dtype=bool)
    b[2, 2] = True
    seg = thin_borders(b)
    assert np.all(seg == seg[2, 2]) and seg[2, 2] > 0
    # no interior at all: Fiji's flooding finds a new minimum at the border
    # level, so the whole (connected) border is one basin, not dams
    empty = thin_borders(np.zeros((4, 4), dtype=bool))
    assert np.all(empty == empty[0, 0]) and empty[0, 0] > 0
    full = thin_borders(np.ones((3, 3), dtype=bool))
    assert np.all(full == 1)


def test_thin_borders_diagonal_seeds_are_separate_components():
    # 4-connectivity: diagonal interior pixels are different seeds
    b = np.array([[1, 0], [0, 1]], dtype=bool)
    seg = thin_borders(b)
    assert seg[0, 0] != seg[1, 1]
    # each border pixel touches both seeds -> both are dams
    assert seg[0, 1] == 0 and seg[1, 0] == 0


def test_thin_borders_queue_is_column_major_and_earlier_pixels_count():
    # seeds A = (row 2, col 0) and B = (row 0, col 1). All four border pixels
    # touch a seed; Fiji queues them in column-major order: (0,0), (1,0),
    # (1,1), (2,1). (0,0) sees B -> B; (1,0) sees B above and A below -> dam;
    # (1,1) sees the dam and B -> B; (2,1) sees A and (1,1) = B -> dam.
    b = np.array([[0, 1], [0, 0], [1, 0]], dtype=bool)
    seg = thin_borders(b)
    a_lab, b_lab = seg[2, 0], seg[0, 1]
    assert a_lab > 0 and b_lab > 0 and a_lab != b_lab
    np.testing.assert_array_equal(seg, [[b_lab, b_lab], [0, b_lab], [a_lab, 0]])


def test_thin_borders_pixel_reached_only_from_dams_is_a_dam():
    b = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], dtype=bool)
    seg = thin_borders(b)
    assert len({seg[0, 0], seg[0, 2], seg[2, 0], seg[2, 2]}) == 4
    assert np.all(seg[~b] == 0)


def _fiji_watershed_literal(binary):
    """Pixel-by-pixel transliteration of Fiji's WatershedTransform2D.apply()
    (4-connectivity) on the image interior = 0, border = 255 (test oracle)."""
    mask_, wshed, init, inqueue = -2, 0, -1, -3
    h_img, w_img = binary.shape
    lab = {(x, y): init for x in range(w_img) for y in range(h_img)}
    # pixel list sorted by value; ties in creation order (x outer, y inner)
    pixels = [(x, y) for x in range(w_img) for y in range(h_img)]
    levels = [[p for p in pixels if binary[p[1], p[0]]], [p for p in pixels if not binary[p[1], p[0]]]]

    def neighbours(x, y):
        for u, v in ((x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1)):
            if 0 <= u < w_img and 0 <= v < h_img:
                yield u, v

    current, flag, fifo = 0, False, deque()
    for level in levels:
        for p in level:
            lab[p] = mask_
            if any(lab[q] >= wshed for q in neighbours(*p)):
                fifo.append(p)
                lab[p] = inqueue
        while fifo:
            p = fifo.popleft()
            for q in neighbours(*p):
                if lab[q] > 0:
                    if lab[p] == inqueue or (lab[p] == wshed and flag):
                        lab[p] = lab[q]
                    elif lab[p] > 0 and lab[p] != lab[q]:
                        lab[p], flag = wshed, False
                elif lab[q] == wshed:
                    if lab[p] == inqueue:
                        lab[p], flag = wshed, True
                elif lab[q] == mask_:
                    lab[q] = inqueue
                    fifo.append(q)
        for p in level:
            if lab[p] == mask_:
                current += 1
                lab[p] = current
                fifo.append(p)
                while fifo:
                    for q in neighbours(*fifo.popleft()):
                        if lab[q] == mask_:
                            lab[q] = current
                            fifo.append(q)
    out = np.zeros(binary.shape, dtype=np.int64)
    for (x, y), v in lab.items():
        out[y, x] = max(v, 0)
    return out


def _same_partition(a, b):
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_thin_borders_matches_literal_fiji_flooding_on_random_images():
    from scipy import ndimage

    rng = np.random.default_rng(2012)
    cases = [rng.random(tuple(rng.integers(1, 10, size=2))) < rng.uniform(0.1, 0.8) for _ in range(300)]
    for _ in range(8):
        noise = ndimage.gaussian_filter(rng.random((40, 33)), rng.uniform(0.7, 2.5))
        cases.append(noise > np.quantile(noise, rng.uniform(0.3, 0.7)))
    for b in cases:
        assert _same_partition(thin_borders(b), _fiji_watershed_literal(b)), b.astype(int)


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
    # one proposal segment: H(S) = 0, so I = 0; Fiji then sets precision
    # (merge) = 1 and recall (split) = 0
    assert sc["vinfo_merge"] == pytest.approx(1.0)
    assert sc["vinfo_split"] == pytest.approx(0.0)
    assert sc["vinfo"] == pytest.approx(0.0)


def test_default_thresholds_are_fijis_accumulated_doubles():
    assert len(DEFAULT_THRESHOLDS) == 11
    assert DEFAULT_THRESHOLDS[0] == 0.0
    assert DEFAULT_THRESHOLDS[3] == 0.1 + 0.1 + 0.1  # 0.30000000000000004
    assert DEFAULT_THRESHOLDS[-1] == 0.9999999999999999
    # a proposal of exactly 1.0 is still interior at the last threshold
    gt = _two_cells()
    res = isbi_scores(gt / 255.0, gt)
    assert [t["vrand"] for t in res["per_threshold"]] == [pytest.approx(1.0)] * 11


def test_isbi_scores_maximise_rand_and_info_independently():
    gt = _two_cells()
    # checkerboard: 0.95 on (row + col) even pixels, 0.05 elsewhere
    yy, xx = np.mgrid[0:3, 0:7]
    prop = np.where((xx + yy) % 2 == 0, 0.95, 0.05)
    res = isbi_scores(prop, gt)
    # threshold 0.0: everything is interior -> one segment over both 9-pixel
    # cells (n=18, t=(9,9), s=(18,)): Rand split 1, merge 1/2, F 2/3; V^Info 0
    first = res["per_threshold"][0]
    assert first["vrand"] == pytest.approx(2 / 3)
    assert first["vinfo"] == pytest.approx(0.0)
    assert res["vrand"] == pytest.approx(2 / 3)
    assert res["vrand_threshold"] == pytest.approx(0.0)
    assert res["vrand_split"] == pytest.approx(1.0)
    assert res["vrand_merge"] == pytest.approx(0.5)
    # thresholds 0.1 .. 0.9: isolated interior pixels, every border pixel is a
    # dam -> 18 single-pixel segments: H(S) = log 18, H(T) = log 2,
    # I = log 2 -> V^Info = 2 log 2 / log 36 (first of the tied thresholds)
    assert res["vinfo"] == pytest.approx(2 * math.log(2) / math.log(36))
    assert res["vinfo_threshold"] == pytest.approx(0.1)
    assert res["vinfo_merge"] == pytest.approx(1.0)
    assert res["vinfo_split"] == pytest.approx(math.log(2) / math.log(18))
    mid = res["per_threshold"][5]
    # Rand with singletons: sum s^2 = 18, sum n_ij^2 = 18, sum t^2 = 162
    assert mid["vrand_merge"] == pytest.approx(1.0)
    assert mid["vrand_split"] == pytest.approx(18 / 162)
    # last threshold (0.9999999999999999): no interior pixel; the whole border
    # becomes one basin, i.e. one merged segment again
    last = res["per_threshold"][-1]
    assert last["vrand"] == pytest.approx(2 / 3)
    assert last["vinfo"] == pytest.approx(0.0)


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
    # one ground-truth cell: H(T) = 0, so I = 0; Fiji then sets precision
    # (merge) = 0 and recall (split) = 1
    assert sc["vinfo_merge"] == pytest.approx(0.0)
    assert sc["vinfo_split"] == pytest.approx(1.0)
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


def test_isbi_reference_figure(isbi_dir):
    import tifffile
    from scipy import ndimage

    labels = tifffile.imread(str(isbi_dir / "train-labels.tif"))
    assert labels.shape == (30, 512, 512)
    yy, xx = np.mgrid[-2:3, -2:3]
    disk = (xx**2 + yy**2) <= 4  # 13-pixel disk of radius 2
    prop = np.stack([~ndimage.binary_dilation(s == 0, structure=disk) for s in labels]).astype(np.float32)
    res = isbi_scores(prop, labels)
    # Fiji: V^Rand = 0.9979948184, V^Info = 0.9966767228 (quoted to 1e-10);
    # this module: 0.997994818376 and 0.996676722841
    assert res["vrand"] == pytest.approx(0.9979948184, abs=1e-9)
    assert res["vinfo"] == pytest.approx(0.9966767228, abs=1e-9)
    assert 0.99 < res["vrand_split"] < 1.0 and 0.99 < res["vrand_merge"] < 1.0
