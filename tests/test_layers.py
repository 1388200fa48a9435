"""Every custom layer of the package through the shared harness (tests/layer_harness.py)."""

import numpy as np
import pytest

from fusionnet_keras.data.augment import Augmenter, ElasticDeform, GaussianImageNoise, MirrorPad
from fusionnet_keras.models.layers import ConvBlock, ResidualBlock, UpConv

from layer_harness import run_layer_test

R = np.random.default_rng(0)
IMAGE = R.random((2, 16, 16, 1), dtype=np.float32)
LABEL = (R.random((2, 16, 16, 1)) > 0.5).astype(np.float32)
FEATURES = R.random((2, 8, 8, 4), dtype=np.float32)
VOLUME = R.random((1, 5, 8, 8, 2), dtype=np.float32)
RANDOM_CALL = {"training": True, "seed": 7}  # an explicit seed makes the random layers deterministic


@pytest.mark.parametrize(
    "cls, init_kwargs, input_data, output_shape, n_trainable, n_non_trainable, call_kwargs",
    [
        # conv kernel + bias, batch-norm gamma + beta; moving mean + variance
        (ConvBlock, {"filters": 3}, FEATURES, (2, 8, 8, 3), 4, 2, {}),
        (ConvBlock, {"filters": 3, "kernel_size": 1, "kernel_initializer": "glorot_uniform", "bn_momentum": 0.9,
                     "gamma_initializer": "zeros"}, FEATURES, (2, 8, 8, 3), 4, 2, {}),
        (ResidualBlock, {"filters": 4}, FEATURES, (2, 8, 8, 4), 12, 6, {}),
        (ResidualBlock, {"filters": 4, "n_convs": 2, "kernel_initializer": "glorot_uniform", "bn_momentum": 0.9,
                         "zero_init": True}, FEATURES, (2, 8, 8, 4), 8, 4, {}),
        (UpConv, {"filters": 2}, FEATURES, (2, 16, 16, 2), 4, 2, {}),
        (UpConv, {"filters": 2, "kernel_initializer": "glorot_uniform", "bn_momentum": 0.9}, FEATURES,
         (2, 16, 16, 2), 4, 2, {}),
        # the same blocks in 3-D and with valid padding (the 3-D networks' blocks), by their one class
        (ConvBlock, {"filters": 3, "kernel_size": [3, 3, 3], "padding": "valid"}, VOLUME, (1, 3, 6, 6, 3), 4, 2, {}),
        (ResidualBlock, {"filters": 4, "n_convs": 2, "padding": "valid"}, FEATURES, (2, 4, 4, 4), 8, 4, {}),
        (ResidualBlock, {"filters": 2, "n_convs": 2, "kernel_size": [1, 3, 3], "padding": "valid"}, VOLUME,
         (1, 5, 4, 4, 2), 8, 4, {}),
        (UpConv, {"filters": 2, "scale": [1, 2, 2]}, VOLUME, (1, 5, 16, 16, 2), 4, 2, {}),
        (MirrorPad, {"pad": 3}, IMAGE, (2, 22, 22, 1), 0, 0, {}),
        (ElasticDeform, {"grid_size": 4, "amplitude": 2.0, "seed": 1}, (IMAGE, LABEL),
         ((2, 16, 16, 1), (2, 16, 16, 1)), 0, 0, RANDOM_CALL),
        (ElasticDeform, {"grid_size": 5, "amplitude": 1.5, "interpolation": "bicubic", "distribution": "normal"},
         IMAGE, (2, 16, 16, 1), 0, 0, RANDOM_CALL),
        (GaussianImageNoise, {"sigma": 0.2, "seed": 1}, IMAGE, (2, 16, 16, 1), 0, 0, RANDOM_CALL),
        (GaussianImageNoise, {"sigma": 0.2, "clip": False}, (IMAGE, LABEL), ((2, 16, 16, 1), (2, 16, 16, 1)),
         0, 0, RANDOM_CALL),
        (Augmenter, {"elastic_amplitude": 2.0, "noise_sigma": 0.1, "seed": 3, "grid_size": 4,
                     "interpolation": "bicubic", "clip": False}, (IMAGE, LABEL),
         ((2, 16, 16, 1), (2, 16, 16, 1)), 0, 0, RANDOM_CALL),
    ],
)
def test_layer(tmp_path, cls, init_kwargs, input_data, output_shape, n_trainable, n_non_trainable, call_kwargs):
    run_layer_test(cls, init_kwargs, input_data, output_shape, n_trainable, n_non_trainable,
                   call_kwargs=call_kwargs, tmp_path=tmp_path, atol=1e-5)


def test_valid_residual_block_adds_the_centre_of_its_input():
    """With valid padding the identity is the input's centre: a zero-initialised branch gives exactly it."""
    block = ResidualBlock(4, n_convs=2, padding="valid", zero_init=True)
    out = np.asarray(block(FEATURES, training=False))
    np.testing.assert_allclose(out, FEATURES[:, 2:-2, 2:-2], atol=1e-6)


def test_bad_padding_is_one_line():
    from fusionnet_keras.errors import FusionNetError

    with pytest.raises(FusionNetError, match="padding must be one of same, valid"):
        ConvBlock(2, padding="full")


def test_random_layers_change_their_input():
    """The harness compares outputs; make sure the compared outputs of the random layers are not the identity."""
    warped, _ = ElasticDeform(grid_size=4, amplitude=2.0)((IMAGE, LABEL), **RANDOM_CALL)
    noisy = GaussianImageNoise(sigma=0.2)(IMAGE, **RANDOM_CALL)
    assert np.abs(np.asarray(warped) - IMAGE).max() > 0.05
    assert np.abs(np.asarray(noisy) - IMAGE).max() > 0.05
