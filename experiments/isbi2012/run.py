"""ISBI 2012 membranes: FusionNet vs U-Net (``make isbi2012``).

Trains both networks on sections 1-20 of ``train-volume.tif``, scores them on
sections 21-30 with 8-orientation averaging (with and without the 2016 paper's
2-px median filter), predicts the 30 test sections, and writes
``<out>/report.md``. Data: ``$FUSIONNET_DATA_DIR/isbi2012`` (downloaded from the
challenge site when missing and a network is available; verified by pixel
checksums). Re-running resumes: finished steps are skipped.

    python experiments/isbi2012/run.py --preset cpu --out results/isbi2012
"""

import sys

from fusionnet_keras.experiments.common import main

if __name__ == "__main__":
    from fusionnet_keras.experiments.isbi2012 import run

    sys.exit(main(run, __doc__, "results/isbi2012"))
