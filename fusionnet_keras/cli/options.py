"""What the commands share: error handling, common options, a quiet backend."""

from __future__ import annotations

import functools
import os
import sys

import click

from fusionnet_keras.errors import FusionNetError

EXIT_USER_ERROR = 2


def quiet_backend():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def handle_errors(func):
    """Print FusionNetError (and other expected input errors) as one line; exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FusionNetError as e:
            click.echo(f"Error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def overwrite_option(func):
    return click.option("--overwrite", is_flag=True, help="Replace an existing output.")(func)


def tta_option(func):
    return click.option(
        "--tta",
        type=click.Choice(["1", "8"]),
        default="8",
        show_default=True,
        help="Test-time orientations: 8 averages the 8 rotations/mirrors, 1 is plain.",
    )(func)


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True,
                        help="Network inputs per forward pass.")(func)


def blockwise_options(func):
    """``--workers``, ``--block``, ``--scheduler``: run block by block on Dask (resumable)."""
    for opt in reversed([
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Process the volume block by block in this many local worker processes (Dask); "
                          "the output (zarr) is written by block and an interrupted run resumes."),
        click.option("--block", default=None, metavar="Z,Y,X",
                     help="Block shape for blockwise processing (also the output's chunks)."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run the blocks on the workers of a running Dask scheduler (e.g. tcp://host:8786, "
                          "started by dask-jobqueue on SLURM) instead of local workers."),
    ]):
        func = opt(func)
    return func


def blockwise_requested(workers, block, scheduler) -> bool:
    """Whether a command runs blockwise (any of the blockwise options given)."""
    return workers is not None or block is not None or scheduler is not None
