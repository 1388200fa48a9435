"""Shared test harness: tiny model configurations, seeded data, dataset location."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

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
