"""Training with Keras ``fit``: augmentation on the accelerator, atomic checkpoints, resume.

The training graph wraps the segmentation network: ``(image, label)`` go
through :class:`~fusionnet_keras.data.augment.Augmenter` (elastic warp of both,
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

import dataclasses
import json
import math
import sys
import time

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.training.inputs import load_pairs, split_sections
from fusionnet_keras.training.rundir import check_resume_overwrite, prepare_run_dir, summary
from fusionnet_keras.utils.atomic import atomic_write_text

# ---------------------------------------------------------------------------
# the training graph


def build_training_model(net, input_size: int, config: dict):
    """Wrap ``net``: ``(image, label)`` -> Augmenter -> net -> ``concat(pred, warped label)`` per output."""
    import keras

    from fusionnet_keras.data.augment import Augmenter

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
    from fusionnet_keras.training.losses import PairLoss

    losses = [PairLoss(t["loss"], t["membrane_weight"]) for _ in range(n_outputs)]
    weights = None
    if n_outputs > 1 and unit is not None:
        weights = [1.0 if i + 1 == unit else 0.0 for i in range(n_outputs)]
    from fusionnet_keras.utils.hardware import training_jit_compile

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss=losses if n_outputs > 1 else losses[0],
        loss_weights=weights,
        jit_compile=training_jit_compile(),  # measured per backend and precision (benchmarks/xla.py)
    )


# ---------------------------------------------------------------------------
# runs


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """Sizes and lengths of a run, checked before anything is written."""

    input_size: int  # crop (or section) + 2 * pad
    steps: int  # optimisation steps per epoch
    units: int  # network outputs (FusionNetW units)
    unit_epochs: int  # epochs per unit when FusionNetW is trained unit by unit, else 0
    total_epochs: int


def _schedule(config: dict, images, n_train: int) -> _Schedule:
    t, m = config["train"], config["model"]
    if images.shape[1] != images.shape[2] and not t["crop"]:
        raise FusionNetError(
            f"sections are {images.shape[1]}x{images.shape[2]}; set train.crop for non-square sections"
        )
    size = t["crop"] or images.shape[1]
    input_size = size + 2 * t["pad"]
    multiple = 2 ** m["depth"]
    if input_size % multiple:
        raise FusionNetError(
            f"training input {size} + 2 * pad {t['pad']} = {input_size} is not divisible by 2**depth = {multiple}"
        )
    units = m["units"] if m["architecture"] == "fusionnet_w" else 1
    unit_epochs = t["unit_epochs"] if units > 1 else 0
    steps = t["steps_per_epoch"] or max(1, math.ceil(n_train * (8 if t["enrich"] else 1) / t["batch_size"]))
    return _Schedule(input_size, steps, units, unit_epochs, unit_epochs * units if unit_epochs else t["epochs"])


def _dataset(config: dict, images, labels, units: int):
    """The repeated, shuffled training dataset (``train.pipeline``); one (ignored) target per network output."""
    from fusionnet_keras.data.pipeline import make_training_data

    t = config["train"]
    return make_training_data(images, labels, t["batch_size"], pipeline=t["pipeline"],
                              transform=lambda x, y: ((x, y), (y,) * units if units > 1 else y),
                              shuffle=True, seed=t["seed"], enrich=t["enrich"], pad=t["pad"], repeat=True,
                              crop=t["crop"] or None, drop_remainder=True)


def _model(run, state: dict, config: dict, schedule: _Schedule):
    """``(training model, network)``: resumed from the checkpoint, or built and compiled."""
    import keras

    from fusionnet_keras.models import build_model

    m = config["model"]
    if state["epoch"] > 0:
        from fusionnet_keras.models.loading import register_custom_objects

        register_custom_objects()  # a new process has not imported the augmentation layers yet
        model = keras.saving.load_model(run.ckpt)
        print(f"[{run.name}] resuming after epoch {state['epoch']} from {run.ckpt}", flush=True)
        return model, model.get_layer(m["architecture"])
    net = build_model(m["architecture"], **cfg.model_kwargs(config))
    model = build_training_model(net, schedule.input_size, config)
    _compile(model, config, schedule.steps, unit=1 if schedule.unit_epochs else None, n_outputs=schedule.units)
    return model, net


def _fit(run, model, net, ds, callbacks, state: dict, config: dict, schedule: _Schedule, verbose) -> None:
    """``model.fit`` to ``schedule.total_epochs``; FusionNetW unit by unit (Quan et al. 2021, sec. 3.4):
    train unit i, freeze it, then train unit i + 1."""
    fit = dict(steps_per_epoch=schedule.steps, callbacks=callbacks, verbose=verbose, shuffle=False)  # ds shuffles
    if not schedule.unit_epochs:
        model.fit(ds, epochs=schedule.total_epochs, initial_epoch=state["epoch"], **fit)
        return
    while state["epoch"] < schedule.total_epochs:
        unit = state["epoch"] // schedule.unit_epochs + 1
        end = unit * schedule.unit_epochs
        net.set_trainable_unit(unit)
        if state["epoch"] % schedule.unit_epochs == 0 or model.optimizer is None:
            _compile(model, config, schedule.steps, unit=unit, n_outputs=schedule.units)
        print(f"[{run.name}] training unit {unit}/{schedule.units} (epochs {state['epoch'] + 1}-{end})", flush=True)
        model.fit(ds, epochs=end, initial_epoch=state["epoch"], **fit)


def train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    """Train the configured network; return a summary dict (best scores, paths, timings).

    ``config['train']['precision']`` sets the Keras dtype policy for this run only;
    the previous global policy is restored afterwards.
    """
    import keras

    check_resume_overwrite(resume, overwrite)  # before anything is read or written
    previous = keras.mixed_precision.global_policy()
    try:
        return _train(config, out, resume=resume, overwrite=overwrite, verbose=verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    import keras

    from fusionnet_keras.training.callbacks import make_callbacks

    config = cfg.validate(config)
    images, labels = load_pairs(config)
    train_idx, val_idx = split_sections(config, len(images))
    schedule = _schedule(config, images, len(train_idx))
    # only now, with the data and the sizes checked, create (or check) the run directory
    run, state = prepare_run_dir(config, out, resume=resume, overwrite=overwrite)
    t = config["train"]
    keras.utils.set_random_seed(t["seed"])
    keras.mixed_precision.set_global_policy(t["precision"])
    if state["epoch"] >= schedule.total_epochs:
        print(f"[{run.name}] already trained for {state['epoch']} epochs", flush=True)
        return summary(run, state)

    ds = _dataset(config, images[train_idx], labels[train_idx], schedule.units)
    model, net = _model(run, state, config, schedule)
    callbacks = make_callbacks(run, net, images[val_idx], labels[val_idx], state, schedule.total_epochs)
    t0 = time.time()
    _fit(run, model, net, ds, callbacks, state, config, schedule,
         verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    state["train_seconds"] = state.get("train_seconds", 0.0) + time.time() - t0
    atomic_write_text(run.state_path, json.dumps(state, indent=1) + "\n")
    return summary(run, state)
