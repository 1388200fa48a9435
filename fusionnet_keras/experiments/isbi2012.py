"""The ISBI 2012 experiment: train FusionNet and U-Net, score sections 21-30, write a report.

Used by ``experiments/isbi2012/run.py`` (``make isbi2012``). Every step writes
its outputs atomically and skips work already done, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fusionnet_keras.experiments.common import LABELS, MODELS, train_models
from fusionnet_keras.utils.atomic import atomic_path, atomic_write_text

PAPER_TABLE2 = {  # Quan et al. 2016, Table 2 (hidden ISBI test set)
    "fusionnet": (0.978042575, 0.989945379),
    "unet": (0.972760748, 0.986616590),
}


def _plot_curves(runs: dict, path: Path, val_tta: int = 1) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, run_dir in runs.items():
        log = Path(run_dir) / "log.csv"
        if not log.exists():
            continue
        rows = list(csv.DictReader(log.open()))
        epochs = [int(r["epoch"]) + 1 for r in rows]
        axes[0].plot(epochs, [float(r["loss"]) for r in rows], label=LABELS[name])
        val = [(e, float(r["val_vrand"])) for e, r in zip(epochs, rows) if r.get("val_vrand")]
        if val:
            axes[1].plot(*zip(*val), marker="o", ms=3, label=LABELS[name])
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel=f"V^Rand (sections 21-30, tta {val_tta})", title="validation V^Rand")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _plot_example(image, probs: dict, label, path: Path, section: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("input (section %d)" % section, image)] + [
        (f"{LABELS[k]} prediction", v) for k, v in probs.items()
    ] + [("label", label)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def evaluate_model(model_path, images, labels, tta=8, pad=64, batch_size=4):
    """Predict ``images`` with ``model_path`` and score them; plain and 2-px median filtered."""
    import keras

    from fusionnet_keras.evaluation import isbi_scores, pixel_error
    from fusionnet_keras.evaluation.postprocess import median_filter
    from fusionnet_keras.inference.predictor import predict

    net = keras.saving.load_model(model_path, compile=False)
    t0 = time.time()
    prob = predict(net, images, tta=tta, pad=pad, batch_size=batch_size)
    seconds = time.time() - t0
    out = {"predict_seconds": seconds}
    for variant, p in (("plain", prob), ("median2", median_filter(prob, 2))):
        s = isbi_scores(p, labels)
        out[variant] = {
            "vrand": s["vrand"],
            "vinfo": s["vinfo"],
            "vrand_threshold": s["vrand_threshold"],
            "vinfo_threshold": s["vinfo_threshold"],
            "pixel_error": pixel_error(p, labels),
        }
    return prob, out


def write_report(out: Path, preset: str, configs: dict, results: dict, trains: dict, total_seconds: float):
    lines = [
        "# ISBI 2012: FusionNet vs U-Net",
        "",
    ]
    if preset == "cpu":
        lines += [
            "**CPU preset.** This run used the reduced CPU preset (smaller networks, random crops, a short "
            "schedule; see `experiments/isbi2012/cpu.toml`) so that the whole target finishes on a 2-core "
            "machine. It is not the paper's protocol; `make isbi2012 PRESET=paper` runs that (GPU).",
            "",
        ]
    else:
        lines += [f"Preset: `{preset}` (the paper's protocol).", ""]
    lines += [
        "Training on sections 1-20, scores on the held-out sections 21-30 of `train-volume.tif`, "
        "predicted with 8-orientation averaging and 64 px mirror padding. V^Rand / V^Info are the "
        "challenge's foreground-restricted scores after border thinning, maximised over thresholds "
        "0.0..1.0 (`fusionnet-keras evaluate`). The paper's figures are on the hidden test set, so they "
        "are a reference, not a like-for-like comparison.",
        "",
        "| model | post-processing | V^Rand | V^Info | pixel error | paper V^Rand | paper V^Info |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        if name not in results:
            continue
        paper = PAPER_TABLE2[name]
        for variant, title in (("plain", "none"), ("median2", "2-px median")):
            r = results[name][variant]
            lines.append(
                f"| {LABELS[name]} | {title} | {r['vrand']:.5f} | {r['vinfo']:.5f} | {r['pixel_error']:.5f} "
                f"| {paper[0]:.5f} | {paper[1]:.5f} |"
            )
    lines += ["", "## Training", "", "| model | nb_filters | depth | parameters | epochs | crop | train time (min) | best epoch |",
              "|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        if name not in trains:
            continue
        c, t = configs[name], trains[name]
        lines.append(
            f"| {LABELS[name]} | {c['model']['nb_filters']} | {c['model']['depth']} | {t.get('parameters', '')} "
            f"| {t['epochs']} | {c['train']['crop'] or 'full'} | {(t.get('train_seconds') or 0) / 60:.1f} | {t['best_epoch']} |"
        )
    lines += [
        "",
        f"Total wall time of the target: {total_seconds / 60:.1f} min.",
        "",
        "![training curves](curves.png)",
        "",
        "![validation example](example.png)",
        "",
        "## Files",
        "",
        "- `fusionnet/best.keras`, `unet/best.keras`: the trained models, each the checkpoint with the best "
        f"validation V^Rand on sections 21-30 (tta {configs['fusionnet']['train']['val_tta']}, every "
        f"{configs['fusionnet']['train']['validate_every']} epochs). The table scores the same sections, so it "
        "is the validation score of the selected checkpoint, not an independent test.",
        "- `fusionnet/val-prediction.tif`, `unet/val-prediction.tif` and `val-labels.tif`: sections 21-30, "
        "so `fusionnet-keras evaluate fusionnet/val-prediction.tif val-labels.tif` reproduces the table.",
        "- `submission.tif`: FusionNet's prediction of the 30 test sections (float32, 0 = membrane, 1 = cell), "
        "the challenge's submission format.",
        "- `results.json`: every number above.",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def run(preset: str, out, experiment_dir, tta=8) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``)."""
    import keras

    from fusionnet_keras.data import datasets
    from fusionnet_keras.data.io import load_image, read_volume, write_volume

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    experiment_dir = Path(experiment_dir)
    folder = datasets.isbi2012()
    if preset == "cpu":
        print("== CPU preset: reduced networks and schedule so the target finishes on 2 CPU cores "
              "(PRESET=paper runs the paper's protocol) ==", flush=True)
    configs, trains = train_models(experiment_dir, preset, out, {
        "images": folder / "train-volume.tif", "labels": folder / "train-labels.tif"})

    images = load_image(folder / "train-volume.tif")
    labels = read_volume(folder / "train-labels.tif")
    val = slice(20, 30)
    write_volume(out / "val-labels.tif", labels[val], overwrite=True)
    results, probs = {}, {}
    for name in MODELS:
        print(f"== evaluating {LABELS[name]} on sections 21-30 (tta {tta}) ==", flush=True)
        prob, results[name] = evaluate_model(out / name / "best.keras", images[val], labels[val], tta=tta,
                                             pad=configs[name]["predict"]["pad"])
        write_volume(out / name / "val-prediction.tif", prob, overwrite=True)
        probs[name] = prob
        r = results[name]["plain"]
        print(f"   V^Rand {r['vrand']:.5f}  V^Info {r['vinfo']:.5f}  pixel error {r['pixel_error']:.5f}", flush=True)

    print(f"== predicting the 30 test sections with FusionNet (tta {tta}) ==", flush=True)
    from fusionnet_keras.inference.predictor import predict

    net = keras.saving.load_model(out / "fusionnet" / "best.keras", compile=False)
    test = load_image(folder / "test-volume.tif")
    submission = predict(net, test, tta=tta, pad=configs["fusionnet"]["predict"]["pad"], progress=True)
    write_volume(out / "submission.tif", submission.astype(np.float32), overwrite=True)

    _plot_curves({n: out / n for n in MODELS}, out / "curves.png", val_tta=configs["fusionnet"]["train"]["val_tta"])
    k = 2  # section 23
    _plot_example(images[20 + k], {n: probs[n][k] for n in MODELS}, labels[20 + k] / 255.0, out / "example.png", 21 + k)
    total = time.time() - t0
    results_all = {"preset": preset, "results": results, "train": trains, "total_seconds": total}
    atomic_write_text(out / "results.json", json.dumps(results_all, indent=2, default=str) + "\n")
    write_report(out, preset, configs, results, trains, total)
    print(f"== wrote {out / 'report.md'} ({total / 60:.1f} min) ==", flush=True)
    return results_all
