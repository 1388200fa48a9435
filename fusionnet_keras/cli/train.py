"""``fusionnet-keras train`` and ``cv``: training from TOML configs, cross-validation."""

from __future__ import annotations

import json
import os

import click

from fusionnet_keras.cli.options import (
    handle_errors,
    overwrite_option,
    quiet_backend,
)


def _train_options(func):
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. --set train.epochs=5 (repeatable).")(func)
    func = click.option("--out", "out", type=click.Path(file_okay=False), default=None,
                        help="Run directory (default: runs/<name>).")(func)
    func = click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")(func)
    func = overwrite_option(func)
    return func


def _checked_config(configs, overrides, out, default_out, resume, overwrite, label_zero=None) -> tuple[dict, str]:
    """The resolved configuration and run folder (``--out`` or ``default_out(config)``), the options
    checked, then the backend prepared (nothing heavy before). ``label_zero`` (``--label-zero``) sets
    ``data.label_zero`` of a 3-D affinity config."""
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.errors import FusionNetError
    from fusionnet_keras.training.config import data_inputs, family
    from fusionnet_keras.training.config_files import load_config
    from fusionnet_keras.training.rundir import check_resume_overwrite

    check_resume_overwrite(resume, overwrite)
    config = load_config(configs, overrides)
    if label_zero is not None:
        if not family(config).volumetric:
            raise FusionNetError("--label-zero applies to the 3-D affinity networks (model.architecture unet3d "
                                 f"or fusionnet3d), not to {config['model']['architecture']}")
        config = load_config(configs, (*overrides, f"data.label_zero={label_zero}"))
    out = out or default_out(config)
    check_not_input(out, *data_inputs(config), whole=True, files=configs)  # --overwrite deletes the folder
    quiet_backend()
    return config, out


@click.command()
@click.argument("configs", nargs=-1, required=True, metavar="CONFIG [PRESET ...]")
@_train_options
@click.option("--label-zero", type=click.Choice(["background", "unknown"]), default=None,
              help="3-D affinity networks: what label 0 of the ground truth means (config data.label_zero, "
                   "default background): background = edges into it have target 0 and are trained; "
                   "unknown = edges touching it are masked out.")
@handle_errors
def train(configs, overrides, out, resume, overwrite, label_zero):
    """Train a network from TOML CONFIG files (later files override earlier ones).

    Writes checkpoints (atomically), config.json, log.csv and TensorBoard logs to
    --out; keeps best.keras by validation (2-D: V^Rand; 3-D affinity networks,
    model.architecture unet3d or fusionnet3d: VI of the validation block);
    --resume continues after an interruption.
    """
    config, out = _checked_config(configs, overrides, out, lambda c: os.path.join("runs", c["name"]), resume,
                                  overwrite, label_zero)
    from fusionnet_keras.training.trainer import train as run_train

    result = run_train(config, out, resume=resume, overwrite=overwrite)
    click.echo(json.dumps(result, indent=2))


@click.command()
@click.argument("configs", nargs=-1, required=True, metavar="CONFIG [PRESET ...]")
@click.option("--folds", type=click.IntRange(2), default=3, show_default=True)
@_train_options
@handle_errors
def cv(configs, folds, overrides, out, resume, overwrite):
    """k-fold cross-validation (default 3) over the train + validation sections."""
    config, out = _checked_config(configs, overrides, out, lambda c: os.path.join("runs", c["name"] + "-cv"),
                                  resume, overwrite)
    from fusionnet_keras.errors import FusionNetError
    from fusionnet_keras.training.config import family
    from fusionnet_keras.training.crossval import cross_validate

    if family(config).volumetric:
        raise FusionNetError(f"cv cross-validates the 2-D networks over sections; "
                             f"{config['model']['architecture']} trains on fixed volume parts: use train")

    report = cross_validate(config, out, folds=folds, resume=resume, overwrite=overwrite)
    for r in report["folds"]:
        click.echo(f"fold {r['fold']}: V^Rand {r['vrand']:.5f}  V^Info {r['vinfo']:.5f}  pixel error {r['pixel_error']:.5f}")
    m = report["mean"]
    click.echo(f"mean:   V^Rand {m['vrand']:.5f}  V^Info {m['vinfo']:.5f}  pixel error {m['pixel_error']:.5f}")
