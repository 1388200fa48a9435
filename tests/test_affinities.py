"""Affinity targets from instance labels: the convention, the mask, the packed y_true, tf.data."""

import numpy as np
import pytest

from fusionnet_keras.data.affinities import (
    AffinityTargets,
    affinities_from_labels,
    edge_mask,
    relabel_consecutive,
    split_y_true,
)
from fusionnet_keras.errors import FusionNetError


def hand_labels():
    # z=0: two objects (1 left, 2 right) and an unlabelled corner; z=1: object 1 grows, 3 appears
    return np.array(
        [
            [[1, 1, 2], [1, 0, 2]],
            [[1, 1, 1], [3, 0, 2]],
        ],
        np.uint32,
    )


def test_hand_made_targets_label_zero_unknown():
    aff, mask = affinities_from_labels(hand_labels(), "unknown")
    assert aff.shape == mask.shape == (3, 2, 2, 3) and aff.dtype == mask.dtype == np.float32
    # z edges (channel 0): only z=1 has a predecessor
    np.testing.assert_array_equal(aff[0, 0], 0)
    np.testing.assert_array_equal(mask[0, 0], 0)
    np.testing.assert_array_equal(aff[0, 1], [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(mask[0, 1], [[1, 1, 1], [1, 0, 1]])
    # y edges (channel 1): row 1 links to row 0
    np.testing.assert_array_equal(aff[1, :, 1], [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(mask[1, :, 1], [[1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(mask[1, :, 0], 0)
    # x edges (channel 2): column c links to column c - 1
    np.testing.assert_array_equal(aff[2, 0], [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(aff[2, 1], [[0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(mask[2, 0], [[0, 1, 1], [0, 0, 0]])
    # every target-1 edge is inside the mask
    assert np.all(mask[aff == 1] == 1)


def test_label_zero_is_background_by_default():
    """Edges into id 0 have target 0 and are trained (gunpowder's convention): the mask is every edge."""
    labels = hand_labels()
    aff, mask = affinities_from_labels(labels)
    np.testing.assert_array_equal(aff, affinities_from_labels(labels, "unknown")[0])
    np.testing.assert_array_equal(mask, edge_mask(labels.shape))
    assert np.all(aff[:, labels == 0] == 0)  # every edge from a 0 voxel to its predecessor: target 0
    y = AffinityTargets().y_true(labels)
    np.testing.assert_array_equal(np.moveaxis(y[..., 3:6], -1, 0), edge_mask(labels.shape))
    # a layer of 0 between two objects: 4 boundary edges trained with target 0 (none before)
    aff, mask = affinities_from_labels(np.array([[[1, 1, 0, 2, 2]]]))
    np.testing.assert_array_equal(aff[2, 0, 0], [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(mask[2, 0, 0], [0, 1, 1, 1, 1])
    with pytest.raises(FusionNetError, match="label 0 must mean one of background, unknown"):
        AffinityTargets("ignore")


def test_edge_mask_marks_the_first_slices():
    m = edge_mask((2, 3, 4))
    assert m.shape == (3, 2, 3, 4)
    assert not m[0, 0].any() and m[0, 1].all()
    assert not m[1, :, 0].any() and m[1, :, 1:].all()
    assert not m[2, :, :, 0].any() and m[2, :, :, 1:].all()


@pytest.mark.parametrize("label_zero", ["background", "unknown"])
def test_targets_follow_the_predecessor_convention(rng, label_zero):
    labels = rng.integers(0, 3, (3, 4, 5))
    aff, mask = AffinityTargets(label_zero)(labels)
    for c, offset in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        for v in np.ndindex(labels.shape):
            u = tuple(np.subtract(v, offset))
            if min(u) < 0:
                assert mask[(c, *v)] == 0
                continue
            a, b = labels[v], labels[u]
            assert mask[(c, *v)] == (label_zero == "background" or (a != 0 and b != 0))
            assert aff[(c, *v)] == (a != 0 and a == b)


def test_y_true_packs_targets_mask_and_relabelled_ids():
    labels = hand_labels().astype(np.uint64) * 10**12  # ids too large for float32
    y = AffinityTargets().y_true(labels)
    assert y.shape == (2, 2, 3, 7) and y.dtype == np.float32
    aff, mask, ids = split_y_true(y)
    ref_aff, ref_mask = affinities_from_labels(hand_labels())
    np.testing.assert_array_equal(np.moveaxis(aff, -1, 0), ref_aff)
    np.testing.assert_array_equal(np.moveaxis(mask, -1, 0), ref_mask)
    np.testing.assert_array_equal(ids, hand_labels())  # 1, 2, 3 stay 1, 2, 3 in order
    np.testing.assert_array_equal(relabel_consecutive(np.array([[[5, 5, 9]]])), [[[1, 1, 2]]])


def test_tf_data_map(rng):
    import tensorflow as tf

    labels = rng.integers(0, 4, (4, 3, 5, 6)).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices(labels).map(AffinityTargets().tf_map)
    assert ds.element_spec.shape == (3, 5, 6, 7)
    for got, lab in zip(ds.as_numpy_iterator(), labels):
        np.testing.assert_array_equal(got, AffinityTargets().y_true(lab))


@pytest.mark.parametrize(
    "labels,match",
    [(np.zeros((4, 4)), "3-D"), (np.full((2, 2, 2), 0.5), "integer"), (-np.ones((2, 2, 2), int), ">= 0")],
)
def test_bad_labels(labels, match):
    with pytest.raises(FusionNetError, match=match):
        affinities_from_labels(labels)


# ---------------------------------------------------------------------------
# long-range offsets (model.offsets, for the mutex watershed)

LONG = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-2, 0, 0), (0, -3, 0), (0, 2, -3), (0, 0, -7), (1, 1, 1)]


def direct_targets(labels, offsets, label_zero):
    """Voxel by voxel: channel c at v is 1 where v and v + offsets[c] carry the same non-zero id."""
    aff = np.zeros((len(offsets), *labels.shape), np.float32)
    mask = np.zeros_like(aff)
    for c, off in enumerate(offsets):
        for v in np.ndindex(labels.shape):
            u = tuple(a + o for a, o in zip(v, off))
            if all(0 <= x < n for x, n in zip(u, labels.shape)):
                a, b = labels[v], labels[u]
                aff[(c, *v)] = a != 0 and a == b
                mask[(c, *v)] = label_zero == "background" or (a != 0 and b != 0)
    return aff, mask


@pytest.mark.parametrize("label_zero", ["background", "unknown"])
def test_long_range_targets_match_a_direct_computation(label_zero):
    labels = np.random.default_rng(5).integers(0, 4, (4, 6, 7))
    aff, mask = affinities_from_labels(labels, label_zero, LONG)
    ref_aff, ref_mask = direct_targets(labels, LONG, label_zero)
    np.testing.assert_array_equal(aff, ref_aff)
    np.testing.assert_array_equal(mask, ref_mask)
    assert not mask[6].any()  # x - 7 leaves a volume 7 wide: no edge
    np.testing.assert_array_equal(edge_mask(labels.shape, LONG), direct_targets(labels, LONG, "background")[1] > 0)
    # the first three channels are the nearest-neighbour targets
    np.testing.assert_array_equal(aff[:3], affinities_from_labels(labels, label_zero)[0])
    y = AffinityTargets(label_zero, LONG).y_true(labels)
    assert y.shape == (4, 6, 7, 2 * len(LONG) + 1)
    got_aff, got_mask, ids = split_y_true(y)
    np.testing.assert_array_equal(np.moveaxis(got_aff, -1, 0), ref_aff)
    np.testing.assert_array_equal(np.moveaxis(got_mask, -1, 0), ref_mask)


def test_long_range_training_targets_reach_outside_the_output_box():
    """The output box's long-range edges to voxels in the context are targets: equal to the targets of the
    whole input block, cropped."""
    from fusionnet_keras.data.augment3d import affinity_y_true

    labels = np.random.default_rng(1).integers(0, 3, (8, 20, 20))
    offsets = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-2, 0, 0), (0, 3, -4)]
    context = (2, 5, 5)
    y = affinity_y_true(labels, context, offsets=offsets)
    whole = AffinityTargets(offsets=offsets).y_true(labels)
    box = tuple(slice(c, n - c) for c, n in zip(context, labels.shape))
    np.testing.assert_array_equal(y[..., :-1], whole[box][..., :-1])
    with pytest.raises(FusionNetError, match="smaller than its offsets' reach"):
        affinity_y_true(labels, (2, 3, 3), offsets=offsets)


@pytest.mark.parametrize("offsets,match", [
    ([(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -2)], "three integers"),
    ([(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 0)], "not all 0"),
    ([(0, -1, 0), (-1, 0, 0), (0, 0, -1)], "start with the 3 nearest"),
    ([(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -4, 0), (0, -4, 0)], "repeat"),
    ("abc", "integer triples"),
])
def test_malformed_offsets_are_refused(offsets, match):
    from fusionnet_keras.data.affinities import check_network_offsets

    with pytest.raises(FusionNetError, match=match) as info:
        check_network_offsets(offsets)
    assert "\n" not in str(info.value)
