import inspect
import re

import keras
import numpy as np
import pytest

from fusionnet_keras import models
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models.fusionnet import FusionNet, FusionNetW
from fusionnet_keras.models.unet import UNet
from fusionnet_keras.models.layers import ConvBlock, ResidualBlock

from conftest import TINY


@pytest.fixture(scope="module")
def paper_model():
    """The paper's configuration, built once (no training)."""
    return FusionNet(nb_filters=64, depth=4, image_shape=(640, 640, 1))


def test_paper_level_shapes(paper_model):
    shapes = dict(models.level_shapes(paper_model))
    expected = {
        "down1_conv_out": (640, 640, 64),
        "down1_pool": (320, 320, 64),
        "down2_conv_out": (320, 320, 128),
        "down3_conv_out": (160, 160, 256),
        "down4_conv_out": (80, 80, 512),
        "down4_pool": (40, 40, 512),
        "bridge_conv_out": (40, 40, 1024),
        "up4_conv_out": (80, 80, 512),
        "up3_conv_out": (160, 160, 256),
        "up2_conv_out": (320, 320, 128),
        "up1_conv_out": (640, 640, 64),
        "output": (640, 640, 1),
    }
    for name, shape in expected.items():
        assert shapes[name] == shape, name


def test_paper_layer_counts(paper_model):
    convs = [l for l in paper_model.layers if isinstance(l, ConvBlock)]
    res = [l for l in paper_model.layers if isinstance(l, ResidualBlock)]
    # 9 levels x (conv + res(3 convs) + conv) = 45 level convs, plus the 1x1 output conv
    assert len(convs) == 18 and len(res) == 9
    assert len(convs) + 3 * len(res) == 45
    assert paper_model.get_layer("output").kernel_size == (1, 1)
    merges = [l for l in paper_model.layers if l.name.endswith("_merge")]
    assert len(merges) == 4 and all(isinstance(l, keras.layers.Add) for l in merges)
    assert paper_model.count_params() == 75_080_897


LAYER_NAME = re.compile(r"^(image|(unit\d+_)?(output|(down\d+|bridge|up\d+)_(conv_in|res|conv_out|conv1|conv2|pool|deconv|merge)))$")


@pytest.mark.parametrize("cls,kwargs", [(FusionNet, {}), (UNet, {}), (FusionNetW, {"units": 2})])
def test_every_layer_named_by_its_place(cls, kwargs):
    """No Keras auto-names (``conv_block_7``): every layer is named by its level and role."""
    model = cls(**TINY, **kwargs)
    unnamed = [l.name for l in model.layers if not LAYER_NAME.match(l.name)]
    assert not unnamed
    if cls is not UNet:  # one input, 2 * depth + 1 levels of 3 blocks, depth pools/deconvs/merges, one output
        assert len(model.layers) == kwargs.get("units", 1) * (3 * (2 * TINY["depth"] + 1) + 3 * TINY["depth"] + 1) + 1


def test_inference_is_per_sample(rng):
    """At inference batch norm uses its moving statistics: a sample's output does not depend on its batch."""
    from conftest import randomize_batchnorm

    model = randomize_batchnorm(FusionNet(**TINY))
    x = rng.random((2, 64, 64, 1), dtype=np.float32)
    together = keras.ops.convert_to_numpy(model(x, training=False))
    alone = np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 1], training=False)) for i in range(2)])
    np.testing.assert_allclose(together, alone, atol=2e-5)  # oneDNN sums in batch-dependent order
    trained = keras.ops.convert_to_numpy(model(x, training=True))  # batch statistics: not the same
    assert np.abs(trained - together).max() > 1e-3


@pytest.mark.parametrize("cls,kwargs", [(FusionNet, {}), (UNet, {}), (FusionNetW, {"units": 2})])
def test_save_load_round_trip(tmp_path, rng, cls, kwargs):
    model = cls(**TINY, **kwargs)
    x = rng.random((1, 64, 64, 1), dtype=np.float32)
    before = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects needed
    assert type(loaded) is cls
    assert loaded.get_config() == model.get_config()
    after = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), atol=1e-6)


@pytest.mark.parametrize("cls,kwargs", [(FusionNet, {"zero_init_residual": True}), (UNet, {}),
                                        (FusionNetW, {"units": 3, "zero_init_residual": True})])
def test_get_config_complete(cls, kwargs):
    args = {"nb_filters": 8, "depth": 1, "image_shape": (32, 48, 1), "kernel_initializer": "glorot_uniform",
            "bn_momentum": 0.9, **kwargs}
    model = cls(**args, name="m")
    config = model.get_config()
    signature = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    assert sorted(config) == sorted(signature + ["trainable"])
    assert {k: config[k] for k in args} == {**args, "image_shape": [32, 48, 1]}
    clone = cls.from_config(config)
    assert clone.get_config() == config and clone.count_params() == model.count_params()


def test_legacy_config_key_input_shape():
    """Files saved by 0.1.0 call the input shape ``input_shape``; they still load."""
    config = {**FusionNet(**TINY).get_config(), "image_shape": None}
    del config["image_shape"], config["dtype"]
    model = FusionNet.from_config({**config, "input_shape": [32, 32, 1]})
    assert model.image_shape == (32, 32, 1)


@pytest.mark.parametrize("cls,kwargs", [(FusionNet, {}), (UNet, {}), (FusionNetW, {"units": 2})])
def test_dtype_policy_round_trip(tmp_path, rng, cls, kwargs):
    """A model built under mixed_bfloat16 keeps its policy through get_config and a .keras file."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = cls(**TINY, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    explicit = cls(**TINY, **kwargs, dtype="mixed_bfloat16")
    for m in (model, explicit):
        assert m.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    # the input block of every unit (and its sublayers) stays float32 (fusionnet_keras.models.precision)
    inputs = [l for l in loaded.layers if l.name.endswith(("down1_conv_in", "down1_conv1"))]
    assert len(inputs) == kwargs.get("units", 1)
    kept = {id(s) for l in inputs for s in l._flatten_layers(include_self=True, recursive=True)}
    assert all(loaded_layer.dtype_policy.name == "float32" for loaded_layer in inputs)
    nested = [l for l in loaded._flatten_layers(include_self=True, recursive=True)
              if not l.name.endswith("output") and not isinstance(l, keras.layers.InputLayer) and id(l) not in kept]
    assert {l.dtype_policy.name for l in nested} == {"mixed_bfloat16"}
    assert all(loaded.get_layer(n).dtype_policy.name == "float32" for n in loaded.output_names)
    x = rng.random((1, 32, 32, 1), dtype=np.float32)
    before, after = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for b, a in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_zero_init_residual_starts_as_identity(rng):
    x = rng.random((2, 16, 16, 4), dtype=np.float32)
    block = ResidualBlock(4, zero_init=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(block(x, training=True)), x)
    assert ResidualBlock.from_config(block.get_config()).zero_init
    # the default (the paper's plain initialisation) does not
    assert np.abs(keras.ops.convert_to_numpy(ResidualBlock(4)(x, training=True)) - x).max() > 0.1
    # only the last batch norm of the branch starts at zero; training moves it away from zero
    gammas = [np.asarray(c.bn.gamma) for c in block.convs]
    assert [float(g.max()) for g in gammas] == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("cls,kwargs", [(FusionNet, {}), (FusionNetW, {"units": 2})])
def test_zero_init_residual_model_option(tmp_path, cls, kwargs):
    model = cls(**TINY, **kwargs, zero_init_residual=True)
    res = [l for l in model.layers if isinstance(l, ResidualBlock)]
    assert len(res) == (2 * TINY["depth"] + 1) * kwargs.get("units", 1)
    assert all(l.zero_init and not np.any(np.asarray(l.convs[-1].bn.gamma)) for l in res)
    assert not any(l.zero_init for l in cls(**TINY, **kwargs).layers if isinstance(l, ResidualBlock))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_config()["zero_init_residual"] is True


def test_indivisible_size_raises():
    with pytest.raises(FusionNetError, match="input height 100 is not divisible by 16"):
        FusionNet(image_shape=(100, 100, 1))
    model = FusionNet(**TINY)
    with pytest.raises(FusionNetError, match="input height 62 is not divisible by 4"):
        model(np.zeros((1, 62, 64, 1), "float32"))


def test_bad_hyperparameters():
    with pytest.raises(FusionNetError, match="nb_filters must be an integer >= 1, got 0"):
        FusionNet(nb_filters=0)
    with pytest.raises(FusionNetError, match="depth must be an integer, got 2.0"):
        UNet(depth=2.0)
    with pytest.raises(FusionNetError, match="units must be an integer >= 1, got 0"):
        FusionNetW(units=0)
    with pytest.raises(FusionNetError, match="image_shape must be \\(height, width, channels\\)"):
        FusionNet(image_shape=(64, 64))
    with pytest.raises(FusionNetError, match="unknown architecture"):
        models.build_model("resnet")


def test_fusionnet_w_chaining_and_freezing(rng):
    model = FusionNetW(units=2, **TINY)
    outs = model(rng.random((1, 64, 64, 1), dtype=np.float32))
    assert len(outs) == 2
    # unit 2 takes unit 1's output: its first conv has a single input channel
    assert model.get_layer("unit2_down1_conv_in").conv.kernel.shape[2] == 1
    model.set_trainable_unit(2)
    unit1 = {id(w) for l in model.unit_layers(1) for w in l.weights}
    trainable = {id(w) for w in model.trainable_weights}
    assert trainable and not (trainable & unit1)
    model.set_trainable_unit(1)
    assert {id(w) for w in model.trainable_weights} <= unit1


def test_unet_concatenates_skips():
    model = UNet(**TINY)
    merges = [l for l in model.layers if l.name.endswith("_merge")]
    assert merges and all(isinstance(l, keras.layers.Concatenate) for l in merges)


def test_flops_per_pixel_hand_count():
    # depth 0 FusionNet with 2 filters: 5 convs 3x3 (1->2, then 2->2 x4) + 1x1 output (2->1)
    model = FusionNet(nb_filters=2, depth=0)
    macs = 9 * 1 * 2 + 4 * 9 * 2 * 2 + 2 * 1
    assert models.flops_per_pixel(model) == pytest.approx(2 * macs)


def test_paper_flops(paper_model):
    # about 3.16 GFLOP per 1000 pixels for the paper configuration
    assert models.flops_per_pixel(paper_model) == pytest.approx(3.1634e6, rel=1e-3)


def test_channels_last_whatever_the_keras_setting():
    """Every convolution and pooling is channels-last, also when Keras is configured channels-first."""
    from fusionnet_keras.models.analysis import _all_layers

    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        for cls in (FusionNet, UNet):
            model = cls(**TINY)
            assert model(np.zeros((1, 64, 64, 1), "float32")).shape == (1, 64, 64, 1)
            formats = {layer.data_format for layer in _all_layers(model) if hasattr(layer, "data_format")}
            assert formats == {"channels_last"}, formats
    finally:
        keras.config.set_image_data_format(previous)
