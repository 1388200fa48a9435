"""The 3-D affinity experiment (the third paper): networks, z-watershed, agglomeration, split VI.

Used by ``experiments/affinity3d/run.py`` (``make affinity3d``): trains UNet3D
with MALIS, FusionNet3D with MALIS and UNet3D with class-balanced BCE (also one
with long-range affinity offsets, for the mutex watershed) on the
training part of fib-medulla made anisotropic
(:mod:`fusionnet_keras.data.volumes3d`: every 4th section, split by y; the
checkpoint chosen on the validation part), predicts the training, validation
and test parts with each best network
(:func:`fusionnet_keras.inference.affinities.predict_affinities`), and
segments the validation and test parts with the z-watershed alone, the mean
agglomeration and the learned agglomeration (classifier trained on the
training part only), the multicut and the lifted multicut over a threshold
sweep, and with the long-range network's affinities the mutex watershed
(:func:`mws_parts`). Each method's threshold is chosen
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
from fusionnet_keras.experiments.common import finish, load_best, start, train_models

MODELS = ("unet3d_malis", "fusionnet3d_malis", "unet3d_bce", "unet3d_bce_lr")
MODELS_LONG = ("unet3d_bce", "unet3d_malis", "unet3d_constrained", "fusionnet3d_malis")
"""The networks of ``--preset cpu-long`` (BCE vs MALIS vs constrained MALIS; UNet3D vs FusionNet3D at equal
parameter count)."""
LABELS = {"unet3d_malis": "UNet3D + MALIS", "fusionnet3d_malis": "FusionNet3D + MALIS",
          "unet3d_bce": "UNet3D + BCE", "unet3d_constrained": "UNet3D + constrained MALIS",
          "unet3d_bce_lr": "UNet3D + BCE, long range"}
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
WEIGHTINGS = defaults.MULTICUT_WEIGHTINGS
"""The multicuts' edge weightings swept with beta (the pair chosen on the validation part)."""
MWS_BETAS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
MWS_STRIDES = ((1, 1, 1), (1, 3, 3))
MWS_SIZES = (0, 100, 300, 1000)
"""The mutex watershed's settings swept on the validation part of a network with long-range offsets
(``model.offsets``): repulsion bias beta, the grid of the voxels that keep repulsive edges, and the size under
which segments merge into their strongest neighbour; the test part is segmented once, at the best."""


def _label(name):
    return LABELS.get(name, name)


PARTS = ("train", "validation", "test")


def predict_parts(out: Path, name: str, config: dict, parts: dict, orientations: int) -> tuple[dict, dict]:
    """Affinities of the train, validation and test parts by ``name``'s best network:
    ``out/<name>/<part>-affinities.h5`` (read back when newer than ``best.keras``). Returns
    ``({part: affs}, {part: seconds})``."""
    from fusionnet_keras.data.io import read_volume, write_volume
    from fusionnet_keras.data.io.ome import ImageMeta
    from fusionnet_keras.inference.affinities import model_offsets, offsets_attrs, predict_affinities

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
        write_volume(f"{path}:affinities", affs[part], overwrite=True,
                     meta=ImageMeta(channels=True, attributes=offsets_attrs(model_offsets(net))))
    return affs, seconds


def _sweep(affs, frag, gt, method, clf, offsets=None):
    """``[(scores, labels)]`` of ``method`` over :data:`THRESHOLDS` on one part; the multicuts once per
    weighting (rows with ``weighting``), the lifted multicut with its lifted edges from the long-range channels
    of ``affs`` when ``offsets`` are given (else hops; the other methods read the first 3 channels)."""
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.pipeline import segment

    classifier = clf if method in CLASSIFIED else None
    if method not in ("multicut", "lifted-multicut"):
        return [(dict(instance_scores(seg, gt), threshold=t), seg)
                for t, seg in segment(affs[:3], method, THRESHOLDS, fragments=frag, classifier=classifier)]
    long_range = dict(offsets=offsets) if offsets and method == "lifted-multicut" else {}
    return [(dict(instance_scores(seg, gt), threshold=t, weighting=w), seg) for w in WEIGHTINGS
            for t, seg in segment(affs if long_range else affs[:3], method, THRESHOLDS, fragments=frag,
                                  classifier=classifier, weighting=w, **long_range)]


def _matches(row: dict, setting: dict) -> bool:
    return all(row.get(k) == v for k, v in setting.items())


def segment_parts(affs: dict, parts: dict, ws_size: int = WS_SIZE, classifier_path=None, log=print,
                  offsets=None) -> dict:
    """Fragments, mean and learned sweeps of the validation and test parts (classifier trained on the train
    part and saved to ``classifier_path``); each method's threshold is the one of lowest VI on the
    **validation** part, and the test part is scored there (the oracle, the best threshold on the test
    part, is kept apart). The multicuts sweep beta and the edge weighting (:data:`WEIGHTINGS`), both chosen
    on the validation part; with ``offsets`` (a long-range network's, ``affs`` holding its channels) the
    lifted multicut takes its lifted edges from the long-range affinities.

    Returns ``{"watershed": {part: scores}, "mean": {part: [scores per threshold]}, "learned": {...},
    "chosen": {method: threshold}, "weighting": {multicut method: weighting}, "lifted_edges": "hops" or
    "affinities", "ws_size": ws_size, "classifier": info, "seconds": {...},
    "segmentation": {method: test labels at the chosen setting}}``.
    """
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.learned import train_classifier
    from fusionnet_keras.segmentation.pipeline import WatershedOptions

    ws = WatershedOptions(size=ws_size)
    seconds = {}
    t = time.time()
    clf = train_classifier(affs["train"][:3], ws.run(affs["train"][:3]), parts["train"][1],
                           log=lambda line: log("  " + line), **CLASSIFIER)
    seconds["classifier"] = time.time() - t
    if classifier_path is not None:
        clf.save(classifier_path, overwrite=True)
    result = {"ws_size": ws_size, "classifier": clf.info, "chosen": {}, "weighting": {}, "segmentation": {},
              "fscore": {}, "lifted_edges": "affinities" if offsets else "hops", **{method: {} for method in METHODS}}
    result["ws_sizes"] = {str(size): min(r["vi"] for r, _ in _sweep(affs["validation"], WatershedOptions(size=size).run(
        affs["validation"][:3]), parts["validation"][1], "mean", None)) for size in WS_SIZES}
    for part in ("validation", "test"):
        nearest = affs[part][:3]
        result["fscore"][part] = boundary_fscore(nearest, parts[part][1])
        t = time.time()
        frag = ws.run(nearest)
        seconds[f"watershed_{part}"] = time.time() - t
        gt = parts[part][1]
        result["watershed"][part] = dict(instance_scores(frag, gt), threshold=None, fragments=int(frag.max()))
        if part == "test":
            result["segmentation"]["watershed"] = frag
        for method in SWEPT:
            t = time.time()
            sweep = _sweep(affs[part], frag, gt, method, clf, offsets)
            seconds[f"{method}_{part}"] = time.time() - t
            result[method][part] = [row for row, _ in sweep]
            if part == "validation":
                best = min(result[method][part], key=lambda r: r["vi"])
                result["chosen"][method] = best["threshold"]
                if "weighting" in best:
                    result["weighting"][method] = best["weighting"]
            else:
                setting = {"threshold": result["chosen"][method], **_weighting(result, method)}
                result["segmentation"][method] = next(seg for row, seg in sweep if _matches(row, setting))
    result["seconds"] = seconds
    return result


def _weighting(result: dict, method: str) -> dict:
    """``{"weighting": w}`` of a multicut method's chosen setting (``{}`` for the others and older results)."""
    w = result.get("weighting", {}).get(method)
    return {} if w is None else {"weighting": w}


def mws_parts(affs: dict, parts: dict, offsets, log=print) -> dict:
    """The mutex watershed of a long-range network: every setting of :data:`MWS_BETAS` x :data:`MWS_STRIDES`
    x :data:`MWS_SIZES` on the **validation** part, the one of lowest VI chosen, the test part segmented once
    at it. Returns ``{"validation": [scores + settings], "chosen": settings, "test": scores,
    "seconds": test seconds (mutex watershed + size merging), "segmentation": test labels}``."""
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.mws import merge_small, mutex_watershed

    def run(part, beta, stride, sizes):
        labels = mutex_watershed(affs[part], offsets, beta=beta, stride=stride)
        return [(dict(beta=beta, stride=list(stride), size=size), merge_small(affs[part], labels, size))
                for size in sizes]

    rows = []
    for stride in MWS_STRIDES:
        for beta in MWS_BETAS:
            for settings, seg in run("validation", beta, stride, MWS_SIZES):
                rows.append(dict(instance_scores(seg, parts["validation"][1]), **settings))
        best = min((r for r in rows if r["stride"] == list(stride)), key=lambda r: r["vi"])
        log(f"  mws stride {stride}: best validation VI {best['vi']:.3f} at beta {best['beta']:g}, "
            f"size {best['size']}")
    chosen = min(rows, key=lambda r: r["vi"])
    chosen = {k: chosen[k] for k in ("beta", "stride", "size")}
    t = time.time()
    (_, seg), = run("test", chosen["beta"], tuple(chosen["stride"]), [chosen["size"]])
    seconds = time.time() - t
    test = dict(instance_scores(seg, parts["test"][1]), threshold=chosen["beta"], **chosen)
    return {"validation": rows, "chosen": chosen, "test": test, "seconds": seconds, "segmentation": seg}


def _mws(folder: Path, affs: dict, parts: dict, offsets) -> dict | None:
    """:func:`mws_parts` of a network with long-range offsets (None without), written to ``folder/mws.json``
    and ``test-mws.h5``, or read back when newer than its test affinities."""
    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.data.affinities import N_AFFINITIES
    from fusionnet_keras.utils.atomic import atomic_write_text

    if len(offsets) <= N_AFFINITIES:
        return None
    path = folder / "mws.json"
    if path.exists() and path.stat().st_mtime > (folder / "test-affinities.h5").stat().st_mtime:
        return json.loads(path.read_text())
    print(f"== mutex watershed of the validation and test parts with {_label(folder.name)}'s affinities ==",
          flush=True)
    result = mws_parts(affs, parts, offsets)
    write_volume(f"{folder / 'test-mws.h5'}:mws", result.pop("segmentation"), overwrite=True)
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return result


def boundary_fscore(affs, labels) -> float:
    """F-score of the boundary edges (affinity < 0.5) against the labels' boundaries, every existing edge
    counted (label 0 as background: an edge into 0 is a boundary, whatever the training convention)."""
    from fusionnet_keras.data.affinities import affinities_from_labels
    from fusionnet_keras.training.affinities import affinity_fscore

    target, mask = affinities_from_labels(labels, "background")
    return affinity_fscore(affs, target, mask)


def _segmentation(folder: Path, affs: dict, parts: dict, ws_size: int, offsets=None) -> tuple[dict, dict]:
    """:func:`segment_parts` of one network, written to ``folder`` (``segmentation.json``,
    ``test-segmentation.h5``, ``classifier.npz``), or read back when newer than its test affinities and
    made with the same watershed size."""
    import json

    from fusionnet_keras.data.io import read_volume, write_volumes
    from fusionnet_keras.utils.atomic import atomic_write_text

    scores, volumes = folder / "segmentation.json", folder / "test-segmentation.h5"
    if scores.exists() and volumes.exists() and scores.stat().st_mtime > (folder / "test-affinities.h5").stat().st_mtime:
        result = json.loads(scores.read_text())
        if (all(key in result for key in (*METHODS, "chosen", "fscore", "ws_sizes", "weighting"))
                and result.get("ws_size") == ws_size):
            return result, {m: read_volume(f"{volumes}:{m}") for m in METHODS}
    print(f"== segmenting the validation and test parts with {_label(folder.name)}'s affinities ==", flush=True)
    result = segment_parts(affs, parts, ws_size, folder / "classifier.npz", offsets=offsets)
    best = result.pop("segmentation")
    write_volumes(volumes, best, overwrite=True)
    atomic_write_text(scores, json.dumps(result, indent=1) + "\n")
    return result, best


def chosen_row(result: dict, method: str, part: str = "test") -> dict:
    """The scores of ``method`` on ``part`` at the threshold chosen on the validation part (the headline);
    the watershed has one."""
    if method == "watershed":
        return result["watershed"][part]
    setting = {"threshold": result["chosen"][method], **_weighting(result, method)}
    return next(r for r in result[method][part] if _matches(r, setting))


def oracle_row(result: dict, method: str) -> dict:
    """The scores of ``method`` at its best threshold **on the test part** (an oracle, labelled so)."""
    if method == "watershed":
        return result["watershed"]["test"]
    return min(result[method]["test"], key=lambda r: r["vi"])


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
    from fusionnet_keras.experiments.affinity3d_report import _plot_section, report
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
    from fusionnet_keras.training.config import affinity_offsets as network_offsets

    for name in models:
        long_range = len(network_offsets(configs[name])) > 3  # predicted in 1 orientation (no test-time ones)
        affs, predict_seconds[name] = predict_parts(out, name, configs[name], parts, 1 if long_range else orientations)
        long_offsets = network_offsets(configs[name])[3:]  # the lifted multicut's lifted edges, the mws
        segs[name], chosen = _segmentation(out / name, affs, parts, ws_size, long_offsets or None)
        mws = _mws(out / name, affs, parts, network_offsets(configs[name]))
        if mws is not None:
            segs[name]["mws"] = mws
            r = mws["test"]
            print(f"   mws: test VI {r['vi']:.3f} (split {r['vi_split']:.3f}, merge {r['vi_merge']:.3f}) ARAND "
                  f"{r['arand']:.3f} at beta {r['beta']:g}, stride {r['stride']}, size {r['size']} (chosen on "
                  "validation)", flush=True)
        for method in METHODS:
            r = chosen_row(segs[name], method)
            print(f"   {method}: test VI {r['vi']:.3f} (split {r['vi_split']:.3f}, merge {r['vi_merge']:.3f}) "
                  f"ARAND {r['arand']:.3f} at {r['threshold']}{', ' + r['weighting'] if 'weighting' in r else ''} "
                  "(chosen on validation)", flush=True)
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
