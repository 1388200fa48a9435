"""Training callbacks: training time, validation by the task's scores, atomic checkpoints and logs.

Only the trainer and its tasks import this module (it imports Keras at the top).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

import keras
import numpy as np

from fusionnet_keras.training.rundir import write_log
from fusionnet_keras.utils.atomic import atomic_save_model, atomic_write_text


def inference_model(run, net):
    """``net`` in the prediction precision of the run (``predict.precision``): what validation
    scores and what best.keras / last.keras hold, whatever the training precision is."""
    from fusionnet_keras.models.precision import with_precision

    return with_precision(net, run.config["predict"]["precision"])


@dataclasses.dataclass(frozen=True)
class Validation:
    """How a task validates: ``score(net)`` the scores of the network in the prediction precision (logged
    as ``val_<key>``; ``None``: no validation data, every epoch's network becomes best.keras),
    ``better(scores, state)`` whether they beat the best so far, ``best(scores)`` the state's entries of a
    new best, ``first_candidate`` the epochs before which no network becomes best.keras, ``report(scores)``
    a line printed after each validation (or ``None``)."""

    score: Callable | None
    better: Callable[[dict, dict], bool]
    best: Callable[[dict], dict]
    first_candidate: int = 0
    report: Callable[[dict], str] | None = None


class Validate(keras.callbacks.Callback):
    """Scores of ``net`` every ``train.validate_every`` epochs and after the last; keeps best.keras.

    The scores go into the epoch's logs (``val_<key>``), the validation time into
    ``state["val_seconds"]`` and a new best into ``state``. Validation predicts
    with the network in ``predict.precision`` and best.keras is saved in it, so
    the checkpoint is chosen by the score its file gives.
    """

    def __init__(self, run, net, validation: Validation, state: dict, total_epochs: int):
        super().__init__()
        self.run, self.net, self.validation, self.state, self.total_epochs = run, net, validation, state, total_epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        done = epoch + 1
        v = self.validation
        if v.score is None:
            atomic_save_model(inference_model(self.run, self.net), self.run.out / "best.keras")
            self.state["best_epoch"] = done
            return
        if done % self.run.config["train"]["validate_every"] and done != self.total_epochs:
            return
        start = time.time()
        net = inference_model(self.run, self.net)
        scores = v.score(net)
        logs.update({f"val_{key}": float(value) for key, value in scores.items()})
        seconds = time.time() - start
        self.state["val_seconds"] = self.state.get("val_seconds", 0.0) + seconds
        if v.report is not None:
            print(f"[{self.run.name}] validation: {v.report(scores)} ({seconds:.0f} s)", flush=True)
        if done > v.first_candidate and v.better(scores, self.state):
            self.state.update(v.best(scores), best_epoch=done)
            atomic_save_model(net, self.run.out / "best.keras")


class TrainTime(keras.callbacks.Callback):
    """Adds each epoch's training time to ``state["train_seconds"]`` (first among the callbacks, so
    validation and checkpoints are not counted; saved with the state, so a resumed run keeps it)."""

    def __init__(self, state: dict):
        super().__init__()
        self.state = state
        self.start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.state["train_seconds"] = self.state.get("train_seconds", 0.0) + time.time() - self.start


def _commit(run, model, save_resume_point, state: dict) -> None:
    """Write the resume point (``save_resume_point()``, default: the wrapper ``model`` with its optimizer
    to ``checkpoints/last.keras``), then ``state.json`` with the augmenter's random state (not part of a
    .keras file). The state is written last: it says which epoch (and unit) the resume point holds."""
    if any(layer.name == "augmenter" for layer in model.layers):  # the 3-D trainer augments on the host
        state["augmenter"] = [np.asarray(v).tolist() for v in model.get_layer("augmenter").variables]
    if save_resume_point is None:
        atomic_save_model(model, run.ckpt)
    else:
        save_resume_point()
    atomic_write_text(run.state_path, json.dumps(state, indent=1) + "\n")


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: the resume point (wrapper + optimizer), last.keras, state.json (last), log.csv.

    With ``unit`` (the last FusionNetW unit, the units trained one by one) it
    ends the epoch's last unit phase: the losses of the epoch's earlier units
    (``state["partial"]``) join the logs as ``loss_unit<i>``; ``loss`` is the
    last unit's. ``save_resume_point`` replaces the default resume point (see
    :func:`_commit`).
    """

    def __init__(self, run, net, state: dict, total_epochs: int, unit: int | None = None, save_resume_point=None):
        super().__init__()
        self.run, self.net, self.state, self.total_epochs, self.unit = run, net, state, total_epochs, unit
        self.save_resume_point = save_resume_point
        self.t0 = time.time()
        self.e0 = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.e0 is None:
            self.e0 = epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        if self.unit is not None:
            logs.update(self.state.pop("partial", {}), **{f"loss_unit{self.unit}": logs.get("loss", np.nan)})
            self.state["unit"] = 0
        self.state["epoch"] = epoch + 1
        self.state["history"].append({k: float(v) for k, v in logs.items()})
        atomic_save_model(inference_model(self.run, self.net), self.run.out / "last.keras")
        _commit(self.run, self.model, self.save_resume_point, self.state)
        write_log(self.run, self.state)
        self._report(epoch, logs)

    def _report(self, epoch, logs):
        elapsed = time.time() - self.t0
        eta = elapsed / (epoch + 1 - self.e0) * (self.total_epochs - epoch - 1)
        val = ""
        if "val_vrand" in logs:
            val = f" val V^Rand {logs['val_vrand']:.4f} V^Info {logs['val_vinfo']:.4f}"
        elif "val_vi" in logs:  # 3-D affinity networks
            val = f" val VI {logs['val_vi']:.4f}"
        units = "".join(f" unit {k[9:]} {v:.4f}" for k, v in sorted(logs.items()) if k.startswith("loss_unit"))
        print(
            f"[{self.run.name}] epoch {epoch + 1}/{self.total_epochs} loss {logs.get('loss', float('nan')):.4f}"
            f"{' (' + units.strip() + ')' if units else ''}{val} elapsed {elapsed / 60:.1f} min, "
            f"ETA {eta / 60:.1f} min",
            flush=True,
        )


class UnitCheckpoint(keras.callbacks.Callback):
    """End of the phase of FusionNetW unit ``unit`` (not the last) in an epoch, the units trained one by one:
    the resume point (``save_resume_point()``), its loss in ``state["partial"]``, ``state["unit"]``."""

    def __init__(self, run, state: dict, unit: int, units: int, total_epochs: int, save_resume_point):
        super().__init__()
        self.run, self.state, self.unit, self.units, self.total_epochs = run, state, unit, units, total_epochs
        self.save_resume_point = save_resume_point

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", np.nan))
        self.state["unit"] = self.unit
        self.state.setdefault("partial", {})[f"loss_unit{self.unit}"] = loss
        _commit(self.run, self.model, self.save_resume_point, self.state)
        print(f"[{self.run.name}] epoch {epoch + 1}/{self.total_epochs} unit {self.unit}/{self.units} "
              f"loss {loss:.4f}", flush=True)


def make_callbacks(run, net, validation: Validation, state: dict, total_epochs: int, first=(),
                   unit: int | None = None, save_resume_point=None) -> list:
    """The training time, the task's ``first`` callbacks, validation (it adds its scores to the logs),
    checkpointing, and TensorBoard if configured.

    ``unit``, ``save_resume_point``: the last FusionNetW unit and the resume point when the units are
    trained one by one (see :class:`Checkpoint`).
    """
    callbacks = [TrainTime(state), *first, Validate(run, net, validation, state, total_epochs),
                 Checkpoint(run, net, state, total_epochs, unit=unit, save_resume_point=save_resume_point)]
    if run.config["train"]["tensorboard"] and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run.out / "tensorboard"), write_graph=False))
    return callbacks
