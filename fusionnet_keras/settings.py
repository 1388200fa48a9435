"""Project-wide settings: the data folder (from the environment) and the Keras registration package."""

import os
from pathlib import Path

DATA_DIR_ENV = "FUSIONNET_DATA_DIR"

KERAS_PACKAGE = "fusionnet_keras"
"""Package name of every Keras class the package registers (``fusionnet_keras>ConvBlock`` in ``.keras`` files)."""


def data_dir() -> Path:
    """Directory holding datasets: ``$FUSIONNET_DATA_DIR`` or ``data/`` (relative to the cwd)."""
    return Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser()
