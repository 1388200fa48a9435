"""Training callbacks: validation with the predictor and ISBI scores, atomic checkpoints and logs."""

from __future__ import annotations

import json
import time

import numpy as np

from fusionnet_keras.training.rundir import write_log
from fusionnet_keras.utils.atomic import atomic_save_model, atomic_write_text


def _make_callbacks(run, net, val_images, val_labels, state, total_epochs):
    import keras

    from fusionnet_keras.evaluation import isbi_scores, pixel_error
    from fusionnet_keras.inference.predictor import predict

    t = run.config["train"]

    class Validate(keras.callbacks.Callback):
        """V^Rand / V^Info on the validation sections; keeps best.keras."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            done = epoch + 1
            if len(val_images) and (done % t["validate_every"] == 0 or done == total_epochs):
                prob = predict(net, val_images, tta=t["val_tta"], pad=run.config["predict"]["pad"], batch_size=4)
                scores = isbi_scores(prob, val_labels)
                logs["val_vrand"] = scores["vrand"]
                logs["val_vinfo"] = scores["vinfo"]
                logs["val_pixel_error"] = pixel_error(prob, val_labels)
                if scores["vrand"] > state["best_vrand"]:
                    state["best_vrand"] = float(scores["vrand"])
                    state["best_vinfo"] = float(scores["vinfo"])
                    state["best_epoch"] = done
                    atomic_save_model(net, run.out / "best.keras")
            elif not len(val_images):
                atomic_save_model(net, run.out / "best.keras")
                state["best_epoch"] = done

    class Checkpoint(keras.callbacks.Callback):
        """Atomic resume point after every epoch, then state.json (written last)."""

        def __init__(self):
            super().__init__()
            self.t0 = time.time()
            self.e0 = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.e0 is None:
                self.e0 = epoch

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(np.asarray(lr))
            state["epoch"] = epoch + 1
            state["history"].append({k: float(v) for k, v in logs.items()})
            atomic_save_model(self.model, run.ckpt)
            atomic_save_model(net, run.out / "last.keras")
            atomic_write_text(run.state_path, json.dumps(state, indent=1) + "\n")
            write_log(run, state)
            done = epoch + 1 - self.e0
            elapsed = time.time() - self.t0
            eta = elapsed / done * (total_epochs - epoch - 1)
            val = ""
            if "val_vrand" in logs:
                val = f" val V^Rand {logs['val_vrand']:.4f} V^Info {logs['val_vinfo']:.4f}"
            print(
                f"[{run.name}] epoch {epoch + 1}/{total_epochs} loss {logs.get('loss', float('nan')):.4f}"
                f"{val} elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min",
                flush=True,
            )

    callbacks = [Validate(), Checkpoint()]
    if t["tensorboard"] and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run.out / "tensorboard"), write_graph=False))
    return callbacks

