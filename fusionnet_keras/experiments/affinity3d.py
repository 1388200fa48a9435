"""The 3-D affinity experiment (the third paper): networks, z-watershed, agglomeration, split VI.

Used by ``experiments/affinity3d/run.py`` (``make affinity3d``): trains UNet3D
with MALIS, FusionNet3D with MALIS and UNet3D with class-balanced BCE on the
training part of fib-medulla made anisotropic
(:mod:`fusionnet_keras.data.volumes3d`: every 4th section, split by y; the
checkpoint chosen on the validation part), predicts the training and test
parts with each best network
(:func:`fusionnet_keras.inference.affinities.predict_affinities`), and
segments the test part with the z-watershed alone, the mean agglomeration and
the learned agglomeration (classifier trained on the training part only) over
a threshold sweep. ``report.md`` holds the split-VI plot, the table at each
method's best threshold, MALIS vs BCE and UNet3D vs FusionNet3D, the training
times and a test section. Every step skips work already done (training resumes,
written affinities are read back), so an interrupted run resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.experiments.common import finish, load_best, preset_note, start, train_models

MODELS = ("unet3d_malis", "fusionnet3d_malis", "unet3d_bce")
LABELS = {"unet3d_malis": "UNet3D + MALIS", "fusionnet3d_malis": "FusionNet3D + MALIS",
          "unet3d_bce": "UNet3D + BCE", "unet3d_constrained": "UNet3D + constrained MALIS"}
METHODS = ("watershed", "mean", "learned")
THRESHOLDS = [round(t, 3) for t in np.arange(0.05, 0.96, 0.05)]
WS_SIZE = 300  # z-watershed size threshold (voxels) of the fragments (as benchmarks/segmentation_fib_medulla.py)
CLASSIFIER = {"epochs": 3, "trees": 100}


def _label(name):
    return LABELS.get(name, name)


def _loss_text(config: dict) -> str:
    """``train.loss`` of a network, with its BCE pre-training when it has one."""
    t = config["train"]
    pre = min(t["pretrain_bce_epochs"], t["epochs"])
    if not pre or t["loss"] == "bce":
        return f"`{t['loss']}`"
    return (f"`bce` for {pre} epochs ({pre * t['steps_per_epoch']} steps), then `{t['loss']}` for "
            f"{t['epochs'] - pre} ({(t['epochs'] - pre) * t['steps_per_epoch']} steps)")


def predict_parts(out: Path, name: str, config: dict, parts: dict, orientations: int) -> tuple[dict, dict]:
    """Affinities of the train and test parts by ``name``'s best network: ``out/<name>/<part>-affinities.h5``
    (read back when newer than ``best.keras``). Returns ``({part: affs}, {part: seconds})``."""
    from fusionnet_keras.data.io import read_volume, write_volume
    from fusionnet_keras.inference.affinities import predict_affinities

    affs, seconds = {}, {}
    best = out / name / "best.keras"
    net = None
    for part in ("train", "test"):
        path = out / name / f"{part}-affinities.h5"
        if path.exists() and path.stat().st_mtime > best.stat().st_mtime:
            affs[part] = read_volume(f"{path}:affinities")
            continue
        net = net or load_best(out, name)
        print(f"== predicting the {part} part with {_label(name)} (orientations {orientations}) ==", flush=True)
        start_time = time.time()
        p = config["predict"]
        affs[part] = predict_affinities(net, parts[part][0], block=tuple(p["block"]) or None,
                                        precision=p["precision"], orientations=orientations)
        seconds[part] = time.time() - start_time
        write_volume(f"{path}:affinities", affs[part], overwrite=True)
    return affs, seconds


def segment_test(affs: dict, parts: dict, classifier_path=None, log=print) -> dict:
    """Fragments, mean and learned sweeps of the test part (classifier trained on the train part and
    saved to ``classifier_path``).

    Returns ``{"watershed": scores, "mean": [scores per threshold], "learned": [...], "classifier": info,
    "seconds": {...}, "best": {method: labels at the best threshold}}``.
    """
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.learned import train_classifier
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

    ws = WatershedOptions(size=WS_SIZE)
    seconds = {}
    t = time.time()
    train_frag = ws.run(affs["train"])
    clf = train_classifier(affs["train"], train_frag, parts["train"][1], log=lambda line: log("  " + line),
                           **CLASSIFIER)
    seconds["classifier"] = time.time() - t
    if classifier_path is not None:
        clf.save(classifier_path, overwrite=True)
    gt = parts["test"][1]
    t = time.time()
    frag = ws.run(affs["test"])
    seconds["watershed"] = time.time() - t
    result = {"watershed": dict(instance_scores(frag, gt), threshold=None, fragments=int(frag.max())),
              "classifier": clf.info, "best": {"watershed": frag}}
    for method in ("mean", "learned"):
        t = time.time()
        rows, best = [], None
        for threshold, seg in segment(affs["test"], method, THRESHOLDS, fragments=frag,
                                      classifier=clf if method == "learned" else None):
            rows.append(dict(instance_scores(seg, gt), threshold=threshold))
            if best is None or rows[-1]["vi"] < best[0]:
                best = (rows[-1]["vi"], seg)
        seconds[method] = time.time() - t
        result[method], result["best"][method] = rows, best[1]
    result["seconds"] = seconds
    return result


def _segmentation(folder: Path, affs: dict, parts: dict) -> tuple[dict, dict]:
    """:func:`segment_test` of one network, written to ``folder`` (``segmentation.json``,
    ``test-segmentation.h5``, ``classifier.npz``), or read back when newer than its test affinities."""
    import json

    from fusionnet_keras.data.io import read_volume, write_volumes
    from fusionnet_keras.utils.atomic import atomic_write_text

    scores, volumes = folder / "segmentation.json", folder / "test-segmentation.h5"
    if scores.exists() and volumes.exists() and scores.stat().st_mtime > (folder / "test-affinities.h5").stat().st_mtime:
        return json.loads(scores.read_text()), {m: read_volume(f"{volumes}:{m}") for m in METHODS}
    print(f"== segmenting the test part with {_label(folder.name)}'s affinities ==", flush=True)
    result = segment_test(affs, parts, folder / "classifier.npz")
    best = result.pop("best")
    write_volumes(volumes, best, overwrite=True)
    atomic_write_text(scores, json.dumps(result, indent=1) + "\n")
    return result, best


def best_row(result: dict, method: str) -> dict:
    """The scores of ``method`` at its best threshold (lowest VI); the watershed has one."""
    if method == "watershed":
        return result["watershed"]
    return min(result[method], key=lambda r: r["vi"])


# ---------------------------------------------------------------------------
# report


def _plot_section(image, gt, segs: dict, path: Path, z: int) -> None:
    from fusionnet_keras.evaluation.figures import new_figure, save_figure

    def colours(labels):
        ids, inverse = np.unique(labels, return_inverse=True)
        palette = np.random.default_rng(0).uniform(0.15, 1.0, (len(ids), 3))
        palette[ids == 0] = 0
        return palette[inverse.reshape(labels.shape)]

    panels = [("EM", image, "gray"), ("ground truth", colours(gt), None)]
    panels += [(title, colours(seg), None) for title, seg in segs.items()]
    fig = new_figure((3.6 * len(panels), 2.0))
    for ax, (title, img, cmap) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"test part, section z = {z}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _scores_table(segs: dict) -> list[str]:
    lines = ["| network | method | threshold | VI split | VI merge | VI | ARAND | CREMI | objects |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, result in segs.items():
        for method in METHODS:
            r = best_row(result, method)
            threshold = "-" if r["threshold"] is None else f"{r['threshold']:g}"
            what = f"z-watershed ({r['fragments']} fragments)" if method == "watershed" else method
            lines.append(f"| {_label(name)} | {what} | {threshold} | {r['vi_split']:.3f} | {r['vi_merge']:.3f} | "
                         f"{r['vi']:.3f} | {r['arand']:.3f} | {r['cremi']:.3f} | {r['objects']} |")
    return lines


def _comparison(segs: dict, a: str, b: str, what: str) -> list[str]:
    """Rows comparing networks ``a`` and ``b`` per method (VI and CREMI at each one's best threshold)."""
    if a not in segs or b not in segs:
        return []
    lines = [f"### {what}", "", f"| method | {_label(a)} VI | {_label(b)} VI | {_label(a)} CREMI | "
             f"{_label(b)} CREMI | lower VI |", "|---|---|---|---|---|---|"]
    for method in METHODS:
        ra, rb = best_row(segs[a], method), best_row(segs[b], method)
        winner = _label(a) if ra["vi"] < rb["vi"] else _label(b) if rb["vi"] < ra["vi"] else "tie"
        lines.append(f"| {method} | {ra['vi']:.3f} | {rb['vi']:.3f} | {ra['cremi']:.3f} | {rb['cremi']:.3f} | "
                     f"{winner} |")
    return lines + [""]


def _learned_vs_mean(segs: dict) -> list[str]:
    lines = ["### Learned vs mean agglomeration", ""]
    losses = []
    for name, result in segs.items():
        mean, learned = best_row(result, "mean"), best_row(result, "learned")
        diff = learned["vi"] - mean["vi"]
        verdict = "beats" if diff < 0 else "does not beat"
        if diff >= 0:
            losses.append(name)
        lines.append(f"- {_label(name)}: learned {verdict} mean at their best thresholds (VI {learned['vi']:.3f} vs "
                     f"{mean['vi']:.3f}, {diff:+.3f} bits; CREMI {learned['cremi']:.3f} vs {mean['cremi']:.3f}); "
                     f"classifier: {result['classifier'].get('examples')} examples from "
                     f"{result['classifier'].get('fragments')} training-part fragments.")
    if losses:
        lines += ["", "Where the learned agglomeration does not win, the likely reasons (not isolated by an "
                  "ablation here): the classifier learns from the network's affinities on the **training** part, "
                  "which the network was fitted to, so its boundaries there are cleaner than on the test part "
                  "and the classifier's examples do not look like the test boundaries; with good affinities the "
                  "mean affinity of a boundary already separates most true and false boundaries, leaving the "
                  "forest little to add; and the short CPU training leaves the affinities' errors (which the "
                  "features would have to model) specific to each run. The unlearned mean is the safer choice "
                  "when it ties or wins."]
    return lines + [""]


def _training_table(configs: dict, trains: dict, predict_seconds: dict) -> list[str]:
    lines = ["| network | loss | parameters | input -> output | steps | train time (min) | validation (min) | "
             "best epoch | validation VI | test prediction (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    from fusionnet_keras.training.affinity_config import output_shape

    for name, t in trains.items():
        c = configs[name]
        steps = c["train"]["steps_per_epoch"] * t["epochs"]
        seconds = predict_seconds.get(name, {}).get("test")
        lines.append(f"| {_label(name)} | {c['train']['loss']} | {t.get('parameters', '')} | "
                     f"{tuple(c['train']['input_shape'])} -> {output_shape(c)} | {steps} | "
                     f"{(t.get('train_seconds') or 0) / 60:.1f} | {(t.get('val_seconds') or 0) / 60:.1f} | "
                     f"{t['best_epoch']} | {t['best_vi']:.3f} | {'-' if seconds is None else f'{seconds:.0f}'} |")
    return lines


def report(preset: str, configs: dict, trains: dict, segs: dict, predict_seconds: dict, shapes: dict,
           total_seconds: float) -> list[str]:
    """The lines of ``report.md``."""
    from fusionnet_keras.training import affinity_config as acfg

    first = configs[next(iter(configs))]
    note = preset_note(preset, "affinity3d") if preset != "paper" else [
        "Preset: `paper`: the paper's network and sizes; values the paper does not state:", ""] + [
        f"- {key}: {reason}." for key, reason in acfg.NOT_IN_PAPER] + [""]
    return [
        "# 3-D affinities on anisotropic EM: networks, z-watershed, agglomeration",
        "",
        *note,
        f"Data: fib-medulla with every 4th section kept ({shapes['volume']} voxels at 10 x 10 x 40 nm), split by "
        f"y: train [0, 125) {shapes['train']}, validation [125, 150) {shapes['validation']}, test [150, 250) "
        f"{shapes['test']} with {shapes['test_bodies']} ground-truth bodies ({shapes['test_whole']} of them "
        "whole in y and x). Networks trained on the train part, checkpoint chosen by the VI of the mean "
        "agglomeration of the validation part; the agglomeration classifier trained on the train part's "
        "affinities and ground truth only; every score below is on the test part. VI split = H(S|T) (false "
        "splits), VI merge = H(T|S) (false merges), in bits; ARAND = adapted Rand error; CREMI = sqrt(VI * "
        f"ARAND). Each method at its best threshold of {THRESHOLDS[0]:g} ... {THRESHOLDS[-1]:g} (the paper's "
        f"split-VI comparisons); z-watershed fragments with size threshold {WS_SIZE} voxels.",
        "",
        "![split VI](split_vi.png)",
        "",
        "## Test part at each method's best threshold",
        "",
        *_scores_table(segs),
        "",
        "## Comparisons",
        "",
        "Losses: " + ", ".join(f"{_label(n)} = {_loss_text(c)}" for n, c in configs.items())
        + " (`constrained_malis`: Funke et al. 2018's variant of MALIS; `bce`: class-balanced binary "
        "cross-entropy; see the preset files).",
        "",
        *_comparison(segs, "unet3d_malis", "unet3d_bce", "MALIS vs BCE (UNet3D)"),
        *_comparison(segs, "unet3d_malis", "fusionnet3d_malis", "UNet3D vs FusionNet3D (MALIS)"),
        *_learned_vs_mean(segs),
        "## Training",
        "",
        *_training_table(configs, trains, predict_seconds),
        "",
        f"Learning rate {first['train']['learning_rate']:g} (Adam, x{first['train']['lr_decay']:g} per epoch), "
        f"batch {first['train']['batch_size']}, seed {first['train']['seed']}, augmentation: 8 xy orientations, per-section elastic fields "
        f"({first['augment']['elastic_amplitude']:g} px), noise {first['augment']['noise_sigma']:g}, a missing "
        f"section ({first['augment']['missing_section']:g}), misalignment ({first['augment']['misalign']:g}, up to "
        f"{first['augment']['misalign_max']} px). Times are wall-clock on this machine.",
        "",
        f"Total wall time of the target: {total_seconds / 60:.1f} min.",
        "",
        "![test section](test_section.png)",
        "",
        "## Files",
        "",
        "- `<network>/best.keras`: the checkpoint chosen on validation; `<network>/log.csv`: losses and "
        "validation scores per epoch.",
        "- `<network>/test-affinities.h5:affinities` (and `train-affinities.h5`): float32 (3, Z, Y, X), channels "
        "(z, y, x).",
        "- `<network>/test-segmentation.h5`: `watershed` (the fragments), `mean` and `learned` at their best "
        "thresholds; `<network>/classifier.npz`: the agglomeration classifier.",
        "- `results.json`: every number above, the whole threshold sweeps included.",
    ]


def run(preset: str, out, experiment_dir, tta=None, models=None, seed=None) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``).

    ``tta``: prediction orientations (1, 4 or 8; default 1 with the CPU preset, 8 with the paper's).
    ``models``: config names of ``experiment_dir`` (default :data:`MODELS`, or a comma-separated string).
    ``seed``: ``train.seed`` of every network (default: the config files'), for repeats of the experiment.
    """
    from fusionnet_keras.data.volumes3d import load_parts, whole_objects
    from fusionnet_keras.evaluation.figures import plot_split_vi

    models = tuple(models.split(",") if isinstance(models, str) else models or MODELS)
    orientations = tta or (1 if preset == "cpu" else 8)
    t0, out = start(preset, out)
    overrides = [f"train.seed={int(seed)}"] if seed is not None else []
    configs, trains = train_models(experiment_dir, preset, out, {}, models, overrides)
    datasets = {c["data"]["dataset"] for c in configs.values()}
    if len(datasets) != 1:
        raise FusionNetError(f"the networks of one run must train on one dataset, got {sorted(datasets)}")
    parts = load_parts(datasets.pop())
    segs, predict_seconds = {}, {}
    for name in models:
        affs, predict_seconds[name] = predict_parts(out, name, configs[name], parts, orientations)
        segs[name], best = _segmentation(out / name, affs, parts)
        for method in METHODS:
            r = best_row(segs[name], method)
            print(f"   {method}: VI {r['vi']:.3f} (split {r['vi_split']:.3f}, merge {r['vi_merge']:.3f}) "
                  f"ARAND {r['arand']:.3f} at {r['threshold']}", flush=True)
        segs[name]["best_segmentation"] = best
    curves = {}
    for name, result in segs.items():
        ws = result["watershed"]
        curves[f"{_label(name)}: z-watershed"] = [(None, ws["vi_merge"], ws["vi_split"])]
        for method in ("mean", "learned"):
            curves[f"{_label(name)}: {method}"] = [(r["threshold"], r["vi_merge"], r["vi_split"]) for r in result[method]]
    plot_split_vi(curves, out / "split_vi.png", title="fib-medulla test part (10 x 10 x 40 nm)")
    image, gt = parts["test"]
    z = image.shape[0] // 2
    top = min(segs, key=lambda n: best_row(segs[n], "learned")["vi"])
    _plot_section(image[z], gt[z], {f"{_label(top)}: {m}": segs[top]["best_segmentation"][m][z]
                                    for m in METHODS}, out / "test_section.png", z)
    for result in segs.values():
        result.pop("best_segmentation")
    shapes = {"volume": (image.shape[0], sum(v[0].shape[1] for v in parts.values()), image.shape[2]), **{p: v[0].shape for p, v in parts.items()},
              "test_bodies": int(np.count_nonzero(np.unique(gt))), "test_whole": whole_objects(gt)}
    summary = {"preset": preset, "orientations": orientations, "thresholds": THRESHOLDS, "ws_size": WS_SIZE,
               "shapes": shapes, "train": trains, "predict_seconds": predict_seconds, "segmentation": segs}
    return finish(out, t0, summary,
                  lambda total: report(preset, configs, trains, segs, predict_seconds, shapes, total))
