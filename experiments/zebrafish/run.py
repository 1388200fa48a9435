"""Zebrafish nuclei: FusionNet vs U-Net, 3-D scores and morphology (``make zebrafish``).

Trains both networks on 2-D sections of the training volumes (three quarters of
each; the last quarter validates), predicts the test volume with 8-orientation
averaging, labels 3-D connected components, scores them (V^Rand, V^Info, Dice;
the paper's Table 3 layout), measures every nucleus (volume, surface area,
sphericity, K-means) and writes ``<out>/report.md`` with the figures. The data
is set in ``experiments/zebrafish/experiment.toml`` (synthetic by default).

    python experiments/zebrafish/run.py --preset cpu --out results/zebrafish
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
    parser.add_argument("--out", default="results/zebrafish", help="output folder")
    parser.add_argument("--tta", type=int, choices=[1, 8], default=8, help="test-time orientations")
    args = parser.parse_args(argv)

    from fusionnet_keras import zebrafish
    from fusionnet_keras.errors import FusionNetError

    try:
        zebrafish.run(args.preset, args.out, Path(__file__).parent, tta=args.tta)
    except FusionNetError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
