"""The network of a training configuration, compiled with its loss and optimizer, and the resume point.

Shared by the tasks the trainer runs (:mod:`fusionnet_keras.training.trainer`):
2-D membranes (:mod:`~fusionnet_keras.training.membranes`) and 3-D affinities
(:mod:`~fusionnet_keras.training.affinities`).
"""

from __future__ import annotations

from fusionnet_keras.training import config as cfg


def build_network(config: dict):
    """A new network of ``model.architecture`` with the configured sizes."""
    from fusionnet_keras.models import build_model

    return build_model(config["model"]["architecture"], **cfg.model_kwargs(config))


def compile_network(model, config: dict, loss, steps_per_epoch: int, optimizer=None) -> None:
    """Compile ``model`` with ``loss`` (one per output, or one) and Adam at ``train.learning_rate``, decayed
    by ``train.lr_decay`` per epoch of ``steps_per_epoch`` steps.

    ``optimizer`` (the model's own, when the loss changes or after a resume) keeps
    its moments and step count, so the learning-rate schedule goes on. XLA as
    measured per backend, precision and dimension
    (:func:`fusionnet_keras.utils.hardware.training_jit_compile`); never for a
    loss that XLA cannot compile (``xla_compatible = False``, MALIS).
    """
    import keras

    from fusionnet_keras.utils.hardware import training_jit_compile

    t = config["train"]
    if optimizer is None:
        schedule = keras.optimizers.schedules.ExponentialDecay(
            t["learning_rate"], decay_steps=max(1, steps_per_epoch), decay_rate=t["lr_decay"])
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
    losses = loss if isinstance(loss, (list, tuple)) else [loss]
    jit = False
    if all(getattr(one, "xla_compatible", True) for one in losses):
        jit = training_jit_compile(volumetric=cfg.family(config).volumetric)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit)


def register_custom_objects() -> None:
    """Register every class a compiled training checkpoint refers to: the network's
    (:func:`fusionnet_keras.models.loading.register_custom_objects`) and the losses, so that plain
    ``keras.saving.load_model`` rebuilds the checkpoint with its loss and optimizer."""
    import fusionnet_keras.training.affinity_losses  # noqa: F401  (the losses register themselves on import)
    import fusionnet_keras.training.losses  # noqa: F401
    from fusionnet_keras.models.loading import register_custom_objects as register_network_objects

    register_network_objects()


def read_resume_point(run, state: dict):
    """The model of ``checkpoints/last.keras`` with its optimizer state (the resume point)."""
    from fusionnet_keras.models.loading import read_keras

    register_custom_objects()
    model = read_keras(run.ckpt, "checkpoint", compile=True)
    print(f"[{run.name}] resuming after epoch {state['epoch']} from {run.ckpt}", flush=True)
    return model
