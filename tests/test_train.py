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
from fusionnet_keras.training import config_files
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
    return config_files.load_config([path])


def read_log(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def temp_files(folder):
    return [p for p in Path(folder).rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------------------
# the background run, killed with SIGKILL after its first checkpoint


def _run_and_kill(d, toml_text, stop):
    """Start ``fusionnet-keras train`` on ``toml_text`` in the background; SIGKILL it as soon as its
    state.json satisfies ``stop(state)``. Yields the run's handles (see :func:`_wait_for_kill`)."""
    toml = d / "run.toml"
    toml.write_text(toml_text)
    out = d / "run"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    log = open(d / "output.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusionnet_keras.cli", "train", str(toml), "--out", str(out)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    info = {"killed_at": None, "timed_out": False}

    def watch():
        deadline = time.monotonic() + KILL_TIMEOUT
        while proc.poll() is None:
            if time.monotonic() > deadline:
                info["timed_out"] = True
                break
            try:
                state = json.loads((out / "state.json").read_text())
            except (OSError, ValueError):
                state = None
            if state is not None and stop(state):
                info["killed_at"] = (state["epoch"], state.get("unit", 0))
                break
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    thread = threading.Thread(target=watch, name="kill", daemon=True)
    thread.start()
    yield {"toml": toml, "out": out, "proc": proc, "thread": thread, "info": info, "output": d / "output.txt"}
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    thread.join(5)
    log.close()


def _wait_for_kill(run):
    run["thread"].join(KILL_TIMEOUT + 30)
    assert not run["thread"].is_alive()
    output = run["output"].read_text(errors="replace")
    assert not run["info"]["timed_out"], output[-3000:]
    # killed by us, or (on a fast machine) finished before the kill
    assert run["proc"].returncode in (-signal.SIGKILL, 0), output[-3000:]
    return json.loads((run["out"] / "state.json").read_text())


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    """A FusionNet run killed with SIGKILL after its first checkpoint."""
    yield from _run_and_kill(tmp_path_factory.mktemp("interrupted"),
                             tiny_toml(data, "interrupted", {"train": {"epochs": 3, "steps_per_epoch": 3}}),
                             lambda state: state["epoch"] >= 1)


@pytest.fixture(scope="module")
def interrupted_units(data, tmp_path_factory):
    """A FusionNetW^2 run (units one by one) killed with SIGKILL in the middle of its second epoch,
    after unit 1 and before unit 2."""
    text = tiny_toml(data, "interrupted-units", {"model": {"architecture": "fusionnet_w", "units": 2},
                                                 "train": {"epochs": 3, "steps_per_epoch": 3}})
    yield from _run_and_kill(tmp_path_factory.mktemp("interrupted-units"), text,
                             lambda state: state["epoch"] >= 1 and state.get("unit") == 1)


@pytest.fixture(scope="module")
def resumed(interrupted):
    """Wait for the kill, then resume the run in this process with the same configuration."""
    before = _wait_for_kill(interrupted)
    out = interrupted["out"]
    config = config_files.load_config([interrupted["toml"]])
    summary = train(config, out, resume=True, verbose=0)
    return {**interrupted, "config": config, "summary": summary, "before": before}


# ---------------------------------------------------------------------------
# FusionNetW, unit by unit (runs while the background run trains)


def _weights(net):
    return {layer.name: [np.array(w.numpy()) for w in layer.weights] for layer in net.layers}


def _unit_names(weights, unit):
    return sorted(n for n in weights if n.startswith(f"unit{unit}_") and weights[n])


def _same(a, b, names):
    return all(np.array_equal(x, y) for n in names for x, y in zip(a[n], b[n]))


@pytest.fixture
def spy_units(monkeypatch):
    """The FusionNetW the trainer builds, its initial weights, and its weights after every phase
    (recorded whenever a resume point is written), named by the training wrapper."""
    from fusionnet_keras import models

    record = {"net": None, "initial": None, "phases": []}
    build = models.build_model

    def spy_build(*args, **kwargs):
        record["net"] = build(*args, **kwargs)
        record["initial"] = _weights(record["net"])
        return record["net"]

    commit = train_callbacks._commit

    def spy_commit(run, model, save_resume_point, state):
        commit(run, model, save_resume_point, state)
        record["phases"].append((model.name, _weights(record["net"])))

    monkeypatch.setattr(models, "build_model", spy_build)
    monkeypatch.setattr(train_callbacks, "_commit", spy_commit)
    return record


def _w_config(data, tmp_path, name="w", **train_settings):
    return tiny_config(data, tmp_path, name, model={"architecture": "fusionnet_w", "units": 2},
                       train={"epochs": 2, "steps_per_epoch": 2, **train_settings})


def test_fusionnet_w_units_one_by_one_in_every_epoch(data, tmp_path, capsys, spy_units, interrupted):
    """The 2021 paper's schedule: every epoch trains unit 1 (unit 2 frozen), then unit 2 (unit 1 frozen)."""
    import keras

    from fusionnet_keras import models

    config = _w_config(data, tmp_path)
    assert config["train"]["unit_schedule"] == "units"  # the default
    out = tmp_path / "run"
    summary = train(config, out, verbose=0)
    printed = capsys.readouterr().out
    assert "epoch 1/2 unit 1/2" in printed and "epoch 2/2 unit 1/2" in printed
    assert summary["epochs"] == 2
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 2 and state["unit"] == 0 and len(state["history"]) == 2

    phases = spy_units["phases"]
    assert [name for name, _ in phases] == ["training_unit1", "training_unit2"] * 2
    initial = spy_units["initial"]
    unit1, unit2 = _unit_names(initial, 1), _unit_names(initial, 2)
    assert unit1 and unit2
    before = initial
    for name, after in phases:  # each phase changes its own unit only (batch-norm statistics included)
        trained, frozen = (unit1, unit2) if name == "training_unit1" else (unit2, unit1)
        assert not _same(before, after, trained), name
        assert _same(before, after, frozen), name
        before = after

    fields, rows = read_log(out / "log.csv")
    assert {"loss", "loss_unit1", "loss_unit2", "learning_rate", "val_vrand"} <= set(fields)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(float(r["loss"]) == float(r["loss_unit2"]) for r in rows)
    with np.load(out / "checkpoints" / "units.npz") as saved:  # each unit has its own Adam: 2 epochs of 2 steps
        assert int(saved["adam1/0"]) == int(saved["adam2/0"]) == 4
    assert not (out / "checkpoints" / "last.keras").exists()
    best = keras.saving.load_model(out / "best.keras", compile=False)
    assert isinstance(best, models.FusionNetW) and len(best.outputs) == 2


class _Crash(Exception):
    pass


def test_fusionnet_w_resumes_in_the_middle_of_an_epoch(data, tmp_path, capsys, spy_units, monkeypatch):
    """Killed after unit 1 of epoch 2 (everything on disk is written atomically, so stopping there leaves
    what a kill -9 leaves): the resumed run trains only unit 2 of epoch 2, from the saved states."""
    config = _w_config(data, tmp_path, "w-resume")
    out = tmp_path / "run"
    end_of_unit = train_callbacks.UnitCheckpoint.on_epoch_end

    def crash_after_unit1_of_epoch2(self, epoch, logs=None):
        end_of_unit(self, epoch, logs)
        if epoch == 1:
            raise _Crash

    monkeypatch.setattr(train_callbacks.UnitCheckpoint, "on_epoch_end", crash_after_unit1_of_epoch2)
    with pytest.raises(_Crash):
        train(config, out, verbose=0)
    state = json.loads((out / "state.json").read_text())
    assert (state["epoch"], state["unit"]) == (1, 1) and "loss_unit1" in state["partial"]
    at_crash = spy_units["phases"][-1][1]
    after_epoch1 = spy_units["phases"][1][1]  # unit 2 after epoch 1
    capsys.readouterr()

    spy_units["phases"].clear()
    summary = train(config, out, resume=True, verbose=0)
    printed = capsys.readouterr().out
    assert "resuming unit by unit after unit 1 of epoch 2" in printed
    assert "unit 1/2" not in printed  # unit 1 of epoch 2 is not trained again
    assert summary["epochs"] == 2
    [(name, final)] = spy_units["phases"]
    assert name == "training_unit2"
    initial = spy_units["initial"]  # of the resumed process: a fresh, seeded build before the restore
    unit1, unit2 = _unit_names(initial, 1), _unit_names(initial, 2)
    assert _same(final, at_crash, unit1)  # unit 1 restored from its checkpoint and frozen
    assert not _same(final, after_epoch1, unit2)  # unit 2 restored, then trained once more
    state = json.loads((out / "state.json").read_text())
    assert (state["epoch"], state["unit"]) == (2, 0) and "partial" not in state
    assert [sorted(k for k in h if k.startswith("loss_unit")) for h in state["history"]] == [
        ["loss_unit1", "loss_unit2"]] * 2
    with np.load(out / "checkpoints" / "units.npz") as saved:  # the Adam states came back: 2 epochs of 2 steps
        assert int(saved["adam1/0"]) == int(saved["adam2/0"]) == 4


def test_fusionnet_w_resumes_after_sigkill_in_the_middle_of_an_epoch(interrupted_units, capsys):
    before = _wait_for_kill(interrupted_units)
    assert interrupted_units["proc"].returncode == -signal.SIGKILL  # the stop point lasts a whole unit phase
    epoch, unit = interrupted_units["info"]["killed_at"]
    assert unit == 1 and (before["epoch"], before["unit"]) == (epoch, 1)
    out = interrupted_units["out"]
    capsys.readouterr()
    summary = train(config_files.load_config([interrupted_units["toml"]]), out, resume=True, verbose=0)
    assert f"resuming unit by unit after unit 1 of epoch {epoch + 1}" in capsys.readouterr().out
    assert summary["epochs"] == 3
    state = json.loads((out / "state.json").read_text())
    assert (state["epoch"], state["unit"]) == (3, 0) and len(state["history"]) == 3
    assert state["history"][:epoch] == before["history"]  # completed epochs kept, not redone
    assert state["history"][epoch]["loss_unit1"] == before["partial"]["loss_unit1"]  # the unit done before the kill
    with np.load(out / "checkpoints" / "units.npz") as saved:  # both Adam states survived the kill
        assert int(saved["adam1/0"]) == 3 * 3
        assert int(saved["adam2/0"]) in (3 * 3, 4 * 3)  # + 1 phase if the kill fell after its resume point
    assert temp_files(out) == []


def test_fusionnet_w_joint_training(data, tmp_path, spy_units):
    """unit_schedule = "joint": every unit trains in every step on the sum of the units' losses."""
    config = _w_config(data, tmp_path, "w-joint", unit_schedule="joint", epochs=1)
    out = tmp_path / "run"
    train(config, out, verbose=0)
    net, initial = spy_units["net"], spy_units["initial"]
    after = _weights(net)
    assert not _same(initial, after, _unit_names(initial, 1))
    assert not _same(initial, after, _unit_names(initial, 2))
    assert [name for name, _ in spy_units["phases"]] == ["training_model"]
    assert (out / "checkpoints" / "last.keras").is_file() and not (out / "checkpoints" / "units.npz").exists()


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
    assert config_files.read_config_json(out / "config.json") == resumed["config"]
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
        config_files.load_config(overrides=["train.membrane_weight=0"])
