"""Training callbacks: validation with the predictor and ISBI scores, atomic checkpoints and logs.

Only the trainer imports this module (it imports Keras at the top).
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np

from fusionnet_keras.training.rundir import write_log
from fusionnet_keras.utils.atomic import atomic_save_model, atomic_write_text


def inference_model(run, net):
    """``net`` in the prediction precision of the run (``predict.precision``): what validation
    scores and what best.keras / last.keras hold, whatever the training precision is."""
    from fusionnet_keras.models.precision import with_precision

    return with_precision(net, run.config["predict"]["precision"])


class Validate(keras.callbacks.Callback):
    """V^Rand / V^Info of ``net`` on the validation sections every ``validate_every`` epochs; keeps best.keras.

    Without validation sections every epoch's network becomes best.keras.
    Scores go into the epoch's logs (``val_vrand``, ``val_vinfo``,
    ``val_pixel_error``) and the best ones into ``state``. Validation predicts
    with the network in ``predict.precision`` and best.keras is saved in it, so
    the checkpoint is chosen by the score its file gives.
    """

    def __init__(self, run, net, val_images, val_labels, state: dict, total_epochs: int):
        super().__init__()
        self.run, self.net, self.state, self.total_epochs = run, net, state, total_epochs
        self.val_images, self.val_labels = val_images, val_labels

    def on_epoch_end(self, epoch, logs=None):
        from fusionnet_keras.evaluation import isbi_scores, pixel_error
        from fusionnet_keras.inference.predictor import predict

        logs = logs if logs is not None else {}
        done = epoch + 1
        t = self.run.config["train"]
        if not len(self.val_images):
            atomic_save_model(inference_model(self.run, self.net), self.run.out / "best.keras")
            self.state["best_epoch"] = done
            return
        if done % t["validate_every"] and done != self.total_epochs:
            return
        net = inference_model(self.run, self.net)
        prob = predict(net, self.val_images, tta=t["val_tta"], pad=self.run.config["predict"]["pad"],
                       batch_size=self.run.config["predict"]["batch_size"] or None)
        scores = isbi_scores(prob, self.val_labels)
        logs["val_vrand"] = scores["vrand"]
        logs["val_vinfo"] = scores["vinfo"]
        logs["val_pixel_error"] = pixel_error(prob, self.val_labels)
        if scores["vrand"] > self.state["best_vrand"]:
            self.state.update(best_vrand=float(scores["vrand"]), best_vinfo=float(scores["vinfo"]), best_epoch=done)
            atomic_save_model(net, self.run.out / "best.keras")


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: the resume point (wrapper + optimizer), last.keras, state.json (last), log.csv."""

    def __init__(self, run, net, state: dict, total_epochs: int):
        super().__init__()
        self.run, self.net, self.state, self.total_epochs = run, net, state, total_epochs
        self.t0 = time.time()
        self.e0 = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.e0 is None:
            self.e0 = epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        self.state["epoch"] = epoch + 1
        self.state["history"].append({k: float(v) for k, v in logs.items()})
        atomic_save_model(self.model, self.run.ckpt)
        atomic_save_model(inference_model(self.run, self.net), self.run.out / "last.keras")
        atomic_write_text(self.run.state_path, json.dumps(self.state, indent=1) + "\n")
        write_log(self.run, self.state)
        self._report(epoch, logs)

    def _report(self, epoch, logs):
        elapsed = time.time() - self.t0
        eta = elapsed / (epoch + 1 - self.e0) * (self.total_epochs - epoch - 1)
        val = ""
        if "val_vrand" in logs:
            val = f" val V^Rand {logs['val_vrand']:.4f} V^Info {logs['val_vinfo']:.4f}"
        print(
            f"[{self.run.name}] epoch {epoch + 1}/{self.total_epochs} loss {logs.get('loss', float('nan')):.4f}"
            f"{val} elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min",
            flush=True,
        )


def make_callbacks(run, net, val_images, val_labels, state: dict, total_epochs: int) -> list:
    """Validation (first: it adds its scores to the logs), checkpointing, and TensorBoard if configured."""
    callbacks = [Validate(run, net, val_images, val_labels, state, total_epochs),
                 Checkpoint(run, net, state, total_epochs)]
    if run.config["train"]["tensorboard"] and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run.out / "tensorboard"), write_graph=False))
    return callbacks
