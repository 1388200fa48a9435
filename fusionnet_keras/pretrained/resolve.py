"""What ``--weights`` (and ``--classifier``) may be: nothing, a path, a registry name or a URL.

* nothing: the task's default registry model (``default = true`` on its card);
* an existing file, or anything that looks like a path (ends in ``.keras``/``.npz``
  or holds a ``/``): that file, checked later by the loader;
* a registry name: the entry's file, after its sha256 was checked against the card;
* ``https://.../model.keras#sha256=HEX``: downloaded once into the cache
  (:mod:`fusionnet_keras.pretrained.download`).
"""

from __future__ import annotations

import os

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.pretrained import registry as reg
from fusionnet_keras.pretrained.card import TASK_DIMS, TASKS
from fusionnet_keras.pretrained.download import fetch, is_url


def _looks_like_path(value: str, suffixes) -> bool:
    return value.endswith(suffixes) or "/" in value or os.sep in value or os.path.exists(value)


def _check_task(entry, task) -> None:
    if task is not None and entry.task != task:
        raise FusionNetError(f"model {entry.name} has task {entry.task}, not {task}: use '{TASKS[entry.task]}'")


def registry_entry(value, task: str | None, registry=None, suffixes=(".keras",)):
    """The registry entry ``value`` stands for (None = the task's default), or None for a path or URL (a value
    ending in one of ``suffixes``, holding a folder separator or naming an existing file)."""
    if value is None:
        return reg.default_for(task, registry)
    value = os.fspath(value)
    if is_url(value) or _looks_like_path(value, suffixes):
        return None
    entry = reg.get(value, registry)
    _check_task(entry, task)
    return entry


def _local(value, entry, file_of) -> str:
    """The local file: the entry's (``file_of(entry)``), a URL's download, or the path itself."""
    if entry is not None:
        return str(file_of(entry))
    value = os.fspath(value)
    return str(fetch(value)) if is_url(value) else value


def resolve_weights(value, task: str | None, registry=None) -> str:
    """The local ``.keras`` path for ``value`` (see the module docstring); ``task`` (``membranes-2d``,
    ``affinities-3d`` or None for either) picks the default and is checked for registry names."""
    if value is None and task is None:
        raise FusionNetError("no model given: pass a .keras file, a registry name or a URL")
    return _local(value, registry_entry(value, task, registry), reg.model_file)


def resolve_classifier(value, registry=None) -> str:
    """The local agglomeration classifier for ``value``: None = the default 3-D entry's, a registry
    name = that entry's, a URL = downloaded, else a path."""
    try:
        entry = registry_entry(value, "affinities-3d", registry, suffixes=(".npz",))
    except FusionNetError:
        if value is not None:
            raise
        raise FusionNetError("the learned method needs a classifier and this installation ships none yet: "
                             "pass --classifier (a file from train-agglomeration, a registry name or a URL)"
                             ) from None
    return _local(value, entry, reg.classifier_file)


def load(name=None, task: str | None = None, registry=None):
    """A network from the registry (``name``), a ``.keras`` path or a URL, as a float32 Keras model.

    ``task`` (``membranes-2d`` or ``affinities-3d``): the kind wanted; the model's own
    input rank must fit it (a 3-D network for a 2-D task is refused, naming its task).
    Without ``name``, the task's default model.

    Example (with a registry entry called ``isbi2012-fusionnet``)::

        import fusionnet_keras as fk
        net = fk.pretrained.load("isbi2012-fusionnet")
        prob = fk.predict(net, image)
    """
    from fusionnet_keras.models.loading import load_model

    path = resolve_weights(name, task, registry)
    return load_model(path, spatial_dims=None if task is None else TASK_DIMS[task])


def model_for(model, task: str, registry=None):
    """``model`` itself if it is a network, else :func:`load` of it (None = the task's default)."""
    if model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return load(os.fsdecode(model) if isinstance(model, bytes) else model, task, registry)
    return model


def predict(model=None, image=None, **options):
    """``fk.predict``: :func:`fusionnet_keras.inference.predictor.predict` (same options) of ``model``, a
    network, a registry name, a ``.keras`` path or a URL; ``predict(image)`` (or ``model=None``): the
    shipped default 2-D model (:func:`fusionnet_keras.pretrained.default_for`)."""
    from fusionnet_keras.inference.predictor import predict as run

    if image is None:  # predict(image): the default model
        if hasattr(model, "inputs"):
            raise FusionNetError("no image given: predict(model, image), or predict(image) for the default model")
        model, image = None, model
    return run(model_for(model, "membranes-2d"), image, **options)


def predict_affinities(model, volume, **options):
    """``fk.predict_affinities``: :func:`fusionnet_keras.inference.affinities.predict_affinities` (same
    options) of ``model``, a 3-D network, a registry name, a ``.keras`` path, a URL or None (the shipped
    default 3-D model)."""
    from fusionnet_keras.inference.affinities import predict_affinities as run

    return run(model_for(model, "affinities-3d"), volume, **options)
