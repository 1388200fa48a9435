"""``python -m fusionnet_keras``: the command line."""

from fusionnet_keras.cli import run

run()
