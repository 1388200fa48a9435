"""Training of the 3-D affinity networks (UNet3D, FusionNet3D) with MALIS or balanced BCE.

The same run directory, resume and logs as the 2-D trainer
(:mod:`fusionnet_keras.training.trainer`, :mod:`~fusionnet_keras.training.rundir`):
``config.json``, ``state.json``, ``checkpoints/last.keras`` (network + optimizer,
the resume point), ``best.keras``, ``last.keras``, ``log.csv``, ``tensorboard/``;
``resume=True`` continues after an interruption (``kill -9`` included) from the
last completed epoch.

Data: the training part of ``data.dataset``
(:mod:`fusionnet_keras.data.volumes3d`); each step's samples come from
:class:`~fusionnet_keras.data.augment3d.AffinityAugment` on the host (xy
orientations, per-section elastic fields, optional misalignment, missing
section, noise; targets from the transformed labels), seeded by
``(train.seed, epoch, step)``, so a resumed run draws the samples the
uninterrupted run would have drawn.

Validation (every ``train.validate_every`` epochs and after the last): the
whole validation part is predicted (:func:`fusionnet_keras.inference.affinities.predict_affinities`,
mirrored at its borders) and scored: masked class-balanced BCE and the affinity
F-score of boundary edges (affinity < 0.5) against the targets, and the VI of
the z-watershed + mean agglomeration at the best of ``train.val_thresholds``
against the ground truth (:func:`fusionnet_keras.evaluation.instance_scores`).
``best.keras`` is the network with the lowest validation VI (among the epochs trained with
``train.loss``, after the ``train.pretrain_bce_epochs`` of BCE pre-training, which are validated and
logged but not kept).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import affinity_config as acfg
from fusionnet_keras.training.rundir import prepare_run_dir, run_training

INITIAL_STATE = {"epoch": 0, "best_vi": None, "best_epoch": 0, "history": []}


def make_augment(config: dict, output_shape):
    """The :class:`~fusionnet_keras.data.augment3d.AffinityAugment` of ``config``."""
    from fusionnet_keras.data.augment3d import AffinityAugment

    a = config["augment"]
    return AffinityAugment(tuple(config["train"]["input_shape"]), tuple(output_shape),
                           orientations=a["orientations"], elastic_amplitude=a["elastic_amplitude"],
                           elastic_grid=a["elastic_grid"], noise_sigma=a["noise_sigma"],
                           missing_section=a["missing_section"], misalign=a["misalign"],
                           misalign_max=a["misalign_max"], label_zero=config["data"]["label_zero"])


def loss_name(config: dict, epoch: int) -> str:
    """The loss of epoch ``epoch`` (0-based): ``"bce"`` during the ``train.pretrain_bce_epochs`` first
    epochs, ``train.loss`` after them."""
    t = config["train"]
    return "bce" if epoch < t["pretrain_bce_epochs"] else t["loss"]


def make_loss(config: dict, epoch: int = 10**9):
    """The loss of epoch ``epoch`` (default: ``train.loss``): MALIS, constrained MALIS or class-balanced BCE."""
    from fusionnet_keras.training.affinity_losses import BalancedBCELoss, MalisLoss

    name = loss_name(config, epoch)
    if name == "bce":
        return BalancedBCELoss()
    return MalisLoss(kind=config["train"]["malis_error"], constrained=name == "constrained_malis")


def build_network(config: dict):
    from fusionnet_keras.models import build_model

    return build_model(config["model"]["architecture"], **acfg.model_kwargs(config))


def _compile(net, config: dict, epoch: int = 0, optimizer=None) -> None:
    """Compile ``net`` with the loss of ``epoch``; ``optimizer`` (the network's own, when the loss changes
    or after a resume) keeps its moments and step count, so the learning-rate schedule goes on."""
    import keras

    from fusionnet_keras.utils.hardware import training_jit_compile

    t = config["train"]
    if optimizer is None:
        schedule = keras.optimizers.schedules.ExponentialDecay(
            t["learning_rate"], decay_steps=t["steps_per_epoch"], decay_rate=t["lr_decay"])
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
    loss = make_loss(config, epoch)
    jit = training_jit_compile(volumetric=True) if loss.xla_compatible else False
    net.compile(optimizer=optimizer, loss=loss, jit_compile=jit)


def samples(config: dict, augment, image, labels, epoch: int = 0):
    """The ``keras.utils.PyDataset`` of training batches (one epoch = ``train.steps_per_epoch`` batches)."""
    import keras

    t = config["train"]

    class AffinitySamples(keras.utils.PyDataset):
        """Batch ``i`` of epoch ``e``: the samples of ``default_rng([seed, e, i])`` (``epoch`` is set by the
        trainer's callback at the start of every epoch)."""

        def __init__(self):
            workers = t["workers"]
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
            self.epoch = epoch

        def __len__(self):
            return t["steps_per_epoch"]

        def __getitem__(self, index):
            rng = np.random.default_rng([t["seed"], self.epoch, int(index)])
            return augment.batch(image, labels, rng, t["batch_size"])

    return AffinitySamples()


# ---------------------------------------------------------------------------
# validation


def affinity_fscore(affs, y_true_affs, mask, threshold: float = 0.5) -> float:
    """F-score of the boundary edges (affinity < ``threshold``) within ``mask`` ((3, Z, Y, X) arrays)."""
    m = mask > 0
    pred = affs[m] < threshold
    true = y_true_affs[m] < 0.5
    tp = float(np.sum(pred & true))
    denominator = float(np.sum(pred) + np.sum(true))
    return 2 * tp / denominator if denominator else 1.0


def balanced_bce(affs, y_true_affs, mask) -> float:
    """Masked class-balanced BCE of (3, Z, Y, X) affinities (the value of :class:`BalancedBCELoss`)."""
    p = np.clip(affs.astype(np.float64), 1e-7, 1 - 1e-7)
    m = mask > 0
    pos, neg = m & (y_true_affs > 0.5), m & (y_true_affs <= 0.5)
    terms = [-np.log(p[pos]).mean() if pos.any() else None, -np.log(1 - p[neg]).mean() if neg.any() else None]
    terms = [t for t in terms if t is not None]
    return float(np.mean(terms)) if terms else 0.0


def score_affinities(affs, labels, thresholds, ws_size: int | None = None, label_zero: str = "background") -> dict:
    """Validation scores of predicted affinities ``(3, Z, Y, X)`` against instance ``labels``:
    ``bce``, ``fscore`` (targets by ``label_zero``'s convention) and the VI (split, merge) of the
    z-watershed (size threshold ``ws_size``, default the segmentation's) + mean agglomeration at its best
    threshold."""
    from fusionnet_keras.data.affinities import affinities_from_labels
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

    target, mask = affinities_from_labels(labels, label_zero)
    out = {"bce": balanced_bce(affs, target, mask), "fscore": affinity_fscore(affs, target, mask)}
    rows = [dict(instance_scores(seg, labels), threshold=t)
            for t, seg in segment(affs, "mean", thresholds, watershed_options=WatershedOptions() if ws_size is None else WatershedOptions(size=ws_size))]
    best = min(rows, key=lambda r: r["vi"])
    out.update(vi=best["vi"], vi_split=best["vi_split"], vi_merge=best["vi_merge"], vi_threshold=best["threshold"])
    return out


def predict_block(net, config: dict, volume, progress: bool = False) -> np.ndarray:
    """Affinities ``(3, Z, Y, X)`` of ``volume`` by the network in ``predict.precision`` (blockwise, exact)."""
    from fusionnet_keras.inference.affinities import predict_affinities

    p = config["predict"]
    return predict_affinities(net, volume, block=tuple(p["block"]) or None, precision=p["precision"],
                              progress=progress)


def _callbacks(run, net, config: dict, state: dict, val, data):
    import keras

    from fusionnet_keras.training.callbacks import Checkpoint, inference_model
    from fusionnet_keras.utils.atomic import atomic_save_model

    t = config["train"]

    class ValidateAffinities(keras.callbacks.Callback):
        """Scores of the validation part every ``validate_every`` epochs; best.keras = lowest VI (not counting
        the BCE pre-training's epochs)."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            done = epoch + 1
            if done % t["validate_every"] and done != t["epochs"]:
                return
            start = time.time()
            inference = inference_model(run, net)
            scores = score_affinities(predict_block(inference, config, val[0]), val[1], t["val_thresholds"],
                                      t["val_ws_size"], config["data"]["label_zero"])
            logs.update({f"val_{k}": float(v) for k, v in scores.items()})
            print(f"[{run.name}] validation: VI {scores['vi']:.3f} (split {scores['vi_split']:.3f}, merge "
                  f"{scores['vi_merge']:.3f} at {scores['vi_threshold']:g}), affinity F-score {scores['fscore']:.3f}, "
                  f"BCE {scores['bce']:.4f} ({time.time() - start:.0f} s)", flush=True)
            state["val_seconds"] = state.get("val_seconds", 0.0) + time.time() - start
            if done <= first_candidate(config):  # a pre-training epoch: logged, not a candidate
                return
            if state["best_vi"] is None or scores["vi"] < state["best_vi"]:
                state.update(best_vi=float(scores["vi"]), best_epoch=done, best_scores=scores)
                atomic_save_model(inference, run.out / "best.keras")

    class NextEpoch(keras.callbacks.Callback):
        """Keep the samples' epoch counter on the epoch ``fit`` runs (also after a resume); add the epoch's
        training time (without validation) to ``state["train_seconds"]``."""

        def on_epoch_begin(self, epoch, logs=None):
            data.epoch = epoch
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            state["train_seconds"] = state.get("train_seconds", 0.0) + time.time() - self.start

    callbacks = [NextEpoch(), ValidateAffinities(), Checkpoint(run, net, state, t["epochs"])]
    if t["tensorboard"] and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run.out / "tensorboard"), write_graph=False))
    return callbacks


def first_candidate(config: dict) -> int:
    """Epochs before which no checkpoint becomes ``best.keras``: the BCE pre-training's (the best network is
    one trained with ``train.loss``, as the paper picks an iteration of the MALIS training), 0 without it."""
    t = config["train"]
    return t["pretrain_bce_epochs"] if t["pretrain_bce_epochs"] < t["epochs"] and t["loss"] != "bce" else 0


def _phases(config: dict, epoch: int) -> list[tuple[int, int]]:
    """The ``(first, last)`` epoch ranges still to train from ``epoch``, one per loss: the BCE pre-training
    (``train.pretrain_bce_epochs``), then ``train.loss``."""
    t = config["train"]
    switch = min(t["pretrain_bce_epochs"], t["epochs"])
    bounds = [b for b in (0, switch, t["epochs"]) if b >= epoch]
    bounds = sorted({epoch, *bounds})
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def summary(run, state: dict) -> dict:
    return {
        "name": run.name,
        "out": str(run.out),
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_vi": state["best_vi"],
        "best_scores": state.get("best_scores"),
        "best_model": str(run.out / "best.keras"),
        "train_seconds": state.get("train_seconds"),
        "val_seconds": state.get("val_seconds"),
    }


def train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    """Train the configured 3-D affinity network; return a summary (best validation scores, paths, time).

    ``train.precision`` sets the Keras dtype policy for this run only (``"auto"``:
    :func:`fusionnet_keras.utils.hardware.training_policy`).
    """
    return run_training(_train, config, out, resume=resume, overwrite=overwrite, verbose=verbose)


def _train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    import keras

    from fusionnet_keras.data.volumes3d import load_parts
    from fusionnet_keras.models.loading import read_keras, register_custom_objects

    config = acfg.validate(config)
    t = config["train"]
    parts = load_parts(config["data"]["dataset"], ("train", "validation"))
    augment = make_augment(config, acfg.output_shape(config))
    augment.check_volume(parts["train"][0].shape)
    run, state = prepare_run_dir(config, out, resume=resume, overwrite=overwrite, validate=acfg.validate,
                                 initial_state=INITIAL_STATE)
    if state["epoch"] >= t["epochs"]:
        print(f"[{run.name}] already trained for {state['epoch']} epochs", flush=True)
        return summary(run, state)
    keras.utils.set_random_seed(t["seed"])
    from fusionnet_keras.utils.hardware import training_policy

    policy = training_policy(t["precision"])  # "auto": bfloat16 only where it is fast
    keras.mixed_precision.set_global_policy(policy)
    if t["precision"] == "auto":
        print(f"[{run.name}] train.precision auto: {policy}", flush=True)
    register_custom_objects()
    if state["epoch"] > 0:
        net = read_keras(run.ckpt, "checkpoint", compile=True)
        print(f"[{run.name}] resuming after epoch {state['epoch']} from {run.ckpt}", flush=True)
    else:
        net = build_network(config)
    data = samples(config, augment, *parts["train"], epoch=state["epoch"])
    callbacks = _callbacks(run, net, config, state, parts["validation"], data)
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    for first, last in _phases(config, state["epoch"]):
        if t["pretrain_bce_epochs"]:
            print(f"[{run.name}] epochs {first + 1}-{last}: {loss_name(config, first)} loss", flush=True)
        _compile(net, config, first, optimizer=getattr(net, "optimizer", None))
        net.fit(data, epochs=last, initial_epoch=first, callbacks=callbacks, verbose=verbose)
    if not (run.out / "best.keras").exists():
        raise FusionNetError(f"{run.out}: training ended without a validated checkpoint")
    return summary(run, state)
