"""Models saved by fusionnet-keras 0.1.0 (before the package layout change) still load and predict the same."""

from pathlib import Path

import keras
import numpy as np
import pytest

import fusionnet_keras as fk
from fusionnet_keras.models.loading import register_custom_objects
from fusionnet_keras.training.networks import register_custom_objects as register_training_objects

FIXTURES = Path(__file__).parent / "fixtures" / "legacy-0.1.0"


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "predictions.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name, cls", [("fusionnet", "FusionNet"), ("fusionnet_w", "FusionNetW"), ("unet", "UNet")])
def test_saved_network_loads_and_predicts_the_same(name, cls, expected):
    for load in (fk.load_model, lambda p: keras.saving.load_model(p, compile=False)):
        model = load(FIXTURES / f"{name}.keras")
        assert type(model).__name__ == cls
        assert isinstance(model, getattr(fk, cls))
        y = model.predict_on_batch(expected["x"])
        y = np.stack(y) if isinstance(y, (list, tuple)) else np.asarray(y)
        np.testing.assert_allclose(y, expected[name], atol=1e-5)


def test_training_checkpoint_loads_with_its_loss_and_optimizer(expected):
    register_training_objects()
    model = keras.saving.load_model(FIXTURES / "training_checkpoint.keras")
    loss = model.loss
    assert type(loss).__name__ == "PairLoss" and loss.kind == "bce" and loss.membrane_weight == 2.0
    assert model.optimizer is not None and int(model.optimizer.iterations.numpy()) == 1
    net = model.get_layer("fusionnet")
    np.testing.assert_allclose(net.predict_on_batch(expected["x"]), expected["training_checkpoint_net"], atol=1e-5)


BEFORE_ND = Path(__file__).parent / "fixtures" / "before-nd-core"


@pytest.fixture(scope="module")
def expected_nd():
    with np.load(BEFORE_ND / "predictions.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name, cls", [("unet3d", "UNet3D"), ("fusionnet3d", "FusionNet3D")])
def test_3d_network_saved_before_the_nd_core_loads_and_predicts_the_same(name, cls, expected_nd):
    for load in (lambda p: fk.load_model(p, spatial_dims=3), lambda p: keras.saving.load_model(p, compile=False)):
        model = load(BEFORE_ND / f"{name}.keras")
        assert type(model).__name__ == cls
        y = model.predict_on_batch(expected_nd[f"{name}_input"] / np.float32(255))
        np.testing.assert_allclose(np.asarray(y), expected_nd[name], atol=1e-5)


def test_blocks_saved_under_their_2d_and_3d_names_load_and_compute_the_same(expected_nd):
    """ConvBlock3D, ResidualBlock3D and UpConv3D (and the 2-D blocks) saved as bare layers still
    deserialise, with their weights, into blocks that compute what they computed."""
    register_custom_objects()
    model = keras.saving.load_model(BEFORE_ND / "blocks.keras", compile=False)
    ya, yb = model.predict_on_batch([expected_nd["x2_input"] / np.float32(255),
                                     expected_nd["x3_input"] / np.float32(255)])
    np.testing.assert_allclose(np.asarray(ya), expected_nd["blocks_2d"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(yb), expected_nd["blocks_3d"], atol=1e-5)
