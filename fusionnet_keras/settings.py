"""Project-wide settings read from the environment."""

import os
from pathlib import Path

DATA_DIR_ENV = "FUSIONNET_DATA_DIR"


def data_dir() -> Path:
    """Directory holding datasets: ``$FUSIONNET_DATA_DIR`` or ``data/`` (relative to the cwd)."""
    return Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser()
