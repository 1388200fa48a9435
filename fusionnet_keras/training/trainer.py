"""Training with Keras ``fit``, one trainer for every architecture family: atomic checkpoints, resume.

The trainer runs the steps every network shares: the configuration checked, the
data read and the sizes checked before anything is written, the run directory
created (or checked on resume), the random seed, the precision policy, the
network built and compiled (or read back from the resume point), the callbacks
(training time, validation, checkpoints, logs, TensorBoard) and the summary. What
differs between the families is a *task* that plugs in the targets, the losses
and the validation:

* 2-D membranes (FusionNet, FusionNetW, U-Net): :class:`~fusionnet_keras.training.membranes.MembraneTask`;
  tf.data (or numpy) input pipeline, augmentation on the device inside the training graph, MAE / MSE / BCE
  against the warped labels, V^Rand / V^Info of the validation sections; FusionNetW unit by unit.
* 3-D affinities (UNet3D, FusionNet3D): :class:`~fusionnet_keras.training.affinities.AffinityTask`;
  augmented samples and affinity targets on the host, MALIS / constrained MALIS / balanced BCE, VI of the
  validation part's segmentation; trained without XLA on TensorFlow CPUs
  (:func:`~fusionnet_keras.utils.hardware.training_jit_compile`).

A task is built from the configuration (it reads its data) and has ``initial_state``
(``state.json`` of a new run), ``best_keys`` (what the summary reports), and
``networks(run, state)``, ``data(state)``, ``validation()``, ``callbacks(run, net, state, data)``
and ``fit(run, models, net, data, callbacks, state, fit_kwargs)``.

Run directory layout (``OUT``)::

    config.json          the resolved configuration
    state.json           epoch, best score, times, augmentation state (written atomically every epoch
                         and, FusionNetW unit by unit, after every unit)
    checkpoints/last.keras   the trained model with its optimizer state (atomic; resume point)
    checkpoints/units.npz    FusionNetW unit by unit, instead: the network's weights and every unit's optimizer
    best.keras           the plain network with the best validation score (in predict.precision)
    last.keras           the plain network after the last epoch
    log.csv              per-epoch loss, learning rate, validation scores
    tensorboard/         TensorBoard logs (TensorFlow backend)

Resuming (``resume=True``) after an interruption, ``kill -9`` included,
continues from the last completed epoch (FusionNetW unit by unit: from the last
completed unit, also in the middle of an epoch) with the optimizer states, the
augmentation random state, the learning-rate schedules and the best score.
"""

from __future__ import annotations

import sys

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.training.affinities import AffinityTask
from fusionnet_keras.training.membranes import MembraneTask
from fusionnet_keras.training.rundir import prepare_run_dir, run_training, summary


def task_for(config: dict):
    """The task of ``config``'s architecture family (it reads the data and checks the sizes)."""
    return (AffinityTask if cfg.family(config).volumetric else MembraneTask)(config)


def train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    """Train the configured network; return a summary dict (best scores, paths, timings).

    ``config['train']['precision']`` sets the Keras dtype policy for this run only
    (``auto``: the resolver of :mod:`fusionnet_keras.models.precision`); the
    previous global policy is restored afterwards.
    """
    return run_training(_train, config, out, resume=resume, overwrite=overwrite, verbose=verbose)


def _train(config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    import keras

    from fusionnet_keras.models.precision import policy_name
    from fusionnet_keras.training.callbacks import make_callbacks
    from fusionnet_keras.training.networks import register_custom_objects

    config = cfg.validate(config)
    task = task_for(config)
    # only now, with the data and the sizes checked, create (or check) the run directory
    run, state = prepare_run_dir(config, out, resume=resume, overwrite=overwrite, initial_state=task.initial_state)
    t = config["train"]
    if state["epoch"] >= t["epochs"]:
        print(f"[{run.name}] already trained for {state['epoch']} epochs", flush=True)
        return summary(run, state, task.best_keys)
    keras.utils.set_random_seed(t["seed"])
    policy = policy_name(t["precision"])
    keras.mixed_precision.set_global_policy(policy)
    if t["precision"] == "auto":
        print(f"[{run.name}] train.precision auto: {policy}", flush=True)
    register_custom_objects()  # a new process has not imported the augmentation layers yet
    models, net = task.networks(run, state)
    data = task.data(state)
    callbacks = make_callbacks(run, net, task.validation(), state, t["epochs"], **task.callbacks(run, net, state, data))
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    task.fit(run, models, net, data, callbacks, state, {"verbose": verbose})
    if not (run.out / "best.keras").exists():
        raise FusionNetError(f"{run.out}: training ended without a validated checkpoint")
    return summary(run, state, task.best_keys)
