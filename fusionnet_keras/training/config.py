"""Validated training configuration.

A configuration is read from one or more TOML files (later files override
earlier ones, so an experiment file holds only what differs from the defaults
and a preset file holds only what the preset changes) plus ``--set key=value``
overrides. Unknown keys and invalid values are refused with a one-line
:class:`~fusionnet_keras.errors.FusionNetError` naming the key. The resolved
configuration is saved as ``config.json`` next to the checkpoints.

The defaults are the papers' settings where the papers state them (Quan et al.
2016/2021): FusionNet with ``nb_filters=64``, ``depth=4``, 640x640 inputs (512 +
2 * 64 mirror padding), Adam at 2e-4 with decay, MAE loss, 8-orientation
enrichment, elastic deformation from a 12x12 field with zero border, Gaussian
noise with sigma 0.1, FusionNetW units trained one after the other in every
epoch. The values the papers leave open are listed, each with the reason for
the value chosen, in :data:`NOT_IN_PAPER`.

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
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path

from fusionnet_keras.errors import FusionNetError

# section -> key -> (type, default, rule); a rule is None, a tuple of allowed strings, a closed (low, high)
# range of numbers, or a function of the value returning what is wrong with it (or None). The same machinery
# validates other tables of settings, e.g. the zebrafish experiment file (experiments/zebrafish.py).
SCHEMA = {
    "name": (str, "fusionnet", None),
    "model": {
        "architecture": (str, "fusionnet", ("fusionnet", "fusionnet_w", "unet")),
        "nb_filters": (int, 64, (1, 4096)),
        "depth": (int, 4, (0, 8)),
        "units": (int, 1, (1, 16)),
        # momentum of the batch-norm moving statistics (Keras' default 0.99)
        "bn_momentum": (float, 0.99, (0.0, 1.0)),
        # start FusionNet's residual blocks as the identity (last batch-norm scale of the branch = 0);
        # not in the paper; no effect on the U-Net, which has no residual blocks
        "zero_init_residual": (bool, False, None),
    },
    "data": {
        # paths are relative to $FUSIONNET_DATA_DIR (default data/) unless absolute
        "images": (str, "isbi2012/train-volume.tif", None),
        "labels": (str, "isbi2012/train-labels.tif", None),
        # 1-based inclusive section ranges ("1-20"); empty val_sections = no validation
        "train_sections": (str, "1-20", None),
        "val_sections": (str, "21-30", None),
    },
    "train": {
        "epochs": (int, 500, (1, 10**7)),
        # optimisation steps per epoch; 0 = one pass over the 8-orientation enriched set
        "steps_per_epoch": (int, 0, (0, 10**7)),
        "batch_size": (int, 1, (1, 4096)),
        # random crop size before padding; 0 = whole sections (the paper: 512 -> 640)
        "crop": (int, 0, (0, 100000)),
        "pad": (int, 64, (0, 4096)),
        # mae (2021 paper), mse (2016 paper), bce (binary cross-entropy: not in the papers; faster on short schedules)
        "loss": (str, "mae", ("mae", "mse", "bce")),
        # weight of membrane (label 0) pixels in the loss; cell pixels weigh 1 (1.0 = unweighted, the papers)
        "membrane_weight": (float, 1.0, (0.01, 100.0)),
        "learning_rate": (float, 2e-4, (0.0, 1.0)),
        # multiplicative learning-rate decay per epoch (1.0 = constant); the rate itself is not in the papers
        "lr_decay": (float, 0.99, (0.0, 1.0)),
        # how FusionNetW's units are trained: "units" (the 2021 paper, sec. 3.4: in every epoch unit 1 is
        # trained on its own loss, then frozen while unit 2 trains on its loss, ...; one Adam per unit) or
        # "joint" (all units at once on the sum of their losses; not the paper's)
        "unit_schedule": (str, "units", ("units", "joint")),
        "seed": (int, 0, (0, 2**31 - 1)),
        # validate (V^Rand / V^Info on the validation sections) every N epochs
        "validate_every": (int, 1, (1, 10**7)),
        "val_tta": (int, 1, (1, 8)),
        "tensorboard": (bool, True, None),
        # Keras dtype policy: float32, or mixed_bfloat16 (bf16 convolutions, float32 weights, warp,
        # output and loss; fast only where bf16 is native, measured in docs/usage.md "Training
        # configuration"), or auto: mixed_bfloat16 where bf16 is native, else float32
        # (fusionnet_keras.utils.hardware.training_policy)
        "precision": (str, "float32", ("float32", "mixed_bfloat16", "mixed_float16", "auto")),
        "enrich": (bool, True, None),
        # input pipeline: tf.data (TensorFlow backend), numpy (backend-neutral, no TensorFlow needed), or auto
        # (tf.data under the TensorFlow backend, else numpy); fusionnet_keras.data.pipeline.make_training_data
        "pipeline": (str, "auto", ("auto", "tf.data", "numpy")),
    },
    "augment": {
        # maximal displacement (pixels) of the interior nodes of the 12x12 field
        "elastic_amplitude": (float, 10.0, (0.0, 1000.0)),
        "elastic_grid": (int, 12, (3, 1000)),
        "noise_sigma": (float, 0.1, (0.0, 10.0)),
    },
    "predict": {
        "tta": (int, 8, (1, 8)),
        # mirror padding (px) around each section at prediction time (the paper: 64)
        "pad": (int, 64, (0, 4096)),
        # windows per forward pass; 0 = as many as fit in a quarter of the free memory, at most 8
        "batch_size": (int, 0, (0, 4096)),
        # threshold of the binary mask for 3-D instances (zebrafish)
        "threshold": (float, 0.5, (0.0, 1.0)),
        # number format of the convolutions at prediction time, whatever train.precision is: validation
        # predicts in it and best.keras / last.keras are saved in it, so the checkpoint is chosen by the
        # number that scoring the saved model gives (fusionnet_keras.models.precision); "auto": bfloat16
        # where it is native (accelerators, AVX512-BF16 / AMX CPUs), else float32
        "precision": (str, "float32", ("float32", "bfloat16", "float16", "auto")),
    },
}


# The settings of the default (paper) configuration that the papers do not state: (setting, reason for
# the value). The paper presets, docs/experiments/index.md and the experiment reports label each one "not
# stated in the paper" with this reason; a setting that is not a config key names what it is.
NOT_IN_PAPER = (
    ("train.lr_decay",
     "the papers say only \"a decaying learning rate of 2e-4\"; x0.99 per epoch leaves 0.7 % of the "
     "starting rate after 500 epochs"),
    ("train.epochs",
     "the 2021 paper trained \"for over 50,000 epochs\" (the 2016 paper gives no number); 50,000 passes "
     "over the 160 enriched ISBI images are 8 million steps, so 500 epochs (80,000 steps at batch 1) are "
     "used; set train.epochs=50000 for the literal reading"),
    ("augment.elastic_amplitude",
     "the papers give the random 12x12 field with zero border but not its amplitude; 10 px (1.6 % of the "
     "640 px input) bends membranes visibly without folding them"),
    ("augment.noise_sigma",
     "the papers write \"variance sigma = 0.1\"; read as the standard deviation of intensities in [0, 1] "
     "(the usual meaning of sigma; a variance of 0.1, std 0.32, would drown the membranes)"),
    ("elastic warp after the mirror padding",
     "the papers list the padding and the warp but not their order; the warp is applied to the padded "
     "640 px input, so the field's zero border lies in the padding and the whole 512 px section is deformed"),
)
"""Settings of the default configuration not stated in the papers, with the reason for each value."""

NOT_IN_PAPER_LABEL = "not stated in the paper"


def greater_than(low):
    """Rule: a number ``> low``."""
    return lambda value: None if value > low else f"must be > {low}"


def strictly_between(low, high):
    """Rule: a number in the open interval ``(low, high)``."""
    return lambda value: None if low < value < high else f"must be in ({low}, {high})"


def list_of(kind, length=None, positive=False):
    """Rule: a list of ``kind`` (``str``: non-empty strings; ``float``: finite numbers, not booleans)."""

    def check(value):
        if kind is str:
            ok = all(isinstance(v, str) and v for v in value)
        else:
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                     and (v > 0 or not positive) for v in value)
        if not ok or (length is not None and len(value) != length):
            count = f"{length} " if length is not None else ""
            what = "file paths (strings)" if kind is str else ("positive numbers" if positive else "numbers")
            return f"must list {count}{what}"
        return None

    return check


def defaults(schema=None) -> dict:
    """The default configuration of ``schema`` (default :data:`SCHEMA`) as a nested dict (fresh copies)."""
    schema = SCHEMA if schema is None else schema
    return {key: defaults(spec) if isinstance(spec, dict) else copy.deepcopy(spec[1]) for key, spec in schema.items()}


def _check_value(key, value, spec):
    typ, _default, rule = spec
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (typ is not bool and isinstance(value, bool)) or not isinstance(value, typ):
        raise FusionNetError(f"config key {key!r} must be {typ.__name__}, got {value!r}")
    if callable(rule):
        problem = rule(value)
        if problem:
            raise FusionNetError(f"config key {key!r} {problem}, got {value!r}")
    elif isinstance(rule, tuple) and typ is str:
        if value not in rule:
            raise FusionNetError(f"config key {key!r} must be one of {', '.join(rule)}, got {value!r}")
    elif isinstance(rule, tuple) and typ in (int, float):
        lo, hi = rule
        if not lo <= value <= hi:
            raise FusionNetError(f"config key {key!r} must be in [{lo}, {hi}], got {value!r}")
    return value


def _merge(base: dict, update: dict, source: str, schema: dict, prefix="") -> None:
    for key, value in update.items():
        full = f"{prefix}{key}"
        if key not in schema:
            raise FusionNetError(f"unknown config key {full!r} in {source}")
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise FusionNetError(f"config key {full!r} must be a table [{full}] in {source}")
            _merge(base[key], value, source, spec, prefix=f"{key}.")
        elif source == "config":  # a whole configuration (config.json): the key says it all
            base[key] = _check_value(full, value, spec)
        else:
            try:
                base[key] = _check_value(full, value, spec)
            except FusionNetError as e:  # which file (or --set) gave the value
                raise FusionNetError(f"{e} in {source}") from None


def read_toml(path) -> dict:
    """The table of a TOML file; :class:`FusionNetError` if it is missing or invalid."""
    path = Path(path)
    if path.is_dir():
        raise FusionNetError(f"config {path} is a directory; give a TOML file (e.g. experiments/isbi2012/fusionnet.toml)")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FusionNetError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise FusionNetError(f"config {path} is not a TOML text file (binary content)") from None
    except tomllib.TOMLDecodeError as e:
        raise FusionNetError(f"invalid TOML in {path}: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise FusionNetError(f"cannot read config {path}: {e.strerror or e}") from None


def load_settings(schema: dict, paths=(), overrides=()) -> dict:
    """Defaults of ``schema``, updated by each TOML file in ``paths`` then each ``key=value`` override.

    Unknown keys and values of the wrong type or out of their rule are refused
    with a :class:`FusionNetError` naming the key and the file.
    """
    settings = defaults(schema)
    for path in paths:
        _merge(settings, read_toml(path), str(path), schema)
    for text in overrides:
        _merge(settings, parse_override(text, schema), "--set", schema)
    return settings


def _is_str_key(key: str, schema: dict) -> bool:
    """Whether dotted ``key`` names a string setting of ``schema``."""
    spec = schema
    for part in key.split("."):
        if not isinstance(spec, dict) or part not in spec:
            return False
        spec = spec[part]
    return isinstance(spec, tuple) and spec[0] is str


def parse_override(text: str, schema=None):
    """Parse ``key=value`` (``train.epochs=5``) into a nested dict; values are TOML literals or bare strings.

    String settings of ``schema`` (default :data:`SCHEMA`) keep the text as
    given unless it is a quoted TOML string (``data.val_sections=30`` is the
    string ``"30"``).
    """
    if "=" not in text:
        raise FusionNetError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if _is_str_key(key, SCHEMA if schema is None else schema) and not isinstance(value, str):
        value = raw.strip()  # e.g. data.val_sections=30 or name=2024-01-31: keep the text
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(paths=(), overrides=()) -> dict:
    """Defaults, updated by each TOML file in ``paths`` then each ``key=value`` override, validated."""
    return validate(load_settings(SCHEMA, paths, overrides))


def validate(config: dict) -> dict:
    """Check a full configuration dict (e.g. read back from ``config.json``)."""
    ref = defaults()
    checked = copy.deepcopy(ref)
    _merge(checked, config, "config", SCHEMA)
    missing = [k for k in ref if k not in config]
    if missing:
        raise FusionNetError(f"config is missing {', '.join(missing)}")
    train = checked["train"]
    if train["crop"] and checked["model"]["depth"] and (train["crop"] + 2 * train["pad"]) % 2 ** checked["model"]["depth"]:
        raise FusionNetError(
            f"config key 'train.crop' + 2 * 'train.pad' = {train['crop'] + 2 * train['pad']} must be "
            f"divisible by 2**depth = {2 ** checked['model']['depth']}"
        )
    if checked["model"]["architecture"] != "fusionnet_w" and checked["model"]["units"] != 1:
        raise FusionNetError("config key 'model.units' applies to architecture 'fusionnet_w' only")
    return checked


def model_kwargs(config: dict) -> dict:
    """Keyword arguments for :func:`fusionnet_keras.models.build_model`."""
    m = config["model"]
    kwargs = {"nb_filters": m["nb_filters"], "depth": m["depth"], "bn_momentum": m["bn_momentum"]}
    if m["architecture"] == "fusionnet_w":
        kwargs["units"] = m["units"]
    if m["architecture"] in ("fusionnet", "fusionnet_w"):
        kwargs["zero_init_residual"] = m["zero_init_residual"]
    return kwargs


def save_config(config: dict, path) -> None:
    """Write ``config`` as JSON atomically."""
    from fusionnet_keras.utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config_json(path, check=None) -> dict:
    """The configuration saved at ``path``, checked by ``check`` (default :func:`validate`)."""
    check = validate if check is None else check
    try:
        with open(path, encoding="utf-8") as f:
            return check(json.load(f))
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
    ``"fusionnet"``), read without validation, to choose the schema."""
    named = [value for _, value in _architectures_named(paths, overrides) if isinstance(value, str)]
    return named[-1] if named else SCHEMA["model"]["architecture"][1]


def _checked_architecture(paths=(), overrides=()) -> str:
    """:func:`architecture_of`, refusing an unknown one and a 2-D and a 3-D one named together."""
    from fusionnet_keras.training.affinity_config import ARCHITECTURES as THREE_D

    two_d = SCHEMA["model"]["architecture"][2]
    kinds = {**{a: "2-D" for a in two_d}, **{a: "3-D" for a in THREE_D}}
    named = _architectures_named(paths, overrides)
    for source, value in named:
        if not isinstance(value, str) or value not in kinds:
            raise FusionNetError(f"config key 'model.architecture' must be one of {', '.join(kinds)}, got "
                                 f"{value!r} in {source}")
    if not named:
        return SCHEMA["model"]["architecture"][1]
    last_source, last = named[-1]
    for source, value in named[:-1]:
        if kinds[value] != kinds[last]:
            same = ", ".join(a for a in kinds if kinds[a] == kinds[value])
            raise FusionNetError(
                f"{last_source} asks for the {kinds[last]} network {last!r}, but {source} configures the "
                f"{kinds[value]} network {value!r} (its settings are for that kind); give a {kinds[last]} "
                f"config with it, or one of the {kinds[value]} architectures ({same})")
    return last


def load_any_config(paths=(), overrides=()) -> dict:
    """:func:`load_config`, or the 3-D affinity configuration
    (:func:`fusionnet_keras.training.affinity_config.load_affinity_config`) when the files name a 3-D
    architecture (``unet3d``, ``fusionnet3d``).

    The architecture chooses the schema, so one of the other kind named earlier
    (a 3-D config file with ``--set model.architecture=fusionnet``) is refused
    naming both, not judged by the other schema.
    """
    from fusionnet_keras.training import affinity_config

    if _checked_architecture(paths, overrides) in affinity_config.ARCHITECTURES:
        return affinity_config.load_affinity_config(paths, overrides)
    return load_config(paths, overrides)


def is_affinity_config(config: dict) -> bool:
    """Whether ``config`` configures a 3-D affinity network."""
    from fusionnet_keras.training.affinity_config import ARCHITECTURES

    return config.get("model", {}).get("architecture") in ARCHITECTURES


def data_inputs(config: dict) -> list[str]:
    """The data a configuration trains on, as paths: the 2-D image and label volumes (relative to
    ``$FUSIONNET_DATA_DIR`` unless absolute), or the folder of a 3-D affinity configuration's dataset."""
    from fusionnet_keras.settings import data_dir

    if is_affinity_config(config):
        return [str(data_dir() / config["data"]["dataset"])]
    from fusionnet_keras.training.inputs import resolve_data_path

    return [resolve_data_path(config["data"][key]) for key in ("images", "labels")]
