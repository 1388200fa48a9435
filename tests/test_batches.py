"""Tests of the backend-neutral training batches (fusionnet_keras.data.batches) and the pipeline choice.

Without shuffling or crops the numpy batches must equal the tf.data batches
pixel for pixel (same orientations, padding and order); with them, each epoch
must visit every (section, orientation) pair once, crops must be cut from the
oriented section, and the stream must be a pure function of the seed.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from fusionnet_keras.data import pipeline
from fusionnet_keras.data.batches import SectionBatches
from fusionnet_keras.data.orient import orient
from fusionnet_keras.errors import FusionNetError

N, S = 3, 12


@pytest.fixture
def data():
    r = np.random.default_rng(5)
    images = r.random((N, S, S), dtype=np.float32)
    labels = (r.random((N, S, S)) > 0.5).astype(np.float32)
    return images, labels




@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="compares with the tf.data pipeline")
def test_equals_tf_data_without_randomness(data):
    images, labels = data
    kwargs = dict(shuffle=False, enrich=True, pad=3, batch_size=5)
    ours = SectionBatches(images, labels, **kwargs)
    theirs = list(pipeline.make_dataset(images, labels, **kwargs).as_numpy_iterator())
    assert len(ours) == len(theirs) == 5  # 24 pairs: 4 batches of 5 and one of 4
    for i, (x, y) in enumerate(theirs):
        np.testing.assert_array_equal(ours[i][0], x)
        np.testing.assert_array_equal(ours[i][1], y)


def test_every_pair_once_per_epoch_reshuffled(data):
    images, labels = data
    ds = SectionBatches(images, labels, batch_size=4, seed=3, pad=2, repeat=True)
    expected = sorted(np.pad(orient(images[i], k), 2, mode="reflect").tobytes() for i in range(N) for k in range(8))
    epochs = []
    for e in range(2):
        xs = np.concatenate([ds[e * 6 + b][0] for b in range(6)])[..., 0]  # 24 samples = 6 batches
        epochs.append([x.tobytes() for x in xs])
        assert sorted(epochs[-1]) == expected
    assert epochs[0] != epochs[1]  # a new order every epoch
    again = SectionBatches(images, labels, batch_size=4, seed=3, pad=2, repeat=True)
    np.testing.assert_array_equal(again[7][0], ds[7][0])  # a pure function of seed and index
    other = SectionBatches(images, labels, batch_size=4, seed=4, pad=2, repeat=True)
    assert not np.array_equal(other[0][0], ds[0][0])
    with pytest.raises(TypeError):
        len(ds)
    assert ds.num_batches is None


def test_crops_come_from_the_oriented_section_and_label(data):
    images, labels = data
    ds = SectionBatches(images, labels, batch_size=2, seed=1, crop=5, pad=2, drop_remainder=True)
    assert len(ds) == 12
    for b in range(len(ds)):
        x, y = ds[b]
        assert x.shape == y.shape == (2, 9, 9, 1) and x.dtype == np.float32
        for xi, yi in zip(x[..., 0], y[..., 0]):
            core = xi[2:-2, 2:-2]
            np.testing.assert_array_equal(xi, np.pad(core, 2, mode="reflect"))
            hits = [(i, k, oy, ox) for i in range(N) for k in range(8) for oy in range(S - 4) for ox in range(S - 4)
                    if np.array_equal(orient(images[i], k)[oy:oy + 5, ox:ox + 5], core)]
            assert len(hits) == 1
            i, k, oy, ox = hits[0]
            np.testing.assert_array_equal(yi[2:-2, 2:-2], orient(labels[i], k)[oy:oy + 5, ox:ox + 5])


def test_transform_and_checks(data):
    images, labels = data
    ds = SectionBatches(images, labels, batch_size=8, enrich=False, pad=0, transform=lambda x, y: ((x, y), y))
    (x, y), t = ds[0]
    assert x.shape == (3, 12, 12, 1) and t is y and len(ds) == 1
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(FusionNetError, match="crop size 20 is larger"):
        SectionBatches(images, labels, batch_size=2, crop=20)
    with pytest.raises(FusionNetError, match="square sections"):
        SectionBatches(images[:, :, :10], labels[:, :, :10], batch_size=2, pad=2)
    with pytest.raises(FusionNetError, match="scaled to"):
        SectionBatches(images * 3, labels, batch_size=2)


def test_pipeline_choice(data, monkeypatch):
    images, labels = data
    kw = dict(batch_size=2, pad=0, crop=8)
    assert isinstance(pipeline.make_training_data(images, labels, pipeline="numpy", **kw), SectionBatches)
    auto = pipeline.make_training_data(images, labels, **kw)
    assert isinstance(auto, SectionBatches) == (keras.backend.backend() != "tensorflow")
    monkeypatch.setattr(pipeline, "tensorflow_available", lambda: False)  # a machine without TensorFlow
    assert isinstance(pipeline.make_training_data(images, labels, **kw), SectionBatches)
    with pytest.raises(FusionNetError, match="pipeline must be"):
        pipeline.make_training_data(images, labels, pipeline="torch", **kw)
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(FusionNetError, match="needs KERAS_BACKEND=tensorflow"):
            pipeline.make_training_data(images, labels, pipeline="tf.data", **kw)
