"""Tests of fusionnet_keras.models.precision and the precision option of predict (Python and command line).

Tiny models (nb_filters 4, depth 2) with random batch-norm statistics, 64 px
images. bfloat16 must really be used (outputs differ from float32 a little),
must stay close to float32, and the parts that stay float32 must be float32.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tifffile

import fusionnet_keras as fk
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models import FusionNet, FusionNetW, UNet
from fusionnet_keras.models.precision import check_precision, input_dtype, policy_name, precision_of, with_precision

from conftest import TINY, randomize_weights, synthetic_em, tiny_unet_2d, write_tiff


def _image(seed=0, n=64):
    image, _ = synthetic_em(1, size=n, seed=seed)
    return image[0].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def net():
    import keras

    keras.utils.set_random_seed(0)
    return randomize_weights(FusionNet(**TINY), seed=3)


def test_names_and_policies():
    assert [check_precision(p) for p in ("float32", "bfloat16", "mixed_float16")] == ["float32", "bfloat16", "float16"]
    assert policy_name("bfloat16") == "mixed_bfloat16" and policy_name("float32") == "float32"
    assert precision_of("mixed_float16") == "float16"
    assert input_dtype("mixed_bfloat16") == "float32" and input_dtype("float32") == "float32"
    for bad in ("int8", "fp16", None, 16):
        with pytest.raises(FusionNetError, match="precision must be one of float32, bfloat16, float16"):
            check_precision(bad)


@pytest.mark.parametrize("cls,first", [(FusionNet, "down1_conv_in"), (UNet, "down1_conv1")])
def test_low_precision_keeps_input_block_and_output_in_float32(cls, first):
    model = cls(**TINY, dtype="mixed_bfloat16")
    assert precision_of(model) == "bfloat16"
    assert model.get_layer(first).compute_dtype == "float32"
    assert model.get_layer(first).conv.compute_dtype == "float32"
    assert model.get_layer("output").compute_dtype == "float32"
    convs = [layer for layer in model.layers if layer.name not in (first, "output") and hasattr(layer, "compute_dtype")]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs if "pool" not in layer.name
                         and layer.name != "image")
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32


def test_fusionnet_w_every_unit_has_a_float32_input_block():
    model = FusionNetW(units=2, **TINY, dtype="mixed_float16")
    for unit in (1, 2):
        assert model.get_layer(f"unit{unit}_down1_conv_in").compute_dtype == "float32"
        assert model.get_layer(f"unit{unit}_down1_res").compute_dtype == "float16"


def test_with_precision_copies_weights_and_keeps_the_original(net):
    fast = with_precision(net, "bfloat16")
    assert fast is not net and precision_of(net) == "float32" and precision_of(fast) == "bfloat16"
    assert type(fast) is FusionNet and fast.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    for a, b in zip(net.get_weights(), fast.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert with_precision(net, "float32") is net
    back = with_precision(fast, "float32")
    np.testing.assert_array_equal(back.predict_on_batch(_image()[None, ..., None]),
                                  net.predict_on_batch(_image()[None, ..., None]))


@pytest.mark.parametrize("precision,tol", [("bfloat16", 0.05), ("float16", 0.01)])
def test_low_precision_prediction_is_close_but_not_equal(net, precision, tol):
    image = _image(1)
    ref = fk.predict(net, image, tta=8, pad=8)
    low = fk.predict(net, image, tta=8, pad=8, precision=precision)
    assert low.dtype == np.float32 and low.shape == image.shape
    diff = np.abs(low - ref)
    assert 0 < diff.max() < tol, diff.max()
    assert diff.mean() < tol / 10


def test_input_block_output_equals_float32(net):
    """The input block computes exactly as in float32 (the first source of bf16 error is removed)."""
    import keras

    fast = with_precision(net, "bfloat16")
    x = _image(2)[None, ..., None]
    probe = keras.Model(net.input, net.get_layer("down1_conv_in").output)
    fast_probe = keras.Model(fast.input, fast.get_layer("down1_conv_in").output)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fast_probe(x)), keras.ops.convert_to_numpy(probe(x)))


def test_generic_functional_model():
    model = tiny_unet_2d(0)
    fast = with_precision(model, "bfloat16")
    assert fast.layers[-1].compute_dtype == "float32"
    assert fast.layers[1].compute_dtype == "bfloat16"
    image = _image(3)
    ref = fk.predict(model, image, tta=1, pad=8)
    low = fk.predict(model, image, tta=1, pad=8, precision="bfloat16")
    assert 0 < np.abs(low - ref).max() < 0.05


def test_saved_precision_is_the_default(net, tmp_path):
    fast = with_precision(net, "bfloat16")
    fast.save(tmp_path / "bf16.keras")
    loaded = fk.load_model(tmp_path / "bf16.keras")
    assert precision_of(loaded) == "bfloat16"
    image = _image(4)
    np.testing.assert_array_equal(fk.predict(loaded, image, tta=1, pad=8), fk.predict(fast, image, tta=1, pad=8))
    np.testing.assert_allclose(fk.predict(loaded, image, tta=1, pad=8, precision="float32"),
                               fk.predict(net, image, tta=1, pad=8), atol=1e-6)


def test_auto_batch_puts_the_orientations_in_one_call(net, monkeypatch):
    from fusionnet_keras.inference import predictor as P
    from fusionnet_keras.utils import hardware

    sp = P.SectionPredictor(net, tta=8, pad=8)
    assert sp.schedule((64, 64)) == [(8, 80, 80)]  # plenty of memory: one call
    window = P.window_bytes(net, (80, 80))
    monkeypatch.setattr(hardware, "free_memory_bytes", lambda: 4 * 3 * window)  # room for 3 -> 2 per call
    assert sp.schedule((64, 64)) == [(2, 80, 80)] * 4
    monkeypatch.setattr(hardware, "free_memory_bytes", lambda: 1)
    assert sp.schedule((64, 48)) == [(1, 80, 64)] * 4 + [(1, 64, 80)] * 4
    assert P.SectionPredictor(net, tta=8, pad=8, batch_size=3).schedule((64, 64)) == [(3, 80, 80)] * 2 + [(2, 80, 80)]


def test_bad_precision_in_predict(net):
    with pytest.raises(FusionNetError, match="precision"):
        fk.predict(net, _image(), tta=1, precision="int8")


# ---------------------------------------------------------------------------
# command line


def test_cli_predict_precision(net, tmp_path):
    from click.testing import CliRunner

    from fusionnet_keras.cli import main

    net.save(tmp_path / "net.keras")
    image, _ = synthetic_em(1, seed=7)
    write_tiff(tmp_path / "in.tif", image[0])
    outs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.tif"
        result = CliRunner().invoke(main, ["predict", str(tmp_path / "in.tif"), str(out), "-w", str(tmp_path / "net.keras"),
                                           "--tta", "1", "--pad", "8", "--precision", precision])
        assert result.exit_code == 0, result.output
        outs[precision] = tifffile.imread(out)
    ref = fk.predict(net, image[0] / 255.0, tta=1, pad=8)
    np.testing.assert_allclose(outs["float32"], ref, atol=1e-5)
    assert 0 < np.abs(outs["bfloat16"] - ref).max() < 0.05
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "in.tif"), str(tmp_path / "x.tif"), "-w",
                                       str(tmp_path / "net.keras"), "--precision", "int8"])
    assert result.exit_code == 2 and not (tmp_path / "x.tif").exists()


def test_cli_info_shows_backend_devices_and_saved_precision(net, tmp_path):
    from click.testing import CliRunner

    import keras

    from fusionnet_keras.cli import main

    with_precision(net, "bfloat16").save(tmp_path / "bf16.keras")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "bf16.keras"), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert f"backend: {keras.backend.backend()}" in result.output
    assert "device: CPU:0" in result.output
    assert "precision policy: float32" in result.output
    assert "saved precision: bfloat16" in result.output


@pytest.mark.parametrize("name", ["UNet3D", "FusionNet3D"])
def test_3d_networks_convert_and_keep_their_input_block(name):
    import keras

    from fusionnet_keras import models

    cls = getattr(models, name)
    keras.utils.set_random_seed(0)
    net = randomize_weights(cls(nb_filters=2, depth=1, z_kernels=1), seed=2)
    fast = with_precision(net, "bfloat16")
    assert type(fast) is cls and precision_of(fast) == "bfloat16"
    first = next(layer for layer in fast.layers if layer.name.startswith("down1_conv"))
    assert first.compute_dtype == "float32" and fast.get_layer("output").compute_dtype == "float32"
    assert fast.get_layer("down1_pool").compute_dtype == "bfloat16"
    shape = tuple(n + 2 * m for n, m in zip(net.geometry.min_input, net.geometry.multiple))
    x = np.random.default_rng(0).random((1, *shape, 1), dtype=np.float32)
    ref, low = (keras.ops.convert_to_numpy(m(x)) for m in (net, fast))
    assert ref.shape == low.shape and 0 < np.abs(low - ref).max() < 0.05


def test_blockwise_prediction_in_bfloat16(net, tmp_path):
    """predict --workers/--block path: the precision reaches the workers' predictor."""
    import zarr

    from fusionnet_keras.blockwise.predict import predict_volume

    net.save(tmp_path / "net.keras")
    image, _ = synthetic_em(2, seed=8)
    write_tiff(tmp_path / "in.tif", image)
    outs = {}
    for precision in (None, "bfloat16"):
        out = tmp_path / f"{precision}.zarr"
        predict_volume(str(tmp_path / "in.tif"), str(out), str(tmp_path / "net.keras"), block=(1, 32, 32), tta=1,
                       pad=8, workers=0, progress=False, precision=precision)
        outs[precision] = zarr.open_array(str(out), path="0")[:]
    ref = fk.predict(net, image / np.float32(255), tta=1, pad=8)
    np.testing.assert_allclose(outs[None], ref, atol=1e-5)
    assert 0 < np.abs(outs["bfloat16"] - ref).max() < 0.05


def test_auto_training_precision_is_bfloat16_only_where_native(monkeypatch):
    """``train.precision = "auto"``: mixed_bfloat16 with AVX512-BF16/AMX or an accelerator, float32 on a
    CPU that would emulate bf16 (AVX2 only); explicit values pass through; the config accepts "auto"
    (the trainer resolves it with policy_name, the resolver prediction uses)."""
    from fusionnet_keras.training import config as cfg
    from fusionnet_keras.utils import hardware

    monkeypatch.setattr(hardware, "backend_name", lambda: "tensorflow")  # the CPU rule; JAX: test_inference_graph
    monkeypatch.setattr(hardware, "accelerators", lambda: [])
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: [])
    assert policy_name("auto") == "float32"
    assert policy_name("mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: ["AVX512-FP16"])
    assert policy_name("auto") == "float32"
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: ["AVX512-BF16", "AMX-BF16"])
    assert policy_name("auto") == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: [])
    monkeypatch.setattr(hardware, "accelerators", lambda: [("GPU", "GPU:0", "NVIDIA H200")])
    assert policy_name("auto") == "mixed_bfloat16"
    config = cfg.defaults()
    config["train"]["precision"] = "auto"
    assert cfg.validate(config)["train"]["precision"] == "auto"


def test_auto_prediction_precision_is_bfloat16_only_where_native(net, monkeypatch):
    """``predict.precision = "auto"`` / ``--precision auto``: bfloat16 convolutions where bf16 is native,
    float32 where it would be emulated; the configs accept it."""
    from fusionnet_keras.training import config as cfg
    from fusionnet_keras.training import config_files
    from fusionnet_keras.utils import hardware

    monkeypatch.setattr(hardware, "backend_name", lambda: "tensorflow")  # the CPU rule; JAX: test_inference_graph
    monkeypatch.setattr(hardware, "accelerators", lambda: [])
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: [])
    assert check_precision("auto") == "float32" and with_precision(net, "auto") is net
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: ["AVX512-BF16"])
    assert check_precision("auto") == "bfloat16" and precision_of(with_precision(net, "auto")) == "bfloat16"
    config = cfg.defaults()
    config["predict"]["precision"] = "auto"
    assert cfg.validate(config)["predict"]["precision"] == "auto"
    loaded = config_files.load_config(overrides=["model.architecture=unet3d", "predict.precision=auto"])
    assert loaded["predict"]["precision"] == "auto"
