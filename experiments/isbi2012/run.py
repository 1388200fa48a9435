"""ISBI 2012 membranes: FusionNet vs U-Net (``make isbi2012``), FusionNetW^2 (``make isbi2012-chain``).

Trains the networks on sections 1-20 of ``train-volume.tif``, scores them on
sections 21-30 with 8-orientation averaging (with and without the 2016 paper's
2-px median filter), predicts the 30 test sections, and writes
``<out>/report.md``. ``--models fusionnet_w2`` trains the 2021 paper's chained
FusionNetW^2 instead and compares its first unit (W^1) with the chain (W^2);
``--cv`` adds the 2016 paper's 3-fold cross-validation (default with
``--preset paper``). Data: ``$FUSIONNET_DATA_DIR/isbi2012`` (downloaded from
the challenge site when missing and a network is available; verified by pixel
checksums). Re-running resumes: finished steps are skipped.

    python experiments/isbi2012/run.py --preset cpu --out results/isbi2012
    python experiments/isbi2012/run.py --preset cpu --models fusionnet_w2 --out results/isbi2012-chain
"""

import sys

from fusionnet_keras.experiments.common import main

OPTIONS = [
    (("--models",), {"default": None, "help": "comma-separated model files of this folder "
                                             "(default fusionnet,unet; fusionnet_w2 for the chain)"}),
    (("--cv",), {"action": "store_true", "default": None,
                 "help": "add the 3-fold cross-validation (the 2016 paper's protocol; default with --preset paper)"}),
]

if __name__ == "__main__":
    from fusionnet_keras.experiments.isbi2012 import run

    sys.exit(main(run, __doc__, "results/isbi2012", options=OPTIONS))
