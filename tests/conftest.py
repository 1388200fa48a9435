"""Shared test harness: tiny model configurations, seeded data, dataset location."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tifffile
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]

TINY = {"nb_filters": 4, "depth": 2}


def datasets_dir():
    """The real datasets: ``$FUSIONNET_DATA_DIR`` if it holds them, else ``../shared/datasets``."""
    candidates = [os.environ.get("FUSIONNET_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "datasets"]
    for c in candidates:
        if c and (Path(c) / "isbi2012" / "train-labels.tif").exists():
            return Path(c)
    return None


@pytest.fixture
def isbi_dir():
    d = datasets_dir()
    if d is None:
        pytest.skip("ISBI 2012 data not found (set FUSIONNET_DATA_DIR)")
    return d / "isbi2012"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randomize_batchnorm(model, seed=0):
    """Give every BatchNormalization layer non-trivial moving statistics (tests inference mode)."""
    import keras

    r = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(r.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(r.uniform(0.5, 1.5, n).astype("float32"))
            layer.gamma.assign(r.uniform(0.8, 1.2, n).astype("float32"))
            layer.beta.assign(r.normal(0, 0.1, n).astype("float32"))
    return model


def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "_layers", []) or []:
        yield from _all_layers(sub)


def synthetic_em(n, size=64, seed=0, cells=12):
    """Voronoi "cells" (label 255) separated by 1-2 px membranes (label 0), and an EM-like uint8 image."""
    r = np.random.default_rng(seed)
    labels = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        markers = np.zeros((size, size), np.int32)
        pts = r.integers(0, size, (cells, 2))
        markers[pts[:, 0], pts[:, 1]] = np.arange(1, cells + 1)
        _, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        regions = markers[iy, ix]
        border = ndimage.maximum_filter(regions, 2) != ndimage.minimum_filter(regions, 2)
        labels[z] = np.where(border, 0, 255)
    image = np.where(labels > 0, 0.7, 0.25) + r.normal(0, 0.08, labels.shape)
    image = ndimage.gaussian_filter(image, (0, 0.7, 0.7))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), labels


def tiny_train_toml(images, labels, name="tiny"):
    """TOML of a tiny training run (FusionNet 4/2, one step of 32 px crops) on 3 sections: train 1-2, val 3."""
    return f"""name = "{name}"
[model]
nb_filters = 4
depth = 2
[data]
images = "{images}"
labels = "{labels}"
train_sections = "1-2"
val_sections = "3"
[train]
epochs = 1
steps_per_epoch = 1
crop = 32
pad = 16
tensorboard = false
"""


def write_tiff(path, array):
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def randomize_weights(model, seed=0):
    """Random non-symmetric conv weights (2-D and 3-D layers), then :func:`randomize_batchnorm`."""
    r = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if getattr(layer, "kernel", None) is not None and hasattr(layer, "kernel_size"):
            k = layer.kernel
            fan_in = np.prod(k.shape[:-1])
            layer.kernel.assign(r.normal(0, 1.2 / np.sqrt(fan_in), k.shape).astype("float32"))
            if layer.bias is not None:
                layer.bias.assign(r.normal(0, 0.1, layer.bias.shape).astype("float32"))
    return randomize_batchnorm(model, seed)


def tiny_unet_2d(seed=0):
    """Depth-2 U-shaped "same" network: conv/BN, 2 max-pools, transposed convs, skips.

    Size multiple 4, receptive-field margin 19 px.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    s1 = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(s1)
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    s2 = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(s2)
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2DTranspose(6, 2, strides=2, padding="same")(x)
    x = layers.Add()([x, s2])
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Concatenate()([x, s1])
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    out = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return randomize_weights(keras.Model(inp, out), seed)
