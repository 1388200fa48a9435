"""The 3-D affinity experiment (the third paper): networks, z-watershed, agglomeration, split VI.

Used by ``experiments/affinity3d/run.py`` (``make affinity3d``): trains UNet3D
with MALIS, FusionNet3D with MALIS and UNet3D with class-balanced BCE on the
training part of fib-medulla made anisotropic
(:mod:`fusionnet_keras.data.volumes3d`: every 4th section, split by y; the
checkpoint chosen on the validation part), predicts the training, validation
and test parts with each best network
(:func:`fusionnet_keras.inference.affinities.predict_affinities`), and
segments the validation and test parts with the z-watershed alone, the mean
agglomeration and the learned agglomeration (classifier trained on the
training part only) over a threshold sweep. Each method's threshold is chosen
on the validation part and the test part is scored there; the best threshold
on the test part is reported apart, labelled an oracle. ``report.md`` holds the
split-VI plot, the table at the validation-chosen thresholds, MALIS vs BCE and
UNet3D vs FusionNet3D, the training times and a test section. Every step skips work already done (training resumes,
written affinities are read back), so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults
from fusionnet_keras.experiments.common import finish, load_best, preset_note, start, train_models

MODELS = ("unet3d_malis", "fusionnet3d_malis", "unet3d_bce")
MODELS_LONG = ("unet3d_bce", "unet3d_malis", "unet3d_constrained", "fusionnet3d_malis")
"""The networks of ``--preset cpu-long`` (BCE vs MALIS vs constrained MALIS; UNet3D vs FusionNet3D at equal
parameter count)."""
LABELS = {"unet3d_malis": "UNet3D + MALIS", "fusionnet3d_malis": "FusionNet3D + MALIS",
          "unet3d_bce": "UNet3D + BCE", "unet3d_constrained": "UNet3D + constrained MALIS"}
METHODS = ("watershed", "mean", "learned", "multicut", "lifted-multicut")
SWEPT = METHODS[1:]
"""The methods swept over :data:`THRESHOLDS`: agglomeration thresholds, or the multicuts' boundary bias beta."""
CLASSIFIED = defaults.CLASSIFIER_METHODS
"""The methods that use the learned boundary classifier (the multicuts take their costs from it)."""
THRESHOLDS = [round(t, 3) for t in np.arange(0.05, 0.96, 0.05)]
WS_SIZE = 300  # default z-watershed size threshold (voxels); a run uses its networks' train.val_ws_size
WS_SIZES = (30, 100, 300, 1000, 3000)
"""Watershed sizes scored on the validation part (mean agglomeration), to document ``train.val_ws_size``."""
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


PARTS = ("train", "validation", "test")


def predict_parts(out: Path, name: str, config: dict, parts: dict, orientations: int) -> tuple[dict, dict]:
    """Affinities of the train, validation and test parts by ``name``'s best network:
    ``out/<name>/<part>-affinities.h5`` (read back when newer than ``best.keras``). Returns
    ``({part: affs}, {part: seconds})``."""
    from fusionnet_keras.data.io import read_volume, write_volume
    from fusionnet_keras.inference.affinities import predict_affinities

    affs, seconds = {}, {}
    best = out / name / "best.keras"
    net = None
    for part in PARTS:
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


def _sweep(affs, frag, gt, method, clf):
    """``[(scores, labels)]`` of ``method`` over :data:`THRESHOLDS` on one part."""
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.pipeline import segment

    return [(dict(instance_scores(seg, gt), threshold=t), seg)
            for t, seg in segment(affs, method, THRESHOLDS, fragments=frag,
                                  classifier=clf if method in CLASSIFIED else None)]


def segment_parts(affs: dict, parts: dict, ws_size: int = WS_SIZE, classifier_path=None, log=print) -> dict:
    """Fragments, mean and learned sweeps of the validation and test parts (classifier trained on the train
    part and saved to ``classifier_path``); each method's threshold is the one of lowest VI on the
    **validation** part, and the test part is scored there (the oracle, the best threshold on the test
    part, is kept apart).

    Returns ``{"watershed": {part: scores}, "mean": {part: [scores per threshold]}, "learned": {...},
    "chosen": {method: threshold}, "ws_size": ws_size, "classifier": info, "seconds": {...},
    "segmentation": {method: test labels at the chosen threshold}}``.
    """
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.learned import train_classifier
    from fusionnet_keras.segmentation.pipeline import WatershedOptions

    ws = WatershedOptions(size=ws_size)
    seconds = {}
    t = time.time()
    clf = train_classifier(affs["train"], ws.run(affs["train"]), parts["train"][1],
                           log=lambda line: log("  " + line), **CLASSIFIER)
    seconds["classifier"] = time.time() - t
    if classifier_path is not None:
        clf.save(classifier_path, overwrite=True)
    result = {"ws_size": ws_size, "classifier": clf.info, "chosen": {}, "segmentation": {}, "fscore": {},
              **{method: {} for method in METHODS}}
    result["ws_sizes"] = {str(size): min(r["vi"] for r, _ in _sweep(affs["validation"], WatershedOptions(size=size).run(
        affs["validation"]), parts["validation"][1], "mean", None)) for size in WS_SIZES}
    for part in ("validation", "test"):
        result["fscore"][part] = boundary_fscore(affs[part], parts[part][1])
        t = time.time()
        frag = ws.run(affs[part])
        seconds[f"watershed_{part}"] = time.time() - t
        gt = parts[part][1]
        result["watershed"][part] = dict(instance_scores(frag, gt), threshold=None, fragments=int(frag.max()))
        if part == "test":
            result["segmentation"]["watershed"] = frag
        for method in SWEPT:
            t = time.time()
            sweep = _sweep(affs[part], frag, gt, method, clf)
            seconds[f"{method}_{part}"] = time.time() - t
            result[method][part] = [row for row, _ in sweep]
            if part == "validation":
                result["chosen"][method] = min(result[method][part], key=lambda r: r["vi"])["threshold"]
            else:
                result["segmentation"][method] = next(seg for row, seg in sweep
                                                      if row["threshold"] == result["chosen"][method])
    result["seconds"] = seconds
    return result


def boundary_fscore(affs, labels) -> float:
    """F-score of the boundary edges (affinity < 0.5) against the labels' boundaries, every existing edge
    counted (label 0 as background: an edge into 0 is a boundary, whatever the training convention)."""
    from fusionnet_keras.data.affinities import affinities_from_labels
    from fusionnet_keras.training.affinities import affinity_fscore

    target, mask = affinities_from_labels(labels, "background")
    return affinity_fscore(affs, target, mask)


def _segmentation(folder: Path, affs: dict, parts: dict, ws_size: int) -> tuple[dict, dict]:
    """:func:`segment_parts` of one network, written to ``folder`` (``segmentation.json``,
    ``test-segmentation.h5``, ``classifier.npz``), or read back when newer than its test affinities and
    made with the same watershed size."""
    import json

    from fusionnet_keras.data.io import read_volume, write_volumes
    from fusionnet_keras.utils.atomic import atomic_write_text

    scores, volumes = folder / "segmentation.json", folder / "test-segmentation.h5"
    if scores.exists() and volumes.exists() and scores.stat().st_mtime > (folder / "test-affinities.h5").stat().st_mtime:
        result = json.loads(scores.read_text())
        if all(key in result for key in (*METHODS, "chosen", "fscore", "ws_sizes")) and result.get("ws_size") == ws_size:
            return result, {m: read_volume(f"{volumes}:{m}") for m in METHODS}
    print(f"== segmenting the validation and test parts with {_label(folder.name)}'s affinities ==", flush=True)
    result = segment_parts(affs, parts, ws_size, folder / "classifier.npz")
    best = result.pop("segmentation")
    write_volumes(volumes, best, overwrite=True)
    atomic_write_text(scores, json.dumps(result, indent=1) + "\n")
    return result, best


def chosen_row(result: dict, method: str, part: str = "test") -> dict:
    """The scores of ``method`` on ``part`` at the threshold chosen on the validation part (the headline);
    the watershed has one."""
    if method == "watershed":
        return result["watershed"][part]
    return next(r for r in result[method][part] if r["threshold"] == result["chosen"][method])


def oracle_row(result: dict, method: str) -> dict:
    """The scores of ``method`` at its best threshold **on the test part** (an oracle, labelled so)."""
    if method == "watershed":
        return result["watershed"]["test"]
    return min(result[method]["test"], key=lambda r: r["vi"])


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


def _threshold(row: dict) -> str:
    return "-" if row["threshold"] is None else f"{row['threshold']:g}"


def _scores_table(segs: dict) -> list[str]:
    lines = ["| network | method | threshold (validation) | VI split | VI merge | VI | ARAND | CREMI | objects | "
             "validation VI | oracle: best test VI (threshold) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in segs.items():
        for method in METHODS:
            r, oracle = chosen_row(result, method), oracle_row(result, method)
            what = f"z-watershed ({r['fragments']} fragments)" if method == "watershed" else method
            lines.append(f"| {_label(name)} | {what} | {_threshold(r)} | {r['vi_split']:.3f} | {r['vi_merge']:.3f} | "
                         f"{r['vi']:.3f} | {r['arand']:.3f} | {r['cremi']:.3f} | {r['objects']} | "
                         f"{chosen_row(result, method, 'validation')['vi']:.3f} | "
                         f"{oracle['vi']:.3f} ({_threshold(oracle)}) |")
    return lines


def _comparison(segs: dict, a: str, b: str, what: str) -> list[str]:
    """Rows comparing networks ``a`` and ``b`` per method (test VI and CREMI at each one's validation-chosen
    threshold)."""
    if a not in segs or b not in segs:
        return []
    lines = [f"### {what}", "", f"| method | {_label(a)} VI | {_label(b)} VI | {_label(a)} CREMI | "
             f"{_label(b)} CREMI | lower VI |", "|---|---|---|---|---|---|"]
    for method in METHODS:
        ra, rb = chosen_row(segs[a], method), chosen_row(segs[b], method)
        winner = _label(a) if ra["vi"] < rb["vi"] else _label(b) if rb["vi"] < ra["vi"] else "tie"
        lines.append(f"| {method} | {ra['vi']:.3f} | {rb['vi']:.3f} | {ra['cremi']:.3f} | {rb['cremi']:.3f} | "
                     f"{winner} |")
    return lines + [""]


def _learned_vs_mean(segs: dict) -> list[str]:
    lines = ["### Learned vs mean agglomeration", ""]
    losses = []
    for name, result in segs.items():
        mean, learned = chosen_row(result, "mean"), chosen_row(result, "learned")
        diff = learned["vi"] - mean["vi"]
        verdict = "beats" if diff < 0 else "does not beat"
        if diff >= 0:
            losses.append(name)
        lines.append(f"- {_label(name)}: learned {verdict} mean at their validation-chosen thresholds (test VI {learned['vi']:.3f} vs "
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


def _partitioning(segs: dict) -> list[str]:
    """Multicut and lifted multicut beside the learned agglomeration, each at its validation-chosen setting."""
    lines = ["### Multicut and lifted multicut vs the learned agglomeration", "",
             "Costs from the learned classifier's boundary probability p: log((1 - p) / p) + log((1 - beta) / beta), "
             "beta chosen on the validation part like the thresholds (GAEC + Kernighan-Lin; lifted edges up to 2 "
             "boundaries apart). Time: the whole sweep of the test part (all betas or thresholds, one solve each).",
             "", "| network | method | threshold / beta | VI split | VI merge | VI | ARAND | time (s) | vs learned |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, result in segs.items():
        learned = chosen_row(result, "learned")["vi"]
        for method in ("learned", "multicut", "lifted-multicut"):
            r = chosen_row(result, method)
            diff = "-" if method == "learned" else f"{r['vi'] - learned:+.3f}"
            lines.append(f"| {_label(name)} | {method} | {_threshold(r)} | {r['vi_split']:.3f} | {r['vi_merge']:.3f} "
                         f"| {r['vi']:.3f} | {r['arand']:.3f} | {result['seconds'][f'{method}_test']:.1f} | {diff} |")
    return lines + [""]


def _training_table(configs: dict, trains: dict, predict_seconds: dict) -> list[str]:
    lines = ["| network | loss | parameters | input -> output | steps | train time (min) | validation (min) | "
             "best epoch | validation VI | test prediction (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    from fusionnet_keras.training.config import output_shape

    for name, t in trains.items():
        c = configs[name]
        steps = c["train"]["steps_per_epoch"] * t["epochs"]
        seconds = predict_seconds.get(name, {}).get("test")
        lines.append(f"| {_label(name)} | {c['train']['loss']} | {t.get('parameters', '')} | "
                     f"{tuple(c['train']['input_shape'])} -> {output_shape(c)} | {steps} | "
                     f"{(t.get('train_seconds') or 0) / 60:.1f} | {(t.get('val_seconds') or 0) / 60:.1f} | "
                     f"{t['best_epoch']} | {t['best_vi']:.3f} | {'-' if seconds is None else f'{seconds:.0f}'} |")
    return lines


def _data_text(shapes: dict) -> str:
    name = shapes["dataset"]
    kept = " with every 4th section kept" if name == "fib-medulla" else ""
    voxel = " x ".join(str(v) for v in reversed(shapes["voxel_nm"]))
    return (f"Data: {name}{kept} ({voxel} nm voxels, x y z), fixed parts ({shapes['split']}): train "
            f"{shapes['train']}, validation {shapes['validation']}, test {shapes['test']} with "
            f"{shapes['test_bodies']} ground-truth bodies ({shapes['test_whole']} of them whole in y and x); "
            f"label 0 means `{shapes['label_zero']}`.")


def report(preset: str, configs: dict, trains: dict, segs: dict, predict_seconds: dict, shapes: dict,
           total_seconds: float) -> list[str]:
    """The lines of ``report.md``."""
    from fusionnet_keras.training.config import FAMILIES

    first = configs[next(iter(configs))]
    note = preset_note(preset, "affinity3d") if preset != "paper" else [
        "Preset: `paper`: the paper's network and sizes; values the paper does not state:", ""] + [
        f"- {key}: {reason}." for key, reason in FAMILIES["affinities"].not_in_paper] + [""]
    return [
        "# 3-D affinities on anisotropic EM: networks, z-watershed, agglomeration",
        "",
        *note,
        _data_text(shapes),
        "Networks trained on the train part, checkpoint chosen by the VI of the mean agglomeration of the "
        "validation part; the agglomeration classifier trained on the train part's affinities and ground truth "
        "only. Every method's threshold (of "
        f"{THRESHOLDS[0]:g} ... {THRESHOLDS[-1]:g}) is the one of lowest VI on the **validation** part, and the "
        "test part is scored at it (the headline); the best threshold on the test part itself is shown apart as "
        "an *oracle* (it looks at the test labels, so it is not a result). z-watershed fragments with size "
        f"threshold {shapes['ws_size']} voxels (`train.val_ws_size`), the same in the checkpoint validation, the "
        "validation part and the test part. VI split = H(S|T) (false splits), VI merge = H(T|S) (false merges), "
        "in bits; ARAND = adapted Rand error; CREMI = sqrt(VI * ARAND).",
        "",
        "![split VI](split_vi.png)",
        "",
        "## Test part at the thresholds chosen on the validation part",
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
        *_comparison(segs, "unet3d_constrained", "unet3d_bce", "Constrained MALIS vs BCE (UNet3D)"),
        *_comparison(segs, "unet3d_malis", "unet3d_constrained", "MALIS vs constrained MALIS (UNet3D)"),
        *_comparison(segs, "unet3d_malis", "fusionnet3d_malis", "UNet3D vs FusionNet3D (MALIS)"),
        *_learned_vs_mean(segs),
        *_partitioning(segs),
        "### Affinities: boundary edges",
        "",
        "F-score of the boundary edges (affinity < 0.5) against the ground truth's, every edge counted (an edge "
        "into label 0 is a boundary):",
        "",
        "| network | validation | test |",
        "|---|---|---|",
        *[f"| {_label(n)} | {r['fscore']['validation']:.3f} | {r['fscore']['test']:.3f} |" for n, r in segs.items()],
        "",
        "### Watershed size (validation part only)",
        "",
        "VI of the mean agglomeration at its best threshold on the validation part, for z-watershed size "
        f"thresholds {', '.join(map(str, WS_SIZES))} (the run uses {shapes['ws_size']}):",
        "",
        "| network | " + " | ".join(str(size) for size in WS_SIZES) + " |",
        "|---" * (len(WS_SIZES) + 1) + "|",
        *[f"| {_label(n)} | " + " | ".join(f"{r['ws_sizes'][str(size)]:.3f}"
                                           for size in WS_SIZES) + " |" for n, r in segs.items()],
        "",
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


def _one(configs: dict, key: str, what: str):
    """The value of ``section.key`` shared by every network's config (one-line error if they differ)."""
    section, name = key.split(".")
    values = {json.dumps(c[section][name]) for c in configs.values()}
    if len(values) != 1:
        raise FusionNetError(f"the networks of one run must share {what} ({key}), got {sorted(values)}")
    return json.loads(values.pop())


def run(preset: str, out, experiment_dir, tta=None, models=None, seed=None, dataset=None, label_zero=None) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``).

    ``tta``: prediction orientations (1, 4 or 8; default 1 with the CPU presets, 8 with the paper's).
    ``models``: config names of ``experiment_dir`` (default :data:`MODELS`, :data:`MODELS_LONG` with the
    ``cpu-long`` preset, or a comma-separated string).
    ``seed``: ``train.seed`` of every network (default: the config files'), for repeats of the experiment.
    ``dataset``: ``data.dataset`` of every network (default: the config files', fib-medulla).
    ``label_zero``: ``data.label_zero`` of every network (default: the config files', background).
    """
    from fusionnet_keras.data.volumes3d import SPLITS, VOXEL_NM, load_parts, whole_objects
    from fusionnet_keras.evaluation.figures import plot_split_vi

    models = tuple(models.split(",") if isinstance(models, str) else models
                   or (MODELS_LONG if preset == "cpu-long" else MODELS))
    orientations = tta or (1 if preset.startswith("cpu") else 8)
    t0, out = start(preset, out)
    overrides = [f"train.seed={int(seed)}"] if seed is not None else []
    data = {key: value for key, value in (("dataset", dataset), ("label_zero", label_zero)) if value}
    configs, trains = train_models(experiment_dir, preset, out, data, models, overrides)
    dataset = _one(configs, "data.dataset", "one dataset")
    ws_size = _one(configs, "train.val_ws_size", "one watershed size")
    parts = load_parts(dataset)
    segs, predict_seconds = {}, {}
    for name in models:
        affs, predict_seconds[name] = predict_parts(out, name, configs[name], parts, orientations)
        segs[name], chosen = _segmentation(out / name, affs, parts, ws_size)
        for method in METHODS:
            r = chosen_row(segs[name], method)
            print(f"   {method}: test VI {r['vi']:.3f} (split {r['vi_split']:.3f}, merge {r['vi_merge']:.3f}) "
                  f"ARAND {r['arand']:.3f} at {r['threshold']} (chosen on validation)", flush=True)
        segs[name]["test_segmentation"] = chosen
    curves = {}
    plotted = ("mean", "learned") if len(segs) <= 3 else ("learned",)  # a readable plot (multicuts: the tables)
    for name, result in segs.items():
        ws = result["watershed"]["test"]
        curves[f"{_label(name)}: z-watershed"] = [(None, ws["vi_merge"], ws["vi_split"])]
        for method in plotted:
            curves[f"{_label(name)}: {method}"] = [(r["threshold"], r["vi_merge"], r["vi_split"])
                                                   for r in result[method]["test"]]
    plot_split_vi(curves, out / "split_vi.png", title=f"{dataset} test part")
    image, gt = parts["test"]
    z = image.shape[0] // 2
    top = min(segs, key=lambda n: chosen_row(segs[n], "learned", "validation")["vi"])
    _plot_section(image[z], gt[z], {f"{_label(top)}: {m}": segs[top]["test_segmentation"][m][z]
                                    for m in METHODS}, out / "test_section.png", z)
    for result in segs.values():
        result.pop("test_segmentation")
    split = ", ".join(f"{p.name} {p.source}" + ("" if p.y_range is None else f" y [{p.y_range[0]}, {p.y_range[1]})")
                      for p in SPLITS[dataset].values())
    shapes = {"dataset": dataset, "voxel_nm": VOXEL_NM[dataset], "split": split, "ws_size": ws_size,
              "label_zero": _one(configs, "data.label_zero", "one meaning of label 0"),
              **{p: v[0].shape for p, v in parts.items()},
              "test_bodies": int(np.count_nonzero(np.unique(gt))), "test_whole": whole_objects(gt)}
    summary = {"preset": preset, "orientations": orientations, "thresholds": THRESHOLDS, "ws_size": ws_size,
               "shapes": shapes, "train": trains, "predict_seconds": predict_seconds, "segmentation": segs}
    return finish(out, t0, summary,
                  lambda total: report(preset, configs, trains, segs, predict_seconds, shapes, total))
