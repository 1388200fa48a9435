"""ISBI 2012 membranes: FusionNet vs U-Net (``make isbi2012``).

Trains both networks on sections 1-20 of ``train-volume.tif``, scores them on
sections 21-30 with 8-orientation averaging (with and without the 2016 paper's
2-px median filter), predicts the 30 test sections, and writes
``<out>/report.md``. Data: ``$FUSIONNET_DATA_DIR/isbi2012`` (downloaded from the
challenge site when missing and a network is available; verified by pixel
checksums). Re-running resumes: finished steps are skipped.

    python experiments/isbi2012/run.py --preset cpu --out results/isbi2012
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["cpu", "paper"], default="cpu",
                        help="cpu: reduced preset for 2 CPU cores (<= 45 min); paper: the paper's protocol (GPU)")
    parser.add_argument("--out", default="results/isbi2012", help="output folder")
    parser.add_argument("--tta", type=int, choices=[1, 8], default=8, help="test-time orientations")
    args = parser.parse_args(argv)

    from fusionnet_keras import isbi
    from fusionnet_keras.errors import FusionNetError

    try:
        isbi.run(args.preset, args.out, Path(__file__).parent, tta=args.tta)
    except FusionNetError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
