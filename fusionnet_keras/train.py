"""Training with Keras ``fit``: augmentation on the accelerator, atomic checkpoints, resume.

The training graph wraps the segmentation network: ``(image, label)`` go
through :class:`~fusionnet_keras.augment.Augmenter` (elastic warp of both,
noise on the image; identity at inference) inside the model, so the
augmentation runs in the training step on the device, not in the CPU input
pipeline. Each output of the wrapper is ``concat([prediction, warped_label])``
and :class:`PairLoss` compares the two channels (the ``y`` fed by the input
pipeline is ignored).

Run directory layout (``OUT``)::

    config.json          the resolved configuration
    state.json           epoch, unit, best score (written atomically every epoch)
    checkpoints/last.keras   wrapper model + optimizer state (atomic; resume point)
    best.keras           the plain network with the best validation V^Rand
    last.keras           the plain network after the last epoch
    log.csv              per-epoch loss, learning rate, validation scores
    tensorboard/         TensorBoard logs (TensorFlow backend)

Resuming (``resume=True``) after an interruption, ``kill -9`` included,
continues from the last completed epoch with the optimizer state, the
augmentation random state, the learning-rate schedule and the best score.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import config as cfg
from .atomic import atomic_save_model, atomic_write_text
from .errors import FusionNetError
from .settings import data_dir


def resolve_data_path(spec: str) -> str:
    """A data path from the config: absolute, or relative to ``$FUSIONNET_DATA_DIR``."""
    path, sep, key = spec.partition(":") if spec.count(":") == 1 and not spec[1:3] == ":\\" else (spec, "", "")
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = data_dir() / p
    return f"{p}{sep}{key}"


def load_pairs(config: dict):
    """Read and check the image / label volumes named by ``config['data']``."""
    from .data import binarize_labels
    from .io import load_image, read_volume

    images_path = resolve_data_path(config["data"]["images"])
    labels_path = resolve_data_path(config["data"]["labels"])
    for p in (images_path, labels_path):
        if not Path(p.split(":")[0]).exists():
            raise FusionNetError(
                f"data not found: {p} (set FUSIONNET_DATA_DIR to the folder holding it; see data/README.md)"
            )
    images = load_image(images_path)
    labels = read_volume(labels_path)
    if images.ndim == 2:
        images = images[None]
    if labels.ndim == 2:
        labels = labels[None]
    labels = binarize_labels(labels, images)
    return images.astype("float32"), labels.astype("float32")


def split_sections(config: dict, n: int):
    from .data import section_range

    train = section_range(config["data"]["train_sections"], n)
    val_spec = config["data"]["val_sections"].strip()
    val = section_range(val_spec, n) if val_spec else np.array([], dtype=int)
    overlap = set(np.asarray(train).tolist()) & set(np.asarray(val).tolist())
    if overlap:
        raise FusionNetError(f"train and validation sections overlap: {sorted(i + 1 for i in overlap)}")
    return np.asarray(train), np.asarray(val)


# ---------------------------------------------------------------------------
# the training graph


def _register():
    import keras

    @keras.saving.register_keras_serializable(package="fusionnet_keras")
    class PairLoss(keras.losses.Loss):
        """Loss between channel 0 (prediction) and channel 1 (warped label) of ``y_pred``.

        ``y_true`` is ignored: the label is warped inside the model together with the image.
        """

        def __init__(self, kind="mae", membrane_weight=1.0, name=None, **kwargs):
            super().__init__(name=name or f"pair_{kind}", **kwargs)
            if kind not in ("mae", "mse", "bce"):
                raise ValueError(f"loss must be mae, mse or bce, got {kind!r}")
            if not membrane_weight > 0:
                raise ValueError(f"membrane_weight must be > 0, got {membrane_weight!r}")
            self.kind = kind
            self.membrane_weight = float(membrane_weight)

        def call(self, y_true, y_pred):
            from keras import ops

            pred, target = y_pred[..., 0], y_pred[..., 1]
            if self.kind == "bce":
                eps = 1e-6
                pred = ops.clip(pred, eps, 1.0 - eps)
                err = -(target * ops.log(pred) + (1.0 - target) * ops.log(1.0 - pred))
            elif self.kind == "mae":
                err = ops.abs(pred - target)
            else:
                err = ops.square(pred - target)
            if self.membrane_weight != 1.0:
                # membrane pixels (label 0) weigh membrane_weight, cell pixels 1
                err = err * (1.0 + (self.membrane_weight - 1.0) * (1.0 - target))
            return ops.mean(err, axis=(1, 2))

        def get_config(self):
            return {"kind": self.kind, "membrane_weight": self.membrane_weight, "name": self.name,
                    "reduction": self.reduction}

    return PairLoss


_PAIR_LOSS = None


def _pair_loss_class():
    global _PAIR_LOSS
    if _PAIR_LOSS is None:
        _PAIR_LOSS = _register()
    return _PAIR_LOSS


def PairLoss(kind="mae", membrane_weight=1.0):
    return _pair_loss_class()(kind, membrane_weight=membrane_weight)


def register_custom_objects() -> None:
    """Register everything a training checkpoint refers to (needed to load one in a new process)."""
    from . import augment, models  # noqa: F401  (their classes register themselves on import)

    _pair_loss_class()


def single_output(net):
    """``net`` itself, or for a multi-output FusionNetW a view of its last unit (weights shared)."""
    import keras

    if len(net.outputs) <= 1:
        return net
    view = keras.Model(net.inputs, net.outputs[-1], name=f"{net.name}_last_unit")
    view.size_multiple = 2**net.depth
    return view


def build_training_model(net, input_size: int, config: dict):
    """Wrap ``net``: ``(image, label)`` -> Augmenter -> net -> ``concat(pred, warped label)`` per output."""
    import keras

    from .augment import Augmenter

    aug = config["augment"]
    image = keras.Input(shape=(input_size, input_size, 1), name="image")
    label = keras.Input(shape=(input_size, input_size, 1), name="label")
    augmenter = Augmenter(
        elastic_amplitude=aug["elastic_amplitude"],
        noise_sigma=aug["noise_sigma"],
        grid_size=aug["elastic_grid"],
        seed=config["train"]["seed"],
        dtype="float32",  # the warp is computed in float32 under any precision policy
        name="augmenter",
    )
    warped_image, warped_label = augmenter((image, label))
    preds = net(warped_image)
    if not isinstance(preds, (list, tuple)):
        preds = [preds]
    outputs = [
        keras.layers.Concatenate(dtype="float32", name=f"pair{i + 1}")([p, warped_label]) for i, p in enumerate(preds)
    ]
    return keras.Model([image, label], outputs, name="training_model")


def _compile(model, config, steps_per_epoch, unit=None, n_outputs=1):
    import keras

    t = config["train"]
    schedule = keras.optimizers.schedules.ExponentialDecay(
        t["learning_rate"], decay_steps=max(1, steps_per_epoch), decay_rate=t["lr_decay"]
    )
    losses = [PairLoss(t["loss"], t["membrane_weight"]) for _ in range(n_outputs)]
    weights = None
    if n_outputs > 1 and unit is not None:
        weights = [1.0 if i + 1 == unit else 0.0 for i in range(n_outputs)]
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss=losses if n_outputs > 1 else losses[0],
        loss_weights=weights,
    )


# ---------------------------------------------------------------------------
# callbacks


def _make_callbacks(run, net, val_images, val_labels, state, total_epochs):
    import keras

    from .metrics import isbi_scores, pixel_error
    from .predictor import predict

    t = run.config["train"]
    val_net = single_output(net)  # FusionNetW: score the last unit's output

    class Validate(keras.callbacks.Callback):
        """V^Rand / V^Info on the validation sections; keeps best.keras."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            done = epoch + 1
            if len(val_images) and (done % t["validate_every"] == 0 or done == total_epochs):
                prob = predict(val_net, val_images, tta=t["val_tta"], pad=run.config["predict"]["pad"], batch_size=4)
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


# ---------------------------------------------------------------------------
# runs


def write_log(run, state: dict) -> None:
    """(Re)write ``log.csv`` from ``state["history"]``: one row per completed epoch (0-based).

    Derived from state.json, so after an interruption at any point it lists
    every completed epoch exactly once; columns are the union of the logged
    keys (a blank cell where an epoch has no value, e.g. no validation).
    """
    import csv
    import io

    history = state["history"]
    keys = sorted({k for row in history for k in row})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch"] + keys)
    for epoch, row in enumerate(history):
        writer.writerow([epoch] + [repr(float(row[k])) if k in row else "" for k in keys])
    atomic_write_text(run.out / "log.csv", buf.getvalue())


class Run:
    def __init__(self, config, out):
        self.config = config
        self.out = Path(out)
        self.name = config["name"]
        self.ckpt = self.out / "checkpoints" / "last.keras"
        self.state_path = self.out / "state.json"


def prepare_run_dir(config: dict, out, resume=False, overwrite=False) -> tuple[Run, dict]:
    """Create / check the run directory; return the run and its state."""
    run = Run(config, out)
    state = {"epoch": 0, "best_vrand": -1.0, "best_vinfo": -1.0, "best_epoch": 0, "history": []}
    if run.out.exists() and not run.out.is_dir():
        raise FusionNetError(f"output exists and is not a directory: {run.out}")
    exists = run.out.exists() and any(run.out.iterdir())
    if exists and (overwrite or resume) and not (run.out / "config.json").exists():
        # never delete (or train into) a folder that is not a run directory, e.g. --out ~
        raise FusionNetError(f"{run.out} is not empty and is not a fusionnet-keras run directory (no config.json)")
    if exists and overwrite:
        shutil.rmtree(run.out)
        exists = False
    if exists and not resume:
        raise FusionNetError(f"output directory exists: {run.out} (use --resume to continue or --overwrite)")
    if exists:
        saved = cfg.read_config_json(run.out / "config.json") if (run.out / "config.json").exists() else None
        if saved is not None:
            changed = cfg.diff(saved, config)
            if changed:
                raise FusionNetError(
                    f"cannot resume {run.out}: config differs from the saved one in {', '.join(changed)}"
                )
        if run.state_path.exists() and run.ckpt.exists():
            state = json.loads(run.state_path.read_text())
            write_log(run, state)  # the rows of the completed epochs, whatever the kill interrupted
        for folder in (run.out, run.ckpt.parent):  # temporaries of writes interrupted by a kill
            for tmp in folder.glob(".*.tmp-*"):
                if tmp.is_file():
                    tmp.unlink()
    run.out.mkdir(parents=True, exist_ok=True)
    cfg.save_config(config, run.out / "config.json")
    return run, state


def train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    """Train the configured network; return a summary dict (best scores, paths, timings).

    ``config['train']['precision']`` sets the Keras dtype policy for this run only;
    the previous global policy is restored afterwards.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    try:
        return _train(config, out, resume=resume, overwrite=overwrite, verbose=verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    import keras

    from .data import make_dataset
    from .models import build_model

    config = cfg.validate(config)
    images, labels = load_pairs(config)
    train_idx, val_idx = split_sections(config, len(images))
    t = config["train"]
    m = config["model"]
    units = m["units"] if m["architecture"] == "fusionnet_w" else 1

    size = t["crop"] or images.shape[1]
    if images.shape[1] != images.shape[2] and not t["crop"]:
        raise FusionNetError(
            f"sections are {images.shape[1]}x{images.shape[2]}; set train.crop for non-square sections"
        )
    input_size = size + 2 * t["pad"]
    multiple = 2 ** m["depth"]
    if input_size % multiple:
        raise FusionNetError(
            f"training input {size} + 2 * pad {t['pad']} = {input_size} is not divisible by 2**depth = {multiple}"
        )
    n_samples = len(train_idx) * (8 if t["enrich"] else 1)
    steps = t["steps_per_epoch"] or max(1, math.ceil(n_samples / t["batch_size"]))
    unit_epochs = t["unit_epochs"] if units > 1 and t["unit_epochs"] else 0
    total_epochs = unit_epochs * units if unit_epochs else t["epochs"]

    # only now, with the data and the sizes checked, create (or check) the run directory
    run, state = prepare_run_dir(config, out, resume=resume, overwrite=overwrite)
    keras.utils.set_random_seed(t["seed"])
    keras.mixed_precision.set_global_policy(t["precision"])
    if state["epoch"] >= total_epochs:
        print(f"[{run.name}] already trained for {state['epoch']} epochs", flush=True)
        return summary(run, state)

    ds = make_dataset(
        images[train_idx],
        labels[train_idx],
        t["batch_size"],
        shuffle=True,
        seed=t["seed"],
        enrich=t["enrich"],
        pad=t["pad"],
        repeat=True,
        crop=t["crop"] or None,
        drop_remainder=True,
    )
    if units > 1:  # one (ignored) target per FusionNetW output
        ds = ds.map(lambda x, y: ((x, y), (y,) * units))
    else:
        ds = ds.map(lambda x, y: ((x, y), y))

    if state["epoch"] > 0:
        register_custom_objects()  # a new process has not imported the augmentation layers yet
        model = keras.saving.load_model(run.ckpt)
        net = model.get_layer(m["architecture"] if m["architecture"] != "fusionnet_w" else "fusionnet_w")
        print(f"[{run.name}] resuming after epoch {state['epoch']} from {run.ckpt}", flush=True)
    else:
        net = build_model(m["architecture"], **cfg.model_kwargs(config))
        model = build_training_model(net, input_size, config)
        _compile(model, config, steps, unit=1 if unit_epochs else None, n_outputs=units)

    val_images, val_labels = images[val_idx], labels[val_idx]
    callbacks = _make_callbacks(run, net, val_images, val_labels, state, total_epochs)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t0 = time.time()
    if unit_epochs:
        # FusionNetW: train unit i, freeze it, then train unit i + 1 (Quan et al. 2021, sec. 3.4)
        while state["epoch"] < total_epochs:
            unit = state["epoch"] // unit_epochs + 1
            end = unit * unit_epochs
            net.set_trainable_unit(unit)
            if state["epoch"] % unit_epochs == 0 or model.optimizer is None:
                _compile(model, config, steps, unit=unit, n_outputs=units)
            print(f"[{run.name}] training unit {unit}/{units} (epochs {state['epoch'] + 1}-{end})", flush=True)
            model.fit(ds, epochs=end, initial_epoch=state["epoch"], steps_per_epoch=steps,
                      callbacks=callbacks, verbose=verbose)
    else:
        model.fit(ds, epochs=total_epochs, initial_epoch=state["epoch"], steps_per_epoch=steps,
                  callbacks=callbacks, verbose=verbose)
    state["train_seconds"] = state.get("train_seconds", 0.0) + time.time() - t0
    atomic_write_text(run.state_path, json.dumps(state, indent=1) + "\n")
    return summary(run, state)


def summary(run: Run, state: dict) -> dict:
    return {
        "name": run.name,
        "out": str(run.out),
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_vrand": state["best_vrand"],
        "best_vinfo": state["best_vinfo"],
        "best_model": str(run.out / "best.keras"),
        "train_seconds": state.get("train_seconds"),
    }


def cross_validate(config: dict, out, folds=3, resume=False, overwrite=False) -> dict:
    """k-fold cross-validation over the train + validation sections; per-fold and mean scores."""
    import keras

    from .data import kfold_splits
    from .metrics import isbi_scores, pixel_error
    from .predictor import predict

    config = cfg.validate(config)
    images, labels = load_pairs(config)
    train_idx, val_idx = split_sections(config, len(images))
    pool = np.concatenate([train_idx, val_idx])
    splits = kfold_splits(len(pool), k=folds, seed=config["train"]["seed"])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FusionNetError(f"output exists and is not a directory: {out}")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FusionNetError(f"output directory exists: {out} (use --resume to continue or --overwrite)")
    if overwrite and out.exists() and any(out.iterdir()):
        is_cv = (out / "cv.json").exists() or any((p / "config.json").exists() for p in out.glob("fold*"))
        if not is_cv:
            raise FusionNetError(f"{out} is not empty and is not a cross-validation directory (no cv.json or fold*/)")
        shutil.rmtree(out)
    results = []
    for i, (tr, va) in enumerate(splits):
        fold = {**config, "name": f"{config['name']}-fold{i + 1}"}
        fold["data"] = {
            **config["data"],
            "train_sections": ",".join(str(s + 1) for s in pool[tr]),
            "val_sections": ",".join(str(s + 1) for s in pool[va]),
        }
        summ = train(fold, out / f"fold{i + 1}", resume=resume)
        net = single_output(keras.saving.load_model(summ["best_model"]))
        prob = predict(net, images[pool[va]], tta=config["predict"]["tta"], pad=config["predict"]["pad"])
        scores = isbi_scores(prob, labels[pool[va]])
        results.append(
            {
                "fold": i + 1,
                "val_sections": [int(s) + 1 for s in pool[va]],
                "vrand": scores["vrand"],
                "vinfo": scores["vinfo"],
                "pixel_error": pixel_error(prob, labels[pool[va]]),
            }
        )
        print(f"fold {i + 1}: V^Rand {scores['vrand']:.5f} V^Info {scores['vinfo']:.5f}", flush=True)
    mean = {k: float(np.mean([r[k] for r in results])) for k in ("vrand", "vinfo", "pixel_error")}
    report = {"folds": results, "mean": mean}
    atomic_write_text(out / "cv.json", json.dumps(report, indent=2) + "\n")
    return report
