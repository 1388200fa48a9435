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


def precision_option(func):
    """``--precision float32|bfloat16|float16`` (default: the precision saved with the model)."""
    return click.option(
        "--precision",
        type=click.Choice(["float32", "bfloat16", "float16"]),
        default=None,
        help="Number format of the convolutions (the input block, output and orientation average stay float32); "
             "bfloat16 is about 2x faster on CPUs with AVX512-BF16/AMX and on recent GPUs. "
             "Default: the precision saved with the model (float32 for models trained with the default settings).",
    )(func)


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(1), default=None,
                        help="Network inputs per forward pass. Default: as many as fit in a quarter of the free "
                             "memory, at most 8 (the 8 orientations of a window in one call).")(func)
