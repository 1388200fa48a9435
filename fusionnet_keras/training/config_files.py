"""Reading, writing and diffing configuration files.

A configuration is read from one or more TOML files (later files override
earlier ones, so an experiment file holds only what differs from the defaults
and a preset file holds only what the preset changes) plus ``--set key=value``
overrides (:mod:`fusionnet_keras.training.schema`), and checked by the schema of
the family the files name (:mod:`fusionnet_keras.training.config`):
:func:`load_config`. The resolved configuration is saved as ``config.json`` next
to the checkpoints (:func:`save_config`) and read back checked
(:func:`read_config_json`); :func:`diff` lists the keys two configurations
differ in (for resume checks).

Example TOML::

    name = "isbi2012-fusionnet"

    [model]
    architecture = "fusionnet"

    [data]
    images = "isbi2012/train-volume.tif"
    labels = "isbi2012/train-labels.tif"
    train_sections = "1-20"
    val_sections = "21-30"

    [train]
    epochs = 50

or (``experiments/affinity3d/unet3d_malis.toml``)::

    name = "affinity3d-unet3d-malis"

    [model]
    architecture = "unet3d"

    [train]
    loss = "malis"
"""

from __future__ import annotations

import json

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training.config import DEFAULT_ARCHITECTURE, _architectures, family, validate
from fusionnet_keras.training.schema import load_settings, parse_override, read_toml

__all__ = ["architecture_of", "diff", "load_config", "read_config_json", "save_config"]


def load_config(paths=(), overrides=()) -> dict:
    """Defaults, updated by each TOML file in ``paths`` then each ``key=value`` override, validated.

    The architecture the files and overrides name chooses the family (its keys
    and defaults), so one of the other kind named earlier (a 3-D config file with
    ``--set model.architecture=fusionnet``) is refused naming both, not judged by
    the other family's keys.
    """
    schema = family(_checked_architecture(paths, overrides)).schema
    return validate(load_settings(schema, paths, overrides))


def save_config(config: dict, path) -> None:
    """Write ``config`` as JSON atomically."""
    from fusionnet_keras.utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config_json(path) -> dict:
    """The configuration saved at ``path`` (``config.json`` of a run), checked
    (:func:`~fusionnet_keras.training.config.validate`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return validate(json.load(f))
    except FileNotFoundError:
        raise FusionNetError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FusionNetError(f"invalid JSON in {path}: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise FusionNetError(f"cannot read config {path}: {e.strerror or e}") from None


def diff(a: dict, b: dict, prefix="") -> list[str]:
    """Keys whose values differ between two configurations (for resume checks)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def _architectures_named(paths=(), overrides=()) -> list[tuple[str, object]]:
    """``(source, value)`` of every ``model.architecture`` the files and overrides set, in order."""
    named = []
    for path in paths:
        model = read_toml(path).get("model")
        if isinstance(model, dict) and "architecture" in model:
            named.append((str(path), model["architecture"]))
    for text in overrides:
        if text.split("=", 1)[0].strip() == "model.architecture":
            named.append((f"--set {text.strip()}", parse_override(text)["model"]["architecture"]))
    return named


def architecture_of(paths=(), overrides=()) -> str:
    """The ``model.architecture`` that ``paths`` and ``overrides`` set (the last one wins; default
    ``"fusionnet"``), read without validation."""
    named = [value for _, value in _architectures_named(paths, overrides) if isinstance(value, str)]
    return named[-1] if named else DEFAULT_ARCHITECTURE


def _checked_architecture(paths=(), overrides=()) -> str:
    """:func:`architecture_of`, refusing an unknown one and two of different families named together."""
    known = _architectures()
    kinds = {a: "3-D" if fam.volumetric else "2-D" for a, fam in known.items()}
    named = _architectures_named(paths, overrides)
    for source, value in named:
        if not isinstance(value, str) or value not in kinds:
            raise FusionNetError(f"config key 'model.architecture' must be one of {', '.join(kinds)}, got "
                                 f"{value!r} in {source}")
    if not named:
        return DEFAULT_ARCHITECTURE
    last_source, last = named[-1]
    for source, value in named[:-1]:
        if kinds[value] != kinds[last]:
            same = ", ".join(a for a in kinds if kinds[a] == kinds[value])
            raise FusionNetError(
                f"{last_source} asks for the {kinds[last]} network {last!r}, but {source} configures the "
                f"{kinds[value]} network {value!r} (its settings are for that kind); give a {kinds[last]} "
                f"config with it, or one of the {kinds[value]} architectures ({same})")
    return last
