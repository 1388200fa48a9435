"""FusionNetW^k trained unit by unit within every epoch (Quan et al. 2021, sec. 3.4).

"For each epoch, we incrementally train FusionNetW4[i] and fix its weights
before training FusionNetW4[i + 1]": every epoch trains unit 1 on its own loss
against the labels while the other units are frozen, then unit 2 on its loss
with unit 1 frozen (weights and batch-norm statistics: a frozen unit runs in
inference mode), and so on. Each unit has

* its own training wrapper (:func:`fusionnet_keras.training.membranes.unit_models`):
  the network from its input to that unit's output, so the later units cost
  nothing while an earlier one trains and no gradient reaches the frozen
  earlier units;
* its own Adam and learning-rate schedule (the paper: "the weights of each
  FusionNet unit are updated independently").

All wrappers share one augmenter, so every phase draws new deformations.

The resume point (``checkpoints/units.npz``, written atomically after every
unit phase, before ``state.json``) holds the network's weights and every
unit's Adam variables; ``state.json`` says how many units of the current
epoch are done, so a run killed in the middle of an epoch resumes with the
next unit.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.atomic import atomic_path


def unit_network(net, unit: int):
    """The part of FusionNetW ``net`` from its input to the output of unit ``unit`` (shares its layers)."""
    import keras

    return keras.Model(net.inputs, net.outputs[unit - 1], name=f"{net.name}_to_unit{unit}")


def fit_units(models, net, ds, state: dict, total_epochs: int, phase_callbacks, fit_kwargs: dict) -> None:
    """Train to ``total_epochs``: in every epoch, unit i (the others frozen), then unit i + 1, ...

    ``phase_callbacks[i]`` are the callbacks of unit ``i + 1``'s phase (they
    checkpoint it and update ``state["epoch"]`` / ``state["unit"]``). Starts
    with the unit after ``state["unit"]`` (units done in the current epoch).
    """
    while state["epoch"] < total_epochs:
        epoch = state["epoch"]
        for unit in range(state.get("unit", 0) + 1, len(models) + 1):
            net.set_trainable_unit(unit)
            models[unit - 1].fit(ds, epochs=epoch + 1, initial_epoch=epoch, callbacks=phase_callbacks[unit - 1],
                                 **fit_kwargs)


def save_units(path, net, models) -> None:
    """Write the network's weights and each unit's Adam variables to ``path`` (``.npz``) atomically."""
    arrays = {f"net/{j}": np.asarray(w) for j, w in enumerate(net.weights)}
    for unit, model in enumerate(models, start=1):
        if model.optimizer is not None and model.optimizer.built:
            arrays.update({f"adam{unit}/{j}": np.asarray(v) for j, v in enumerate(model.optimizer.variables)})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def restore_units(path, net, models) -> list[int]:
    """Load :func:`save_units`' file into ``net`` and the units' optimizers; return the units whose
    optimizer was restored (a unit not trained yet keeps a fresh one)."""
    from fusionnet_keras.utils.npz import read_npz

    saved = read_npz(path, "resume point")
    weights = [saved[f"net/{j}"] for j in range(sum(key.startswith("net/") for key in saved))]
    if len(weights) != len(net.weights):
        raise FusionNetError(f"{path} holds {len(weights)} weights, the network has {len(net.weights)}")
    for variable, value in zip(net.weights, weights):
        variable.assign(value)
    restored = []
    for unit, model in enumerate(models, start=1):
        values = [saved[f"adam{unit}/{j}"] for j in range(sum(k.startswith(f"adam{unit}/") for k in saved))]
        if not values:
            continue
        net.set_trainable_unit(unit)
        model.optimizer.build(model.trainable_variables)
        if len(values) != len(model.optimizer.variables):
            raise FusionNetError(f"{path}: the optimizer of unit {unit} does not match the network")
        for variable, value in zip(model.optimizer.variables, values):
            variable.assign(value)
        restored.append(unit)
    return restored
