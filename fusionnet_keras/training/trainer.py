"""Training with Keras ``fit``: augmentation on the accelerator, atomic checkpoints, resume.

The training graph wraps the segmentation network: ``(image, label)`` go
through :class:`~fusionnet_keras.data.augment.Augmenter` (elastic warp of both,
noise on the image; identity at inference) inside the model, so the
augmentation runs in the training step on the device, not in the CPU input
pipeline. Each output of the wrapper is ``concat([prediction, warped_label])``
and :class:`PairLoss` compares the two channels (the ``y`` fed by the input
pipeline is ignored).

FusionNetW^k (``model.architecture = "fusionnet_w"``) is trained as the 2021
paper does (sec. 3.4) by default (``train.unit_schedule = "units"``): every
epoch trains unit 1 on its own loss against the labels, then freezes it
(weights and batch-norm statistics) and trains unit 2 on its loss, and so on.
Each unit has its own wrapper (the network up to that unit's output), its own
Adam and its own learning-rate schedule (:mod:`fusionnet_keras.training.units`). ``unit_schedule = "joint"``
trains every unit at once on the sum of their losses (not the paper's).

Run directory layout (``OUT``)::

    config.json          the resolved configuration
    state.json           epoch, unit, best score, augmentation state (written atomically every epoch
                         and, unit by unit, after every unit)
    checkpoints/last.keras   wrapper model + optimizer state (atomic; resume point)
    checkpoints/units.npz    unit by unit, instead: the network's weights and every unit's optimizer state
    best.keras           the plain network with the best validation V^Rand
    last.keras           the plain network after the last epoch
    log.csv              per-epoch loss (and loss_unit<i>), learning rate, validation scores
    tensorboard/         TensorBoard logs (TensorFlow backend)

Resuming (``resume=True``) after an interruption, ``kill -9`` included,
continues from the last completed epoch (unit by unit: from the last completed
unit, also in the middle of an epoch) with the optimizer states, the
augmentation random state, the learning-rate schedules and the best score.
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
from fusionnet_keras.training.rundir import prepare_run_dir, run_training, summary
from fusionnet_keras.utils.atomic import atomic_write_text

# ---------------------------------------------------------------------------
# the training graph


def make_augmenter(config: dict):
    """The :class:`~fusionnet_keras.data.augment.Augmenter` of ``config['augment']`` (seeded by ``train.seed``)."""
    from fusionnet_keras.data.augment import Augmenter

    aug = config["augment"]
    return Augmenter(
        elastic_amplitude=aug["elastic_amplitude"],
        noise_sigma=aug["noise_sigma"],
        grid_size=aug["elastic_grid"],
        seed=config["train"]["seed"],
        dtype="float32",  # the warp is computed in float32 under any precision policy
        name="augmenter",
    )


def build_training_model(net, input_size: int, config: dict, augmenter=None, name: str = "training_model"):
    """Wrap ``net``: ``(image, label)`` -> Augmenter -> net -> ``concat(pred, warped label)`` per output.

    ``augmenter`` (default: a new :func:`make_augmenter`) can be shared by several wrappers.
    """
    import keras

    image = keras.Input(shape=(input_size, input_size, 1), name="image")
    label = keras.Input(shape=(input_size, input_size, 1), name="label")
    augmenter = augmenter if augmenter is not None else make_augmenter(config)
    warped_image, warped_label = augmenter((image, label))
    preds = net(warped_image)
    if not isinstance(preds, (list, tuple)):
        preds = [preds]
    outputs = [
        keras.layers.Concatenate(dtype="float32", name=f"pair{i + 1}")([p, warped_label]) for i, p in enumerate(preds)
    ]
    return keras.Model([image, label], outputs, name=name)


def _compile(model, config, steps_per_epoch, n_outputs=1):
    """Adam with the per-epoch decay; one :class:`PairLoss` per output (summed)."""
    import keras

    from fusionnet_keras.training.losses import PairLoss

    t = config["train"]
    schedule = keras.optimizers.schedules.ExponentialDecay(
        t["learning_rate"], decay_steps=max(1, steps_per_epoch), decay_rate=t["lr_decay"]
    )
    losses = [PairLoss(t["loss"], t["membrane_weight"]) for _ in range(n_outputs)]
    from fusionnet_keras.utils.hardware import training_jit_compile

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                  loss=losses if n_outputs > 1 else losses[0],
                  jit_compile=training_jit_compile())  # measured per backend and precision (benchmarks/xla.py)


# ---------------------------------------------------------------------------
# runs


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """Sizes and lengths of a run, checked before anything is written."""

    input_size: int  # crop (or section) + 2 * pad
    steps: int  # optimisation steps per epoch (per unit when trained unit by unit)
    units: int  # network outputs (FusionNetW units)
    by_unit: bool  # FusionNetW trained unit by unit within every epoch (the 2021 paper)
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
    steps = t["steps_per_epoch"] or max(1, math.ceil(n_train * (8 if t["enrich"] else 1) / t["batch_size"]))
    return _Schedule(input_size, steps, units, units > 1 and t["unit_schedule"] == "units", t["epochs"])


def _dataset(config: dict, images, labels, n_outputs: int):
    """The repeated, shuffled training dataset (``train.pipeline``); one (ignored) target per wrapper output."""
    from fusionnet_keras.data.pipeline import make_training_data

    t = config["train"]
    return make_training_data(images, labels, t["batch_size"], pipeline=t["pipeline"],
                              transform=lambda x, y: ((x, y), (y,) * n_outputs if n_outputs > 1 else y),
                              shuffle=True, seed=t["seed"], enrich=t["enrich"], pad=t["pad"], repeat=True,
                              crop=t["crop"] or None, drop_remainder=True)


def _models(run, state: dict, config: dict, schedule: _Schedule):
    """``(training models, network)``: one wrapper, or one per unit when trained unit by unit;
    resumed from the checkpoint, or built and compiled."""
    import keras

    from fusionnet_keras.models import build_model
    from fusionnet_keras.models.loading import read_keras, register_custom_objects
    from fusionnet_keras.training import units

    m = config["model"]
    resuming = state["epoch"] > 0 or state.get("unit", 0) > 0
    register_custom_objects()  # a new process has not imported the augmentation layers yet
    if resuming and not schedule.by_unit:
        model = read_keras(run.ckpt, "checkpoint", compile=True)
        print(f"[{run.name}] resuming after epoch {state['epoch']} from {run.ckpt}", flush=True)
        models, net = [model], model.get_layer(m["architecture"])
    else:
        net = build_model(m["architecture"], **cfg.model_kwargs(config))
        if schedule.by_unit:
            models = units.unit_models(net, schedule.input_size, config)
        else:
            models = [build_training_model(net, schedule.input_size, config)]
        for model in models:
            _compile(model, config, schedule.steps, n_outputs=len(model.outputs))
        if resuming:
            restored = units.restore_units(run.units_ckpt, net, models)
            unit = state.get("unit", 0)
            where = f"unit {unit} of epoch {state['epoch'] + 1}" if unit else f"epoch {state['epoch']}"
            print(f"[{run.name}] resuming unit by unit after {where} from {run.units_ckpt} "
                  f"(optimizers of units {restored})", flush=True)
    if resuming and state.get("augmenter"):
        # the seed generators' state is not saved in .keras files: state.json keeps it
        for variable, value in zip(models[0].get_layer("augmenter").variables, state["augmenter"]):
            variable.assign(value)
    return models, net


def _fit(run, models, net, ds, callbacks, state: dict, schedule: _Schedule, verbose, save_resume_point) -> None:
    """``model.fit`` to ``schedule.total_epochs``; FusionNetW unit by unit (Quan et al. 2021, sec. 3.4):
    in every epoch unit i is trained (the others frozen) and checkpointed, then unit i + 1
    (:mod:`fusionnet_keras.training.units`)."""
    from fusionnet_keras.training import units
    from fusionnet_keras.training.callbacks import UnitCheckpoint

    fit = dict(steps_per_epoch=schedule.steps, verbose=verbose, shuffle=False)  # ds shuffles
    if not schedule.by_unit:
        models[0].fit(ds, epochs=schedule.total_epochs, initial_epoch=state["epoch"], callbacks=callbacks, **fit)
        return
    phases = [[UnitCheckpoint(run, state, unit, schedule.units, schedule.total_epochs, save_resume_point)]
              for unit in range(1, schedule.units)] + [callbacks]
    units.fit_units(models, net, ds, state, schedule.total_epochs, phases, fit)


def train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    """Train the configured network; return a summary dict (best scores, paths, timings).

    ``config['train']['precision']`` sets the Keras dtype policy for this run only;
    the previous global policy is restored afterwards.
    """
    return run_training(_train, config, out, resume=resume, overwrite=overwrite, verbose=verbose)


def _train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    import keras

    from fusionnet_keras.training.callbacks import make_callbacks

    from fusionnet_keras.utils.hardware import training_policy

    config = cfg.validate(config)
    images, labels = load_pairs(config)
    train_idx, val_idx = split_sections(config, len(images))
    schedule = _schedule(config, images, len(train_idx))
    # only now, with the data and the sizes checked, create (or check) the run directory
    run, state = prepare_run_dir(config, out, resume=resume, overwrite=overwrite)
    t = config["train"]
    keras.utils.set_random_seed(t["seed"])
    policy = training_policy(t["precision"])  # "auto": bfloat16 only where it is native
    keras.mixed_precision.set_global_policy(policy)
    if t["precision"] == "auto":
        print(f"[{run.name}] train.precision auto: {policy}", flush=True)
    if state["epoch"] >= schedule.total_epochs:
        print(f"[{run.name}] already trained for {state['epoch']} epochs", flush=True)
        return summary(run, state)

    ds = _dataset(config, images[train_idx], labels[train_idx], 1 if schedule.by_unit else schedule.units)
    models, net = _models(run, state, config, schedule)
    save_resume_point = None
    if schedule.by_unit:
        from fusionnet_keras.training.units import save_units

        def save_resume_point():
            save_units(run.units_ckpt, net, models)
    callbacks = make_callbacks(run, net, images[val_idx], labels[val_idx], state, schedule.total_epochs,
                               unit=schedule.units if schedule.by_unit else None, save_resume_point=save_resume_point)
    t0 = time.time()
    _fit(run, models, net, ds, callbacks, state, schedule,
         (1 if sys.stdout.isatty() else 2) if verbose is None else verbose, save_resume_point)
    state["train_seconds"] = state.get("train_seconds", 0.0) + time.time() - t0
    atomic_write_text(run.state_path, json.dumps(state, indent=1) + "\n")
    return summary(run, state)
