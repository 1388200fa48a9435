"""The ISBI 2012 experiment: train FusionNet and U-Net, score sections 21-30, write a report.

Used by ``experiments/isbi2012/run.py``: ``make isbi2012`` (FusionNet and
U-Net), ``make isbi2012-chain`` (FusionNetW^2, the 2021 paper's chained
network, with the W^1 vs W^2 comparison: the first unit of the same chain
against both units) and ``make isbi2012-cv`` (adds the 2016 paper's 3-fold
cross-validation; the paper preset always does). Every step writes its
outputs atomically and skips work already done, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusionnet_keras.experiments.common import (
    LABELS,
    MODELS,
    finish,
    load_best,
    model_config,
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
CHAIN_MODELS = ("fusionnet_w2",)  # make isbi2012-chain
CV_FOLDS = 3  # the 2016 paper's cross-validation
TRAINING = slice(0, 20)  # sections 1-20: the training sections, which choose the multicut's settings
MULTICUT_BETAS = (0.05, 0.1, 0.2, 0.3, 0.5)
MULTICUT_WS_SIZES = (0, 50)
"""The per-section multicut's settings (boundary bias, watershed size in px) swept on sections 1-20, with both
map variants of :func:`fusionnet_keras.segmentation.multicut.multicut_map`."""


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
        units = sorted(k for k in rows[0] if k.startswith("loss_unit")) if rows else []
        for key in units or ["loss"]:  # FusionNetW: one curve per unit (each has its own loss)
            label = f"{LABELS.get(name, name)} unit {key[9:]}" if units else LABELS.get(name, name)
            axes[0].plot(epochs, [float(r[key]) for r in rows], label=label)
        val = [(e, float(r["val_vrand"])) for e, r in zip(epochs, rows) if r.get("val_vrand")]
        if val:
            axes[1].plot(*zip(*val), marker="o", ms=3, label=LABELS.get(name, name))
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
        (f"{LABELS.get(k, k)} prediction", v) for k, v in probs.items()
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


def multicut_row(train_prob, train_labels, prob, labels, log=print) -> dict:
    """The multicut post-processing row: per-section multicut of the map's watershed fragments, turned back
    into a map (:func:`~fusionnet_keras.segmentation.multicut.multicut_map`); beta, the watershed size and
    the map variant chosen by V^Rand on the **training** sections (``train_prob``, ``train_labels``:
    sections 1-20), then ``prob`` (sections 21-30) scored once at them.

    Returns the scores of ``prob`` (``vrand``, ``vinfo``, their thresholds, ``pixel_error``) with
    ``settings``, ``seconds`` (the multicut of ``prob``) and ``train_sweep`` (every setting's training
    V^Rand and V^Info, and the plain map's)."""
    import time

    from fusionnet_keras.evaluation import isbi_scores, pixel_error
    from fusionnet_keras.segmentation.multicut import MULTICUT_VARIANTS, multicut_map

    def scores(m, truth):
        s = isbi_scores(m, truth)
        return {key: s[key] for key in ("vrand", "vinfo", "vrand_threshold", "vinfo_threshold")}

    sweep = []
    for variant in MULTICUT_VARIANTS:
        for size in MULTICUT_WS_SIZES:
            for beta in MULTICUT_BETAS:
                s = scores(multicut_map(train_prob, beta, size, variant), train_labels)
                sweep.append(dict(beta=beta, ws_size=size, variant=variant, vrand=s["vrand"], vinfo=s["vinfo"]))
                log(f"   multicut on sections 1-20: {variant}, ws size {size}, beta {beta:g}: V^Rand "
                    f"{s['vrand']:.5f}  V^Info {s['vinfo']:.5f}")
    best = max(sweep, key=lambda r: r["vrand"])
    settings = {k: best[k] for k in ("beta", "ws_size", "variant")}
    start_time = time.time()
    m = multicut_map(prob, settings["beta"], settings["ws_size"], settings["variant"])
    seconds = time.time() - start_time
    plain = scores(train_prob, train_labels)
    return {**scores(m, labels), "pixel_error": pixel_error(m, labels), "settings": settings, "seconds": seconds,
            "train_sweep": sweep, "train_plain": {k: plain[k] for k in ("vrand", "vinfo")}}


def _multicut(out: Path, name: str, config: dict, images, labels, prob, tta: int) -> dict:
    """:func:`multicut_row` of model ``name``: sections 1-20 predicted (``train-prediction.tif``, read back
    when newer than ``best.keras``), settings chosen there, sections 21-30 (``prob``) scored."""
    from fusionnet_keras.data.io import read_volume, write_volume
    from fusionnet_keras.inference.predictor import predict

    path, best = out / name / "train-prediction.tif", out / name / "best.keras"
    if path.exists() and path.stat().st_mtime > best.stat().st_mtime:
        train_prob = read_volume(path)
    else:
        print(f"== predicting sections 1-20 with {LABELS.get(name, name)} (tta {tta}) for the multicut's "
              "settings ==", flush=True)
        train_prob = predict(load_best(out, name), images[TRAINING], tta=tta, pad=config["predict"]["pad"],
                             batch_size=config["predict"]["batch_size"] or None)
        write_volume(path, train_prob, overwrite=True)
    print(f"== multicut post-processing of {LABELS.get(name, name)}'s map ==", flush=True)
    return multicut_row(train_prob, labels[TRAINING], prob, labels[VALIDATION])


def _rows(results: dict):
    """``(label, scores, paper)`` per scored network: each model, and for FusionNetW^k its first unit."""
    for name, r in results.items():
        if "unit1" in r:
            yield "FusionNetW^1 (unit 1 of the same chain)", r["unit1"], None
        yield LABELS.get(name, name), r, PAPER_TABLE2.get(name)


def _scores_table(results: dict) -> list[str]:
    lines = ["| model | post-processing | V^Rand | V^Info | pixel error | paper V^Rand | paper V^Info |",
             "|---|---|---|---|---|---|---|"]
    for label, scores, paper in _rows(results):
        for variant, title in (("plain", "none"), ("median2", "2-px median"), ("multicut", None)):
            if variant not in scores:
                continue
            r = scores[variant]
            if title is None:
                chosen = r["settings"]
                title = (f"multicut ({chosen['variant']}, beta {chosen['beta']:g}, watershed size "
                         f"{chosen['ws_size']} px; chosen on sections 1-20)")
            ref = f"{paper[0]:.5f} | {paper[1]:.5f}" if paper else "- | -"
            lines.append(f"| {label} | {title} | {r['vrand']:.5f} | {r['vinfo']:.5f} | {r['pixel_error']:.5f} | {ref} |")
    return lines


def _multicut_section(results: dict) -> list[str]:
    """What the multicut row is, how its settings were chosen, and its time."""
    lines = []
    for name, r in results.items():
        if "multicut" not in r:
            continue
        m, plain = r["multicut"], r["multicut"]["train_plain"]
        lines += [f"Multicut row ({LABELS.get(name, name)}): each section's map gives watershed fragments "
                  "(z-watershed of 1 - map, small fragments merged), whose region graph is partitioned by the "
                  "multicut (GAEC + Kernighan-Lin, costs from the mean boundary affinity with bias beta); the "
                  "map becomes either the segments' borders (`segments`: merged boundaries vanish, cut ones "
                  "close) or the map with the cut borders drawn in (`cuts`). Beta "
                  f"({', '.join(map(str, MULTICUT_BETAS))}), the watershed size "
                  f"({', '.join(map(str, MULTICUT_WS_SIZES))} px) and the variant were chosen by V^Rand on "
                  f"sections 1-20 only (the network's training sections: there the plain map scores V^Rand "
                  f"{plain['vrand']:.5f}, the best setting {max(x['vrand'] for x in m['train_sweep']):.5f}); "
                  f"sections 21-30 were scored once. The multicut of the 10 sections took {m['seconds']:.1f} s.",
                  ""]
    return lines


def _chain_section(results: dict, alone: dict | None) -> list[str]:
    """W^1 vs W^2: the first unit of the chain against the whole chain (and FusionNet trained alone)."""
    chains = [name for name, r in results.items() if "unit1" in r]
    if not chains:
        return []
    lines = ["## FusionNetW^1 vs FusionNetW^2", "",
             "| network | V^Rand | V^Info | pixel error |", "|---|---|---|---|"]
    for name in chains:
        for label, r in (("W^1 (unit 1)", results[name]["unit1"]["plain"]), ("W^2 (unit 2)", results[name]["plain"])):
            lines.append(f"| {label} | {r['vrand']:.5f} | {r['vinfo']:.5f} | {r['pixel_error']:.5f} |")
    if alone:
        lines.append(f"| FusionNet trained alone (`make isbi2012`, same preset, {alone['epochs']} epochs) | "
                     f"{alone['vrand']:.5f} | {alone['vinfo']:.5f} | {alone['pixel_error']:.5f} |")
    return lines + [
        "",
        "W^1 is the first unit of the chain, read from the same checkpoint: trained unit by unit, unit 1 never "
        "sees unit 2 (unit 2 trains while unit 1 is frozen), so it is a FusionNet trained with the same "
        "schedule, and W^1 vs W^2 isolates what the second unit adds. The checkpoint is chosen by W^2's "
        "validation V^Rand. The 2021 paper's Table 2 (FusionNetW^2_64 on the hidden test set) is missing from "
        "the copy of the paper available here, so there is no paper column for W^2.",
        "",
    ]


def _cv_section(cv: dict) -> list[str]:
    if not cv:
        return []
    lines = [f"## {CV_FOLDS}-fold cross-validation (the 2016 paper's protocol)", "",
             f"Sections 1-30 in {CV_FOLDS} folds (`fusionnet_keras.data.splits.kfold_splits`, seeded); each fold "
             "trains on the other two folds and is scored on its own sections (which also choose its checkpoint).",
             "", "| model | mean V^Rand | mean V^Info | per fold V^Rand |", "|---|---|---|---|"]
    for name, r in cv.items():
        folds = ", ".join(f"{f['vrand']:.4f}" for f in r["folds"])
        lines.append(f"| {LABELS.get(name, name)} | {r['mean']['vrand']:.5f} | {r['mean']['vinfo']:.5f} | {folds} |")
    return lines + [""]


def _files_section(names) -> list[str]:
    models = ", ".join(f"`{n}/best.keras`" for n in names)
    return [
        "## Files",
        "",
        f"- {models}: the trained models, each the checkpoint with the best validation V^Rand on "
        "sections 21-30.",
        "- `<model>/val-prediction.tif` and `val-labels.tif`: sections 21-30, so "
        "`fusionnet-keras evaluate <model>/val-prediction.tif val-labels.tif` reproduces the table "
        "(`val-prediction-unit1.tif`: the first unit of a chain).",
        f"- `submission.tif`: {LABELS.get(names[0], names[0])}'s prediction of the 30 test sections (float32, "
        "0 = membrane, 1 = cell), the challenge's submission format.",
        "- `results.json`: every number above.",
    ]


def report(preset: str, configs: dict, results: dict, trains: dict, total_seconds: float, cv=None,
           alone=None) -> list[str]:
    """The lines of ``report.md``."""
    names = list(configs)
    train_config = configs[names[0]]["train"]
    title = " vs ".join(LABELS.get(n, n) for n in names)
    return [
        f"# ISBI 2012: {title}",
        "",
        *preset_note(preset, "isbi2012", configs[names[0]]),
        "Training on sections 1-20, scores on the held-out sections 21-30 of `train-volume.tif`, "
        "predicted with 8-orientation averaging and 64 px mirror padding. V^Rand / V^Info are the "
        "challenge's foreground-restricted scores after border thinning, maximised over thresholds "
        "0.0..1.0 (`fusionnet-keras evaluate`). The paper's figures are on the hidden test set, so they "
        "are a reference, not a like-for-like comparison.",
        "",
        f"**Sections 21-30 both select and score the checkpoint.** Each `best.keras` is the checkpoint with the "
        f"best validation V^Rand on sections 21-30 (tta {train_config['val_tta']}, every "
        f"{train_config['validate_every']} epochs), and the table scores the same sections: these are "
        "validation scores of the selected checkpoint, not an independent test"
        + (f" (the {CV_FOLDS}-fold cross-validation below has the same property per fold)." if cv else "."),
        "",
        *_scores_table(results),
        "",
        *_multicut_section(results),
        *_chain_section(results, alone),
        *_cv_section(cv),
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
        *_files_section(names),
    ]


def _unit1_scores(out: Path, name: str, config: dict, images, labels, tta: int) -> dict:
    """Scores of the first unit of chain ``name`` (its best checkpoint); writes ``val-prediction-unit1.tif``."""
    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.inference.predictor import predict
    from fusionnet_keras.training.units import unit_network

    print(f"== predicting sections 21-30 with unit 1 of {LABELS.get(name, name)} (tta {tta}) ==", flush=True)
    prob = predict(unit_network(load_best(out, name), 1), images, tta=tta, pad=config["predict"]["pad"],
                   batch_size=config["predict"]["batch_size"] or None)  # 0: automatic
    write_volume(out / name / "val-prediction-unit1.tif", prob, overwrite=True)
    return score_prediction(prob, labels)


def _cross_validation(experiment_dir, preset: str, out: Path, models, data: dict) -> dict:
    """3-fold cross-validation of each model over sections 1-30 (resumable); ``{name: cv.json}``."""
    from fusionnet_keras.training.crossval import cross_validate

    overrides = [f"data.{key}={json.dumps(str(value))}" for key, value in data.items()]
    cv = {}
    for name in models:
        print(f"== {CV_FOLDS}-fold cross-validation of {LABELS.get(name, name)} ==", flush=True)
        config = model_config(experiment_dir, preset, name, overrides)
        cv[name] = cross_validate(config, out / "cv" / name, folds=CV_FOLDS, resume=True)
    return cv


def _trained_alone(out: Path, preset: str):
    """FusionNet's plain scores and epochs from ``make isbi2012``'s results next to ``out`` (same preset), if any."""
    path = out.parent / "isbi2012" / "results.json"
    if out.name == "isbi2012" or not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("preset") != preset or "fusionnet" not in saved.get("results", {}):
        return None
    return {**saved["results"]["fusionnet"]["plain"], "epochs": saved["train"]["fusionnet"]["epochs"]}


def run(preset: str, out, experiment_dir, tta=8, models=None, cv=None) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``).

    ``models``: model names (``experiments/isbi2012/<name>.toml``; default FusionNet and U-Net, or a
    comma-separated string). ``cv``: add the 3-fold cross-validation (default: with the paper preset).
    """
    from fusionnet_keras.data import datasets
    from fusionnet_keras.data.io import load_image, read_volume, write_volume
    from fusionnet_keras.inference.predictor import predict

    models = tuple(models.split(",") if isinstance(models, str) else models or MODELS)
    cv = preset == "paper" if cv is None else cv
    t0, out = start(preset, out)
    folder = datasets.isbi2012()
    data = {"images": folder / "train-volume.tif", "labels": folder / "train-labels.tif"}
    configs, trains = train_models(experiment_dir, preset, out, data, models)

    all_images = load_image(folder / "train-volume.tif")
    all_labels = read_volume(folder / "train-labels.tif")
    images, labels = all_images[VALIDATION], all_labels[VALIDATION]
    write_volume(out / "val-labels.tif", labels, overwrite=True)
    probs, seconds = predict_models(out, configs, images, tta, "val-prediction.tif", "sections 21-30")
    results = {}
    for name in models:
        results[name] = {"predict_seconds": seconds[name], **score_prediction(probs[name], labels)}
        if configs[name]["model"]["architecture"] == "fusionnet_w":
            results[name]["unit1"] = _unit1_scores(out, name, configs[name], images, labels, tta)
        if name == models[0]:  # the multicut post-processing of the first model's map
            results[name]["multicut"] = _multicut(out, name, configs[name], all_images, all_labels, probs[name],
                                                  tta)
        for label, r, _ in _rows({name: results[name]}):
            print(f"   {label}: V^Rand {r['plain']['vrand']:.5f}  V^Info {r['plain']['vinfo']:.5f}  "
                  f"pixel error {r['plain']['pixel_error']:.5f}", flush=True)
    cv_results = _cross_validation(experiment_dir, preset, out, models, data) if cv else None

    first = models[0]
    print(f"== predicting the 30 test sections with {LABELS.get(first, first)} (tta {tta}) ==", flush=True)
    submission = predict(load_best(out, first), load_image(folder / "test-volume.tif"), tta=tta,
                         pad=configs[first]["predict"]["pad"], progress=True)
    write_volume(out / "submission.tif", submission.astype(np.float32), overwrite=True)

    _plot_curves({n: out / n for n in models}, out / "curves.png", val_tta=configs[first]["train"]["val_tta"])
    _plot_example(images[EXAMPLE], {n: probs[n][EXAMPLE] for n in models}, labels[EXAMPLE] / 255.0,
                  out / "example.png", VALIDATION.start + EXAMPLE + 1)
    alone = _trained_alone(out, preset)
    summary = {"preset": preset, "results": results, "train": trains, "cv": cv_results}
    return finish(out, t0, summary,
                  lambda total: report(preset, configs, results, trains, total, cv_results, alone))
