"""Tests of fusionnet_keras.evaluation.postprocess: ImageJ's circular kernel, the per-section median filter, relabel."""

import numpy as np
import pytest

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.postprocess import disk, median_filter


def _imagej_kernel(radius):
    """ImageJ RankFilters.makeLineRadii: r2 = radius^2 + 1, kRadius = int(sqrt(r2)), per-row half widths."""
    r2 = radius * radius + 1
    k = int(np.sqrt(r2 + 1e-10))
    out = np.zeros((2 * k + 1, 2 * k + 1), bool)
    for dy in range(-k, k + 1):
        dx = int(np.sqrt(r2 - dy * dy + 1e-10))
        out[dy + k, k - dx : k + dx + 1] = True
    return out


def test_disk_radius_2_is_imagejs_21_pixel_kernel():
    d = disk(2)
    assert d.shape == (5, 5) and d.dtype == bool
    assert d.sum() == 21  # the 5x5 square without its 4 corners
    expected = np.ones((5, 5), bool)
    expected[[0, 0, -1, -1], [0, -1, 0, -1]] = False
    np.testing.assert_array_equal(d, expected)


@pytest.mark.parametrize("radius, count", [(0.5, 5), (1, 9), (1.5, 9), (2, 21), (2.5, 21), (3, 37), (2.9, 29)])
def test_disk_matches_imagej(radius, count):
    d = disk(radius)
    assert d.sum() == count
    np.testing.assert_array_equal(d, _imagej_kernel(radius))
    np.testing.assert_array_equal(d, d.T)
    np.testing.assert_array_equal(d, d[::-1])


def test_median_removes_salt_noise_and_keeps_shape_and_dtype(rng):
    clean = np.full((40, 48), 0.25, np.float32)
    clean[:, 24:] = 0.75  # a vertical edge survives a median filter
    noisy = clean.copy()
    salt = rng.random(clean.shape) < 0.05
    noisy[salt] = 1.0
    pepper = rng.random(clean.shape) < 0.05
    noisy[pepper & ~salt] = 0.0
    out = median_filter(noisy, 2)
    assert out.shape == noisy.shape
    assert out.dtype == np.float32
    # every noise pixel is gone; away from the edge the image is restored exactly
    np.testing.assert_array_equal(out[:, :21], clean[:, :21])
    np.testing.assert_array_equal(out[:, 27:], clean[:, 27:])
    assert set(np.unique(out)) <= {np.float32(0.25), np.float32(0.75)}
    # the input is not modified
    assert (noisy == 1.0).sum() == salt.sum()


def test_median_default_radius_is_2(rng):
    x = rng.random((20, 21)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(x), median_filter(x, 2))


def test_median_is_per_section_for_stacks(rng):
    stack = rng.random((3, 24, 20)).astype(np.float32)
    stack[1] = 0.0  # a blank section stays blank: nothing leaks in from its neighbours
    out = median_filter(stack, 2)
    assert out.shape == stack.shape and out.dtype == np.float32
    assert np.all(out[1] == 0.0)
    for z in range(3):
        np.testing.assert_array_equal(out[z], median_filter(stack[z], 2))


def test_median_value_at_a_pixel_is_the_median_of_the_disk(rng):
    x = rng.random((15, 15)).astype(np.float32)
    out = median_filter(x, 2)
    d = disk(2)
    window = x[5:10, 6:11][d]  # centred on (7, 8)
    assert out[7, 8] == np.median(window)


def test_median_keeps_integer_dtype():
    x = np.zeros((9, 9), np.uint8)
    x[4, 4] = 255
    out = median_filter(x, 1)
    assert out.dtype == np.uint8
    assert not out.any()


@pytest.mark.parametrize("shape", [(5,), (2, 2, 5, 5)])
def test_median_rejects_other_dimensions(shape):
    with pytest.raises(FusionNetError, match="2-D"):
        median_filter(np.zeros(shape, np.float32), 2)


def test_relabel_renumbers_in_id_order_and_drops_small_objects():
    from fusionnet_keras.evaluation.postprocess import relabel

    labels = np.array([[0, 7, 7, 3], [9, 9, 9, 0]], dtype=np.int32)
    out, old = relabel(labels)
    np.testing.assert_array_equal(out, [[0, 2, 2, 1], [3, 3, 3, 0]])
    np.testing.assert_array_equal(old, [3, 7, 9])
    assert out.dtype == np.int32
    out, old = relabel(labels, min_size=3)
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(old, [9])
    # sparse 64-bit ids (counted by sorting, not by a huge bincount)
    sparse = np.array([2**40, 2**40, 5, 0], dtype=np.int64)
    out, old = relabel(sparse, min_size=2)
    np.testing.assert_array_equal(out, [1, 1, 0, 0])
    np.testing.assert_array_equal(old, [2**40])
    with pytest.raises(FusionNetError, match="non-negative integers"):
        relabel(np.array([-1, 2]))


@pytest.mark.parametrize("variant", ["segments", "cuts"])
def test_multicut_map_closes_a_membrane_gap(variant):
    """Two cells whose membrane has a gap: the plain map joins them at 0.5, the multicut's map (its segments'
    borders, or the cut drawn into the map) separates them."""
    from scipy import ndimage

    from fusionnet_keras.segmentation.multicut import multicut_map

    prob = np.full((24, 32), 0.95, np.float32)
    prob[:, 15:17] = 0.05  # the membrane between two cells
    prob[10:13, 15:17] = 0.7  # a gap
    count = lambda m: ndimage.label(m > 0.5)[1]  # 4-connected cells
    assert count(prob) == 1  # the gap merges the two cells
    out = multicut_map(prob, beta=0.5, ws_size=0, variant=variant)
    assert out.shape == prob.shape and out.dtype == np.float32
    left, right = out[:, :15] > 0.5, out[:, 17:] > 0.5
    assert count(out) == 2 and ndimage.label(out > 0.5)[0][12, 10] != ndimage.label(out > 0.5)[0][12, 25]
    if variant == "segments":
        assert left.mean() > 0.9 and right.mean() > 0.9  # the membrane is a border line
    else:
        assert np.all(out <= prob)  # only cuts are added
