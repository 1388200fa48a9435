"""Loading ``.keras`` files written by this package, with one-line errors."""

from __future__ import annotations

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_weights_path


def register_custom_objects() -> None:
    """Register every class a network's ``.keras`` file refers to (networks, blocks, augmentation layers),
    so that plain ``keras.saving.load_model(path, compile=False)`` can rebuild it. A compiled training
    checkpoint also names its loss: :func:`fusionnet_keras.training.networks.register_custom_objects`
    adds the losses (training sits above this package, so it is not imported here)."""
    import fusionnet_keras.data.augment  # noqa: F401  (the classes register themselves on import)
    import fusionnet_keras.models  # noqa: F401


def read_keras(path, what: str = "weights", compile: bool = False):
    """``keras.saving.load_model(path, compile=compile)`` with a one-line :class:`FusionNetError` naming
    ``path`` (as ``what``, e.g. "weights" or "checkpoint") and the real problem.

    Keras takes any file that is not a whole zip archive for a missing one ("File
    not found"); a truncated or corrupt ``.keras`` file is named as such here.
    """
    import os
    import zipfile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FusionNetError(f"{what} not found: {path}")
    try:
        whole = zipfile.is_zipfile(path)
    except OSError as e:
        raise FusionNetError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not whole:
        empty = os.path.getsize(path) == 0
        raise FusionNetError(f"cannot load {what} {path}: " + ("the file is empty" if empty else
                             "not a whole .keras archive (truncated or corrupt; save or copy it again)"))
    import keras

    register_custom_objects()
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as e:  # a damaged member, a foreign model, missing classes
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusionNetError(f"cannot load {what} {path}: {reason[:200]}") from None


def check_network(model, resolver: str) -> None:
    """A one-line error unless ``model`` is a Keras network; ``resolver`` (e.g. ``fusionnet_keras.predict``)
    is the function named for a registry name, a ``.keras`` path, a URL or no model."""
    if not hasattr(model, "inputs"):
        given = "no model" if model is None else f"{type(model).__name__} {str(model)[:80]!r}"
        raise FusionNetError(f"expected a Keras network, got {given}: {resolver} also takes a registry name, "
                             "a .keras path, a URL or no model (the shipped default)")


#: The command that runs a model of each kind (named when a model of the other kind is given).
COMMANDS = {2: "fusionnet-keras predict", 3: "fusionnet-keras affinities"}


def load_model(path, spatial_dims=2):
    """Load a ``.keras`` model written by this package, with a one-line error on failure.

    ``spatial_dims``: 2 for the image models (input ``(batch, y, x, 1)``), 3 for the affinity
    networks (input ``(batch, z, y, x, 1)``); a model of the other kind is refused, naming the
    command that runs it; ``None`` accepts either kind.
    """
    path = check_weights_path(path)
    model = read_keras(path)
    inputs = model.inputs
    dims = len(inputs[0].shape) - 2 if len(inputs) == 1 and inputs[0].shape[-1] == 1 else None
    if spatial_dims is not None and dims != spatial_dims:
        kind = "3-D volume" if spatial_dims == 3 else "2-D image"
        hint = ""
        if dims in COMMANDS:
            other = "an affinities-3d (3-D affinity)" if dims == 3 else "a membranes-2d (2-D image)"
            hint = f"; it is {other} model: use '{COMMANDS[dims]}'"
        raise FusionNetError(
            f"incompatible weights {path}: expected a single-channel {kind} model, got inputs "
            f"{[tuple(i.shape) for i in inputs]}{hint}"
        )
    if dims not in COMMANDS:
        raise FusionNetError(f"incompatible weights {path}: expected a single-channel 2-D image or 3-D volume "
                             f"model, got inputs {[tuple(i.shape) for i in inputs]}")
    return model
