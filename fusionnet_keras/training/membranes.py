"""The 2-D task of the trainer: membrane maps of FusionNet, FusionNetW and U-Net from EM sections.

Targets: the training graph wraps the segmentation network: ``(image, label)``
go through :class:`~fusionnet_keras.data.augment.Augmenter` (elastic warp of
both, noise on the image; identity at inference) inside the model, so the
augmentation runs in the training step on the device, not in the CPU input
pipeline (``train.pipeline``: tf.data or numpy). Each output of the wrapper is
``concat([prediction, warped_label])``.

Loss: :class:`~fusionnet_keras.training.losses.PairLoss` compares the two
channels (the ``y`` fed by the input pipeline is ignored): MAE, MSE or BCE,
with ``train.membrane_weight``.

Validation: V^Rand / V^Info (and the pixel error) of the validation sections
predicted by :func:`fusionnet_keras.inference.predictor.predict`; best.keras is
the network with the highest V^Rand (every epoch's network without validation
sections).

FusionNetW^k (``model.architecture = "fusionnet_w"``) is trained as the 2021
paper does (sec. 3.4) by default (``train.unit_schedule = "units"``): every
epoch trains unit 1 on its own loss against the labels, then freezes it
(weights and batch-norm statistics) and trains unit 2 on its loss, and so on.
Each unit has its own wrapper (the network up to that unit's output), its own
Adam and its own learning-rate schedule (:mod:`fusionnet_keras.training.units`);
the resume point is then ``checkpoints/units.npz`` and ``state.json`` says how
many units of the current epoch are done. ``unit_schedule = "joint"`` trains
every unit at once on the sum of their losses (not the paper's).
"""

from __future__ import annotations

import dataclasses
import math

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import units
from fusionnet_keras.training.inputs import load_pairs, split_sections
from fusionnet_keras.training.networks import build_network, compile_network, read_resume_point


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


def unit_models(net, input_size: int, config: dict) -> list:
    """One training wrapper per unit of FusionNetW ``net``
    (:func:`~fusionnet_keras.training.units.unit_network`), all sharing one augmenter."""
    augmenter = make_augmenter(config)
    return [build_training_model(units.unit_network(net, unit), input_size, config, augmenter=augmenter,
                                 name=f"training_unit{unit}") for unit in range(1, net.units + 1)]


def compile_wrapper(model, config: dict, steps_per_epoch: int) -> None:
    """Compile a training wrapper: one :class:`PairLoss` per output (summed), Adam with the per-epoch decay."""
    from fusionnet_keras.training.losses import PairLoss

    t = config["train"]
    losses = [PairLoss(t["loss"], t["membrane_weight"]) for _ in model.outputs]
    compile_network(model, config, losses if len(losses) > 1 else losses[0], steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """Sizes and lengths of a run, checked before anything is written."""

    input_size: int  # crop (or section) + 2 * pad
    steps: int  # optimisation steps per epoch (per unit when trained unit by unit)
    units: int  # network outputs (FusionNetW units)
    by_unit: bool  # FusionNetW trained unit by unit within every epoch (the 2021 paper)


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
    return _Schedule(input_size, steps, units, units > 1 and t["unit_schedule"] == "units")


class MembraneTask:
    """The 2-D networks' data, wrappers, losses, validation and epochs for :func:`fusionnet_keras.training.trainer.train`."""

    # epoch: completed epochs; unit: FusionNetW units completed in the current epoch (unit by unit)
    initial_state = {"epoch": 0, "unit": 0, "best_vrand": -1.0, "best_vinfo": -1.0, "best_epoch": 0, "history": []}
    best_keys = ("best_vrand", "best_vinfo")

    def __init__(self, config: dict):
        """Read the sections and check the sizes (before anything is written)."""
        self.config = config
        self.images, self.labels = load_pairs(config)
        self.train_idx, self.val_idx = split_sections(config, len(self.images))
        self.schedule = _schedule(config, self.images, len(self.train_idx))
        self.save_resume_point = None  # set by networks() when the units are trained one by one

    def networks(self, run, state: dict):
        """``(training models, network)``: one wrapper, or one per unit when trained unit by unit;
        resumed from the checkpoint, or built and compiled."""
        schedule = self.schedule
        resuming = state["epoch"] > 0 or state.get("unit", 0) > 0
        if resuming and not schedule.by_unit:
            model = read_resume_point(run, state)
            models, net = [model], model.get_layer(self.config["model"]["architecture"])
        else:
            net = build_network(self.config)
            if schedule.by_unit:
                models = unit_models(net, schedule.input_size, self.config)
            else:
                models = [build_training_model(net, schedule.input_size, self.config)]
            for model in models:
                compile_wrapper(model, self.config, schedule.steps)
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
        if schedule.by_unit:
            def save_resume_point():
                units.save_units(run.units_ckpt, net, models)

            self.save_resume_point = save_resume_point
        return models, net

    def data(self, state: dict):
        """The repeated, shuffled training dataset (``train.pipeline``); one (ignored) target per wrapper output."""
        from fusionnet_keras.data.pipeline import make_training_data

        t = self.config["train"]
        n = 1 if self.schedule.by_unit else self.schedule.units
        return make_training_data(self.images[self.train_idx], self.labels[self.train_idx], t["batch_size"],
                                  pipeline=t["pipeline"], transform=lambda x, y: ((x, y), (y,) * n if n > 1 else y),
                                  shuffle=True, seed=t["seed"], enrich=t["enrich"], pad=t["pad"], repeat=True,
                                  crop=t["crop"] or None, drop_remainder=True)

    def validation(self):
        """V^Rand / V^Info / pixel error of the validation sections; best = highest V^Rand."""
        from fusionnet_keras.training.callbacks import Validation

        if not len(self.val_idx):
            return Validation(None, None, None)
        images, labels = self.images[self.val_idx], self.labels[self.val_idx]
        config = self.config

        def score(net):
            from fusionnet_keras.evaluation import isbi_scores, pixel_error
            from fusionnet_keras.inference.predictor import predict

            prob = predict(net, images, tta=config["train"]["val_tta"], pad=config["predict"]["pad"],
                           batch_size=config["predict"]["batch_size"] or None)
            scores = isbi_scores(prob, labels)
            return {"vrand": scores["vrand"], "vinfo": scores["vinfo"], "pixel_error": pixel_error(prob, labels)}

        return Validation(score, better=lambda scores, state: scores["vrand"] > state["best_vrand"],
                          best=lambda s: {"best_vrand": float(s["vrand"]), "best_vinfo": float(s["vinfo"])})

    def callbacks(self, run, net, state: dict, data) -> dict:
        """Keyword arguments of :func:`~fusionnet_keras.training.callbacks.make_callbacks` for this task."""
        return {"unit": self.schedule.units if self.schedule.by_unit else None,
                "save_resume_point": self.save_resume_point}

    def fit(self, run, models, net, data, callbacks, state: dict, fit_kwargs: dict) -> None:
        """``model.fit`` to ``train.epochs``; FusionNetW unit by unit (Quan et al. 2021, sec. 3.4): in every
        epoch unit i is trained (the others frozen) and checkpointed, then unit i + 1
        (:mod:`fusionnet_keras.training.units`)."""
        from fusionnet_keras.training.callbacks import TrainTime, UnitCheckpoint

        fit = dict(fit_kwargs, steps_per_epoch=self.schedule.steps, shuffle=False)  # the data shuffles
        epochs = self.config["train"]["epochs"]
        if not self.schedule.by_unit:
            models[0].fit(data, epochs=epochs, initial_epoch=state["epoch"], callbacks=callbacks, **fit)
            return
        timer = next(c for c in callbacks if isinstance(c, TrainTime))
        phases = [[timer, UnitCheckpoint(run, state, unit, self.schedule.units, epochs, self.save_resume_point)]
                  for unit in range(1, self.schedule.units)] + [callbacks]
        units.fit_units(models, net, data, state, epochs, phases, fit)
