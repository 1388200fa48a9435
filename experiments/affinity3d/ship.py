"""Make the shipped 3-D model (registry entry ``fib-medulla-affinities``) from affinity3d runs.

Of the networks of the given run folders (``experiments/affinity3d/run.py``, e.g.
the ``cpu-long`` seeds), takes the one whose learned agglomeration has the lowest
**validation** VI, with its agglomeration classifier; the card's threshold is the
middle of the flat region of that network's validation curve (thresholds within
``--flat`` bits of the best), the watershed size the run's. Nothing here looks at
the test part except the card's scores, which are measured afterwards with the
commands a user runs (``neurons`` with the entry's name, ``evaluate --instances``) on the fib-medulla test part and written to the card.

    python experiments/affinity3d/ship.py results/affinity3d-long-seed0 results/affinity3d-long-seed1 \
        --out fusionnet_keras/pretrained/models/fib-medulla-affinities
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fusionnet_keras.experiments import affinity3d
from fusionnet_keras.pretrained.build import run_cli, toml

SCORES = ("vi", "vi_split", "vi_merge", "arand", "cremi")


def choose(runs):
    """``(run folder, network, results)`` with the lowest validation VI of the learned agglomeration."""
    candidates = []
    for run in runs:
        results = json.loads((Path(run) / "results.json").read_text())
        for name, seg in results["segmentation"].items():
            vi = affinity3d.chosen_row(seg, "learned", "validation")["vi"]
            candidates.append((vi, str(run), name, results))
    vi, run, name, results = min(candidates, key=lambda c: c[0])
    return Path(run), name, results


def robust_threshold(curve, flat: float) -> float:
    """The middle threshold of those whose validation VI is within ``flat`` bits of the best."""
    best = min(vi for _, vi in curve)
    near = sorted(t for t, vi in curve if vi <= best + flat)
    return near[len(near) // 2]


def measure(entry: Path, workdir: Path) -> dict:
    """Scores of the registry entry at its card's settings on the fib-medulla test part, by the commands a
    user runs (``neurons`` with the entry's name, then ``evaluate --instances``)."""
    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.data.volumes3d import load_parts

    image, gt = load_parts("fib-medulla", ["test"])["test"]
    write_volume(f"{workdir / 'test.h5'}:image", image)
    write_volume(f"{workdir / 'test.h5'}:labels", gt)
    commands = [("neurons", "test.h5:image", "seg.h5:labels", "--model", entry.name),
                ("evaluate", "seg.h5:labels", "test.h5:labels", "--instances", "--json")]
    start = time.time()
    for command in commands:
        out = run_cli(*command, cwd=workdir, env={"FUSIONNET_REGISTRY": str(entry.parent.resolve())})
    scores = json.loads(out)
    scores["seconds"] = time.time() - start
    scores["command"] = ("test.h5 = the fib-medulla test part (data.volumes3d.load_parts('fib-medulla', ['test'])); "
                         + " && ".join("fusionnet-keras " + " ".join(shlex.quote(str(a)) for a in c) for c in commands))
    return scores


def _seed(run: Path) -> int:
    """``train.seed`` of a run's networks."""
    configs = sorted(Path(run).glob("*/config.json"))
    return int(json.loads(configs[0].read_text())["train"]["seed"])


def write_card(args, run: Path, name: str, results: dict, threshold, ws_size, curve, scores) -> None:
    """``card.toml`` of the entry (``card.md``, for people, is written by hand from it)."""
    import fusionnet_keras
    from fusionnet_keras.pretrained.registry import sha256_file

    preset, label = results["preset"], affinity3d.LABELS.get(name, name)
    train = results["train"][name]
    t = json.loads((run / name / "config.json").read_text())["train"]
    minutes = ((train.get("train_seconds") or 0) + (train.get("val_seconds") or 0)) / 60
    runs = " ".join(map(str, args.runs))
    trainings = [f"python experiments/affinity3d/run.py --preset {preset} --seed {_seed(r)} --out {r}" for r in args.runs]
    regenerate = " && ".join([*trainings, f"python experiments/affinity3d/ship.py {runs} --out {args.out}"])
    values = ", ".join(f"{k} = {round(float(scores[k]), 4)}" for k in SCORES)
    summary = f"{label} ({preset} preset) on fib-medulla (10 x 10 x 40 nm), with its agglomeration classifier"
    config = (f"experiments/affinity3d/{name}.toml with the {preset} preset: loss {t['loss']} "
              f"(BCE pre-training {t['pretrain_bce_epochs']} epochs), {t['epochs']} epochs of {t['steps_per_epoch']} steps")
    chosen_on = (f"the validation part only: the network of lowest validation VI (learned agglomeration) among "
                 f"the networks of {runs}; the middle threshold of those within {args.flat} bits of its best "
                 "validation VI (the flat region of the curve); the run's watershed size")
    lines = [
        f"name = {toml(args.out.name)}",
        'task = "affinities-3d"',
        f"summary = {toml(summary)}",
        'file = "model.keras"',
        f"sha256 = {toml(sha256_file(args.out / 'model.keras'))}",
        'weights_dtype = "float32"',
        f"package_version = {toml(fusionnet_keras.__version__)}",
        f"seed = {t['seed']}",
        "default = true",
        f"regenerate = {toml(regenerate)}",
        "",
        "[training]",
        'data = "fib-medulla (FUSIONNET_DATA_DIR/fib-medulla), every 4th section kept: 10 x 10 x 40 nm"',
        'split = "y [0, 125) train, [125, 150) validation (checkpoint, network, threshold), [150, 250) test"',
        f"config = {toml(config)}",
        f"time = {toml(f'{minutes:.1f} min (training and validation)')}",
        'hardware = "2-core AMD EPYC (AVX512-BF16), no GPU, shared with other jobs"',
        "",
        "[scores]",
        f"command = {toml(scores['command'])}",
        'headline = "vi"',
        f"values = {{ {values} }}",
        "",
        "[data]",
        'licence = "Creative Commons attribution (NeuroProof examples; LICENSE_neuroproof_examples.txt)"',
        'credit = "Parag et al. 2015, NeuroProof example FIB-SEM volume of the Drosophila medulla"',
        "",
        "[test]",
        'input = "test_input.npy"',
        'output = "test_output.npy"',
        "settings = { orientations = 1 }",
        "",
        "[segmentation]",
        'classifier = "classifier.npz"',
        f"classifier_sha256 = {toml(sha256_file(args.out / 'classifier.npz'))}",
        f"threshold = {threshold}",
        f"ws_size = {ws_size}",
        f"chosen_on = {toml(chosen_on)}",
        f"validation_curve = {toml(curve)}",
    ]
    (args.out / "card.toml").write_text("\n".join(lines) + "\n")
    curve_rows = "\n".join(f"| {t:g} | {vi:.3f} |" for t, vi in curve)
    (args.out / "card.md").write_text(f"""# {args.out.name}

{summary}.

- **Task**: 3-D affinities of anisotropic EM (10 x 10 x 40 nm voxels), then z-watershed fragments and the
  learned agglomeration: `fusionnet-keras neurons EM OUT` (or `affinities`, then `segment --method learned`).
- **Network**: {label}, {train.get("parameters", "")} parameters; {config}; seed {t["seed"]}; trained in {minutes:.1f} min
  on a 2-core AMD EPYC (AVX512-BF16, shared with other jobs). Weights stored in float32.
- **Data**: fib-medulla (NeuroProof examples, Parag et al. 2015; Creative Commons attribution), every 4th
  section kept; train y [0, 125), validation y [125, 150), test y [150, 250).
- **Settings** (the `neurons` defaults), chosen on {chosen_on}. Threshold
  **{threshold:g}**, watershed size **{ws_size}**.
- **Scores on the test part** (63 x 100 x 250 voxels, 212 bodies) at these settings: VI **{float(scores["vi"]):.3f}**
  bits (split {float(scores["vi_split"]):.3f}, merge {float(scores["vi_merge"]):.3f}), ARAND {float(scores["arand"]):.3f},
  CREMI {float(scores["cremi"]):.3f}. Measured by: `{scores["command"]}`.
- **Regenerate**: `{regenerate}`.

Validation curve of the learned agglomeration (VI in bits, validation part):

| threshold | VI |
|---|---|
{curve_rows}

Limits: one small network trained for 1,200 steps on 2 CPU cores on a 63 x 125 x 250 training block of one
FIB-SEM volume; expect it to need retraining (or at least a threshold check) on other tissue, staining or
resolution.
""")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="affinity3d run folders")
    parser.add_argument("--out", type=Path, required=True, help="the registry entry's folder")
    parser.add_argument("--flat", type=float, default=0.05, help="width (bits) of the flat region of the curve")
    args = parser.parse_args(argv)
    import fusionnet_keras as fk
    from fusionnet_keras.data.volumes3d import load_parts
    from fusionnet_keras.pretrained.registry import sha256_file
    from fusionnet_keras.pretrained.storage import save_compact

    run, name, results = choose(args.runs)
    seg = results["segmentation"][name]
    curve = [[r["threshold"], round(r["vi"], 4)] for r in seg["learned"]["validation"]]
    threshold = robust_threshold(curve, args.flat)
    ws_size = int(results["ws_size"])
    print(f"chosen: {run}/{name} (validation VI {affinity3d.chosen_row(seg, 'learned', 'validation')['vi']:.3f}), "
          f"threshold {threshold}, ws_size {ws_size}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model = fk.load_model(run / name / "best.keras", spatial_dims=3)
    save_compact(model, args.out / "model.keras", "float32")  # 0.4 MB: no need to round the weights
    shutil.copyfile(run / name / "classifier.npz", args.out / "classifier.npz")
    image = load_parts("fib-medulla", ["test"])["test"][0][:16, :64, :64]
    stored = fk.load_model(args.out / "model.keras", spatial_dims=3)
    np.save(args.out / "test_input.npy", image)
    np.save(args.out / "test_output.npy", fk.predict_affinities(stored, image, precision="float32", orientations=1))
    unmeasured = {"command": "not measured yet", **{k: 0.0 for k in SCORES}}
    write_card(args, run, name, results, threshold, ws_size, curve, unmeasured)  # neurons reads the card
    with tempfile.TemporaryDirectory() as tmp:
        scores = measure(args.out, Path(tmp))
    print(json.dumps(scores, indent=1), flush=True)
    write_card(args, run, name, results, threshold, ws_size, curve, scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
