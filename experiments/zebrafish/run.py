"""Zebrafish nuclei: FusionNet vs U-Net, 3-D scores and morphology (``make zebrafish``).

Trains both networks on 2-D sections of the training volumes (three quarters of
each; the last quarter validates), predicts the test volume with 8-orientation
averaging, labels 3-D connected components, scores them (V^Rand, V^Info, Dice;
the paper's Table 3 layout), measures every nucleus (volume, surface area,
sphericity, K-means) and writes ``<out>/report.md`` with the figures. The data
is set in ``experiments/zebrafish/experiment.toml`` (synthetic by default).

    python experiments/zebrafish/run.py --preset cpu --out results/zebrafish
"""

import sys

from fusionnet_keras.experiments.common import main

if __name__ == "__main__":
    from fusionnet_keras.experiments.zebrafish import run

    sys.exit(main(run, __doc__, "results/zebrafish"))
