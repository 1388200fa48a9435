"""Run directories: config.json, state.json, log.csv, checkpoints; creation, checks and resume."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.training import config_files
from fusionnet_keras.utils.atomic import atomic_write_text, remove_stale_temporaries


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    """Refuse ``resume`` with ``overwrite``: one continues a run, the other deletes it."""
    if resume and overwrite:
        raise FusionNetError("--resume and --overwrite contradict each other: --resume continues the run in "
                             "--out, --overwrite deletes it; give one")


def run_training(train_fn, config: dict, out, resume=False, overwrite=False, verbose=None) -> dict:
    """``train_fn(config, out, resume=..., overwrite=..., verbose=...)`` after refusing ``resume`` with
    ``overwrite`` (before anything is read or written), with the global Keras dtype policy restored
    afterwards (``train.precision`` sets it for the run only)."""
    import keras

    check_resume_overwrite(resume, overwrite)
    previous = keras.mixed_precision.global_policy()
    try:
        return train_fn(config, out, resume=resume, overwrite=overwrite, verbose=verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def write_log(run, state: dict) -> None:
    """(Re)write ``log.csv`` from ``state["history"]``: one row per completed epoch (0-based).

    Derived from state.json, so after an interruption at any point it lists
    every completed epoch exactly once; columns are the union of the logged
    keys (a blank cell where an epoch has no value, e.g. no validation).
    """
    import csv
    import io

    history = state["history"]
    keys = sorted({k for row in history for k in row})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch"] + keys)
    for epoch, row in enumerate(history):
        writer.writerow([epoch] + [repr(float(row[k])) if k in row else "" for k in keys])
    atomic_write_text(run.out / "log.csv", buf.getvalue())


class Run:
    def __init__(self, config, out):
        self.config = config
        self.out = Path(out)
        self.name = config["name"]
        self.ckpt = self.out / "checkpoints" / "last.keras"
        self.state_path = self.out / "state.json"
        # the resume point when FusionNetW's units are trained one by one (training/units.py)
        self.units_ckpt = self.out / "checkpoints" / "units.npz"

    def has_checkpoint(self) -> bool:
        return self.ckpt.exists() or self.units_ckpt.exists()


def prepare_run_dir(config: dict, out, resume=False, overwrite=False, initial_state=None) -> tuple[Run, dict]:
    """Create / check the run directory; return the run and its state.

    ``initial_state`` is the state of a new run (the task's; default: completed epochs, best epoch and
    history only). A resumed run's saved ``config.json`` is checked
    (:func:`~fusionnet_keras.training.config.validate`) and compared with ``config``.
    """
    run = Run(config, out)
    state = copy.deepcopy(initial_state if initial_state is not None else {"epoch": 0, "best_epoch": 0, "history": []})
    if run.out.exists() and not run.out.is_dir():
        raise FusionNetError(f"output exists and is not a directory: {run.out}")
    exists = run.out.exists() and any(run.out.iterdir())
    if exists and (overwrite or resume) and not (run.out / "config.json").exists():
        # never delete (or train into) a folder that is not a run directory, e.g. --out ~
        raise FusionNetError(f"{run.out} is not empty and is not a fusionnet-keras run directory (no config.json)")
    if exists and overwrite:
        shutil.rmtree(run.out)
        exists = False
    if exists and not resume:
        raise FusionNetError(f"output directory exists: {run.out} (use --resume to continue or --overwrite)")
    if exists:
        saved = config_files.read_config_json(run.out / "config.json") if (run.out / "config.json").exists() else None
        if saved is not None:
            changed = config_files.diff(saved, config)
            if changed:
                raise FusionNetError(
                    f"cannot resume {run.out}: config differs from the saved one in {', '.join(changed)}"
                )
        if run.state_path.exists() and run.has_checkpoint():
            state = read_state(run.state_path)
            write_log(run, state)  # the rows of the completed epochs, whatever the kill interrupted
        for folder in (run.out, run.ckpt.parent):  # temporaries of writes interrupted by a kill
            remove_stale_temporaries(folder)
    run.out.mkdir(parents=True, exist_ok=True)
    config_files.save_config(config, run.out / "config.json")
    return run, state


def read_state(path) -> dict:
    """The ``state.json`` of a run being resumed; a one-line :class:`FusionNetError` naming it if damaged."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise FusionNetError(f"cannot resume: {path} is damaged ({' '.join(str(e).split())[:120]}); "
                             "start again with --overwrite") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) \
            or not isinstance(state.get("history"), list):
        raise FusionNetError(f"cannot resume: {path} is not the state of a fusionnet-keras run; start again "
                             "with --overwrite")
    return state


def summary(run: Run, state: dict, best=()) -> dict:
    """What a training run reports: its name, folder, epochs, best epoch, the state's ``best`` entries
    (the task's best scores), the best model's path and the training and validation times."""
    return {
        "name": run.name,
        "out": str(run.out),
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        **{key: state.get(key) for key in best},
        "best_model": str(run.out / "best.keras"),
        "train_seconds": state.get("train_seconds"),
        "val_seconds": state.get("val_seconds"),
    }
