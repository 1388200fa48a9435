"""``fusionnet-keras export MODEL OUT.zip --format bioimageio``: bioimage.io model packages (issue 23).

The packages are checked with bioimage.io's own tools: ``bioimageio.spec`` reads the
description back, ``bioimageio.core``'s model test runs the weights on the test input and
must reproduce the test output (and run the other valid input sizes). Tiny networks here;
the shipped models in the slow tests, there in a process that never imports this package
(the SavedModel weights need TensorFlow only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY, randomize_batchnorm, write_tiff

pytest.importorskip("bioimageio.core", reason="the [bioimageio] extra is not installed")

from fusionnet_keras.cli import main  # noqa: E402
from fusionnet_keras.errors import FusionNetError  # noqa: E402
from fusionnet_keras.export import bioimageio_package as bp  # noqa: E402


def _shipped_crop(name):
    from fusionnet_keras.pretrained.registry import get

    entry = get(name)
    return np.load(entry.folder / entry.card["test"]["input"])


def _export(tmp_path, model, *extra, out="pkg.zip"):
    result = CliRunner().invoke(main, ["export", str(model), str(tmp_path / out), "--format", "bioimageio", *extra])
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.stdout)
    assert result.stdout.startswith(f"wrote {tmp_path / out}"), result.stdout
    return tmp_path / out


def _load(package):
    from bioimageio.spec import load_model_description

    return load_model_description(package, perform_io_checks=False)


def _member(package, name):
    import io

    with zipfile.ZipFile(package) as z:
        return z.read(name) if not name.endswith(".npy") else np.load(io.BytesIO(z.read(name)))


@pytest.fixture(scope="module")
def tiny2d(tmp_path_factory):
    import keras

    from fusionnet_keras.models.fusionnet import FusionNet

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    randomize_batchnorm(FusionNet(**TINY), seed=1).save(path)
    return path


def test_2d_package_passes_the_bioimageio_model_test_and_describes_the_network(tiny2d, tmp_path):
    from bioimageio.spec.model import v0_5

    from fusionnet_keras.inference.predictor import predict
    from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple
    from fusionnet_keras.models.loading import load_model

    package = _export(tmp_path, tiny2d, "--author", "A. Tester")
    assert bp.model_test(package) == "passed"  # runs the SavedModel on test_input, compares with test_output
    assert sorted(os.listdir(tmp_path)) == ["pkg.zip"]  # the test's unzipped weights went elsewhere

    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
    assert {"rdf.yaml", "weights.zip", "test_input.npy", "test_output.npy", "cover.png", "README.md",
            "sample_input.tif", "sample_output.tif"} <= names
    descr = _load(package)
    assert isinstance(descr, v0_5.ModelDescr) and descr.format_version == v0_5.ModelDescr.implemented_format_version
    assert descr.name == "tiny (FusionNet)" and [a.name for a in descr.authors] == ["A. Tester"]
    formats = {k for k, v in descr.weights if v is not None}
    assert formats == {"tensorflow_saved_model_bundle"}
    assert {str(c.doi) for c in descr.cite} == {"10.48550/arXiv.1612.05360", "10.3389/fcomp.2021.613981"}

    # uint8 in, scaled by 1/255 to float32 (what the predictor does with uint8 images)
    raw = descr.inputs[0]
    assert raw.data.type == "uint8"
    steps = [(p.id, dict(p.kwargs)) for p in raw.preprocessing]
    assert ("scale_linear", {"gain": pytest.approx(1 / 255), "offset": 0.0}) in [
        (i, {k: v for k, v in kw.items() if k in ("gain", "offset")}) for i, kw in steps]
    assert steps[-1] == ("ensure_dtype", {"dtype": "float32"})

    # sizes: a multiple of 2**depth; output the input's size with a halo covering the receptive field
    model = load_model(tiny2d)
    multiple, margin = size_multiple(model), receptive_field_margin(model)
    y_in = next(a for a in raw.axes if a.id == "y")
    y_out = next(a for a in descr.outputs[0].axes if a.id == "y")
    assert y_in.size.step == multiple and y_in.size.min % multiple == 0
    assert y_out.halo >= margin and (2 * y_out.halo) % multiple == 0 and y_in.size.min > 2 * y_out.halo
    assert y_out.size.tensor_id == "raw" and y_out.size.offset == 0

    # the test input is the shipped ISBI crop (mirror-padded to the smallest size), the output our predictor's
    test_input, test_output = _member(package, "test_input.npy"), _member(package, "test_output.npy")
    crop = _shipped_crop("isbi2012-fusionnet")
    assert test_input.dtype == np.uint8 and test_input.shape == (1, y_in.size.min, y_in.size.min, 1)
    c = (y_in.size.min - crop.shape[0]) // 2
    np.testing.assert_array_equal(test_input[0, c:c + crop.shape[0], c:c + crop.shape[1], 0], crop)
    expected = predict(model, test_input[0, ..., 0] / np.float32(255), tta=1, pad=0, precision="float32")
    np.testing.assert_allclose(test_output[0, ..., 0], expected, atol=1e-5)

    readme = _member(package, "README.md").decode()
    assert "## Validation" in readme and f"the halo is {y_out.halo} px" in readme
    import imageio.v3 as iio

    cover = iio.imread(_member(package, "cover.png"))
    assert cover.ndim == 3 and cover.shape[1] == 2 * cover.shape[0]
    assert iio.imread(_member(package, "sample_input.tif")).shape == crop.shape


def test_3d_package_passes_the_bioimageio_model_test_with_valid_sizes(tmp_path):
    import keras

    from fusionnet_keras.models.unet3d import UNet3D

    keras.utils.set_random_seed(0)
    net = randomize_batchnorm(UNet3D(nb_filters=2, depth=1, z_kernels=1, head_z_kernel=1), seed=1)
    net.save(tmp_path / "aff.keras")
    package = _export(tmp_path, tmp_path / "aff.keras", "--name", "tiny affinities")
    assert bp.model_test(package) == "passed"
    descr = _load(package)
    geometry = net.geometry
    in_axes = {a.id: a for a in descr.inputs[0].axes}
    out_axes = {a.id: a for a in descr.outputs[0].axes}
    for i, axis in enumerate("zyx"):
        assert (in_axes[axis].size.min, in_axes[axis].size.step) == (geometry.min_input[i], geometry.multiple[i])
        assert out_axes[axis].size.offset == -geometry.loss[i]
    assert [str(c) for c in out_axes["channel"].channel_names] == ["affinity_z", "affinity_y", "affinity_x"]
    assert "10.48550/arXiv.1707.08935" in {str(c.doi) for c in descr.cite}
    test_input, test_output = _member(package, "test_input.npy"), _member(package, "test_output.npy")
    assert test_output.shape == (1, *(s - loss for s, loss in zip(test_input.shape[1:4], geometry.loss)), 3)
    raw = net.predict(test_input[..., :].astype(np.float32) / 255, verbose=0)
    np.testing.assert_allclose(test_output, raw, atol=1e-5)


def test_sample_gives_the_test_input_and_a_failed_model_test_leaves_nothing(tiny2d, tmp_path, monkeypatch):
    from fusionnet_keras.models.loading import load_model

    rng = np.random.default_rng(3)
    sample = rng.integers(0, 256, (150, 141), dtype=np.uint8)
    write_tiff(tmp_path / "sample.tif", sample)
    crop, real = bp.Geometry(load_model(tiny2d)).fit(bp._read_sample(tmp_path / "sample.tif", 2))
    # cut to the largest valid size inside the sample (a multiple of 4 from the minimum), centred, all real
    h, w = crop.shape
    assert h <= 150 and w <= 141 and 150 - h < 4 and 141 - w < 4 and real == (slice(0, h), slice(0, w))
    np.testing.assert_array_equal(crop, sample[(150 - h) // 2:(150 - h) // 2 + h, (141 - w) // 2:(141 - w) // 2 + w])

    # a package whose test output the weights do not reproduce fails --check and is not written
    tensors = bp.package_tensors

    def wrong(*args):
        test_in, test_out, real = tensors(*args)
        return test_in, test_out + np.float32(0.01), real

    monkeypatch.setattr(bp, "package_tensors", wrong)
    with pytest.raises(RuntimeError, match="model test failed"):
        bp.export_bioimageio(tiny2d, tmp_path / "bad.zip", sample=tmp_path / "sample.tif", check=True)
    assert sorted(os.listdir(tmp_path)) == ["sample.tif"]


def test_names_and_formats_are_checked_before_any_work(tmp_path):
    from fusionnet_keras.export import check_format, export

    with pytest.raises(FusionNetError, match="unsupported export format 'onnx'"):
        check_format("onnx")
    with pytest.raises(FusionNetError, match="bioimage.io wants 5 to 128"):
        export("isbi2012-fusionnet", tmp_path / "p.zip", name="abc")
    assert bp.default_name(None, "/x/my.model.keras", type("UNet3D", (), {})()) == "my-model (UNet3D)"
    assert os.listdir(tmp_path) == []


def _model_test_elsewhere(package, cwd):
    """bioimageio.core's model test in a fresh process that never imports fusionnet_keras."""
    code = ("import sys; from bioimageio.core import test_model; s = test_model(sys.argv[1]); "
            "assert 'fusionnet_keras' not in sys.modules; print(s.status)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code, str(package)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["isbi2012-fusionnet", "fib-medulla-affinities"])
def test_shipped_models_export_and_pass_the_model_test_without_this_package(name, tmp_path):
    package = _export(tmp_path, name)
    descr = _load(package)
    assert descr.name == name
    assert _model_test_elsewhere(package, tmp_path) == "passed"
