"""The flow every experiment shares (``experiments/<dataset>/run.py``).

An experiment :func:`start` s (output folder, preset banner), trains its models
(FusionNet and the U-Net by default; :func:`train_models`, resumable), predicts
with each best model (:func:`predict_models`), scores them its own way, and
:func:`finish` es by writing ``results.json`` and ``report.md`` atomically. The
report's shared parts are :func:`preset_note` and :func:`training_table`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config as cfg
from fusionnet_keras.training import config_files
from fusionnet_keras.utils.atomic import atomic_write_text

MODELS = ("fusionnet", "unet")
LABELS = {"fusionnet": "FusionNet", "unet": "U-Net", "fusionnet_w2": "FusionNetW^2"}


def start(preset: str, out) -> tuple[float, Path]:
    """Create ``out``, announce a CPU preset; return ``(start time, out as a Path)``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if preset == "cpu":
        print("== CPU preset: reduced networks and schedule so the target finishes on 2 CPU cores "
              "(PRESET=paper runs the paper preset) ==", flush=True)
    return time.time(), out


def load_best(out, name):
    """The best checkpoint of model ``name`` (``out/<name>/best.keras``)."""
    from fusionnet_keras.models.loading import read_keras

    return read_keras(Path(out) / name / "best.keras", "checkpoint")


def model_config(experiment_dir, preset: str, name: str, overrides=()) -> dict:
    """The configuration of model ``name``: ``<name>.toml``, then ``<preset>.toml`` and
    ``<name>.<preset>.toml`` where they exist, then ``overrides`` (``key=value``); the keys of the
    architecture family the files name (:func:`~fusionnet_keras.training.config_files.load_config`)."""
    experiment_dir = Path(experiment_dir)
    files = [experiment_dir / f"{name}.toml"]
    files += [p for p in (experiment_dir / f"{preset}.toml", experiment_dir / f"{name}.{preset}.toml") if p.exists()]
    return config_files.load_config(files, overrides)


def train_models(experiment_dir, preset: str, out, data: dict, models=MODELS, overrides=()) -> tuple[dict, dict]:
    """Train ``models`` (:func:`model_config`, with the ``data.*`` settings and ``overrides``).

    Each run lives in ``out/<name>`` and resumes if it was interrupted.
    Returns ``(configs, summaries)`` keyed by model name.
    """
    from fusionnet_keras.training.trainer import train

    out = Path(out)
    overrides = [f"data.{key}={json.dumps(str(value))}" for key, value in data.items()] + list(overrides)
    configs, trains = {}, {}
    for name in models:
        configs[name] = model_config(experiment_dir, preset, name, overrides)
        print(f"== training {LABELS.get(name, name)} ({preset} preset) ==", flush=True)
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
    for name in configs:
        print(f"== predicting {what} with {LABELS.get(name, name)} (tta {tta}) ==", flush=True)
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


def preset_note(preset: str, experiment: str, config: dict | None = None) -> list[str]:
    """The report's paragraph on the preset: the CPU preset is not the paper's protocol, and the paper
    preset holds values the papers do not state (listed with ``config``'s values and the reasons)."""
    if preset == "cpu":
        return [
            f"**CPU preset.** This run used the reduced CPU preset (smaller networks, crops, a short schedule; "
            f"see `experiments/{experiment}/cpu.toml`) so that the whole target finishes on 2 CPU cores. It is "
            f"not the paper's protocol; `make {experiment} PRESET=paper` runs the paper preset (GPU).",
            "",
        ]
    if preset == "cpu-long":
        return [f"**Long CPU preset.** This run used `experiments/{experiment}/cpu-long.toml`: small networks and a "
                "schedule about 2.5 times the CPU preset's, for 2 CPU cores. It is not the paper's protocol.", ""]
    if preset != "paper":
        return [f"Preset: `{preset}`.", ""]
    lines = ["Preset: `paper`: the papers' settings where they state them. These values are **not stated in the "
             "paper**; the reason for each:", ""]
    for key, reason in cfg.FAMILIES["membranes"].not_in_paper:
        value = setting_value(config, key) if config is not None else None
        lines.append(f"- {key}" + (f" = {value}" if value is not None else "") + f": {reason}.")
    return lines + [""]


def setting_value(config: dict, key: str):
    """The value of dotted ``key`` in ``config`` (``None`` if it is not a config key)."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def training_table(configs: dict, trains: dict, seeds=None) -> list[str]:
    """The report's table of the training runs; with ``seeds``, ``configs`` and ``trains`` are keyed by
    seed, then model, and a seed column leads."""
    lead = "| seed " if seeds is not None else ""
    lines = [lead + "| model | nb_filters | depth | parameters | epochs | crop | train time (min) | best epoch |",
             "|---" * (9 if seeds is not None else 8) + "|"]
    runs = [(s, configs[s], trains[s]) for s in seeds] if seeds is not None else [(None, configs, trains)]
    for seed, run_configs, run_trains in runs:
        for name, t in run_trains.items():
            c = run_configs[name]
            lines.append(
                (f"| {seed} " if seed is not None else "")
                + f"| {LABELS.get(name, name)} | {c['model']['nb_filters']} | {c['model']['depth']} "
                f"| {t.get('parameters', '')} | {t['epochs']} | {c['train']['crop'] or 'full'} "
                f"| {(t.get('train_seconds') or 0) / 60:.1f} | {t['best_epoch']} |"
            )
    return lines


TTA = ((1, 8), 8, "test-time orientations")


def main(run, doc: str, default_out: str, argv=None, options=(), tta=TTA, presets=("cpu", "paper")) -> int:
    """Command line of an experiment script: ``--preset cpu|paper --out DIR --tta N`` and the script's
    own ``options`` (``(flags, argparse keywords)`` pairs, passed to ``run`` as keyword arguments);
    ``tta``: the choices, default and help of ``--tta``; ``presets``: the script's presets."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--preset", choices=list(presets), default="cpu",
                        help="cpu: reduced preset for 2 CPU cores (<= 45 min); paper: the paper preset (GPU)"
                             + ("; cpu-long: a longer CPU schedule (about 2.5 h)" if "cpu-long" in presets else ""))
    parser.add_argument("--out", default=default_out, help="output folder")
    parser.add_argument("--tta", type=int, choices=list(tta[0]), default=tta[1], help=tta[2])
    for flags, kwargs in options:
        parser.add_argument(*flags, **kwargs)
    args = vars(parser.parse_args(argv))
    from fusionnet_keras.utils.quiet import import_backend

    import_backend(verbose=False)  # TensorFlow's start-up lines silenced, as in the command line
    try:
        run(args.pop("preset"), args.pop("out"), Path(sys.argv[0]).resolve().parent, **args)
    except FusionNetError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0
