"""Models saved by fusionnet-keras 0.1.0 (before the package layout change) still load and predict the same."""

from pathlib import Path

import keras
import numpy as np
import pytest

import fusionnet_keras as fk
from fusionnet_keras.models.loading import register_custom_objects

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
    register_custom_objects()
    model = keras.saving.load_model(FIXTURES / "training_checkpoint.keras")
    loss = model.loss
    assert type(loss).__name__ == "PairLoss" and loss.kind == "bce" and loss.membrane_weight == 2.0
    assert model.optimizer is not None and int(model.optimizer.iterations.numpy()) == 1
    net = model.get_layer("fusionnet")
    np.testing.assert_allclose(net.predict_on_batch(expected["x"]), expected["training_checkpoint_net"], atol=1e-5)
