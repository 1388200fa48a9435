"""The flow every experiment shares (``experiments/<dataset>/run.py``).

An experiment :func:`start` s (output folder, preset banner), trains FusionNet
and the U-Net (:func:`train_models`, resumable), predicts with both best
models (:func:`predict_models`), scores them its own way, and :func:`finish` es
by writing ``results.json`` and ``report.md`` atomically. The report's shared
parts are :func:`preset_note` and :func:`training_table`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.utils.atomic import atomic_write_text

MODELS = ("fusionnet", "unet")
LABELS = {"fusionnet": "FusionNet", "unet": "U-Net"}


def start(preset: str, out) -> tuple[float, Path]:
    """Create ``out``, announce a CPU preset; return ``(start time, out as a Path)``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if preset == "cpu":
        print("== CPU preset: reduced networks and schedule so the target finishes on 2 CPU cores "
              "(PRESET=paper runs the paper's protocol) ==", flush=True)
    return time.time(), out


def load_best(out, name):
    """The best checkpoint of model ``name`` (``out/<name>/best.keras``)."""
    import keras

    return keras.saving.load_model(Path(out) / name / "best.keras", compile=False)


def train_models(experiment_dir, preset: str, out, data: dict) -> tuple[dict, dict]:
    """Train FusionNet and U-Net with ``<name>.toml`` + ``<preset>.toml`` and the ``data.*`` settings.

    Each run lives in ``out/<name>`` and resumes if it was interrupted.
    Returns ``(configs, summaries)`` keyed by model name.
    """
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
        trains[name]["parameters"] = f"{load_best(out, name).count_params():,}"
    return configs, trains


def predict_models(out, configs: dict, images, tta: int, filename: str, what: str,
                   progress: bool = False) -> tuple[dict, dict]:
    """Predict ``images`` with each best model (its ``predict`` settings) and write ``out/<name>/<filename>``.

    Returns ``(probabilities, seconds)`` keyed by model name.
    """
    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.inference.predictor import predict

    probs, seconds = {}, {}
    for name in MODELS:
        print(f"== predicting {what} with {LABELS[name]} (tta {tta}) ==", flush=True)
        settings = configs[name]["predict"]
        t0 = time.time()
        probs[name] = predict(load_best(out, name), images, tta=tta, pad=settings["pad"],
                              batch_size=settings["batch_size"] or None, progress=progress)
        seconds[name] = time.time() - t0
        write_volume(Path(out) / name / filename, probs[name], overwrite=True)
    return probs, seconds


def finish(out, t0: float, summary: dict, report) -> dict:
    """Write ``results.json`` (``summary`` + ``total_seconds``) and ``report.md`` (``report(total_seconds)``, lines)."""
    out = Path(out)
    total = time.time() - t0
    summary = {**summary, "total_seconds": total}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", "\n".join(report(total)) + "\n")
    print(f"== wrote {out / 'report.md'} ({total / 60:.1f} min) ==", flush=True)
    return summary


def preset_note(preset: str, experiment: str) -> list[str]:
    """The report's paragraph on the preset (the CPU preset is not the paper's protocol)."""
    if preset == "cpu":
        return [
            f"**CPU preset.** This run used the reduced CPU preset (smaller networks, crops, a short schedule; "
            f"see `experiments/{experiment}/cpu.toml`) so that the whole target finishes on 2 CPU cores. It is "
            f"not the paper's protocol; `make {experiment} PRESET=paper` runs that (GPU).",
            "",
        ]
    return [f"Preset: `{preset}`" + (" (the paper's protocol)." if preset == "paper" else "."), ""]


def training_table(configs: dict, trains: dict) -> list[str]:
    """The report's table of the two training runs."""
    lines = ["| model | nb_filters | depth | parameters | epochs | crop | train time (min) | best epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        if name not in trains:
            continue
        c, t = configs[name], trains[name]
        lines.append(
            f"| {LABELS[name]} | {c['model']['nb_filters']} | {c['model']['depth']} | {t.get('parameters', '')} "
            f"| {t['epochs']} | {c['train']['crop'] or 'full'} | {(t.get('train_seconds') or 0) / 60:.1f} "
            f"| {t['best_epoch']} |"
        )
    return lines


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
