"""Helpers of the scripts that make registry entries (``experiments/*/ship.py``): run the user's commands,
write TOML values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd, env=None) -> str:
    """Run ``fusionnet-keras ARGS`` in ``cwd`` with this checkout on the path; its standard output (exit on
    failure with the command's error line)."""
    proc = subprocess.run([sys.executable, "-m", "fusionnet_keras.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if proc.returncode:
        sys.exit(f"fusionnet-keras {' '.join(map(str, args))} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def toml(value) -> str:
    """A TOML value: strings, numbers, booleans and lists of them are written as JSON writes them."""
    return json.dumps(value)
