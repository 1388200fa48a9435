"""3-D affinities on anisotropic EM (the third paper): ``make affinity3d``.

Trains UNet3D + MALIS, FusionNet3D + MALIS and UNet3D + class-balanced BCE on
the training part of fib-medulla with every 4th section kept (10 x 10 x 40 nm;
fixed split by y: train [0, 125), validation [125, 150), test [150, 250)),
predicts the training, validation and test parts, segments the validation and
test parts with the z-watershed, the mean agglomeration and the learned
agglomeration (classifier trained on the training part only) over a threshold
sweep, and writes ``<out>/report.md`` (split-VI plot, test scores at the
thresholds chosen on the validation part, the best-on-test oracle apart, MALIS
vs BCE, UNet3D vs FusionNet3D, training times, a test section). Data:
``$FUSIONNET_DATA_DIR/fib-medulla``. Re-running resumes: finished steps are
skipped.

    python experiments/affinity3d/run.py --preset cpu --out results/affinity3d
    python experiments/affinity3d/run.py --preset cpu --seed 1 --out results/affinity3d-seed1
    python experiments/affinity3d/run.py --preset cpu --models unet3d_bce --dataset gala-example \
        --out results/affinity3d-gala
"""

import sys

from fusionnet_keras.experiments.common import main

OPTIONS = [
    (("--models",), {"default": None, "help": "comma-separated model files of this folder "
                                             "(default unet3d_malis,fusionnet3d_malis,unet3d_bce,unet3d_bce_lr)"}),
    (("--seed",), {"type": int, "default": None,
                   "help": "train.seed of every network (default: the config files', 0); repeats of the "
                           "experiment go to their own --out"}),
    (("--dataset",), {"default": None, "choices": ["fib-medulla", "gala-example"],
                      "help": "data.dataset of every network (default: the config files', fib-medulla)"}),
    (("--label-zero",), {"default": None, "choices": ["background", "unknown"],
                         "help": "data.label_zero of every network (default: the config files', background)"}),
]
TTA = ((1, 4, 8), None, "prediction orientations (default: 1 with the CPU presets, 8 with --preset paper)")

if __name__ == "__main__":
    from fusionnet_keras.experiments.affinity3d import run

    sys.exit(main(run, __doc__, "results/affinity3d", options=OPTIONS, tta=TTA, presets=("cpu", "cpu-long", "paper")))
