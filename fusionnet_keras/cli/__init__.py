"""Command-line interface: ``fusionnet-keras COMMAND ...``.

Every command turns a user error (bad file, bad shape, bad setting, existing
output) into a one-line ``Error: ...`` message and exit status 2; heavy imports
(Keras, TensorFlow) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import click

from fusionnet_keras import __version__
from fusionnet_keras.cli.agglomeration import train_agglomeration
from fusionnet_keras.cli.evaluate import evaluate
from fusionnet_keras.cli.info import info
from fusionnet_keras.cli.morphology import morphology
from fusionnet_keras.cli.predict import predict
from fusionnet_keras.cli.segment import segment
from fusionnet_keras.cli.train import cv, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fusionnet-keras")
def main():
    """FusionNet for EM connectomics segmentation (Quan et al. 2016/2021), in Keras 3."""


for _command in (predict, evaluate, info, train, cv, morphology, segment, train_agglomeration):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
