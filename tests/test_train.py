"""Tests of fusionnet_keras.training.trainer: run directory, checkpoints, resume after SIGKILL, FusionNetW units.

Training runs are tiny (nb_filters=4, depth=0, 32 px crops + 8 px padding, 2-3
steps per epoch) so that the graph tracing, not the training, dominates. The
interrupted run is a subprocess started early (it runs in the background while
the FusionNetW test trains in-process) and killed with SIGKILL right after its
first epoch is checkpointed; it is then resumed in-process.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from fusionnet_keras.training import config as cfg
from fusionnet_keras.training import callbacks as train_callbacks
from fusionnet_keras.training.losses import PairLoss
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training.crossval import cross_validate
from fusionnet_keras.training.trainer import train
from conftest import synthetic_em, write_tiff

REPO = Path(__file__).resolve().parents[1]
KILL_TIMEOUT = 600  # s; the background run is killed (and the test fails) after this


# ---------------------------------------------------------------------------
# synthetic data and tiny configurations


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    image, labels = synthetic_em(4, seed=11)
    return {
        "images": write_tiff(d / "images.tif", image),
        "labels": write_tiff(d / "labels.tif", labels),
        "image_array": image,
        "labels_array": labels,
        "dir": d,
    }


TINY_SETTINGS = {
    "model": {"nb_filters": 4, "depth": 0},
    "data": {"train_sections": "1-3", "val_sections": "4"},
    "train": {"epochs": 2, "steps_per_epoch": 2, "crop": 32, "pad": 8, "tensorboard": False, "val_tta": 1},
    "predict": {"tta": 1, "pad": 8},
}


def tiny_toml(data, name="tiny", extra=None):
    """TOML text of a tiny run on ``data`` (absolute paths); ``extra``: section -> {key: value}."""
    extra = extra or {}
    sections = {k: dict(v) for k, v in TINY_SETTINGS.items()}
    sections["data"].update(images=str(data["images"]), labels=str(data["labels"]))
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    lines = [f"name = {json.dumps(name)}"]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars are TOML literals
    return "\n".join(lines) + "\n"


def tiny_config(data_, tmp_path, name="tiny", **extra):
    """The validated configuration of :func:`tiny_toml`; keyword arguments: section={key: value}."""
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_toml(data_, name, extra))
    return cfg.load_config([path])


def read_log(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def temp_files(folder):
    return [p for p in Path(folder).rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------------------
# the background run, killed with SIGKILL after its first checkpoint


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("interrupted")
    toml = d / "run.toml"
    toml.write_text(tiny_toml(data, "interrupted", {"train": {"epochs": 3, "steps_per_epoch": 3}}))
    out = d / "run"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    log = open(d / "output.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusionnet_keras.cli", "train", str(toml), "--out", str(out)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    info = {"killed_after": None, "timed_out": False}

    def watch():
        deadline = time.monotonic() + KILL_TIMEOUT
        while proc.poll() is None:
            if time.monotonic() > deadline:
                info["timed_out"] = True
                break
            try:
                epoch = json.loads((out / "state.json").read_text())["epoch"]
            except (OSError, ValueError, KeyError):
                epoch = 0
            if epoch >= 1:
                info["killed_after"] = epoch
                break
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    thread = threading.Thread(target=watch, name="kill-after-first-epoch", daemon=True)
    thread.start()
    yield {"toml": toml, "out": out, "proc": proc, "thread": thread, "info": info, "output": d / "output.txt"}
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    thread.join(5)
    log.close()


@pytest.fixture(scope="module")
def resumed(interrupted):
    """Wait for the kill, then resume the run in this process with the same configuration."""
    interrupted["thread"].join(KILL_TIMEOUT + 30)
    assert not interrupted["thread"].is_alive()
    output = interrupted["output"].read_text(errors="replace")
    assert not interrupted["info"]["timed_out"], output[-3000:]
    proc = interrupted["proc"]
    # killed by us, or (on a fast machine) finished before the kill
    assert proc.returncode in (-signal.SIGKILL, 0), output[-3000:]
    out = interrupted["out"]
    before = json.loads((out / "state.json").read_text())
    config = cfg.load_config([interrupted["toml"]])
    summary = train(config, out, resume=True, verbose=0)
    return {**interrupted, "config": config, "summary": summary, "before": before}


# ---------------------------------------------------------------------------
# FusionNetW, unit by unit (runs while the background run trains)


def test_fusionnet_w_unit_by_unit(data, tmp_path, monkeypatch, capsys, interrupted):
    import keras

    from fusionnet_keras import models

    config = tiny_config(
        data, tmp_path, "w",
        model={"architecture": "fusionnet_w", "units": 2},
        train={"unit_epochs": 1, "steps_per_epoch": 2},
    )
    initial, snapshots = {}, []

    def weights(net):
        return {layer.name: [np.array(w.numpy()) for w in layer.weights] for layer in net.layers}

    build = models.build_model

    def spy_build(*args, **kwargs):
        net = build(*args, **kwargs)
        initial.update(weights(net))
        return net

    save = train_callbacks.atomic_save_model

    def spy_save(model, path):
        if Path(path).name == "last.keras" and Path(path).parent.name != "checkpoints":
            snapshots.append(weights(model))
        save(model, path)

    monkeypatch.setattr(models, "build_model", spy_build)
    monkeypatch.setattr(train_callbacks, "atomic_save_model", spy_save)

    out = tmp_path / "run"
    summary = train(config, out, verbose=0)
    printed = capsys.readouterr().out
    assert "training unit 1/2" in printed and "training unit 2/2" in printed
    assert summary["epochs"] == 2  # units * unit_epochs, not train.epochs
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2

    assert len(snapshots) == 2 and initial
    after1, after2 = snapshots
    unit1 = sorted(n for n in initial if n.startswith("unit1_") and initial[n])
    unit2 = sorted(n for n in initial if n.startswith("unit2_") and initial[n])
    assert unit1 and unit2

    def same(a, b, names):
        return all(np.array_equal(x, y) for n in names for x, y in zip(a[n], b[n]))

    # epoch 1 trains unit 1 only; epoch 2 trains unit 2 only (unit 1 frozen, batch-norm statistics included)
    assert not same(initial, after1, unit1)
    assert same(initial, after1, unit2)
    assert same(after1, after2, unit1)
    assert not same(after1, after2, unit2)

    fields, rows = read_log(out / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert "val_vrand" in fields and all(0 <= float(r["val_vrand"]) <= 1 for r in rows)
    best = keras.saving.load_model(out / "best.keras", compile=False)
    assert isinstance(best, models.FusionNetW) and len(best.outputs) == 2


# ---------------------------------------------------------------------------
# errors before training starts (nothing is written)


def _bad_data(data, tmp_path, images=None, labels=None):
    paths = {}
    for key, arr in (("images", images), ("labels", labels)):
        paths[key] = str(write_tiff(tmp_path / f"{key}.tif", arr)) if arr is not None else str(data[key])
    return paths


def test_non_binary_labels(data, tmp_path):
    labels = data["labels_array"].copy()
    labels[0, :4, :4] = 128
    config = tiny_config(data, tmp_path, data=_bad_data(data, tmp_path, labels=labels))
    with pytest.raises(FusionNetError, match="binary"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_image_label_shape_mismatch(data, tmp_path):
    config = tiny_config(data, tmp_path, data=_bad_data(data, tmp_path, labels=data["labels_array"][:, :, :48]))
    with pytest.raises(FusionNetError, match="shape"):
        train(config, tmp_path / "run")
    config = tiny_config(data, tmp_path, data=_bad_data(data, tmp_path, labels=data["labels_array"][:3]))
    with pytest.raises(FusionNetError, match="shape"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_data(data, tmp_path):
    config = tiny_config(data, tmp_path, data={"images": str(tmp_path / "nope.tif")})
    with pytest.raises(FusionNetError, match="not found") as e:
        train(config, tmp_path / "run")
    assert "nope.tif" in str(e.value)


def test_relative_data_paths_use_the_data_dir(data, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONNET_DATA_DIR", str(data["dir"]))
    config = tiny_config(data, tmp_path, data={"images": "images.tif", "labels": "missing-labels.tif"})
    with pytest.raises(FusionNetError, match="not found") as e:
        train(config, tmp_path / "run")
    assert str(data["dir"] / "missing-labels.tif") in str(e.value)


@pytest.mark.parametrize(
    "sections, needle",
    [({"train_sections": "1-5"}, "out of range"), ({"train_sections": "1-3", "val_sections": "3-4"}, "overlap")],
)
def test_bad_sections(data, tmp_path, sections, needle):
    config = tiny_config(data, tmp_path, data=sections)
    with pytest.raises(FusionNetError, match=needle):
        train(config, tmp_path / "run")


def test_too_few_sections_for_three_folds(data, tmp_path):
    config = tiny_config(data, tmp_path, data={"train_sections": "1", "val_sections": "2"})
    with pytest.raises(FusionNetError, match="3") as e:
        cross_validate(config, tmp_path / "cv", folds=3)
    assert "sections" in str(e.value)
    assert not (tmp_path / "cv").exists()


def test_crop_plus_pad_not_divisible(data, tmp_path):
    config = cfg.defaults()
    config["model"].update(nb_filters=4, depth=2)
    config["data"].update(images=str(data["images"]), labels=str(data["labels"]), train_sections="1-3", val_sections="4")
    config["train"].update(crop=30, pad=16)
    with pytest.raises(FusionNetError, match="divisible"):
        train(config, tmp_path / "run")
    # without a crop the whole 64 px sections are used: 64 + 2 * 15 = 94 is not divisible by 4 either
    config["train"].update(crop=0, pad=15)
    with pytest.raises(FusionNetError, match="divisible"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(data, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(FusionNetError, match="exists"):
        train(tiny_config(data, tmp_path), out)
    with pytest.raises(FusionNetError, match="run directory"):
        train(tiny_config(data, tmp_path), out, overwrite=True)
    assert (out / "thesis.tex").read_text() == "do not delete"


# ---------------------------------------------------------------------------
# the interrupted and resumed run


def test_resume_after_sigkill_continues_to_the_last_epoch(resumed, capsys):
    before, summary = resumed["before"], resumed["summary"]
    assert 1 <= before["epoch"] <= 3
    assert summary["epochs"] == 3
    state = json.loads((resumed["out"] / "state.json").read_text())
    assert state["epoch"] == 3
    assert len(state["history"]) == 3
    # the epochs completed before the kill were kept, not redone
    assert state["history"][: before["epoch"]] == before["history"]
    if before["epoch"] < 3:
        assert state["train_seconds"] > 0


def test_resumed_log_has_every_epoch_once(resumed):
    fields, rows = read_log(resumed["out"] / "log.csv")
    assert fields[0] == "epoch"
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for column in ("loss", "learning_rate", "val_vrand", "val_vinfo", "val_pixel_error"):
        assert column in fields
    for r in rows:
        assert 0.0 <= float(r["val_vrand"]) <= 1.0
        assert float(r["loss"]) >= 0.0
    # the learning rate keeps decaying across the interruption
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[0] > lrs[1] > lrs[2]


def test_run_directory_layout(resumed):
    import keras

    from fusionnet_keras.models.fusionnet import FusionNet

    out = resumed["out"]
    for name in ("config.json", "state.json", "log.csv", "best.keras", "last.keras", "checkpoints/last.keras"):
        assert (out / name).is_file(), name
    assert not (out / "tensorboard").exists()  # train.tensorboard = false
    assert temp_files(out) == []  # no temporary files, even from the killed process
    assert cfg.read_config_json(out / "config.json") == resumed["config"]
    state = json.loads((out / "state.json").read_text())
    assert {"epoch", "best_vrand", "best_vinfo", "best_epoch", "history"} <= set(state)
    assert 1 <= state["best_epoch"] <= 3
    assert state["best_vrand"] == max(h["val_vrand"] for h in state["history"])
    summary = resumed["summary"]
    assert summary["best_model"] == str(out / "best.keras")
    assert summary["best_vrand"] == state["best_vrand"]

    for name in ("best.keras", "last.keras"):
        net = keras.saving.load_model(out / name, compile=False)
        assert isinstance(net, FusionNet)
        assert net.nb_filters == 4 and net.depth == 0
        y = np.asarray(net.predict_on_batch(np.zeros((1, 16, 16, 1), np.float32)))
        assert y.shape == (1, 16, 16, 1)
    # the resume point holds the training graph and the optimizer state
    wrapper = keras.saving.load_model(out / "checkpoints" / "last.keras")
    assert wrapper.optimizer is not None
    # 3 epochs of 3 steps; one more epoch's steps if the kill fell between the checkpoint and state.json
    # (a fresh optimizer after the resume would have counted only the resumed epochs' steps)
    assert int(np.asarray(wrapper.optimizer.iterations)) in (3 * 3, 4 * 3)


def test_finished_run_resumes_as_a_no_op_and_repairs_the_log(resumed, capsys):
    out = resumed["out"]
    log = out / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]))  # as if killed before the last rows were written
    mtime = (out / "checkpoints" / "last.keras").stat().st_mtime_ns
    summary = train(resumed["config"], out, resume=True, verbose=0)
    assert "already trained" in capsys.readouterr().out
    assert summary["epochs"] == 3
    assert (out / "checkpoints" / "last.keras").stat().st_mtime_ns == mtime
    assert log.read_text().splitlines(keepends=True) == lines


def test_resume_with_a_different_config_names_the_key(resumed):
    out = resumed["out"]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    changed = json.loads(json.dumps(resumed["config"]))
    changed["train"]["epochs"] = 4
    changed["train"]["learning_rate"] = 1e-3
    with pytest.raises(FusionNetError) as e:
        train(changed, out, resume=True)
    msg = str(e.value)
    assert "train.epochs" in msg and "train.learning_rate" in msg
    assert "train.loss" not in msg
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_existing_output_without_resume(resumed):
    out = resumed["out"]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    with pytest.raises(FusionNetError, match="exists") as e:
        train(resumed["config"], out)
    assert "--resume" in str(e.value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


# ---------------------------------------------------------------------------
# the loss


@pytest.mark.parametrize("kind", ["mae", "mse", "bce"])
def test_pair_loss_membrane_weight(kind):
    """Membrane pixels (label 0) weigh ``membrane_weight``, cell pixels 1; 1.0 is the plain loss."""
    pred = np.array([[0.2, 0.7], [0.9, 0.4]], dtype=np.float32)
    target = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    if kind == "mae":
        err = np.abs(pred - target)
    elif kind == "mse":
        err = (pred - target) ** 2
    else:
        err = -(target * np.log(pred) + (1 - target) * np.log(1 - pred))
    y_pred = np.stack([pred, target], axis=-1)[None]
    weights = np.where(target == 0, 3.0, 1.0)
    weighted_loss = PairLoss(kind, membrane_weight=3.0)
    plain = float(PairLoss(kind)(np.zeros(1), y_pred))
    weighted = float(weighted_loss(np.zeros(1), y_pred))
    assert plain == pytest.approx(err.mean(), rel=1e-5)
    assert weighted == pytest.approx((err * weights).mean(), rel=1e-5)
    restored = type(weighted_loss).from_config(weighted_loss.get_config())
    assert restored.membrane_weight == 3.0


def test_membrane_weight_is_validated():
    with pytest.raises(FusionNetError, match="membrane_weight"):
        cfg.load_config(overrides=["train.membrane_weight=0"])
