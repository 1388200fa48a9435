"""The ISBI 2012 experiment: train FusionNet and U-Net, score sections 21-30, write a report.

Used by ``experiments/isbi2012/run.py`` (``make isbi2012``). Every step writes
its outputs atomically and skips work already done, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.experiments.common import (
    LABELS,
    MODELS,
    finish,
    load_best,
    predict_models,
    preset_note,
    start,
    train_models,
    training_table,
)

PAPER_TABLE2 = {  # Quan et al. 2016, Table 2 (hidden ISBI test set)
    "fusionnet": (0.978042575, 0.989945379),
    "unet": (0.972760748, 0.986616590),
}
VALIDATION = slice(20, 30)  # sections 21-30 of train-volume.tif
EXAMPLE = 2  # the validation section shown in example.png (section 23)


def _plot_curves(runs: dict, path: Path, val_tta: int = 1) -> None:
    import csv

    from fusionnet_keras.evaluation.figures import new_figure, save_figure

    fig = new_figure((10, 3.8))
    axes = fig.subplots(1, 2)
    for name, run_dir in runs.items():
        log = Path(run_dir) / "log.csv"
        if not log.exists():
            continue
        with log.open() as f:
            rows = list(csv.DictReader(f))
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
    save_figure(fig, path, dpi=100)


def _plot_example(image, probs: dict, label, path: Path, section: int) -> None:
    from fusionnet_keras.evaluation.figures import new_figure, save_figure

    panels = [(f"input (section {section})", image)] + [
        (f"{LABELS[k]} prediction", v) for k, v in probs.items()
    ] + [("label", label)]
    fig = new_figure((4 * len(panels), 4.2))
    for ax, (title, img) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def score_prediction(prob, labels) -> dict:
    """ISBI scores of a probability stack: plain and with the 2016 paper's 2-px median filter."""
    from fusionnet_keras.evaluation import isbi_scores, pixel_error
    from fusionnet_keras.evaluation.postprocess import median_filter

    out = {}
    for variant, p in (("plain", prob), ("median2", median_filter(prob, 2))):
        s = isbi_scores(p, labels)
        out[variant] = {key: s[key] for key in ("vrand", "vinfo", "vrand_threshold", "vinfo_threshold")}
        out[variant]["pixel_error"] = pixel_error(p, labels)
    return out


def _scores_table(results: dict) -> list[str]:
    lines = ["| model | post-processing | V^Rand | V^Info | pixel error | paper V^Rand | paper V^Info |",
             "|---|---|---|---|---|---|---|"]
    for name in MODELS:
        paper = PAPER_TABLE2[name]
        for variant, title in (("plain", "none"), ("median2", "2-px median")):
            r = results[name][variant]
            lines.append(
                f"| {LABELS[name]} | {title} | {r['vrand']:.5f} | {r['vinfo']:.5f} | {r['pixel_error']:.5f} "
                f"| {paper[0]:.5f} | {paper[1]:.5f} |"
            )
    return lines


def _files_section(train_config: dict) -> list[str]:
    return [
        "## Files",
        "",
        "- `fusionnet/best.keras`, `unet/best.keras`: the trained models, each the checkpoint with the best "
        f"validation V^Rand on sections 21-30 (tta {train_config['val_tta']}, every "
        f"{train_config['validate_every']} epochs). The table scores the same sections, so it "
        "is the validation score of the selected checkpoint, not an independent test.",
        "- `fusionnet/val-prediction.tif`, `unet/val-prediction.tif` and `val-labels.tif`: sections 21-30, "
        "so `fusionnet-keras evaluate fusionnet/val-prediction.tif val-labels.tif` reproduces the table.",
        "- `submission.tif`: FusionNet's prediction of the 30 test sections (float32, 0 = membrane, 1 = cell), "
        "the challenge's submission format.",
        "- `results.json`: every number above.",
    ]


def report(preset: str, configs: dict, results: dict, trains: dict, total_seconds: float) -> list[str]:
    """The lines of ``report.md``."""
    return [
        "# ISBI 2012: FusionNet vs U-Net",
        "",
        *preset_note(preset, "isbi2012"),
        "Training on sections 1-20, scores on the held-out sections 21-30 of `train-volume.tif`, "
        "predicted with 8-orientation averaging and 64 px mirror padding. V^Rand / V^Info are the "
        "challenge's foreground-restricted scores after border thinning, maximised over thresholds "
        "0.0..1.0 (`fusionnet-keras evaluate`). The paper's figures are on the hidden test set, so they "
        "are a reference, not a like-for-like comparison.",
        "",
        *_scores_table(results),
        "",
        "## Training",
        "",
        *training_table(configs, trains),
        "",
        f"Total wall time of the target: {total_seconds / 60:.1f} min.",
        "",
        "![training curves](curves.png)",
        "",
        "![validation example](example.png)",
        "",
        *_files_section(configs["fusionnet"]["train"]),
    ]


def run(preset: str, out, experiment_dir, tta=8) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``)."""
    from fusionnet_keras.data import datasets
    from fusionnet_keras.data.io import load_image, read_volume, write_volume
    from fusionnet_keras.inference.predictor import predict

    t0, out = start(preset, out)
    folder = datasets.isbi2012()
    configs, trains = train_models(experiment_dir, preset, out, {
        "images": folder / "train-volume.tif", "labels": folder / "train-labels.tif"})

    images = load_image(folder / "train-volume.tif")[VALIDATION]
    labels = read_volume(folder / "train-labels.tif")[VALIDATION]
    write_volume(out / "val-labels.tif", labels, overwrite=True)
    probs, seconds = predict_models(out, configs, images, tta, "val-prediction.tif", "sections 21-30")
    results = {}
    for name in MODELS:
        results[name] = {"predict_seconds": seconds[name], **score_prediction(probs[name], labels)}
        r = results[name]["plain"]
        print(f"   {LABELS[name]}: V^Rand {r['vrand']:.5f}  V^Info {r['vinfo']:.5f}  "
              f"pixel error {r['pixel_error']:.5f}", flush=True)

    print(f"== predicting the 30 test sections with FusionNet (tta {tta}) ==", flush=True)
    submission = predict(load_best(out, "fusionnet"), load_image(folder / "test-volume.tif"), tta=tta,
                         pad=configs["fusionnet"]["predict"]["pad"], progress=True)
    write_volume(out / "submission.tif", submission.astype(np.float32), overwrite=True)

    _plot_curves({n: out / n for n in MODELS}, out / "curves.png", val_tta=configs["fusionnet"]["train"]["val_tta"])
    _plot_example(images[EXAMPLE], {n: probs[n][EXAMPLE] for n in MODELS}, labels[EXAMPLE] / 255.0,
                  out / "example.png", VALIDATION.start + EXAMPLE + 1)
    summary = {"preset": preset, "results": results, "train": trains}
    return finish(out, t0, summary, lambda total: report(preset, configs, results, trains, total))
