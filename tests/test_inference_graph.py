"""Tests of fusionnet_keras.models.inference_graph (batch norm folded into the convolutions) and of
``precision = "auto"``'s rules.

Tiny networks (2-4 base filters, depth 1-2) with random kernels and random batch-norm statistics,
some batch-norm scales negative (the sign path) and some zero (zero-gamma blocks): the folded
graph must give the unfolded inference output in float32 to ~1e-5, contain no batch norm, and
keep each layer's compute dtype with no float32 layers inside a bfloat16 network.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

import fusionnet_keras as fk
from fusionnet_keras.models.inference_graph import ChannelAffine, for_inference, inference_model
from fusionnet_keras.models.precision import check_precision, policy_name, with_precision

from conftest import _all_layers, randomize_weights, tiny_unet_2d

NETWORKS = {
    "fusionnet": (lambda: fk.FusionNet(nb_filters=4, depth=2), (2, 32, 32, 1)),
    "fusionnet_w": (lambda: fk.FusionNetW(units=2, nb_filters=2, depth=1), (1, 16, 24, 1)),
    "unet": (lambda: fk.UNet(nb_filters=4, depth=2), (2, 32, 32, 1)),
    "unet3d": (lambda: fk.UNet3D(nb_filters=2, depth=1), (1, 17, 24, 24, 1)),
    "fusionnet3d": (lambda: fk.FusionNet3D(nb_filters=2, depth=1), (1, 17, 48, 48, 1)),
}


def _signed_batchnorm(model, seed=0):
    """Random weights; then every third batch-norm scale negative and one zero."""
    randomize_weights(model, seed)
    r = np.random.default_rng(seed + 1)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma = np.array(layer.gamma)
            gamma[::3] *= -1
            gamma[r.integers(len(gamma))] = 0
            layer.gamma.assign(gamma)
    return model


def _last(y):
    return np.asarray(y[-1] if isinstance(y, list | tuple) else y, np.float32)


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request):
    make, shape = NETWORKS[request.param]
    keras.utils.set_random_seed(0)
    return _signed_batchnorm(make()), shape


def test_folded_graph_equals_the_network_in_inference_mode(network):
    net, shape = network
    folded = inference_model(net)
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    want, got = net(x, training=False), folded(x)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
    np.testing.assert_allclose(_last(got), _last(want), atol=2e-5)
    assert folded.output_shape == net.output_shape
    assert not [layer for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in folded.layers if hasattr(layer, "kernel_size")]
    assert all(layer.use_bias for layer in convs)
    # every conv block is one convolution with its ReLU inside
    assert sum(layer.get_config()["activation"] == "relu" for layer in convs) == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in _all_layers(net))


def test_folded_graph_keeps_no_state_of_the_network(network):
    net, shape = network
    folded = inference_model(net)
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    before = _last(folded(x))
    for layer in _all_layers(net):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 1.0)
    try:
        np.testing.assert_array_equal(_last(folded(x)), before)
    finally:
        for layer in _all_layers(net):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(layer.moving_mean - 1.0)


@pytest.mark.parametrize("name", ["fusionnet", "unet3d"])
def test_bfloat16_graph_computes_in_bfloat16_between_its_float32_ends(name):
    make, shape = NETWORKS[name]
    keras.utils.set_random_seed(0)
    net = randomize_weights(make(), 4)
    fast = inference_model(with_precision(net, "bfloat16"))
    convs = [layer for layer in fast.layers if hasattr(layer, "kernel_size")]
    assert convs[0].compute_dtype == "float32"  # the input block
    assert convs[-1].compute_dtype == "float32" and convs[-1].name == "output"
    inner = [layer for layer in fast.layers[2:-1] if not isinstance(layer, keras.layers.InputLayer)]
    assert inner and all(layer.compute_dtype == "bfloat16" for layer in inner), [
        (layer.name, layer.compute_dtype) for layer in inner if layer.compute_dtype != "bfloat16"]
    assert all(w.dtype == "bfloat16" for layer in convs[1:-1] for w in layer.weights)  # no casts per call
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    want = _last(net(x, training=False))
    got = _last(fast(x))
    assert got.dtype == np.float32 and 0 < np.abs(got - want).max() < 0.05


def test_generic_functional_model_and_subclassed_fallback():
    net = randomize_weights(tiny_unet_2d(), 5)
    x = np.random.default_rng(4).random((1, 24, 24, 1), dtype=np.float32)
    folded = inference_model(net)
    np.testing.assert_allclose(folded(x), net(x, training=False), atol=2e-5)

    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(1, 3, padding="same")

        def call(self, x):
            return self.conv(x)

    plain = Plain()
    plain(x)
    assert for_inference(plain) is plain
    with pytest.raises(TypeError, match="functional"):
        inference_model(plain)


def test_channel_affine():
    layer = ChannelAffine([1.0, -2.0], scale=[2.0, -1.0])
    np.testing.assert_allclose(layer(np.ones((1, 2, 2), np.float32)), np.tile([3.0, -3.0], (1, 2, 1)))
    assert ChannelAffine.from_config(layer.get_config()).scale_values == [2.0, -1.0]


def test_predictors_run_the_folded_graph_and_equal_the_unfolded_prediction():
    from fusionnet_keras.inference.affinities import AffinityPredictor
    from fusionnet_keras.inference.predictor import SectionPredictor

    keras.utils.set_random_seed(0)
    net = _signed_batchnorm(fk.FusionNet(nb_filters=4, depth=2), 6)
    image = np.random.default_rng(5).random((40, 36), dtype=np.float32)
    folded = SectionPredictor(net, tta=8, pad=8)
    assert folded.network is not net and not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in _all_layers(folded.network))
    unfolded = SectionPredictor(net, tta=8, pad=8)
    unfolded.network = net
    np.testing.assert_allclose(folded.predict(image), unfolded.predict(image), atol=1e-5)

    net3d = _signed_batchnorm(fk.UNet3D(nb_filters=2, depth=1), 7)
    volume = np.random.default_rng(6).random((5, 20, 22), dtype=np.float32)
    region = (slice(0, 5), slice(0, 20), slice(0, 22))
    folded3d = AffinityPredictor(net3d, orientations=4)
    assert folded3d.network is not net3d
    unfolded3d = AffinityPredictor(net3d, orientations=4)
    unfolded3d.network = net3d
    np.testing.assert_allclose(folded3d.predict_region(volume, region), unfolded3d.predict_region(volume, region),
                               atol=1e-5)


@pytest.mark.parametrize("backend,accelerators,flags,want", [
    ("tensorflow", [], ["AVX512-BF16"], "bfloat16"),
    ("tensorflow", [], ["AVX512-BF16", "AMX-BF16"], "bfloat16"),
    ("tensorflow", [], [], "float32"),  # emulated bfloat16
    ("tensorflow", [], ["AVX512-FP16"], "float32"),
    ("jax", [], ["AVX512-BF16", "AMX-BF16"], "float32"),  # XLA's CPU bfloat16 convolutions are slow
    ("torch", [], ["AVX512-BF16"], "float32"),  # not measured
    ("jax", [("GPU", "GPU:0", "NVIDIA H200")], [], "bfloat16"),
    ("tensorflow", [("GPU", "GPU:0", "NVIDIA H100")], [], "bfloat16"),
])
def test_auto_picks_bfloat16_only_where_it_is_faster(monkeypatch, backend, accelerators, flags, want):
    from fusionnet_keras.utils import hardware

    monkeypatch.setattr(hardware, "backend_name", lambda: backend)
    monkeypatch.setattr(hardware, "accelerators", lambda: accelerators)
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: flags)
    assert check_precision("auto") == want
    assert policy_name("auto") == {"bfloat16": "mixed_bfloat16", "float32": "float32"}[want]
    assert policy_name("mixed_float16") == "mixed_float16"
