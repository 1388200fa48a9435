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
