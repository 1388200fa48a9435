"""XLA on and off for the 3-D affinity networks' training step (TensorFlow on CPU).

For each network of the affinity3d CPU preset (``experiments/affinity3d``: UNet3D
and FusionNet3D) and each loss (class-balanced BCE, which XLA can compile, and
MALIS, which runs a host callback and never compiles), one training step
(``train_on_batch`` on a random batch of the preset's input) is timed with
``jit_compile`` True and False, the median of ``--steps`` after two untimed
steps, in one process, so the ratio is measured side by side:

    python benchmarks/xla3d.py [--preset cpu] [--steps 8]

The package's rule for the 3-D trainer (``utils.hardware.training_jit_compile``
and ``training.networks``) follows from these figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import common

common.quiet_tensorflow()
common.ensure_repo_on_path()

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "affinity3d"


def time_step(config: dict, loss_name: str, jit: bool, steps: int) -> float:
    import keras

    from fusionnet_keras.data.affinities import AffinityTargets
    from fusionnet_keras.training.config import output_shape
    from fusionnet_keras.training.affinity_losses import BalancedBCELoss, MalisLoss
    from fusionnet_keras.training.networks import build_network

    keras.utils.set_random_seed(0)
    net = build_network(config)
    loss = BalancedBCELoss() if loss_name == "bce" else MalisLoss(constrained=True)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=jit)
    r = np.random.default_rng(0)
    shape = tuple(config["train"]["input_shape"])
    x = r.random((1, *shape, 1), dtype=np.float32)
    labels = r.integers(1, 20, output_shape(config))
    y = AffinityTargets().y_true(labels)[None]
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        value = net.train_on_batch(x, y)
        float(np.asarray(value).ravel()[0])
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="preset of experiments/affinity3d (cpu, cpu-long)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    from fusionnet_keras.experiments.common import model_config

    rows, result = [], {"machine": common.machine_info(), "preset": args.preset, "steps": {}}
    for name in ("unet3d_bce", "fusionnet3d_malis"):
        config = model_config(EXPERIMENT, args.preset, name)
        for loss in ("bce", "malis"):
            jits = (True, False) if loss == "bce" else (False,)  # a host callback never compiles with XLA
            t = {True: float("nan"), **{jit: time_step(config, loss, jit, args.steps) for jit in jits}}
            result["steps"][f"{name}/{loss}"] = {"xla_s": t[True], "no_xla_s": t[False]}
            rows.append([name.split("_")[0], loss, common.fmt(t[True]), common.fmt(t[False]),
                         common.fmt(t[True] / t[False]) if loss == "bce" else "-"])
            print(rows[-1], flush=True)
    common.print_table(rows, ["network", "loss", "XLA step s", "no-XLA step s", "XLA / no-XLA"],
                       title=f"3-D training step, {args.preset} preset, median of {args.steps}")
    common.emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
