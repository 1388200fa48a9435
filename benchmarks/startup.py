"""Start-up cost of a small ``fusionnet-keras predict``: where the seconds of a 96x96 prediction go.

A tiny FusionNet (nb_filters 4, depth 2, saved to ``.keras``) predicts one
96 x 96 uint8 section with the default options (tta 8, 64 px padding). The
network's arithmetic is negligible (~0.2 GFLOP), so the wall time is start-up:

* ``total``: wall time of the whole command, ``python -m fusionnet_keras.cli
  predict ...``, in a fresh process (median of ``--repeats`` runs);
* the phases, measured inside a fresh process that runs the same steps as the
  command: ``python`` (an interpreter that only starts and exits), ``cli``
  (importing click and the command line), ``backend`` (importing TensorFlow
  and Keras), ``package`` (the package's model and inference modules),
  ``load`` (reading the ``.keras`` file), ``first_call`` (the prediction as the command makes it:
  one eager call, no tracing), ``second_call`` (the same prediction
  again: the steady-state cost) and ``write`` (the output TIFF); each also as
  a share of their sum.

The machine should be otherwise idle (other processes on the cores stretch
every phase). One line ``RESULT {json}`` at the end, as the other benchmarks.

    python benchmarks/startup.py [--repeats 5] [--json-out results/startup.json]

``--baseline DIR`` (a checkout, or a folder holding another version's
``fusionnet_keras/``) also times the same command with that version,
interleaved with this one (the order alternating), and reports both medians
and their ratio: a before/after measured in one run, under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

PHASES = ("cli", "backend", "package", "load", "first_call", "second_call", "write")


def _setup(folder: Path) -> dict:
    """The tiny model and the 96x96 section (built in a child process, so this one stays light)."""
    code = f"""
import sys; sys.path.insert(0, {str(common.REPO)!r})
from fusionnet_keras.cli.options import quiet_backend; quiet_backend()
import keras, numpy as np, tifffile
from fusionnet_keras.models import FusionNet
keras.utils.set_random_seed(0)
FusionNet(nb_filters=4, depth=2).save({str(folder / 'tiny.keras')!r})
image = np.random.default_rng(0).integers(0, 256, (96, 96), dtype=np.uint8)
tifffile.imwrite({str(folder / 'section.tif')!r}, image)
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    return {"weights": folder / "tiny.keras", "image": folder / "section.tif", "out": folder / "out.tif"}


def _env(repo=None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo or common.REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _wall(args, repo=None) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, env=_env(repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{result.stderr}")
    return seconds


def phases_child(image, weights, out) -> dict:
    """The command's steps, timed one by one (run in a fresh process by :func:`main`)."""
    times = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    import fusionnet_keras.cli  # noqa: F401
    from fusionnet_keras.cli.options import quiet_backend

    lap("cli")
    quiet_backend()
    import keras  # noqa: F401

    lap("backend")
    from fusionnet_keras.data.io import load_image, write_volume
    from fusionnet_keras.inference.predictor import predict
    from fusionnet_keras.models.loading import load_model

    lap("package")
    model = load_model(weights)
    lap("load")
    section = load_image(image)
    prob = predict(model, section, tta=8, pad=64, once=True)  # as the command: one eager call of 8 windows
    lap("first_call")
    predict(model, section, tta=8, pad=64, once=True)
    lap("second_call")
    write_volume(out, prob, overwrite=True)
    lap("write")
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement (median kept)")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also time the command with the fusionnet_keras under DIR, interleaved")
    parser.add_argument("--phases-child", nargs=3, metavar=("IMAGE", "WEIGHTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases_child:
        print(json.dumps(phases_child(*args.phases_child)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        files = _setup(Path(tmp))
        command = [sys.executable, "-m", "fusionnet_keras.cli", "predict", str(files["image"]), str(files["out"]),
                   "-w", str(files["weights"]), "--overwrite"]
        python, totals, phases, baseline = [], [], {name: [] for name in PHASES}, []
        for i in range(args.repeats):
            python.append(_wall([sys.executable, "-c", "pass"]))
            if args.baseline and i % 2:
                baseline.append(_wall(command, args.baseline))
            totals.append(_wall(command))
            if args.baseline and not i % 2:
                baseline.append(_wall(command, args.baseline))
            child = subprocess.run([sys.executable, __file__, "--phases-child", str(files["image"]),
                                    str(files["weights"]), str(files["out"])],
                                   env=_env(), stdout=subprocess.PIPE, text=True, check=True)
            for name, seconds in json.loads(child.stdout.strip().splitlines()[-1]).items():
                phases[name].append(seconds)
            print(f"run {i + 1}/{args.repeats}: predict {totals[-1]:.2f} s", flush=True)

    median = {"python": statistics.median(python), **{k: statistics.median(v) for k, v in phases.items()}}
    parts = sum(median.values())
    result = {
        "total_s": statistics.median(totals),
        "total_all_s": totals,
        "phases_s": median,
        "phase_shares": {k: v / parts for k, v in median.items()},
        "phases_sum_s": parts,
        "repeats": args.repeats,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    rows = [[k, f"{v:.3f}", f"{100 * v / parts:.0f} %"] for k, v in median.items()]
    common.print_table(rows + [["sum", f"{parts:.3f}", "100 %"]], ["phase", "median s", "share"])
    print(f"\npredict 96x96 (fresh process, median of {args.repeats}): {result['total_s']:.2f} s "
          f"(all: {', '.join(f'{t:.2f}' for t in totals)})")
    if baseline:
        result["baseline_s"] = statistics.median(baseline)
        result["baseline_all_s"] = baseline
        result["ratio"] = result["total_s"] / result["baseline_s"]
        print(f"baseline {args.baseline} (interleaved): {result['baseline_s']:.2f} s "
              f"(all: {', '.join(f'{t:.2f}' for t in baseline)}); this / baseline: {result['ratio']:.2f}x")
    common.emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
