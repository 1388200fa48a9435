"""Tables of settings from TOML files and ``--set key=value``, checked against a schema.

A schema maps each key to a nested schema (a TOML table) or to ``(type, default, rule)``;
a rule is None, a tuple of allowed strings, a closed ``(low, high)`` range of numbers, or a
function of the value returning what is wrong with it (or None). Unknown keys and invalid
values are refused with a one-line :class:`~fusionnet_keras.errors.FusionNetError` naming the
key and the file (or ``--set``) that gave it. The training configuration
(:mod:`fusionnet_keras.training.config`) and the zebrafish experiment file
(:mod:`fusionnet_keras.experiments.zebrafish`) are such tables.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

from fusionnet_keras.errors import FusionNetError


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


def defaults(schema: dict) -> dict:
    """The defaults of ``schema`` as a nested dict (fresh copies)."""
    return {key: defaults(spec) if isinstance(spec, dict) else copy.deepcopy(spec[1]) for key, spec in schema.items()}


def check_value(key, value, spec):
    """``value`` of setting ``key`` checked against its ``(type, default, rule)``; an int becomes a float
    where a float is wanted."""
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


def merge(base: dict, update: dict, source: str, schema: dict, prefix="") -> None:
    """Check ``update`` against ``schema`` and write it into ``base``; ``source`` names where it came from
    (a file, ``--set``, or ``"config"`` for a whole configuration read back from ``config.json``)."""
    for key, value in update.items():
        full = f"{prefix}{key}"
        if key not in schema:
            raise FusionNetError(f"unknown config key {full!r} in {source}")
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise FusionNetError(f"config key {full!r} must be a table [{full}] in {source}")
            merge(base[key], value, source, spec, prefix=f"{key}.")
        elif source == "config":  # a whole configuration (config.json): the key says it all
            base[key] = check_value(full, value, spec)
        else:
            try:
                base[key] = check_value(full, value, spec)
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
        merge(settings, read_toml(path), str(path), schema)
    for text in overrides:
        merge(settings, parse_override(text, schema), "--set", schema)
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

    String settings of ``schema`` keep the text as given unless it is a quoted
    TOML string (``data.val_sections=30`` is the string ``"30"``).
    """
    if "=" not in text:
        raise FusionNetError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if schema is not None and _is_str_key(key, schema) and not isinstance(value, str):
        value = raw.strip()  # e.g. data.val_sections=30 or name=2024-01-31: keep the text
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out
