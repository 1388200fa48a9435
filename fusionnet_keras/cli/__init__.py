"""Command-line interface: ``fusionnet-keras [--debug] [--verbose] COMMAND ...``.

Every command turns a user error (bad file, bad shape, bad setting, existing
output) into a one-line ``Error: ...`` message and exit status 2, and any other
failure into one line and exit status 1 (``--debug`` adds the traceback; see
:mod:`fusionnet_keras.cli.options`); heavy imports (Keras, TensorFlow) happen
inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import click

from fusionnet_keras import __version__
from fusionnet_keras.cli.affinities import affinities
from fusionnet_keras.cli.agglomeration import train_agglomeration
from fusionnet_keras.cli.evaluate import evaluate
from fusionnet_keras.cli.export import export
from fusionnet_keras.cli.info import info
from fusionnet_keras.cli.meshes import meshes
from fusionnet_keras.cli.models import models
from fusionnet_keras.cli.morphology import morphology
from fusionnet_keras.cli.neurons import neurons
from fusionnet_keras.cli.options import OneLineGroup, global_options, quiet_start
from fusionnet_keras.cli.predict import predict
from fusionnet_keras.cli.pyramid import pyramid
from fusionnet_keras.cli.segment import segment
from fusionnet_keras.cli.train import cv, train
from fusionnet_keras.cli.view import view


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fusionnet-keras")
@global_options
def main():
    """FusionNet for EM connectomics segmentation (Quan et al. 2016/2021), in Keras 3."""
    quiet_start()


for _command in (predict, affinities, evaluate, info, train, cv, morphology, segment, train_agglomeration, models,
                 neurons, export, pyramid, meshes, view):
    main.add_command(_command)

def run():
    """The ``fusionnet-keras`` program: :func:`main`, then a quick exit once TensorFlow was loaded.

    The command has closed its files and printed its lines by then; what is
    left is TensorFlow's interpreter teardown (its cost: docs/benchmarks.md,
    "Figures behind the code's defaults"), which ``os._exit`` skips after flushing the output.
    """
    import os
    import sys

    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    if "distributed" in sys.modules:  # nothing of Dask's shutdown (e.g. a connection closed late) is shown
        from fusionnet_keras.blockwise.engine import silence_dask_logs

        silence_dask_logs()
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # e.g. a closed pipe: nothing left to show
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
