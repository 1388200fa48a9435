"""3-D affinity training: volumes and split, 3-D augmentation, config, training, resume, the experiment.

The fast tests use a small generated stand-in for fib-medulla (same file layout
and y extent, 40 sections so 10 after keeping every 4th) and a network with two
feature maps; the slow test runs the whole ``affinity3d`` experiment on the real
fib-medulla with a tiny preset.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import numpy as np
import pytest

from fusionnet_keras.data import volumes3d
from fusionnet_keras.data.affinities import OFFSETS, affinities_from_labels
from fusionnet_keras.data.augment3d import AffinityAugment, affinity_y_true, sample_sections
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.training.config_files import load_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "affinity3d"

TINY_TOML = """
name = "tiny-affinity"

[model]
architecture = "{architecture}"
nb_filters = 2
depth = 1
z_kernels = [3, 1]
head_z_kernel = 1
n_residual = 1

[train]
input_shape = {input_shape}
epochs = {epochs}
steps_per_epoch = 2
loss = "{loss}"
validate_every = 1
val_thresholds = [0.5, 0.9]
tensorboard = false

[augment]
elastic_amplitude = 1.0
missing_section = 0.5
misalign = 0.5
misalign_max = 2
"""


def blobs(shape, n, seed):
    """Dense instance ids: nearest of ``n`` random seeds (anisotropic distance), 1..n."""
    from scipy import ndimage

    r = np.random.default_rng(seed)
    markers = np.zeros(shape, np.int32)
    markers[tuple(r.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    _, index = ndimage.distance_transform_edt(markers == 0, sampling=(1, 1, 1), return_indices=True)
    return markers[tuple(index)]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """``$FUSIONNET_DATA_DIR`` with a generated ``fib-medulla/fib-medulla.h5`` (40, 250, 250)."""
    root = tmp_path_factory.mktemp("datasets")
    labels = blobs((40, 250, 250), 300, seed=3).astype(np.uint32)
    from scipy import ndimage

    boundary = ndimage.morphological_gradient(labels, size=(1, 3, 3)) > 0
    image = np.where(boundary, 40, 180).astype(np.uint8)
    (root / "fib-medulla").mkdir()
    with h5py.File(root / "fib-medulla" / "fib-medulla.h5", "w") as f:
        f["image"], f["labels"] = image, labels
    return root, image, labels


def tiny_config(tmp_path, architecture="unet3d", loss="malis", epochs=2, input_shape=(10, 28, 28)):
    path = tmp_path / f"tiny-{architecture}.toml"
    path.write_text(TINY_TOML.format(architecture=architecture, loss=loss, epochs=epochs,
                                     input_shape=list(input_shape)))
    return path


# ---------------------------------------------------------------------------
# volumes and split


def test_fixed_split_never_overlaps_and_keeps_every_4th_section(fake_data, monkeypatch):
    root, image, labels = fake_data
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(root))
    parts = volumes3d.load_parts("fib-medulla")
    ys = {"train": (0, 125), "validation": (125, 150), "test": (150, 250)}
    for name, (y0, y1) in ys.items():
        img, lab = parts[name]
        assert img.shape == lab.shape == (10, y1 - y0, 250)
        assert lab.dtype == np.uint64
        np.testing.assert_array_equal(img, image[::4, y0:y1])
        np.testing.assert_array_equal(lab, labels[::4, y0:y1])
    for split in volumes3d.SPLITS.values():  # the shipped splits
        volumes3d.check_split(split, {"volume": (63, 250, 250), "train": (50, 100, 200), "test": (50, 100, 200)})
    bad = {"train": volumes3d.Part("train", "volume", (0, 130)), "test": volumes3d.Part("test", "volume", (125, 250))}
    with pytest.raises(FusionNetError, match="overlap"):
        volumes3d.check_split(bad, {"volume": (63, 250, 250)})
    with pytest.raises(FusionNetError, match="not inside"):
        volumes3d.check_split({"test": volumes3d.Part("test", "volume", (150, 260))}, {"volume": (63, 250, 250)})
    with pytest.raises(FusionNetError, match="unknown dataset"):
        volumes3d.load_parts("cremi")
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(root / "nowhere"))
    with pytest.raises(FusionNetError, match="not found"):
        volumes3d.load_parts("fib-medulla")


def test_gala_example_loads_as_a_second_dataset(tmp_path, monkeypatch):
    folder = tmp_path / "gala-example"
    folder.mkdir()
    r = np.random.default_rng(0)
    for part in ("train", "test"):
        with h5py.File(folder / f"{part}-image.h5", "w") as f:
            f["stack"] = r.integers(0, 255, (5, 100, 20)).astype(np.uint8)
        with h5py.File(folder / f"{part}-gt.lzf.h5", "w") as f:
            f["stack"] = r.integers(0, 4, (5, 100, 20)).astype(np.int32)
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(tmp_path))
    parts = volumes3d.load_parts("gala-example")
    assert {k: v[0].shape for k, v in parts.items()} == {"train": (5, 75, 20), "validation": (5, 25, 20),
                                                          "test": (5, 100, 20)}


def test_whole_objects_counts_ids_off_the_xy_faces():
    labels = np.zeros((2, 6, 6), np.uint64)
    labels[:, 2:4, 2:4] = 5  # inside
    labels[:, 0, :] = 7  # on a face
    assert volumes3d.whole_objects(labels) == 1


# ---------------------------------------------------------------------------
# augmentation: image and labels transformed alike, targets computed after


def ramps(shape):
    """Float image = row coordinate + 300 * section, labels = the same integers: bilinear sampling of the
    image and nearest sampling of the labels at the same coordinates differ by at most 0.5."""
    z, y, x = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    return (y + 300.0 * z).astype(np.float64), (y + 300 * z).astype(np.int64), (x + 300 * z).astype(np.int64)


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_sections_sample_image_and_labels_at_the_same_coordinates(axis):
    from fusionnet_keras.data.augment3d import elastic_fields

    rows_image, rows_labels, cols_labels = ramps((6, 80, 80))
    image = rows_image if axis == "rows" else np.swapaxes(rows_image, 1, 2).copy()
    labels = rows_labels if axis == "rows" else cols_labels
    rng = np.random.default_rng(0)
    fields = elastic_fields(4, (40, 40), 3.0, 5, rng)
    shifts = np.zeros((4, 2), np.float32)
    shifts[2:] = (2, -1)
    x, y = sample_sections(image, labels, (1, 20, 20), (4, 40, 40), fields, shifts)
    assert np.abs(x - y).max() <= 0.5 + 1e-4
    assert np.abs(fields).max() > 1.0  # the field did move the samples
    # the misalignment shifted sections 2 and 3 only
    plain, _ = sample_sections(image, labels, (1, 20, 20), (4, 40, 40))
    offset = 2 if axis == "rows" else -1
    np.testing.assert_allclose(
        sample_sections(image, labels, (1, 20, 20), (4, 40, 40), None, shifts)[0][2:], plain[2:] + offset)


def test_sections_reflect_outside_the_volume():
    image = np.arange(5 * 6 * 7, dtype=np.float64).reshape(5, 6, 7)
    x, y = sample_sections(image, image.astype(np.int64), (-2, -3, 4), (6, 8, 9))
    index = np.ix_(*(volumes3d_reflect(np.arange(o, o + n), s) for o, n, s in zip((-2, -3, 4), (6, 8, 9), image.shape)))
    np.testing.assert_array_equal(x, image[index])
    np.testing.assert_array_equal(y, image[index])


def volumes3d_reflect(index, size):
    return np.pad(np.arange(size), size, mode="reflect")[index + size]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmented_sample_is_consistent(seed):
    """All transforms on: the image and the labels stay aligned, and y_true are the affinities of the
    transformed labels (brute force over the output box)."""
    _, labels, _ = ramps((8, 60, 60))
    image = ramps((8, 60, 60))[0]
    aug = AffinityAugment((6, 20, 20), (2, 6, 6), orientations=True, elastic_amplitude=2.0, elastic_grid=4,
                          misalign=1.0, misalign_max=2)
    x, y = aug.transform(image, labels, np.random.default_rng(seed))
    assert np.abs(x - y).max() <= 0.5 + 1e-4
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    x_s, y_true = aug.sample(image, labels, rng_a)
    _, y_lab = aug.transform(image, labels, rng_b)
    assert x_s.shape == (6, 20, 20, 1) and y_true.shape == (2, 6, 6, 7)
    c = aug.context
    for dz, dy, dx in np.ndindex(2, 6, 6):
        v = (c[0] + dz, c[1] + dy, c[2] + dx)
        for ch, off in enumerate(((-1, 0, 0), (0, -1, 0), (0, 0, -1))):
            u = tuple(a + b for a, b in zip(v, off))
            same = y_lab[v] == y_lab[u] and y_lab[v] != 0
            assert y_true[dz, dy, dx, ch] == float(same)
            assert y_true[dz, dy, dx, 3 + ch] == float(y_lab[v] != 0 and y_lab[u] != 0)


def test_orientations_turn_image_and_labels_together():
    """Without elastic fields every one of the 8 orientations keeps the image and labels identical."""
    labels = np.random.default_rng(0).integers(1, 50, (4, 30, 30))
    aug = AffinityAugment((4, 12, 12), (2, 4, 4))
    seen = set()
    for seed in range(40):
        x, y = aug.transform(labels.astype(np.float64), labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(x, y)
        seen.add(x.tobytes())
    assert len(seen) > 20


def test_missing_section_and_noise_touch_the_image_only():
    labels = blobs((6, 30, 30), 10, 1)
    image = np.full(labels.shape, 128, np.uint8)
    aug = AffinityAugment((6, 14, 14), (2, 4, 4), orientations=False, missing_section=1.0)
    x, y = aug.transform(image, labels, np.random.default_rng(0))
    assert sum(bool(np.all(s == 0)) for s in x) == 1
    assert np.all((x == 0) | np.isclose(x, 128 / 255))
    noisy = AffinityAugment((6, 14, 14), (2, 4, 4), orientations=False, noise_sigma=0.1)
    x2, y2 = noisy.transform(image, labels, np.random.default_rng(0))
    assert 0.05 < np.std(x2) < 0.15 and x2.min() >= 0 and x2.max() <= 1
    np.testing.assert_array_equal(y2, y)


def test_targets_include_the_first_slices_of_the_box():
    labels = np.ones((4, 6, 6), np.int64)
    labels[:, :, 3:] = 2
    y_true = affinity_y_true(labels, (1, 1, 1))
    aff, mask = affinities_from_labels(labels)
    np.testing.assert_array_equal(np.moveaxis(y_true[..., :3], -1, 0), aff[:, 1:3, 1:5, 1:5])
    assert y_true[..., 3:6].min() == 1.0  # every edge of the box exists (its predecessors are in the input)


def test_augment_targets_follow_label_zero(rng):
    """The training samples' mask: every edge with label 0 as background (the default), the edges away from
    0 only with label 0 unknown; the targets are the same."""
    labels = blobs((6, 20, 20), 8, seed=1).astype(np.int64)
    labels[:, 8:10] = 0  # a boundary band of background
    sample = {z: AffinityAugment((6, 20, 20), (4, 16, 16), elastic_amplitude=0.0, label_zero=z).sample(
        labels.astype(np.uint8), labels, np.random.default_rng(0)) for z in ("background", "unknown")}
    (_, bg), (_, unknown) = sample["background"], sample["unknown"]
    np.testing.assert_array_equal(bg[..., :3], unknown[..., :3])
    assert bg[..., 3:6].min() == 1.0 and unknown[..., 3:6].min() == 0.0
    assert bg[..., 3:6].sum() > unknown[..., 3:6].sum() + 100
    with pytest.raises(FusionNetError, match="label 0 must mean"):
        AffinityAugment((6, 20, 20), (4, 16, 16), label_zero="ignore")


def test_train_label_zero_option(tmp_path):
    from click.testing import CliRunner

    from fusionnet_keras.cli import main
    from fusionnet_keras.cli.train import _checked_config

    assert load_config([tiny_config(tmp_path)])["data"]["label_zero"] == "background"
    config, _ = _checked_config([tiny_config(tmp_path)], (), None, lambda c: str(tmp_path / "run"), False, False,
                                "unknown")
    assert config["data"]["label_zero"] == "unknown"
    result = CliRunner().invoke(main, ["train", str(REPO / "experiments/isbi2012/cpu.toml"), "--label-zero",
                                       "unknown", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--label-zero applies to the 3-D affinity networks" in result.output
    assert not (tmp_path / "run").exists()


def test_augment_refuses_bad_sizes():
    with pytest.raises(FusionNetError, match="square"):
        AffinityAugment((4, 12, 14), (2, 4, 6))
    with pytest.raises(FusionNetError, match="centred"):
        AffinityAugment((4, 12, 12), (3, 4, 4))
    with pytest.raises(FusionNetError, match="smaller than"):
        AffinityAugment((4, 12, 12), (2, 4, 4)).check_volume((1, 30, 30))


# ---------------------------------------------------------------------------
# config


def test_presets_resolve_to_valid_3d_configs():
    for name in ("unet3d_malis", "unet3d_bce", "fusionnet3d_malis", "unet3d_constrained"):
        for preset in ("cpu", "paper", "cpu-long"):
            files = [EXPERIMENT / f"{name}.toml"] + [p for p in (EXPERIMENT / f"{preset}.toml",
                                                                EXPERIMENT / f"{name}.{preset}.toml") if p.exists()]
            config = load_config(files)
            assert config["model"]["architecture"] == name.split("_")[0]
            loss = {"constrained": "constrained_malis"}.get(name.split("_")[1], name.split("_")[1])
            if preset == "cpu" and loss == "malis":  # the CPU preset trains with the constrained variant
                loss = "constrained_malis"
            assert config["train"]["loss"] == loss
            if preset == "paper" and name.startswith("unet3d"):
                assert cfg.output_shape(config) == (3, 116, 116)  # the paper's sizes
                assert config["train"]["input_shape"] == [33, 204, 204]
    # cpu-long: UNet3D and FusionNet3D at (nearly) equal parameter counts, the MALIS networks paired with BCE
    from fusionnet_keras.experiments.affinity3d import MODELS_LONG
    from fusionnet_keras.experiments.common import model_config
    from fusionnet_keras.training.networks import build_network

    long = {name: model_config(EXPERIMENT, "cpu-long", name) for name in MODELS_LONG}
    params = {name: build_network(long[name]).count_params() for name in ("unet3d_malis", "fusionnet3d_malis")}
    assert abs(params["fusionnet3d_malis"] / params["unet3d_malis"] - 1) < 0.06, params
    assert {long[n]["train"]["pretrain_bce_epochs"] for n in MODELS_LONG if n != "unet3d_bce"} == {8}
    assert len({(c["train"]["epochs"], c["train"]["steps_per_epoch"], c["train"]["seed"]) for c in long.values()}) == 1


@pytest.mark.parametrize("argv,seed", [([], 0), (["--seed", "3"], 3)])
def test_experiment_seed_option_reaches_every_network(tmp_path, monkeypatch, capsys, argv, seed):
    """``experiments/affinity3d/run.py --seed N`` sets ``train.seed`` of every network (repeats of the experiment)."""
    from fusionnet_keras.experiments import affinity3d, common

    seen = {}

    def fake_train_models(experiment_dir, preset, out, data, models, overrides=()):
        seen.update({n: common.model_config(experiment_dir, preset, n, overrides) for n in models})
        raise FusionNetError("stopped before training")

    monkeypatch.setattr(affinity3d, "train_models", fake_train_models)
    import importlib.util

    spec = importlib.util.spec_from_file_location("affinity3d_run", EXPERIMENT / "run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # the script's OPTIONS and TTA (its main() only runs as __main__)
    monkeypatch.setattr(sys, "argv", [str(EXPERIMENT / "run.py")])
    code = common.main(affinity3d.run, script.__doc__, str(tmp_path), argv=["--out", str(tmp_path / "r"), *argv],
                       options=script.OPTIONS, tta=script.TTA)
    assert code == 2 and "stopped before training" in capsys.readouterr().err
    assert set(seen) == set(affinity3d.MODELS)
    assert {c["train"]["seed"] for c in seen.values()} == {seed}


def test_config_dispatch_and_validation(tmp_path):
    assert load_config([])["model"]["architecture"] == "fusionnet"  # 2-D default
    config = load_config([tiny_config(tmp_path)])
    assert cfg.output_shape(config) == (2, 12, 12)
    with pytest.raises(FusionNetError, match="unknown config key 'train.crop'"):
        load_config([tiny_config(tmp_path)], ["train.crop=64"])
    with pytest.raises(FusionNetError, match="'train.loss' must be one of malis, constrained_malis, bce"):
        load_config([tiny_config(tmp_path)], ["train.loss=mae"])
    with pytest.raises(FusionNetError, match="input_shape.*does not fit"):
        load_config([tiny_config(tmp_path)], ["train.input_shape=[10,27,27]"])
    with pytest.raises(FusionNetError, match="y == x"):
        load_config([tiny_config(tmp_path)], ["train.input_shape=[10,28,30]"])
    with pytest.raises(FusionNetError, match="z_kernels"):
        load_config([tiny_config(tmp_path)], ["model.z_kernels=[3,1,1,1]"])
    with pytest.raises(FusionNetError, match="odd"):
        load_config([tiny_config(tmp_path)], ["model.z_kernels=[2,1]"])
    # the override picks the schema too
    assert load_config([], ["model.architecture=fusionnet3d", "train.input_shape=[33,334,334]"]
                           )["model"]["n_residual"] == 3
    with pytest.raises(FusionNetError, match="nearest sizes that do: 222"):  # FusionNet3D needs more context
        load_config([], ["model.architecture=fusionnet3d"])


# ---------------------------------------------------------------------------
# training


def test_3d_training_step_is_not_xla_compiled_on_cpu(tmp_path):
    """XLA made the 3-D training step 22-28x slower on a CPU (benchmarks/xla3d.py): the affinity trainer
    compiles without it on TensorFlow without accelerators, for BCE too; 2-D keeps XLA in float32."""
    import keras

    from fusionnet_keras.training.affinities import compile_for_epoch
    from fusionnet_keras.training.networks import build_network
    from fusionnet_keras.utils.hardware import accelerators, training_jit_compile

    if keras.backend.backend() != "tensorflow" or accelerators():
        pytest.skip("the rule is for TensorFlow on CPUs")
    for loss in ("bce", "malis"):
        config = load_config([tiny_config(tmp_path, loss=loss)])
        net = build_network(config)
        compile_for_epoch(net, config)
        assert net.jit_compile is False
    assert training_jit_compile() is True and training_jit_compile(volumetric=True) is False


def _run_train(config_path, out, extra=()):
    from click.testing import CliRunner

    from fusionnet_keras.cli import main

    return CliRunner().invoke(main, ["train", str(config_path), "--out", str(out), *extra])


@pytest.mark.parametrize("architecture,loss", [("unet3d", "malis"), ("fusionnet3d", "bce")])
def test_two_epochs_of_a_tiny_3d_network(tmp_path, fake_data, monkeypatch, architecture, loss):
    import keras

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(fake_data[0]))
    shape = (10, 28, 28) if architecture == "unet3d" else (10, 36, 36)
    result = _run_train(tiny_config(tmp_path, architecture, loss, input_shape=shape), tmp_path / "run")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["epochs"] == 2 and summary["best_epoch"] in (1, 2)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert [round(h["val_vi"], 9) for h in state["history"]].count(round(summary["best_vi"], 9)) >= 1
    assert summary["best_vi"] == min(h["val_vi"] for h in state["history"])
    net = keras.saving.load_model(tmp_path / "run" / "best.keras", compile=False)
    assert net.name == architecture and net.output_shape[-1] == 3
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and "val_vi" in log[0] and "val_fscore" in log[0]


def test_3d_trainer_accepts_precision_auto_and_resolves_it_as_prediction_does(tmp_path, fake_data, monkeypatch):
    """``train.precision = "auto"`` (and the number-format words) for the 3-D networks too: the one trainer
    resolves it with models.precision's resolver (float32 on a CPU without native bf16), and the saved
    config keeps the word."""
    from fusionnet_keras.utils import hardware

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(fake_data[0]))
    monkeypatch.setattr(hardware, "accelerators", lambda: [])
    monkeypatch.setattr(hardware, "cpu_low_precision", lambda: [])
    out = tmp_path / "run"
    result = _run_train(tiny_config(tmp_path, loss="bce", epochs=1), out,
                        ["--set", "train.precision=auto", "--set", "predict.precision=bfloat16"])
    assert result.exit_code == 0, result.output
    assert "train.precision auto: float32" in result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["precision"] == "auto" and saved["predict"]["precision"] == "bfloat16"
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["epochs"] == 1 and summary["train_seconds"] > 0 and summary["val_seconds"] > 0


def test_bce_pretraining_then_malis_keeps_the_optimizer(tmp_path, fake_data, monkeypatch):
    """``train.pretrain_bce_epochs``: BCE first, then MALIS, one optimizer (its step count and the learning-rate
    schedule go on across the switch; across a resume: test_resume_after_kill_9)."""
    import keras

    from fusionnet_keras.training import affinities as at

    config = load_config([tiny_config(tmp_path, epochs=3)], ["train.pretrain_bce_epochs=2"])
    assert [at.loss_name(config, e) for e in range(3)] == ["bce", "bce", "malis"]
    assert at._phases(config, 0) == [(0, 2), (2, 3)]
    assert at._phases(config, 1) == [(1, 2), (2, 3)]
    assert at._phases(config, 2) == [(2, 3)]
    assert at._phases(config, 3) == []
    assert at.first_candidate(config) == 2
    assert at.first_candidate(load_config([tiny_config(tmp_path, epochs=3)], ["train.pretrain_bce_epochs=3"])) == 0
    assert at.first_candidate(load_config([tiny_config(tmp_path, loss="bce", epochs=3)],
                                                   ["train.pretrain_bce_epochs=2"])) == 0
    assert at._phases(load_config([tiny_config(tmp_path, epochs=3)], ["train.pretrain_bce_epochs=5"]),
                      0) == [(0, 3)]
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(fake_data[0]))
    out = tmp_path / "run"
    result = _run_train(tiny_config(tmp_path, epochs=2), out, ["--set", "train.pretrain_bce_epochs=1"])
    assert result.exit_code == 0, result.output
    assert "epochs 1-1: bce loss" in result.output and "epochs 2-2: malis loss" in result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["best_epoch"] == 2  # the pre-training epoch is validated but never the best network
    assert len(json.loads((out / "state.json").read_text())["history"]) == 2
    steps = json.loads((out / "config.json").read_text())["train"]["steps_per_epoch"]
    ckpt = keras.saving.load_model(out / "checkpoints" / "last.keras")
    assert type(ckpt.loss).__name__ == "MalisLoss"
    assert int(ckpt.optimizer.iterations) == 2 * steps


def test_resume_after_kill_9(tmp_path, fake_data):
    """A run killed with SIGKILL right after its first epoch continues from it (with one epoch of BCE
    pre-training: the resumed run trains with MALIS and the same optimizer)."""
    import keras

    config = tiny_config(tmp_path, epochs=3)
    out = tmp_path / "run"
    pretrain = ["--set", "train.pretrain_bce_epochs=1"]
    env = {**os.environ, "FUSIONNET_DATA_DIR": str(fake_data[0]), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "fusionnet_keras.cli", "train", str(config), "--out", str(out),
                             *pretrain],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = out / "state.json"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if state_path.exists() and json.loads(state_path.read_text() or "{}").get("epoch", 0) >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    killed_at = json.loads(state_path.read_text())["epoch"]
    assert 1 <= killed_at < 3, "the run was not killed mid-way"
    os.environ["FUSIONNET_DATA_DIR"], previous = str(fake_data[0]), os.environ.get("FUSIONNET_DATA_DIR")
    try:
        refused = _run_train(config, out, pretrain)
        assert refused.exit_code == 2 and "exists" in refused.output
        result = _run_train(config, out, ["--resume", *pretrain])
    finally:
        if previous is None:
            os.environ.pop("FUSIONNET_DATA_DIR")
        else:
            os.environ["FUSIONNET_DATA_DIR"] = previous
    assert result.exit_code == 0, result.output
    assert f"resuming after epoch {killed_at}" in result.output
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 3 and len(state["history"]) == 3
    assert len((out / "log.csv").read_text().splitlines()) == 4
    assert "bce loss" not in result.output and "malis loss" in result.output
    ckpt = keras.saving.load_model(out / "checkpoints" / "last.keras")
    steps = json.loads((out / "config.json").read_text())["train"]["steps_per_epoch"]
    assert type(ckpt.loss).__name__ == "MalisLoss" and int(ckpt.optimizer.iterations) == 3 * steps


def test_samples_are_a_function_of_seed_epoch_and_step(tmp_path, fake_data, monkeypatch):
    from fusionnet_keras.training import affinities as at

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(fake_data[0]))
    config = load_config([tiny_config(tmp_path)])
    parts = volumes3d.load_parts("fib-medulla", ["train"])
    aug = at.make_augment(config, cfg.output_shape(config))
    a, b = at.samples(config, aug, *parts["train"]), at.samples(config, aug, *parts["train"], epoch=1)
    assert not np.array_equal(a[0][0], b[0][0])
    a.epoch = 1
    for i in range(2):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])


def test_validation_scores():
    from fusionnet_keras.training.affinities import score_affinities

    labels = np.zeros((3, 12, 12), np.uint64)
    labels[:, :, :6], labels[:, :, 6:] = 1, 2
    perfect, _ = affinities_from_labels(labels)
    good = score_affinities(perfect, labels, [0.5])
    assert good["vi"] == pytest.approx(0.0) and good["fscore"] == 1.0
    merged = score_affinities(np.ones_like(perfect), labels, [0.5])
    assert merged["vi_merge"] == pytest.approx(1.0) and merged["fscore"] == 0.0


# ---------------------------------------------------------------------------
# the experiment


TINY_PRESET = """
[model]
nb_filters = 2
depth = 1
z_kernels = [3, 1]
head_z_kernel = 1
n_residual = 1

[train]
input_shape = [10, 28, 28]
epochs = 1
steps_per_epoch = 2
val_thresholds = [0.5, 0.9]
tensorboard = false
"""


def test_experiment_chooses_thresholds_on_the_validation_part(monkeypatch):
    """Every swept method's threshold is the validation part's best; the test part is scored there, and the
    best-on-test oracle is kept apart (never better-labelled than it is)."""
    from fusionnet_keras.experiments import affinity3d

    monkeypatch.setattr(affinity3d, "THRESHOLDS", [0.2, 0.5, 0.8])
    monkeypatch.setattr(affinity3d, "CLASSIFIER", {"epochs": 1, "trees": 5})
    monkeypatch.setattr(affinity3d, "WS_SIZES", (10, 50))
    r = np.random.default_rng(0)
    parts, affs = {}, {}
    for i, part in enumerate(("train", "validation", "test")):
        labels = blobs((4, 24, 24), 12, seed=i).astype(np.uint64)
        target = affinities_from_labels(labels, offsets=list(OFFSETS) + [(0, -4, 0)])[0]  # + one long-range
        affs[part] = np.clip(target * 0.7 + 0.15 + r.normal(0, 0.2, target.shape), 0, 1).astype(np.float32)
        parts[part] = (None, labels)
    from fusionnet_keras.segmentation import multicut

    calls, lifted_edges = [], multicut.affinity_lifted_edges
    monkeypatch.setattr(multicut, "affinity_lifted_edges",
                        lambda g, f, a, offsets: calls.append(list(offsets)) or lifted_edges(g, f, a, offsets))
    result = affinity3d.segment_parts(affs, parts, ws_size=10, log=lambda line: None, offsets=[(0, -4, 0)])
    assert set(result["ws_sizes"]) == {"10", "50"} and 0 <= result["fscore"]["test"] <= 1
    assert result["lifted_edges"] == "affinities"
    for method in affinity3d.SWEPT:
        validation = result[method]["validation"]
        best = min(validation, key=lambda row: row["vi"])
        assert result["chosen"][method] == best["threshold"]
        row, oracle = affinity3d.chosen_row(result, method), affinity3d.oracle_row(result, method)
        assert row["threshold"] == result["chosen"][method] and oracle["vi"] <= row["vi"]
        assert row in result[method]["test"]
        if method in ("multicut", "lifted-multicut"):  # beta and the weighting chosen together on validation
            assert {r["weighting"] for r in validation} == set(affinity3d.WEIGHTINGS)
            assert len(validation) == len(affinity3d.THRESHOLDS) * len(affinity3d.WEIGHTINGS)
            assert result["weighting"][method] == best["weighting"] == row["weighting"]
    assert set(result["segmentation"]) == set(affinity3d.METHODS)
    assert calls and all(offsets == [(0, -4, 0)] for offsets in calls)  # lifted edges from the long-range channel


def test_multicut_ablation_scores_every_variant_at_its_validation_beta(tmp_path, monkeypatch):
    """``experiments/affinity3d/multicut_ablation.py``: multicut, hop-lifted and (long-range network)
    affinity-lifted multicut, each unweighted and size-weighted, beta chosen on the validation part."""
    import importlib.util

    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.data.io.ome import ImageMeta
    from fusionnet_keras.experiments import affinity3d
    from fusionnet_keras.inference.affinities import offsets_attrs
    from fusionnet_keras.segmentation.learned import train_classifier
    from fusionnet_keras.segmentation.pipeline import WatershedOptions

    spec = importlib.util.spec_from_file_location("ablation", EXPERIMENT / "multicut_ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    monkeypatch.setattr(affinity3d, "THRESHOLDS", [0.3, 0.6])
    offsets = list(OFFSETS) + [(0, -4, 0)]
    r, parts = np.random.default_rng(0), {}
    for i, part in enumerate(("validation", "test")):
        labels = blobs((4, 24, 24), 12, seed=i).astype(np.uint64)
        target = affinities_from_labels(labels, offsets=offsets)[0]
        affs = np.clip(target * 0.7 + 0.15 + r.normal(0, 0.2, target.shape), 0, 1).astype(np.float32)
        write_volume(f"{tmp_path / f'{part}-affinities.h5'}:affinities", affs,
                     meta=ImageMeta(channels=True, attributes=offsets_attrs(offsets)))
        parts[part] = (None, labels)
        if part == "validation":
            frag = WatershedOptions(size=10).run(affs[:3])
            train_classifier(affs[:3], frag, labels, epochs=1, trees=5).save(tmp_path / "classifier.npz")
    result = ablation.ablate(tmp_path, parts, 10, log=lambda line: None)
    assert set(result) == {f"{kind}, {w}" for kind in ("multicut", "lifted (2 hops)", "lifted (long-range affinities)")
                           for w in ("none", "size")}
    for variant in result.values():
        assert len(variant["validation"]) == len(variant["test"]) == 2
        assert variant["chosen"] == min(variant["validation"], key=lambda row: row["vi"])["threshold"]


@pytest.mark.slow
def test_affinity3d_experiment_end_to_end(tmp_path, monkeypatch):
    from conftest import datasets_dir
    from fusionnet_keras.data.io import read_volume
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.experiments import affinity3d

    data = datasets_dir()
    if data is None or not (data / "fib-medulla" / "fib-medulla.h5").exists():
        pytest.skip("fib-medulla not found (set FUSIONNET_DATA_DIR)")
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(data))
    # a short sweep and a small forest keep the run at a few minutes (the tiny networks' affinities are poor)
    monkeypatch.setattr(affinity3d, "THRESHOLDS", [0.3, 0.6, 0.9])
    monkeypatch.setattr(affinity3d, "CLASSIFIER", {"epochs": 1, "trees": 10})
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in affinity3d.MODELS:
        (exp / f"{name}.toml").write_text((EXPERIMENT / f"{name}.toml").read_text())
    (exp / "tiny.toml").write_text(TINY_PRESET)
    (exp / "fusionnet3d_malis.tiny.toml").write_text('[train]\ninput_shape = [10, 36, 36]\n')
    # the long-range network with offsets inside the tiny network's context
    (exp / "unet3d_bce_lr.tiny.toml").write_text(f"[model]\noffsets = {json.dumps(LONG_RANGE)}\n")
    monkeypatch.setattr(affinity3d, "MWS_BETAS", (0.3, 0.5))
    monkeypatch.setattr(affinity3d, "MWS_STRIDES", ((1, 1, 1),))
    monkeypatch.setattr(affinity3d, "MWS_SIZES", (0, 30))
    out = tmp_path / "results"
    result = affinity3d.run("tiny", out, exp)
    report = (out / "report.md").read_text()
    gt = volumes3d.load_parts("fib-medulla", ["test"])["test"][1]
    for name in affinity3d.MODELS:
        affs = read_volume(f"{out / name / 'test-affinities.h5'}:affinities")
        channels = len(LONG_RANGE) if name == "unet3d_bce_lr" else 3
        assert affs.shape == (channels, *gt.shape) and affs.dtype == np.float32
        seg = result["segmentation"][name]
        assert len(seg["mean"]["test"]) == len(seg["mean"]["validation"]) == len(affinity3d.THRESHOLDS)
        # the threshold is the validation part's best; the written segmentation is the one scored at it, and
        # the report shows it, with the best-on-test oracle apart
        for method in ("mean", "learned"):
            assert seg["chosen"][method] == min(seg[method]["validation"], key=lambda r: r["vi"])["threshold"]
        mean = read_volume(f"{out / name / 'test-segmentation.h5'}:mean")
        row, oracle = affinity3d.chosen_row(seg, "mean"), affinity3d.oracle_row(seg, "mean")
        assert row["threshold"] == seg["chosen"]["mean"] and oracle["vi"] <= row["vi"]
        assert instance_scores(mean, gt)["vi"] == pytest.approx(row["vi"])
        assert (f"| {affinity3d.LABELS[name]} | mean | {row['threshold']:g} | {row['vi_split']:.3f} |" in report
                and f"{oracle['vi']:.3f} ({oracle['threshold']:g}) |" in report)
    for needle in ("MALIS vs BCE", "UNet3D vs FusionNet3D", "Learned vs mean", "split_vi.png", "test_section.png",
                   "Total wall time", "chosen on the validation part", "oracle"):
        assert needle in report
    mws = result["segmentation"]["unet3d_bce_lr"]["mws"]
    assert len(mws["validation"]) == 2 * 2 and mws["chosen"]["beta"] == min(mws["validation"], key=lambda r: r["vi"])["beta"]
    assert f"| UNet3D + BCE, long range | mws (stride 1,1,1, size {mws['chosen']['size']}) |" in report
    assert instance_scores(read_volume(f"{out / 'unet3d_bce_lr' / 'test-mws.h5'}:mws"), gt)["vi"] == pytest.approx(
        mws["test"]["vi"])
    assert (out / "split_vi.png").stat().st_size > 1000 and (out / "test_section.png").stat().st_size > 1000
    # a second run resumes: nothing is retrained, predicted or segmented again
    stamps = {p: p.stat().st_mtime for p in out.glob("*/*.h5")}
    again = affinity3d.run("tiny", out, exp)
    assert again["train"]["unet3d_malis"]["train_seconds"] == result["train"]["unet3d_malis"]["train_seconds"]
    assert again["segmentation"] == json.loads(json.dumps(result["segmentation"]))
    assert {p: p.stat().st_mtime for p in out.glob("*/*.h5")} == stamps


# ---------------------------------------------------------------------------
# long-range offsets

LONG_RANGE = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -4, 0], [0, 0, -4], [0, 4, -4]]


def test_experiment_chooses_the_mutex_watershed_settings_on_the_validation_part(monkeypatch):
    """The mutex watershed's beta, stride and size are the validation part's best; the test part is segmented
    once at them (and scored so); the report row compares it with the learned agglomeration."""
    from fusionnet_keras.data.affinities import check_network_offsets
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.experiments import affinity3d
    from fusionnet_keras.segmentation.mws import merge_small, mutex_watershed

    monkeypatch.setattr(affinity3d, "MWS_BETAS", (0.3, 0.5, 0.7))
    monkeypatch.setattr(affinity3d, "MWS_STRIDES", ((1, 1, 1), (1, 2, 2)))
    monkeypatch.setattr(affinity3d, "MWS_SIZES", (0, 20))
    offsets = check_network_offsets(LONG_RANGE)
    r = np.random.default_rng(0)
    parts, affs = {}, {}
    for i, part in enumerate(("validation", "test")):
        labels = blobs((4, 24, 24), 10, seed=i).astype(np.uint64)
        target = affinities_from_labels(labels, "background", offsets)[0]
        affs[part] = np.clip(target * 0.7 + 0.15 + r.normal(0, 0.15, target.shape), 0, 1).astype(np.float32)
        parts[part] = (None, labels)
    result = affinity3d.mws_parts(affs, parts, offsets, log=lambda line: None)
    assert len(result["validation"]) == 3 * 2 * 2
    best = min(result["validation"], key=lambda row: row["vi"])
    assert result["chosen"] == {k: best[k] for k in ("beta", "stride", "size")}
    c = result["chosen"]
    seg = merge_small(affs["test"], mutex_watershed(affs["test"], offsets, beta=c["beta"], stride=c["stride"]),
                      c["size"])
    assert np.array_equal(result["segmentation"], seg)
    assert result["test"]["vi"] == pytest.approx(instance_scores(seg, parts["test"][1])["vi"])


def test_long_range_config_is_checked(tmp_path):
    offsets = f"model.offsets={json.dumps(LONG_RANGE)}"
    config = load_config([tiny_config(tmp_path, loss="bce")], [offsets])
    assert cfg.affinity_offsets(config)[3:] == ((-2, 0, 0), (0, -4, 0), (0, 0, -4), (0, 4, -4))
    assert cfg.model_kwargs(config)["offsets"] == LONG_RANGE
    assert cfg.affinity_offsets(load_config([tiny_config(tmp_path, loss="bce")])) == ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
    for overrides, match in [
        ([offsets], "bce"),  # MALIS works on the nearest-neighbour channels only
        ([offsets.replace("-4, 0]", "-9, 0]"), "train.loss=bce"], "reach"),  # beyond the context (4, 8, 8)
        (["model.offsets=[[0, -1, 0], [-1, 0, 0], [0, 0, -1]]", "train.loss=bce"], "nearest neighbours"),
        (["model.offsets=[[-1, 0]]", "train.loss=bce"], "triples"),
    ]:
        with pytest.raises(FusionNetError, match=match) as info:
            load_config([tiny_config(tmp_path)], overrides)
        assert "model.offsets" in str(info.value) and "\n" not in str(info.value)


def test_tiny_long_range_network_trains_and_predicts_every_channel(tmp_path, fake_data, monkeypatch):
    """BCE over all channels: one epoch trains and validates; the network, saved and loaded, knows its offsets
    and the predictor writes one channel per offset, the same for any block."""
    import keras

    from fusionnet_keras.inference.affinities import predict_affinities

    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(fake_data[0]))
    result = _run_train(tiny_config(tmp_path, loss="bce", epochs=1), tmp_path / "run",
                        ["--set", f"model.offsets={json.dumps(LONG_RANGE)}"])
    assert result.exit_code == 0, result.output
    net = keras.saving.load_model(tmp_path / "run" / "best.keras", compile=False)
    assert net.output_shape[-1] == len(LONG_RANGE) and [list(o) for o in net.offsets] == LONG_RANGE
    volume = fake_data[1][:6, :30, :26]
    whole = predict_affinities(net, volume)
    assert whole.shape == (len(LONG_RANGE), 6, 30, 26) and np.all((whole >= 0) & (whole <= 1))
    np.testing.assert_allclose(predict_affinities(net, volume, block=(3, 11, 9)), whole, atol=1e-5)
    with pytest.raises(FusionNetError, match="use 1 orientation"):
        predict_affinities(net, volume, orientations=4)
    # the BCE loss weighs the long-range channels: perfect targets on them lower it
    from fusionnet_keras.data.affinities import AffinityTargets
    from fusionnet_keras.training.affinity_losses import BalancedBCELoss

    labels = blobs((3, 10, 10), 4, seed=0)
    y_true = AffinityTargets(offsets=LONG_RANGE).y_true(labels)[None]
    target = y_true[..., :len(LONG_RANGE)]
    half = np.full_like(target, 0.5)
    good_long = half.copy()
    good_long[..., 3:] = np.clip(target[..., 3:], 0.01, 0.99)
    assert float(BalancedBCELoss()(y_true, good_long)) < float(BalancedBCELoss()(y_true, half))
