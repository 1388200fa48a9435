"""Project-wide settings: the data folder (from the environment) and the Keras registration package."""

import os
from pathlib import Path

DATA_DIR_ENV = "FUSIONNET_DATA_DIR"

KERAS_PACKAGE = "fusionnet_keras"
"""Package name of every Keras class the package registers (``fusionnet_keras>ConvBlock`` in ``.keras`` files)."""

PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
"""The number formats of the convolutions and their Keras dtype policies (:mod:`fusionnet_keras.models.precision`)."""

PRECISION_WORDS = (*PRECISION_POLICIES, "auto", *(p for p in PRECISION_POLICIES.values() if p not in PRECISION_POLICIES))
"""The words every precision setting accepts (``train.precision``, ``predict.precision``, ``--precision``):
a number format, ``auto``, or a Keras policy name; one resolver turns them into a precision
(:func:`fusionnet_keras.models.precision.check_precision`)."""


def data_dir() -> Path:
    """Directory holding datasets: ``$FUSIONNET_DATA_DIR`` or ``data/`` (relative to the cwd)."""
    return Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser()

LOCK_TIMEOUT_ENV = "FUSIONNET_LOCK_TIMEOUT"

DEFAULT_LOCK_TIMEOUT = 600.0


def lock_timeout() -> float:
    """Seconds a writer waits for another writer of the same container: ``$FUSIONNET_LOCK_TIMEOUT`` or 600."""
    from fusionnet_keras.errors import FusionNetError

    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise FusionNetError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds >= 0, got {text!r}")
    return value
