"""Make the shipped 2-D model (registry entry ``isbi2012-fusionnet``) from a training run.

The run is ``fusionnet-keras train experiments/isbi2012/fusionnet.toml experiments/isbi2012/cpu.toml --set
'data.val_sections=""' --out RUN``: FusionNet on ISBI 2012 sections 1-20 with no checkpoint selection (its
last epoch), so sections 21-30 stay held out. The weights are stored in float16 when that moves the held-out
V^Rand and V^Info by at most 0.001 (else float32); the card's scores are measured with the commands a user
runs (``predict`` with the shipped default, ``evaluate``) on sections 21-30.

    python experiments/isbi2012/ship.py RUN --out fusionnet_keras/pretrained/models/isbi2012-fusionnet
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fusionnet_keras.pretrained.build import run_cli, toml

LIMIT = 10 * 2**20  # a registry file's largest size


def held_out(workdir: Path):
    """Sections 21-30 of the ISBI 2012 training volume and labels, written as TIFF stacks in ``workdir``."""
    from fusionnet_keras.data.datasets import isbi2012
    from fusionnet_keras.data.io import read_volume, write_volume

    folder = isbi2012(download=False)
    image = read_volume(str(folder / "train-volume.tif"))[20:30]
    labels = read_volume(str(folder / "train-labels.tif"))[20:30]
    write_volume(str(workdir / "sections21-30.tif"), image)
    write_volume(str(workdir / "labels21-30.tif"), labels)
    return image, labels


def scores(workdir: Path, registry: Path, name: str) -> dict:
    """V^Rand / V^Info of ``predict`` (the registry's default model, its default settings) on sections 21-30."""
    commands = [("predict", "sections21-30.tif", "prediction.tif"),
                ("evaluate", "prediction.tif", "labels21-30.tif", "--json")]
    (workdir / "prediction.tif").unlink(missing_ok=True)
    start = time.time()
    for command in commands:
        out = run_cli(*command, cwd=workdir, env={"FUSIONNET_REGISTRY": str(registry.resolve())})
    result = json.loads(out)
    result["seconds"] = time.time() - start
    result["command"] = ("sections21-30.tif / labels21-30.tif = sections 21-30 of isbi2012/train-volume.tif and "
                         "train-labels.tif; " + " && ".join("fusionnet-keras " + " ".join(map(shlex.quote, c))
                                                           for c in commands))
    return result


def write_card(out: Path, run: Path, dtype: str, result: dict, compare: dict, minutes: float) -> None:
    import fusionnet_keras
    from fusionnet_keras.pretrained.registry import sha256_file

    config = json.loads((run / "config.json").read_text())
    t, m = config["train"], config["model"]
    regenerate = ("fusionnet-keras train experiments/isbi2012/fusionnet.toml experiments/isbi2012/cpu.toml --set "
                  f"'data.val_sections=\"\"' --out {run} && python experiments/isbi2012/ship.py {run} --out {out}")
    summary = (f"FusionNet {m['nb_filters']}/{m['depth']} trained on ISBI 2012 sections 1-20 (CPU preset, last "
               "epoch); membrane probability maps")
    keys = [k for k in ("vrand", "vinfo", "pixel_error") if k in result]
    lines = [
        f"name = {toml(out.name)}", 'task = "membranes-2d"', f"summary = {toml(summary)}", 'file = "model.keras"',
        f"sha256 = {toml(sha256_file(out / 'model.keras'))}", f"weights_dtype = {toml(dtype)}",
        f"package_version = {toml(fusionnet_keras.__version__)}", f"seed = {t['seed']}", "default = true",
        f"regenerate = {toml(regenerate)}", "",
        "[training]", 'data = "ISBI 2012 training volume (FUSIONNET_DATA_DIR/isbi2012), 4 x 4 x 50 nm"',
        'split = "sections 1-20 train (no validation: the last epoch is kept), 21-30 held out for the scores"',
        f"config = {toml('experiments/isbi2012/fusionnet.toml + cpu.toml (CPU preset): ' + str(t['epochs']) + ' epochs of ' + str(t['steps_per_epoch']) + ' steps, crop ' + str(t['crop']) + ', batch ' + str(t['batch_size']))}",
        f"time = {toml(f'{minutes:.1f} min')}",
        'hardware = "2-core AMD EPYC (AVX512-BF16, bf16 mixed-precision training), no GPU, shared with other jobs"', "",
        "[scores]", f"command = {toml(result['command'])}", 'headline = "vrand"',
        "values = { " + ", ".join(f"{k} = {round(float(result[k]), 5)}" for k in keys) + " }", "",
        "[data]", 'licence = "ISBI 2012 challenge data"',
        'credit = "Arganda-Carreras et al. 2015 (Front. Neuroanat.); Cardona et al. 2010 (PLoS Biol.)"', "",
        "[test]", 'input = "test_input.npy"', 'output = "test_output.npy"', "settings = { tta = 1, pad = 16 }",
    ]
    (out / "card.toml").write_text("\n".join(lines) + "\n")
    (out / "card.md").write_text(f"""# {out.name}

{summary}.

- **Task**: membrane probability maps of ssTEM sections (ISBI 2012: 4 x 4 x 50 nm), `fusionnet-keras predict
  in.tif out.tif` (the default model of `predict`; 8 orientations averaged, 64 px mirror padding).
- **Network**: FusionNet {m['nb_filters']}/{m['depth']} (Quan et al.), trained by `{regenerate.split(' && ')[0]}`
  in {minutes:.1f} min on a 2-core AMD EPYC; seed {t['seed']}; the last epoch (no checkpoint chosen on the
  held-out sections). Weights stored as {dtype} (held-out scores with float32 weights: V^Rand
  {compare['float32']['vrand']:.5f}, V^Info {compare['float32']['vinfo']:.5f}; with {dtype}:
  {compare[dtype]['vrand']:.5f}, {compare[dtype]['vinfo']:.5f}).
- **Scores on sections 21-30** (held out): V^Rand **{float(result['vrand']):.5f}**, V^Info
  **{float(result['vinfo']):.5f}**, by `{result['command']}`.
- **Data**: ISBI 2012 challenge (Arganda-Carreras et al. 2015; Cardona et al. 2010).
- **Limits**: trained on 20 sections of one Drosophila VNC ssTEM stack; other tissue, staining or
  resolution may need retraining.
""")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run folder")
    parser.add_argument("--out", type=Path, required=True, help="the registry entry's folder")
    args = parser.parse_args(argv)
    import fusionnet_keras as fk
    from fusionnet_keras.pretrained.storage import save_compact

    net = fk.load_model(args.run / "last.keras")
    state = json.loads((args.run / "state.json").read_text())
    minutes = (state.get("train_seconds") or 0) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    compare = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, _ = held_out(tmp)
        for dtype in ("float16", "float32"):  # each stored, then scored by the commands
            save_compact(net, args.out / "model.keras", dtype)
            crop = image[0, :64, :64]
            stored = fk.load_model(args.out / "model.keras")
            np.save(args.out / "test_input.npy", crop)
            np.save(args.out / "test_output.npy", fk.predict(stored, crop, precision="float32", tta=1, pad=16))
            write_card(args.out, args.run, dtype, {"vrand": 0.0, "vinfo": 0.0, "command": "not measured yet"},
                       {"float32": {"vrand": 0, "vinfo": 0}, dtype: {"vrand": 0, "vinfo": 0}}, minutes)
            compare[dtype] = scores(tmp, args.out.parent, args.out.name)
            print(dtype, json.dumps({k: compare[dtype][k] for k in ("vrand", "vinfo")}), flush=True)
        moved = max(abs(compare["float16"][k] - compare["float32"][k]) for k in ("vrand", "vinfo"))
        dtype = "float16" if moved <= 0.001 else "float32"
        save_compact(net, args.out / "model.keras", dtype)
        if (args.out / "model.keras").stat().st_size > LIMIT:
            sys.exit(f"{args.out / 'model.keras'} is over 10 MiB in {dtype}: not shippable")
        stored = fk.load_model(args.out / "model.keras")
        np.save(args.out / "test_output.npy", fk.predict(stored, crop, precision="float32", tta=1, pad=16))
    write_card(args.out, args.run, dtype, compare[dtype], compare, minutes)
    print(f"wrote {args.out} ({dtype}, scores moved {moved:.5f} by float16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
