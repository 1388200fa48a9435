"""``python -m fusionnet_keras.cli``: the command line."""

from fusionnet_keras.cli import run

run()
