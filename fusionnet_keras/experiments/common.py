"""What the experiment entry points share (``experiments/<dataset>/run.py``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg

MODELS = ("fusionnet", "unet")
LABELS = {"fusionnet": "FusionNet", "unet": "U-Net"}


def train_models(experiment_dir, preset: str, out, data: dict) -> tuple[dict, dict]:
    """Train FusionNet and U-Net with ``<name>.toml`` + ``<preset>.toml`` and the ``data.*`` settings.

    Each run lives in ``out/<name>`` and resumes if it was interrupted.
    Returns ``(configs, summaries)`` keyed by model name.
    """
    import keras

    from fusionnet_keras.training.trainer import train

    experiment_dir, out = Path(experiment_dir), Path(out)
    overrides = [f"data.{key}={json.dumps(str(value))}" for key, value in data.items()]
    configs, trains = {}, {}
    for name in MODELS:
        files = [experiment_dir / f"{name}.toml"]
        if (experiment_dir / f"{preset}.toml").exists():
            files.append(experiment_dir / f"{preset}.toml")
        configs[name] = cfg.load_config(files, overrides)
        print(f"== training {LABELS[name]} ({preset} preset) ==", flush=True)
        trains[name] = train(configs[name], out / name, resume=True)
        net = keras.saving.load_model(trains[name]["best_model"], compile=False)
        trains[name]["parameters"] = f"{net.count_params():,}"
    return configs, trains


def main(run, doc: str, default_out: str, argv=None) -> int:
    """Command line of an experiment script: ``--preset cpu|paper --out DIR --tta 1|8``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--preset", choices=["cpu", "paper"], default="cpu",
                        help="cpu: reduced preset for 2 CPU cores (<= 45 min); paper: the paper's protocol (GPU)")
    parser.add_argument("--out", default=default_out, help="output folder")
    parser.add_argument("--tta", type=int, choices=[1, 8], default=8, help="test-time orientations")
    args = parser.parse_args(argv)
    try:
        run(args.preset, args.out, Path(sys.argv[0]).resolve().parent, tta=args.tta)
    except FusionNetError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0
