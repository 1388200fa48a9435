"""What the commands share: error handling, the global --debug / --verbose flags, common options, a quiet backend.

Error contract of every command (:func:`handle_errors`): a problem with the
user's input or environment (a bad file, setting or option, an existing output,
a full disk, a permission) ends with one line ``Error: ...`` on stderr and exit
status 2; anything else (a bug, an out-of-memory) with one line ``Error: ...``
naming the command and exit status 1. ``fusionnet-keras --debug COMMAND``
prints the traceback before that line; ``--verbose`` lets TensorFlow's own
log lines through (silenced by default, see :func:`quiet_backend`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import click

from fusionnet_keras.errors import FusionNetError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130

_DEBUG = "fusionnet_keras.debug"
_VERBOSE = "fusionnet_keras.verbose"


class OneLineGroup(click.Group):
    """A command group whose usage errors (a bad option value, a missing argument) are one line too.

    click prints ``Usage: ...``, a hint and the error on separate lines; here
    the error and the hint share one line, ``Error: ... (see 'CMD --help')``,
    with click's exit status (2). Help, ``--version`` and everything else are
    click's.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"Error: {_one_line(e.format_message())}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def global_options(func):
    """``--debug`` and ``--verbose`` of the command group; the values go to ``ctx.meta`` for every command."""

    def store(key):
        def callback(ctx, _param, value):
            ctx.meta[key] = value
            return value

        return callback

    func = click.option("--verbose", is_flag=True, expose_value=False, is_eager=True, callback=store(_VERBOSE),
                        help="Show the log lines of TensorFlow and its libraries (hidden by default).")(func)
    func = click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=store(_DEBUG),
                        help="On an error, print the Python traceback before the one-line message.")(func)
    return func


def _flag(key: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(key))


def quiet_backend(verbose: bool | None = None) -> None:
    """Import the Keras backend (TensorFlow unless ``KERAS_BACKEND`` says otherwise) now, quietly.

    Unless ``verbose`` (default: the command line's ``--verbose``), TensorFlow's
    start-up lines are kept from stderr and ``TF_CPP_MIN_LOG_LEVEL=2`` is set
    where the user did not set it (:mod:`fusionnet_keras.utils.quiet`, which
    the command line also arms for any later import: see :func:`quiet_start`).
    """
    from fusionnet_keras.utils.quiet import import_backend

    import_backend(_flag(_VERBOSE) if verbose is None else verbose)


def quiet_start() -> None:
    """Before a command runs: any later import of TensorFlow quiet (unless ``--verbose``), nothing imported now."""
    from fusionnet_keras.utils.quiet import quiet_imports

    quiet_imports(_flag(_VERBOSE))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _fail(message: str, code: int):
    if _flag(_DEBUG):
        import traceback

        traceback.print_exc(file=sys.stderr)
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _os_error(e: OSError) -> str:
    """``strerror: filename`` of an OSError that escaped a command (disk full, permission denied, ...)."""
    reason = e.strerror or _one_line(e) or type(e).__name__
    return f"{reason}: {e.filename}" if e.filename else reason


def handle_errors(func):
    """Run a command under the error contract of this module (one line ``Error: ...``; exit 2 or 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        command = click.get_current_context().info_name
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # e.g. `fusionnet-keras evaluate ... | head -1`: stop quietly, as Unix tools do
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_INTERNAL_ERROR)
        except FusionNetError as e:
            _fail(_one_line(e) or type(e).__name__, EXIT_USER_ERROR)
        except MemoryError:
            _fail(f"{command}: not enough memory for this input (try smaller inputs or tiles)", EXIT_INTERNAL_ERROR)
        except OSError as e:  # the environment: a full disk, a permission, a vanished file
            _fail(f"{command}: {_os_error(e)}", EXIT_USER_ERROR)
        except Exception as e:
            reason = _one_line(e)
            what = f"{type(e).__name__}: {reason[:200]}" if reason else type(e).__name__
            _fail(f"{command} failed unexpectedly ({what}); rerun with --debug for the traceback and report it",
                  EXIT_INTERNAL_ERROR)

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
    """``--precision float32|bfloat16|float16|auto`` (or a Keras policy name: the words of
    ``train.precision`` and ``predict.precision``; default: the precision saved with the model)."""
    from fusionnet_keras.settings import PRECISION_WORDS

    return click.option(
        "--precision",
        type=click.Choice(PRECISION_WORDS),
        default=None,
        help="Number format of the convolutions (the input block, output and orientation average stay float32); "
             "bfloat16 is about 2x faster on CPUs with AVX512-BF16 or AMX-BF16 (see 'fusionnet-keras info'); auto: "
             "bfloat16 where it is faster on this backend and device (accelerators; AVX512-BF16/AMX CPUs under "
             "TensorFlow, not JAX), else float32 (docs/precision.md). "
             "Default: the precision saved with the model (float32 for models trained with the default settings).",
    )(func)


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(1), default=None,
                        help="Network inputs per forward pass. Default: as many as fit in a quarter of the free "
                             "memory, at most 8 (the 8 orientations of a window in one call).")(func)


def blockwise_options(func=None, *, writes: str = "the output (zarr) is written by block",
                      block_help: str = "Block shape for blockwise processing (also the output's chunks)."):
    """``--workers``, ``--block``, ``--scheduler``: run block by block on Dask (resumable).

    ``writes`` and ``block_help`` adapt the help to a command (``@blockwise_options(writes=...)``).
    """
    if func is None:
        return functools.partial(blockwise_options, writes=writes, block_help=block_help)
    for opt in reversed([
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Process the volume block by block in this many local worker processes (Dask); "
                          f"{writes} and an interrupted run resumes."),
        click.option("--block", default=None, metavar="Z,Y,X", help=block_help),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run the blocks on the workers of a running Dask scheduler (e.g. tcp://host:8786, "
                          "started by dask-jobqueue on SLURM) instead of local workers."),
    ]):
        func = opt(func)
    return func


def _parse_voxel_size(_ctx, _param, value):
    if value is None:
        return None
    from fusionnet_keras.data.io.ome import parse_voxel_size

    try:
        return parse_voxel_size(value)
    except FusionNetError as e:
        raise click.UsageError(str(e)) from None


def voxel_size_option(func=None, *, required: bool = False,
                      help: str = "Voxel size in nm as Z,Y,X (e.g. 40,4,4): written to the outputs' metadata "
                                  "(OME-Zarr scale, HDF5 resolution, TIFF spacing); overrides the input's. "
                                  "Default: the input's (OME-Zarr scale, HDF5 resolution, ImageJ TIFF spacing)."):
    """``--voxel-size Z,Y,X`` (nm), parsed to three positive floats (one-line errors: length, zero, negative,
    not a number); ``None`` when not given."""
    if func is None:
        return functools.partial(voxel_size_option, required=required, help=help)
    return click.option("--voxel-size", default=None, required=required, metavar="Z,Y,X",
                        callback=_parse_voxel_size, help=help)(func)


def pyramid_option(func):
    """``--pyramid``: add downsampled levels to a zarr (OME-Zarr) output."""
    return click.option("--pyramid", is_flag=True,
                        help="Add a multiscale pyramid to the zarr OUTPUT (OME-Zarr levels 1, 2, ...: mean for "
                             "images and probabilities, mode for labels; x and y first for anisotropic voxels), "
                             "computed block by block like 'fusionnet-keras pyramid'.")(func)


def ome_options(func):
    """``--voxel-size`` and ``--pyramid`` of a command that writes a volume (see docs/ome-zarr.md)."""
    return voxel_size_option(pyramid_option(func))
