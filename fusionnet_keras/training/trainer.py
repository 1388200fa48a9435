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
import sys
import time

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.training.callbacks import _make_callbacks
from fusionnet_keras.training.inputs import load_pairs, split_sections
from fusionnet_keras.training.rundir import prepare_run_dir, summary
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
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss=losses if n_outputs > 1 else losses[0],
        loss_weights=weights,
    )


# ---------------------------------------------------------------------------
# callbacks




# ---------------------------------------------------------------------------
# runs








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

    from fusionnet_keras.data.pipeline import make_dataset
    from fusionnet_keras.models import build_model

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
        from fusionnet_keras.models.loading import register_custom_objects

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




