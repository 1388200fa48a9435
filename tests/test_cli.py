"""Tests of the command line (fusionnet_keras.cli) through click's CliRunner.

Every user error must end with exit status 2 and exactly one line ``Error: ...``
on stderr, never a traceback. Models are tiny (nb_filters=4, depth=2) and
images 64x64 so that the whole file runs in seconds on a loaded CPU.
"""

import inspect
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from scipy import ndimage

from fusionnet_keras import __version__
from fusionnet_keras.cli import main

from conftest import TINY, randomize_batchnorm, synthetic_em, tiny_train_toml, write_tiff

PAD = ["--pad", "16"]


# ---------------------------------------------------------------------------
# helpers and fixtures


def _runner():
    """A CliRunner keeping stderr apart from stdout (click < 8.2 needs mix_stderr=False)."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def run(*args):
    return _runner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def assert_ok(result):
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output


def assert_user_error(result, *needles):
    """Exit 2, one line ``Error: ...`` on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert result.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny saved FusionNet, a 2-D section and a 3-section stack with labels."""
    import keras

    from fusionnet_keras.models.fusionnet import FusionNet

    d = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = randomize_batchnorm(FusionNet(**TINY), seed=1)
    model.save(d / "tiny.keras")
    image, labels = synthetic_em(3, seed=5)
    return {
        "dir": d,
        "weights": d / "tiny.keras",
        "model": model,
        "image2d": write_tiff(d / "section.tif", image[0]),
        "labels2d": write_tiff(d / "section-labels.tif", labels[0]),
        "stack": write_tiff(d / "stack.tif", image),
        "labels": write_tiff(d / "stack-labels.tif", labels),
        "image_array": image,
        "labels_array": labels,
    }


# ---------------------------------------------------------------------------
# version and help


def test_version():
    result = run("--version")
    assert_ok(result)
    assert __version__ in result.stdout
    assert "fusionnet-keras" in result.stdout


@pytest.mark.parametrize("command", [[], ["predict"], ["affinities"], ["evaluate"], ["info"], ["train"], ["cv"], ["export"]])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(command, flag):
    result = run(*command, flag)
    assert_ok(result)
    assert "Usage:" in result.stdout
    if not command:
        for name in ("predict", "affinities", "evaluate", "info", "train", "cv", "export"):
            assert name in result.stdout


def test_no_command_shows_usage():
    result = run()
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------
# info


def test_info_paper_configuration():
    result = run("info")
    assert_ok(result)
    out = result.stdout
    assert "parameters: 75,080,897" in out
    assert "FusionNet" in out
    assert '"nb_filters": 64' in out and '"depth": 4' in out and '"dtype": "float32"' in out
    assert "640x640" in out
    # the five resolution levels of the paper (Table 1): 640 -> 40 px, 64 -> 1024 maps
    assert "640x640x64" in out
    assert "40x40x1024" in out
    assert "output" in out and "640x640x1" in out


def test_info_saved_tiny_model(files):
    result = run("info", files["weights"], "--size", 64)
    assert_ok(result)
    out = result.stdout
    assert f"parameters: {files['model'].count_params():,}" in out
    assert '"nb_filters": 4' in out and '"depth": 2' in out
    assert "64x64x4" in out and "16x16x16" in out
    assert "64x64x1" in out


def test_info_size_not_divisible(files):
    assert_user_error(run("info", files["weights"], "--size", 30), "30", "divisible")


# ---------------------------------------------------------------------------
# predict


def _library_prediction(files, image, tta=1, pad=16):
    from fusionnet_keras.data.io.images import normalize
    from fusionnet_keras.inference.predictor import predict

    return predict(files["model"], normalize(image), tta=tta, pad=pad)


def test_predict_2d_float32(files, tmp_path):
    out = tmp_path / "out" / "prob.tif"  # the parent folder is created
    result = run("predict", files["image2d"], out, "-w", files["weights"], "--tta", 1, *PAD)
    assert_ok(result)
    assert str(out) in result.stdout
    prob = tifffile.imread(out)
    assert prob.shape == (64, 64) and prob.dtype == np.float32
    assert np.all((prob >= 0) & (prob <= 1))
    np.testing.assert_allclose(prob, _library_prediction(files, files["image_array"][0]), atol=1e-5)


def test_predict_3d_stack_uint8(files, tmp_path):
    out = tmp_path / "prob.tif"
    result = run("predict", files["stack"], out, "-w", files["weights"], "--tta", 1, *PAD, "--dtype", "uint8")
    assert_ok(result)
    u8 = tifffile.imread(out)
    assert u8.shape == (3, 64, 64) and u8.dtype == np.uint8
    ref = np.round(_library_prediction(files, files["image_array"]).astype(np.float64) * 255)
    assert np.abs(u8.astype(np.int16) - ref).max() <= 1
    assert np.mean(u8 == ref) > 0.99


def test_predict_existing_output(files, tmp_path):
    out = tmp_path / "prob.tif"
    old = np.full((5, 7), 0.5, np.float32)
    tifffile.imwrite(out, old)
    before = out.read_bytes()
    result = run("predict", files["image2d"], out, "-w", files["weights"], "--tta", 1, *PAD)
    assert_user_error(result, "exists", "--overwrite")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prob.tif"]  # no temporary files

    # replaced with --overwrite (default --tta 8: the mean of the 8 orientations)
    result = run("predict", files["stack"], out, "-w", files["weights"], *PAD, "--overwrite")
    assert_ok(result)
    prob = tifffile.imread(out)
    assert prob.shape == (3, 64, 64) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, _library_prediction(files, files["image_array"], tta=8), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prob.tif"]


def test_predict_bad_options(files, tmp_path):
    base = ["predict", files["image2d"], tmp_path / "p.tif", "-w", files["weights"]]
    for extra in (["--tta", 4], ["--pad", -1], ["--batch-size", 0], ["--dtype", "int8"]):
        result = run(*base, *extra)
        assert result.exit_code == 2  # click's usage error
        assert "Traceback" not in result.output
    assert not (tmp_path / "p.tif").exists()


# ---------------------------------------------------------------------------
# predict: bad inputs


@pytest.fixture
def bad_inputs(tmp_path, files):
    d = tmp_path
    paths = {}
    # truncated multi-page TIFF
    full = write_tiff(d / "full.tif", files["image_array"])
    data = full.read_bytes()
    (d / "truncated.tif").write_bytes(data[: len(data) // 2])
    (d / "garbage.tif").write_bytes(b"this is not a TIFF file at all")
    paths["truncated"] = d / "truncated.tif"
    paths["garbage"] = d / "garbage.tif"
    (d / "image.bmp").write_bytes(b"BM" + bytes(100))
    paths["unsupported"] = d / "image.bmp"
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tifffile.imwrite(d / "rgb.tif", rgb, photometric="rgb")
    paths["rgb"] = d / "rgb.tif"
    with h5py.File(d / "arrays.h5", "w") as f:
        f["four_d"] = np.zeros((2, 2, 16, 16), np.float32)
        f["empty"] = np.zeros((0, 16, 16), np.float32)
    paths["4d"] = f"{d / 'arrays.h5'}:four_d"
    paths["empty"] = f"{d / 'arrays.h5'}:empty"
    nan = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    nan[3, 4] = np.nan
    paths["nan"] = write_tiff(d / "nan.tif", nan)
    paths["missing"] = d / "does-not-exist.tif"
    return paths


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("missing", "not found"),
        ("truncated", "truncated.tif"),
        ("garbage", "garbage.tif"),
        ("unsupported", ".bmp"),
        ("rgb", "colour"),
        ("4d", "4-D"),
        ("empty", "empty"),
        ("nan", "NaN"),
    ],
)
def test_predict_bad_input(files, bad_inputs, tmp_path, kind, needle):
    out = tmp_path / "out.tif"
    result = run("predict", bad_inputs[kind], out, "-w", files["weights"], "--tta", 1, *PAD)
    assert_user_error(result, needle)
    assert not out.exists()


def test_predict_unsupported_output_format(files, tmp_path):
    result = run("predict", files["image2d"], tmp_path / "out.png", "-w", files["weights"])
    assert_user_error(result, "output format")


# ---------------------------------------------------------------------------
# predict: bad weights


def _save(model, path):
    model.save(path)
    return path


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("weights")
    paths = {"missing": d / "missing.keras"}
    (d / "corrupt.keras").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    paths["corrupt"] = d / "corrupt.keras"
    (d / "empty.keras").write_bytes(b"")
    paths["empty"] = d / "empty.keras"
    # three input channels (an RGB model)
    inp = keras.Input((None, None, 3))
    paths["rgb_model"] = _save(keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp)), d / "rgb.keras")
    # a fixed input size that the 64x64 image does not fit
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(32 * 32, activation="sigmoid")(x)
    paths["fixed_size"] = _save(keras.Model(inp, keras.layers.Reshape((32, 32, 1))(x)), d / "fixed.keras")
    # two output channels
    inp = keras.Input((None, None, 1))
    paths["two_channels"] = _save(keras.Model(inp, keras.layers.Conv2D(2, 1)(inp)), d / "two.keras")
    # not a .keras file
    (d / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    paths["h5"] = d / "weights.h5"
    return paths


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("missing", "not found"),
        ("corrupt", "corrupt.keras"),
        ("empty", "empty.keras"),
        ("rgb_model", "incompatible"),
        ("fixed_size", "fixed.keras"),
        ("two_channels", "channel"),
        ("h5", ".keras"),
    ],
)
def test_predict_bad_weights(files, bad_weights, tmp_path, kind, needle):
    out = tmp_path / "out.tif"
    result = run("predict", files["image2d"], out, "-w", bad_weights[kind], "--tta", 1, *PAD)
    assert_user_error(result, needle)
    assert not out.exists()


def test_info_bad_weights(bad_weights):
    assert_user_error(run("info", bad_weights["corrupt"]), "corrupt.keras")
    assert_user_error(run("info", bad_weights["missing"]), "not found")
    assert_user_error(run("info", bad_weights["rgb_model"]), "incompatible")
    # a valid single-channel Keras model that is not one of the package's architectures
    assert_user_error(run("info", bad_weights["fixed_size"]), "fixed.keras", "FusionNet")


# ---------------------------------------------------------------------------
# evaluate


EVAL_KEYS = {
    "vrand", "vrand_split", "vrand_merge", "vrand_threshold",
    "vinfo", "vinfo_split", "vinfo_merge", "vinfo_threshold",
    "pixel_error", "dice", "sections",
}


def test_evaluate_perfect_prediction(files, tmp_path):
    pred = write_tiff(tmp_path / "pred.tif", (files["labels_array"] / 255.0).astype(np.float32))
    result = run("evaluate", pred, files["labels"], "--json")
    assert_ok(result)
    scores = json.loads(result.stdout)
    assert set(scores) >= EVAL_KEYS
    assert scores["vrand"] == pytest.approx(1.0)
    assert scores["vinfo"] == pytest.approx(1.0)
    assert scores["vrand_split"] == pytest.approx(1.0) and scores["vrand_merge"] == pytest.approx(1.0)
    assert scores["pixel_error"] == 0.0
    assert scores["dice"] == pytest.approx(1.0)
    assert scores["sections"] == 3
    # the label file itself (uint8 0/255) is a perfect prediction too
    result = run("evaluate", files["labels"], files["labels"], "--json")
    assert_ok(result)
    assert json.loads(result.stdout)["vrand"] == pytest.approx(1.0)


def test_evaluate_text_and_json_agree(files, tmp_path):
    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(files["labels_array"] / 255.0, (0, 1.5, 1.5)) + rng.normal(0, 0.1, (3, 64, 64))
    pred = write_tiff(tmp_path / "pred.tif", np.clip(prob, 0, 1).astype(np.float32))
    result = run("evaluate", pred, files["labels"], "--json")
    assert_ok(result)
    assert len(result.stdout.strip().splitlines()) == 1
    scores = json.loads(result.stdout)
    assert set(scores) >= EVAL_KEYS
    for key in EVAL_KEYS - {"sections"}:
        assert 0.0 <= scores[key] <= 1.0, key
    # one of Fiji's thresholds 0.0, 0.1, ..., accumulated in double precision (0.8999999999999999)
    for key in ("vrand_threshold", "vinfo_threshold"):
        assert min(abs(scores[key] - 0.1 * i) for i in range(11)) < 1e-9

    from fusionnet_keras.evaluation.isbi import isbi_scores

    from fusionnet_keras.evaluation.pixel import pixel_error

    ref = isbi_scores(np.clip(prob, 0, 1).astype(np.float32), files["labels_array"])
    assert scores["vrand"] == pytest.approx(ref["vrand"])
    assert scores["vinfo"] == pytest.approx(ref["vinfo"])
    assert scores["pixel_error"] == pytest.approx(pixel_error(np.clip(prob, 0, 1).astype(np.float32), files["labels_array"]))

    text = run("evaluate", pred, files["labels"])
    assert_ok(text)
    out = text.stdout
    for word in ("V^Rand", "V^Info", "pixel error", "Dice", "split", "merge", "threshold"):
        assert word in out
    assert f"{scores['vrand']:.6f}" in out
    assert f"{scores['vinfo']:.6f}" in out


def test_evaluate_median(files, tmp_path):
    from fusionnet_keras.evaluation.postprocess import median_filter

    prob = np.clip(files["labels_array"][0] / 255.0 + np.random.default_rng(4).normal(0, 0.3, (64, 64)), 0, 1)
    prob = prob.astype(np.float32)
    pred = write_tiff(tmp_path / "pred.tif", prob)
    result = run("evaluate", pred, files["labels2d"], "--json", "--median", 2)
    assert_ok(result)
    from fusionnet_keras.evaluation.isbi import isbi_scores

    ref = isbi_scores(median_filter(prob, 2), files["labels_array"][0])
    scores = json.loads(result.stdout)
    assert scores["vrand"] == pytest.approx(ref["vrand"])
    assert scores["sections"] == 1


def test_evaluate_errors(files, tmp_path):
    pred3 = write_tiff(tmp_path / "pred3.tif", (files["labels_array"] / 255.0).astype(np.float32))
    # shape mismatch: a 3-section prediction against 2-D labels
    assert_user_error(run("evaluate", pred3, files["labels2d"]), "shape")
    # non-binary labels
    grey = write_tiff(tmp_path / "grey.tif", files["image_array"])
    assert_user_error(run("evaluate", pred3, grey), "binary")
    # missing files
    assert_user_error(run("evaluate", tmp_path / "nope.tif", files["labels"]), "not found")
    assert_user_error(run("evaluate", pred3, tmp_path / "nope.tif"), "not found")
    # NaN prediction
    nan = (files["labels_array"] / 255.0).astype(np.float32)
    nan[0, 0, 0] = np.nan
    assert_user_error(run("evaluate", write_tiff(tmp_path / "nan.tif", nan), files["labels"]), "NaN")


# ---------------------------------------------------------------------------
# train / cv (errors only: training itself is tested in test_train.py)


@pytest.fixture
def train_toml(tmp_path, files):
    text = tiny_train_toml(files["stack"], files["labels"], "cli-tiny")
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "setting, needle",
    [
        ("train.epoch=2", "'train.epoch'"),
        ("learning_rate=1", "'learning_rate'"),
        ("train.loss=hinge", "'train.loss'"),
        ("train.epochs=0", "'train.epochs'"),
        ("model.depth", "key=value"),
    ],
)
def test_train_bad_set(train_toml, tmp_path, setting, needle):
    out = tmp_path / "run"
    assert_user_error(run("train", train_toml, "--set", setting, "--out", out), needle)
    assert not out.exists()


def test_train_bad_config_files(tmp_path, train_toml):
    assert_user_error(run("train", tmp_path / "missing.toml"), "not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    assert_user_error(run("train", bad), "invalid TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[train]\nepoch = 3\n")
    assert_user_error(run("train", train_toml, unknown), "'train.epoch'", "unknown.toml")


def test_train_output_exists(train_toml, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_user_error(run("train", train_toml, "--out", out), "exists")
    assert (out / "notes.txt").read_text() == "keep me"


def test_train_missing_data(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nimages = "{tmp_path / "nope.tif"}"\nlabels = "{tmp_path / "nope-labels.tif"}"\n'
                   "[model]\nnb_filters = 4\ndepth = 2\n")
    out = tmp_path / "run"
    assert_user_error(run("train", cfg, "--out", out), "not found", "nope.tif")


def test_train_non_binary_labels(train_toml, files, tmp_path):
    out = tmp_path / "run"
    result = run("train", train_toml, "--set", f"data.labels={files['stack']}", "--out", out)
    assert_user_error(result, "binary")


def test_cv_too_few_sections(train_toml, tmp_path):
    out = tmp_path / "cv"
    result = run("cv", train_toml, "--set", "data.train_sections=1", "--set", "data.val_sections=2", "--out", out)
    assert_user_error(result, "3", "sections")
    result = run("cv", train_toml, "--folds", 4, "--out", out)
    assert_user_error(result, "4", "sections")


# ---------------------------------------------------------------------------
# morphology


VOXEL = "60,56.4,56.4"


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    """Two balls (ids 3 and 7) in a 32x48x48 int32 instance volume, its 0/255 mask, an EM-like image."""
    d = tmp_path_factory.mktemp("morphology")
    z, y, x = np.ogrid[:32, :48, :48]
    labels = np.zeros((32, 48, 48), np.int32)
    labels[(z - 16) ** 2 + (y - 14) ** 2 + (x - 14) ** 2 <= 36] = 3
    labels[(z - 16) ** 2 + (y - 32) ** 2 + (x - 32) ** 2 <= 64] = 7
    image = np.where(labels > 0, 180, 60).astype(np.uint8)
    return {
        "labels": write_tiff(d / "instances.tif", labels),
        "mask": write_tiff(d / "mask.tif", ((labels > 0) * 255).astype(np.uint8)),
        "image": write_tiff(d / "em.tif", image),
        "small_image": write_tiff(d / "em-small.tif", image[:, :40]),
        "empty": write_tiff(d / "empty.tif", np.zeros((8, 16, 16), np.uint16)),
        "labels2d": write_tiff(d / "section.tif", labels[16]),
        "array": labels,
    }


def _csv_rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_morphology_help():
    result = run("morphology", "--help")
    assert_ok(result)
    for option in ("--voxel-size", "--out", "--clusters", "--figures", "--image", "--seed", "--overwrite",
                   "--exclude-outliers"):
        assert option in result.stdout


def test_morphology_instances_with_figures(nuclei, tmp_path):
    out = tmp_path / "table.csv"
    figs = tmp_path / "figs"
    result = run("morphology", nuclei["labels"], "--voxel-size", VOXEL, "--out", out, "--figures", figs,
                 "--image", nuclei["image"], "--clusters", 2, "--seed", 1)
    assert_ok(result)
    rows = _csv_rows(out)
    assert [int(r["label"]) for r in rows] == [3, 7]
    assert [int(r["n_voxels"]) for r in rows] == [int(np.sum(nuclei["array"] == i)) for i in (3, 7)]
    vox_um3 = 0.060 * 0.0564 * 0.0564
    assert float(rows[0]["volume_um3"]) == pytest.approx(int(rows[0]["n_voxels"]) * vox_um3, rel=1e-4)
    assert all(0.8 < float(r["sphericity"]) <= 1.0 for r in rows)
    assert sorted(int(r["cluster"]) for r in rows) == [0, 1]
    assert "2 nuclei" in result.stdout and "0 outliers" in result.stdout
    for name in ("fig9_overlay.png", "fig10_features.png"):
        assert (figs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_morphology_exclude_outliers(nuclei, tmp_path, monkeypatch):
    """--exclude-outliers reaches the K-means fit (the paper's way, the default, fits every whole nucleus)."""
    from fusionnet_keras.evaluation import morphology

    seen = []
    annotate = morphology.annotate

    def spy(records, **kwargs):
        seen.append(kwargs["exclude_outliers"])
        return annotate(records, **kwargs)

    monkeypatch.setattr(morphology, "annotate", spy)
    for flag in ((), ("--exclude-outliers",)):
        assert_ok(run("morphology", nuclei["labels"], "--voxel-size", VOXEL, "--out", tmp_path / f"t{len(flag)}.csv",
                      "--clusters", 2, *flag))
    assert seen == [False, True]


def test_morphology_binary_mask(nuclei, tmp_path):
    out = tmp_path / "table.csv"
    figs = tmp_path / "figs"
    # a 0/255 mask is split into 3-D components; no --image: the labels are the background
    assert_ok(run("morphology", nuclei["mask"], "--voxel-size", VOXEL, "--out", out, "--figures", figs))
    rows = _csv_rows(out)
    assert [int(r["label"]) for r in rows] == [1, 2]
    assert sorted(int(r["n_voxels"]) for r in rows) == sorted(int(np.sum(nuclei["array"] == i)) for i in (3, 7))
    assert (figs / "fig9_overlay.png").exists() and (figs / "fig10_features.png").exists()
    # forced to be read as instance ids: the mask is one object
    out2 = tmp_path / "one.csv"
    assert_ok(run("morphology", nuclei["mask"], "--voxel-size", VOXEL, "--out", out2, "--instances"))
    assert [int(r["label"]) for r in _csv_rows(out2)] == [255]


def test_morphology_missing_voxel_size(nuclei, tmp_path):
    result = run("morphology", nuclei["labels"], "--out", tmp_path / "t.csv")
    assert result.exit_code == 2
    assert "--voxel-size" in result.output
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("bad", ["1,2", "60,56.4,-1", "a,b,c", "0,1,1", "60,56.4,56.4,1", "nan,1,1"])
def test_morphology_bad_voxel_size(nuclei, tmp_path, bad):
    assert_user_error(run("morphology", nuclei["labels"], "--voxel-size", bad, "--out", tmp_path / "t.csv"),
                      "voxel-size")
    assert not (tmp_path / "t.csv").exists()


def test_morphology_existing_output(nuclei, tmp_path):
    out = tmp_path / "table.csv"
    out.write_text("keep me\n")
    assert_user_error(run("morphology", nuclei["labels"], "--voxel-size", VOXEL, "--out", out),
                      "exists", "--overwrite")
    assert out.read_text() == "keep me\n"
    assert_ok(run("morphology", nuclei["labels"], "--voxel-size", VOXEL, "--out", out, "--overwrite"))
    assert len(_csv_rows(out)) == 2


def test_morphology_existing_figure(nuclei, tmp_path):
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "fig10_features.png").write_text("old")
    out = tmp_path / "table.csv"
    assert_user_error(run("morphology", nuclei["labels"], "--voxel-size", VOXEL, "--out", out, "--figures", figs),
                      "fig10_features.png")
    assert not out.exists() and (figs / "fig10_features.png").read_text() == "old"


def test_morphology_empty_volume(nuclei, tmp_path):
    out = tmp_path / "table.csv"
    result = run("morphology", nuclei["empty"], "--voxel-size", VOXEL, "--out", out)
    assert_ok(result)
    assert "no nuclei found" in result.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("label,n_voxels,volume_um3")


def test_morphology_2d_labels(nuclei, tmp_path):
    assert_user_error(run("morphology", nuclei["labels2d"], "--voxel-size", VOXEL, "--out", tmp_path / "t.csv"),
                      "3-D")
    assert not (tmp_path / "t.csv").exists()


def test_morphology_image_shape_mismatch(nuclei, tmp_path):
    result = run("morphology", nuclei["labels"], "--voxel-size", VOXEL, "--out", tmp_path / "t.csv",
                 "--image", nuclei["small_image"], "--figures", tmp_path / "figs")
    assert_user_error(result, "shape")
    assert not (tmp_path / "t.csv").exists()


def test_morphology_missing_labels_file(tmp_path):
    assert_user_error(run("morphology", tmp_path / "nope.tif", "--voxel-size", VOXEL, "--out", tmp_path / "t.csv"),
                      "nope.tif")
