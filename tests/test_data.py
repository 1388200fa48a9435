"""Tests for fusionnet_keras.data (orientations, datasets, splits, label checks)."""

import numpy as np
import pytest

import tensorflow as tf

from fusionnet_keras.data.targets import binarize_labels, check_pair

from fusionnet_keras.data.splits import kfold_splits, section_range

from fusionnet_keras.data.pipeline import make_dataset, make_index_dataset, orient_tf

from fusionnet_keras.data.orient import XY_ORIENTATIONS, Orientation, orient, orientations, unorient
from fusionnet_keras.errors import FusionNetError

S, PAD = 64, 16


def asymmetric(shape=(5, 7)):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


@pytest.fixture
def stack():
    r = np.random.default_rng(0)
    images = r.random((3, S, S)).astype("float32")
    labels = (r.random((3, S, S)) > 0.5).astype("float32")
    return images, labels


def epoch_pairs(ds, count):
    return [(int(i), int(k)) for i, k in ds.take(count).as_numpy_iterator()]


# --------------------------------------------------------------------------
# orientations
# --------------------------------------------------------------------------
@pytest.mark.parametrize("k", range(8))
def test_orient_round_trip(k):
    x = asymmetric((2, 5, 7))
    np.testing.assert_array_equal(unorient(orient(x, k), k), x)
    y = asymmetric((2, 5, 7, 3))  # channels-last batch
    np.testing.assert_array_equal(unorient(orient(y, k, axes=(1, 2)), k, axes=(1, 2)), y)


def test_orientation_order_is_documented_one():
    x = asymmetric()
    np.testing.assert_array_equal(orient(x, 0), x)
    np.testing.assert_array_equal(orient(x, 1), np.rot90(x))
    np.testing.assert_array_equal(orient(x, 3), np.rot90(x, 3))
    np.testing.assert_array_equal(orient(x, 4), x[:, ::-1])
    np.testing.assert_array_equal(orient(x, 6), np.rot90(x[:, ::-1], 2))


def test_eight_orientations_are_distinct():
    x = asymmetric((6, 6))
    views = orientations(x)
    assert len(views) == 8
    flat = {v.tobytes() for v in views}
    assert len(flat) == 8


@pytest.mark.parametrize("k", range(8))
def test_tf_orientation_matches_numpy(k):
    x = asymmetric((5, 7))
    np.testing.assert_array_equal(orient_tf(x, tf.constant(k)).numpy(), orient(x, k))


@pytest.mark.parametrize("k", range(8))
def test_orientation_region_is_where_the_part_goes(k):
    """Both predictors' one type: a part of the section, oriented, is the oriented section at region();
    unregion() maps it back, also for parts that reach past the section (mirrored context)."""
    o = Orientation.of(k)
    x = asymmetric((5, 7))
    padded = np.pad(x, 3, mode="reflect")
    for part in [(slice(1, 4), slice(2, 7)), (slice(-2, 3), slice(-3, 9))]:
        shifted = tuple(slice(s.start + 3, s.stop + 3) for s in part)
        region = o.region(x.shape, part)
        oriented = o.apply(padded)[tuple(slice(r.start + 3, r.stop + 3) for r in region)]
        np.testing.assert_array_equal(oriented, o.apply(padded[shifted]))
        assert o.unregion(o.apply(x).shape, region) == part


def test_xy_orientations_flips_first_then_transposes():
    """The affinity predictor's order: the first 4 are the flips (no transpose), all 8 are D4, each once."""
    assert [o.transpose for o in XY_ORIENTATIONS] == [False] * 4 + [True] * 4
    assert set(XY_ORIENTATIONS) == {Orientation.of(k) for k in range(8)}
    x = asymmetric((6, 6))
    assert len({o.apply(x).tobytes() for o in XY_ORIENTATIONS}) == 8


def test_bad_orientation_index():
    with pytest.raises(FusionNetError):
        orient(asymmetric(), 8)
    with pytest.raises(FusionNetError):
        unorient(asymmetric(), -1)


# --------------------------------------------------------------------------
# index / training datasets
# --------------------------------------------------------------------------
def test_epoch_covers_each_pair_once_and_reshuffles():
    ds = make_index_dataset(3, shuffle=True, seed=0)
    first, second = epoch_pairs(ds, 100), epoch_pairs(ds, 100)
    expected = sorted((i, k) for i in range(3) for k in range(8))
    assert sorted(first) == expected and sorted(second) == expected
    assert first != second  # reshuffled every epoch
    assert first != expected  # actually shuffled


def test_index_order_deterministic_per_seed():
    a = epoch_pairs(make_index_dataset(4, seed=5, repeat=True), 96)
    b = epoch_pairs(make_index_dataset(4, seed=5, repeat=True), 96)
    c = epoch_pairs(make_index_dataset(4, seed=6, repeat=True), 96)
    assert a == b
    assert a != c
    for epoch in range(3):  # with repeat every block of 8N is one full epoch
        block = a[epoch * 32:(epoch + 1) * 32]
        assert sorted(block) == sorted((i, k) for i in range(4) for k in range(8))


def test_index_without_enrichment_or_shuffle():
    assert epoch_pairs(make_index_dataset(3, shuffle=False, enrich=False), 10) == [(0, 0), (1, 0), (2, 0)]


def test_make_dataset_shapes_and_content(stack):
    images, labels = stack
    ds = make_dataset(images, labels, batch_size=2, seed=3, pad=PAD)
    assert ds.element_spec[0].shape.as_list() == [None, S + 2 * PAD, S + 2 * PAD, 1]
    xs, ys = zip(*ds.as_numpy_iterator())
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    assert xs.shape == (24, S + 2 * PAD, S + 2 * PAD, 1) and xs.dtype == np.float32
    assert set(np.unique(ys)) <= {0.0, 1.0}
    pairs = epoch_pairs(make_index_dataset(3, seed=3), 100)
    for n, (i, k) in enumerate(pairs):
        np.testing.assert_array_equal(xs[n, ..., 0], np.pad(orient(images[i], k), PAD, mode="reflect"))
        np.testing.assert_array_equal(ys[n, ..., 0], np.pad(orient(labels[i], k), PAD, mode="reflect"))


def test_make_dataset_deterministic_per_seed(stack):
    images, labels = stack

    def first_epoch(seed):
        return np.concatenate([x for x, _ in make_dataset(images, labels, 4, seed=seed, pad=PAD)
                               .as_numpy_iterator()])

    np.testing.assert_array_equal(first_epoch(1), first_epoch(1))
    assert not np.array_equal(first_epoch(1), first_epoch(2))


def test_make_dataset_no_enrich_no_shuffle_and_repeat(stack):
    images, labels = stack
    xs = [x for x, _ in make_dataset(images, labels, 1, shuffle=False, enrich=False, pad=0)
          .as_numpy_iterator()]
    assert len(xs) == 3
    for i in range(3):
        np.testing.assert_array_equal(xs[i][0, ..., 0], images[i])
    rep = make_dataset(images, labels, 2, enrich=False, pad=0, repeat=True)
    assert len(list(rep.take(7).as_numpy_iterator())) == 7


def test_make_dataset_random_crop(stack):
    images, labels = stack
    crop = 16

    def run(seed):
        ds = make_dataset(images, labels, 4, seed=seed, pad=4, crop=crop)
        return [b for b in ds.as_numpy_iterator()]

    a, b, c = run(0), run(0), run(1)
    assert a[0][0].shape == (4, crop + 8, crop + 8, 1)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    # every crop is a window of some orientation of some section (image and label aligned)
    x = np.concatenate([p[0] for p in a])[:, 4:-4, 4:-4, 0]
    y = np.concatenate([p[1] for p in a])[:, 4:-4, 4:-4, 0]
    assert x.shape[0] == 24
    pairs = epoch_pairs(make_index_dataset(3, seed=0), 100)
    offsets = set()
    for n, (i, k) in enumerate(pairs):
        img, lab = orient(images[i], k), orient(labels[i], k)
        hits = [(oy, ox) for oy in range(S - crop + 1) for ox in range(S - crop + 1)
                if np.array_equal(img[oy:oy + crop, ox:ox + crop], x[n])]
        assert len(hits) == 1
        oy, ox = hits[0]
        np.testing.assert_array_equal(lab[oy:oy + crop, ox:ox + crop], y[n])
        offsets.add(hits[0])
    assert len(offsets) > 1


def test_isbi_style_labels_accepted(stack):
    images, labels = stack
    ds = make_dataset(images, (labels * 255).astype(np.uint8), 3, shuffle=False, enrich=False, pad=0)
    _, y = next(iter(ds.as_numpy_iterator()))
    np.testing.assert_array_equal(y[..., 0], labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": np.zeros((3, S, S - 1), "float32")}, "differs from label shape"),
        ({"labels": np.full((3, S, S), 0.5, "float32") + np.eye(S, dtype="float32") * np.arange(3)[:, None, None] / 10},
         "binary"),
        ({"images": np.full((3, S, S), 2.0, "float32")}, r"\[0, 1\]"),
        ({"pad": S}, "padding"),
        ({"batch_size": 0}, "batch_size"),
        ({"crop": S + 1}, "crop"),
        ({"crop": 8, "pad": 8}, "padding"),
    ],
)
def test_make_dataset_bad_input(stack, kwargs, match):
    images, labels = stack
    args = {"images": images, "labels": labels, "batch_size": 2, "pad": PAD}
    args.update(kwargs)
    with pytest.raises(FusionNetError, match=match):
        make_dataset(**args)


def test_non_square_sections_need_crop():
    r = np.random.default_rng(0)
    images = r.random((2, 32, 48)).astype("float32")
    labels = (images > 0.5).astype("float32")
    with pytest.raises(FusionNetError, match="square"):
        make_dataset(images, labels, 2, pad=4)
    ds = make_dataset(images, labels, 2, pad=4, enrich=False)
    assert next(iter(ds))[0].shape == (2, 40, 56, 1)
    ds = make_dataset(images, labels, 2, pad=4, crop=24)
    assert len(list(ds.as_numpy_iterator())) == 8


# --------------------------------------------------------------------------
# splits, ranges, labels
# --------------------------------------------------------------------------
def test_kfold_properties():
    splits = kfold_splits(10, k=3, seed=0)
    assert len(splits) == 3
    vals = np.concatenate([v for _, v in splits])
    assert sorted(vals.tolist()) == list(range(10))
    for train, val in splits:
        assert set(train).isdisjoint(val)
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(10))
        assert len(val) in (3, 4)
    again = kfold_splits(10, k=3, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    other = kfold_splits(10, k=3, seed=1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(splits, other))


def test_kfold_errors():
    with pytest.raises(FusionNetError) as err:
        kfold_splits(2, k=3)
    assert str(err.value) == "need at least 3 sections for 3-fold cross-validation, got 2"
    with pytest.raises(FusionNetError):
        kfold_splits(10, k=1)


def test_section_range():
    np.testing.assert_array_equal(section_range("1-20", 30), np.arange(20))
    np.testing.assert_array_equal(section_range("21-30", 30), np.arange(20, 30))
    np.testing.assert_array_equal(section_range("5", 30), [4])
    np.testing.assert_array_equal(section_range(" 1-2, 7 ,9-10", 30), [0, 1, 6, 8, 9])


@pytest.mark.parametrize("spec", ["0-3", "1-31", "5-3", "abc", "", "1-5,3", "1--3", "-2"])
def test_section_range_errors(spec):
    with pytest.raises(FusionNetError):
        section_range(spec, 30)


def test_binarize_labels():
    np.testing.assert_array_equal(binarize_labels(np.array([[0, 255], [255, 0]], np.uint8)),
                                  [[0, 1], [1, 0]])
    out = binarize_labels(np.array([[0.0, 1.0]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(binarize_labels(np.array([True, False])), [1, 0])
    np.testing.assert_array_equal(binarize_labels(np.full(3, 255)), [1, 1, 1])
    np.testing.assert_array_equal(binarize_labels(np.zeros(3)), [0, 0, 0])
    with pytest.raises(FusionNetError, match="binary"):
        binarize_labels(np.array([0, 128, 255]))
    with pytest.raises(FusionNetError, match="differs from label shape"):
        binarize_labels(np.zeros((2, 4, 4)), images=np.zeros((2, 4, 5)))
    with pytest.raises(FusionNetError) as err:
        check_pair(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
    assert "\n" not in str(err.value)
