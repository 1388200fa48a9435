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


def write_tiff(path, array):
    tifffile.imwrite(path, array, photometric="minisblack")
    return path
