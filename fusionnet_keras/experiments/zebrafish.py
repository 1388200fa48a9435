"""The zebrafish nucleus experiment: 3-D nucleus segmentation, Table 3 scores and morphology.

Used by ``experiments/zebrafish/run.py`` (``make zebrafish``). The paper's
protocol (Quan et al. 2016, sec. 4.2): two training volumes, three quarters
of each for training and one quarter for validation, a separate labelled test
volume; FusionNet and U-Net are trained on 2-D sections, the test volume is
predicted section by section with 8-orientation averaging, thresholded, and
3-D connected components give the nuclei. Scores: foreground-restricted 3-D
V^Rand / V^Info and the Dice coefficient of the masks. Then the morphology of
every nucleus (volume, surface area, sphericity, K-means) and the figures.

The data is described by ``experiments/zebrafish/experiment.toml``:
``source = "synthetic"`` (default; the seeded generator of
:mod:`fusionnet_keras.data.synthetic`, announced as such) or ``source = "files"``
with paths to real volumes (relative to ``$FUSIONNET_DATA_DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.experiments.common import (
    LABELS,
    MODELS,
    finish,
    predict_models,
    preset_note,
    start,
    train_models,
    training_table,
)
from fusionnet_keras.training import config as cfg
from fusionnet_keras.utils.atomic import atomic_write_text

PAPER_TABLE3 = {  # Quan et al. 2016, Table 3: V^Rand, V^Info, Dice
    "fusionnet": (0.991844302, 0.994208722, 0.946099985),
    "unet": (0.987366177, 0.992482059, 0.908491647),
}

EXPERIMENT_SCHEMA = {  # the training/config.py schema machinery: (type, default, rule)
    "source": (str, "synthetic", ("synthetic", "files")),
    "seed": (int, 0, (0, 2**31 - 1)),
    # voxel size in nm, (Z, Y, X); the paper: 56.4 x 56.4 x ~60 nm
    "voxel_size": (list, [60.0, 56.4, 56.4], cfg.list_of(float, length=3, positive=True)),
    "clusters": (int, 3, (1, 1000)),
    "min_voxels": (int, 200, (0, 2**62)),
    # how nuclei instances are made from the thresholded prediction: "components" (the paper:
    # 3-D connected components) or "watershed" (components split by a watershed of the distance
    # transform from its h-maxima, which separates touching nuclei)
    "instances": (str, "watershed", ("components", "watershed")),
    "watershed_h": (float, 4.0, cfg.greater_than(0)),
    # source = "files": paths relative to $FUSIONNET_DATA_DIR (any reader of fusionnet_keras.data.io)
    "train_images": (list, [], cfg.list_of(str)),
    "train_labels": (list, [], cfg.list_of(str)),
    "test_image": (str, "", None),
    "test_labels": (str, "", None),
    # fraction of each training volume used for validation (the last sections)
    "val_fraction": (float, 0.25, cfg.strictly_between(0, 1)),
}


def load_experiment(path) -> dict:
    """Read and validate ``experiment.toml`` (a missing file gives the defaults; unknown keys are refused)."""
    exp = cfg.load_settings(EXPERIMENT_SCHEMA, [path] if path is not None and Path(path).exists() else [])
    if exp["source"] == "files":
        for key in ("train_images", "train_labels", "test_image", "test_labels"):
            if not exp[key]:
                raise FusionNetError(f"config key {key!r} is required with source = \"files\"")
        if len(exp["train_images"]) != len(exp["train_labels"]):
            raise FusionNetError("config keys 'train_images' and 'train_labels' must list the same number of volumes")
    return exp


def _read_pair(image_spec, label_spec):
    from fusionnet_keras.data.io import load_image, read_volume
    from fusionnet_keras.training.inputs import resolve_data_path

    image = load_image(resolve_data_path(image_spec))
    labels = read_volume(resolve_data_path(label_spec))
    if image.ndim != 3:
        raise FusionNetError(f"{image_spec}: expected a 3-D volume (Z, Y, X), got shape {image.shape}")
    if labels.shape != image.shape:
        raise FusionNetError(f"label volume {label_spec} has shape {labels.shape}, image has {image.shape}")
    return image, labels


def _synthetic_volumes(exp: dict, preset: str):
    """``(train pairs, test image, test labels)`` from the seeded generator; images float32 in [0, 1]."""
    from fusionnet_keras.data.synthetic import make_dataset_volumes

    print(f"== SYNTHETIC data: seeded EM-like nucleus volumes ({preset} preset, seed {exp['seed']}); "
          "set source = \"files\" in experiments/zebrafish/experiment.toml for real volumes ==", flush=True)
    vols = make_dataset_volumes(preset, seed=exp["seed"], voxel_size=tuple(exp["voxel_size"]))
    train = [(np.asarray(i).astype(np.float32) / 255.0, np.asarray(l)) for i, l in vols["train"]]
    test_image, test_labels = vols["test"]
    return train, test_image.astype(np.float32) / 255.0, test_labels


def _file_volumes(exp: dict):
    """``(train pairs, test image, test labels)`` read from the files of ``exp``; a binary test mask
    becomes its 3-D components (as the predictions do)."""
    from fusionnet_keras.evaluation.morphology import is_binary_mask

    train = [_read_pair(i, l) for i, l in zip(exp["train_images"], exp["train_labels"])]
    test_image, test_labels = _read_pair(exp["test_image"], exp["test_labels"])
    test_labels = np.asarray(test_labels)
    if test_labels.dtype.kind in "biu" and test_labels.any() and is_binary_mask(test_labels):
        from scipy import ndimage

        test_labels, _ = ndimage.label(test_labels != 0)
    return train, test_image, test_labels


def _section_ranges(depths, val_fraction: float) -> tuple[str, str]:
    """1-based train and validation ranges of volumes of ``depths`` sections stacked along z:
    the last ``val_fraction`` of each volume validates."""
    train_ranges, val_ranges, first = [], [], 1
    for z in depths:
        n_val = int(round(z * val_fraction))
        if z < 4 or n_val < 1 or z - n_val < 1:
            raise FusionNetError(f"a training volume of {z} sections is too small for a train/validation split")
        train_ranges.append(f"{first}-{first + z - n_val - 1}")
        val_ranges.append(f"{first + z - n_val}-{first + z - 1}")
        first += z
    return ",".join(train_ranges), ",".join(val_ranges)


def prepare_data(exp: dict, preset: str, data_out: Path):
    """Write the training stack and test volume under ``data_out``; return paths and section ranges.

    Training volumes are stacked along z (they must share their (Y, X) size);
    the last ``val_fraction`` of each volume validates. A ``data.json`` marker
    with the settings makes a second call with the same settings reuse the data.
    """
    from fusionnet_keras.data.io import write_volume

    data_out = Path(data_out).resolve()  # absolute: config data paths are otherwise relative to the data dir
    marker = data_out / "data.json"
    settings = {"experiment": exp, "preset": preset}
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("settings") == json.loads(json.dumps(settings)):
            return info
        print("== experiment settings changed: preparing the data again ==", flush=True)
    if exp["source"] == "synthetic":
        train, test_image, test_labels = _synthetic_volumes(exp, preset)
    else:
        train, test_image, test_labels = _file_volumes(exp)
    shapes = {v[0].shape[1:] for v in train}
    if len(shapes) != 1:
        raise FusionNetError(f"training volumes must share their (Y, X) size, got {sorted(shapes)}")
    train_sections, val_sections = _section_ranges([i.shape[0] for i, _ in train], exp["val_fraction"])
    files = {"train_images": data_out / "train-image.tif", "train_labels": data_out / "train-labels.tif",
             "test_image": data_out / "test-image.tif", "test_labels": data_out / "test-labels.tif"}
    data_out.mkdir(parents=True, exist_ok=True)
    write_volume(files["train_images"], np.concatenate([i for i, _ in train]).astype(np.float32), overwrite=True)
    masks = np.concatenate([(np.asarray(l) > 0) for _, l in train]).astype(np.uint8)
    write_volume(files["train_labels"], masks * 255, overwrite=True)
    write_volume(files["test_image"], test_image.astype(np.float32), overwrite=True)
    write_volume(files["test_labels"], np.asarray(test_labels).astype(np.int32), overwrite=True)
    info = {key: str(path) for key, path in files.items()} | {
        "train_sections": train_sections,
        "val_sections": val_sections,
        "train_shapes": [list(i.shape) for i, _ in train],
        "test_shape": list(test_image.shape),
        "source": exp["source"],
        "settings": settings,
    }
    atomic_write_text(marker, json.dumps(info, indent=2) + "\n")
    return info


def segment(prob: np.ndarray, threshold=0.5, min_voxels=0, method="components", voxel_size=None,
            h=4.0) -> np.ndarray:
    """Nucleus instances from a probability volume: threshold, then label in 3-D.

    ``method="components"`` (the paper): 3-D connected components (6-connectivity).
    ``method="watershed"``: the same mask split by a watershed of its (anisotropic)
    distance transform, seeded at the h-maxima of height ``h`` (in units of the
    smallest voxel side), which separates touching nuclei. Components smaller
    than ``min_voxels`` are removed; labels are 1..N.
    """
    from scipy import ndimage

    from fusionnet_keras.evaluation.postprocess import relabel

    mask = np.asarray(prob) > threshold
    if method == "components":
        labels, n = ndimage.label(mask)
    elif method == "watershed":
        from skimage.morphology import h_maxima
        from skimage.segmentation import watershed

        spacing = np.ones(3) if voxel_size is None else np.asarray(voxel_size, float) / min(voxel_size)
        dist = ndimage.distance_transform_edt(mask, sampling=spacing)
        markers, _ = ndimage.label(h_maxima(dist, h))
        labels = watershed(-dist, markers, mask=mask).astype(np.int32)
        n = int(labels.max())
    else:
        raise FusionNetError(f"unknown instance method {method!r}; use components or watershed")
    if n and min_voxels:
        labels, _ = relabel(labels, min_size=min_voxels)
    return labels.astype(np.int32)


def score(instances: np.ndarray, gt: np.ndarray) -> dict:
    """3-D V^Rand / V^Info (restricted to ground-truth nucleus voxels) and Dice of the masks."""
    from fusionnet_keras.evaluation import dice, vrand_vinfo_3d

    s = vrand_vinfo_3d(instances, gt)
    return {
        "vrand": float(s["vrand"]),
        "vinfo": float(s["vinfo"]),
        "dice": float(dice(instances > 0, np.asarray(gt) > 0)),
        "n_nuclei": int(instances.max()),
        "n_gt_nuclei": int(len(np.unique(gt[gt > 0]))),
    }


def _data_notes(exp: dict, info: dict) -> list[str]:
    lines = []
    if exp["source"] == "synthetic":
        lines += [
            "**SYNTHETIC DATA.** The paper's zebrafish volumes are not available here with labels, so this run "
            "uses the project's seeded generator of EM-like nucleus volumes (`fusionnet_keras.data.synthetic`: "
            "textured neuropil, irregular ellipsoidal nuclei with a dark envelope and chromatin texture, "
            "touching neighbours, section jitter, noise). The numbers are not comparable with the paper's; "
            "set `source = \"files\"` in `experiments/zebrafish/experiment.toml` to run on real volumes.",
            "",
        ]
    vs = exp["voxel_size"]
    if exp["instances"] == "components":
        method = "3-D connected components (6-connectivity)"
    else:
        method = (f"3-D connected components split by a distance-transform watershed from h-maxima "
                  f"(h = {exp['watershed_h']}) to separate touching nuclei (`instances = \"watershed\"`; the paper "
                  "used plain connected components, shown in the last rows)")
    return lines + [
        f"Training volumes {info['train_shapes']} (sections {info['train_sections']} train, "
        f"{info['val_sections']} validate), test volume {info['test_shape']}, voxel size "
        f"{vs[0]} x {vs[1]} x {vs[2]} nm (Z, Y, X). Test predictions: 8-orientation averaging, threshold 0.5, "
        f"{method}, objects under {exp['min_voxels']} voxels removed.",
        "",
    ]


def _table3(results: dict) -> list[str]:
    lines = ["| metric | FusionNet | U-Net | paper FusionNet | paper U-Net |", "|---|---|---|---|---|"]
    for i, (key, name) in enumerate((("vrand", "V^Rand"), ("vinfo", "V^Info"), ("dice", "V^Dice"))):
        lines.append(
            f"| {name} | {results['fusionnet'][key]:.5f} | {results['unet'][key]:.5f} | "
            f"{PAPER_TABLE3['fusionnet'][i]:.5f} | {PAPER_TABLE3['unet'][i]:.5f} |"
        )
    lines.append(
        f"| nuclei found (ground truth {results['fusionnet']['n_gt_nuclei']}) | {results['fusionnet']['n_nuclei']} "
        f"| {results['unet']['n_nuclei']} | | |"
    )
    if "components" in results["fusionnet"]:
        for key, name in (("vrand", "V^Rand"), ("vinfo", "V^Info"), ("n_nuclei", "nuclei found")):
            f, u = results["fusionnet"]["components"][key], results["unet"]["components"][key]
            fmt = (lambda v: f"{v:.5f}") if key != "n_nuclei" else str
            lines.append(f"| {name}, plain connected components (the paper's method) | {fmt(f)} | {fmt(u)} | | |")
    return lines


def _spread(name: str, values, digits: int) -> str:
    values = np.asarray(values, dtype=float)
    return (f"| {name} | {np.median(values):.{digits}f} | {np.percentile(values, 5):.{digits}f} | "
            f"{np.percentile(values, 95):.{digits}f} |")


def _morphology_section(records: list, clusters: int) -> list[str]:
    lines = ["## Morphology (FusionNet nuclei of the test volume)", ""]
    if not records:
        return lines + ["No nuclei were found in the test volume: no morphology to report."]
    interior = [r for r in records if not r["touches_border"]] or records
    n_outliers = sum(bool(r["outlier"]) for r in records)
    n_border = sum(bool(r["touches_border"]) for r in records)
    lines += [
        f"{len(records)} nuclei, {n_border} of them cut by the volume border (their size and shape are "
        f"truncated: left out of the statistics below and of the K-means fit); {n_outliers} flagged as outliers "
        "(robust z-score > 3.5 of volume or area, or sphericity < 0.6). Per-nucleus values in `morphology.csv`.",
        "",
        f"Statistics of the {len(interior)} nuclei{' inside the volume' if len(interior) < len(records) else ''}:",
        "",
        "| | median | 5th percentile | 95th percentile |",
        "|---|---|---|---|",
        _spread("volume (um^3)", [r["volume_um3"] for r in interior], 1),
        _spread("surface area (um^2)", [r["surface_area_um2"] for r in interior], 1),
        _spread("sphericity", [r["sphericity"] for r in interior], 3),
        "",
        f"K-means (k = {clusters}) on standardised (volume, surface area, sphericity):",
        "",
        "| cluster | nuclei | mean volume (um^3) | mean area (um^2) | mean sphericity |",
        "|---|---|---|---|---|",
    ]
    for c in sorted({r["cluster"] for r in records}):
        sel = [r for r in records if r["cluster"] == c]
        lines.append(
            f"| {c} | {len(sel)} | {np.mean([r['volume_um3'] for r in sel]):.1f} | "
            f"{np.mean([r['surface_area_um2'] for r in sel]):.1f} | {np.mean([r['sphericity'] for r in sel]):.3f} |"
        )
    return lines


def report(preset: str, exp: dict, info: dict, configs, trains, results, records, total) -> list[str]:
    """The lines of ``report.md``."""
    return [
        "# Zebrafish nucleus segmentation: FusionNet vs U-Net, and nucleus morphology",
        "",
        *preset_note(preset, "zebrafish"),
        *_data_notes(exp, info),
        "## Table 3 layout",
        "",
        *_table3(results),
        "",
        "## Training",
        "",
        *training_table(configs, trains),
        "",
        *_morphology_section(records, exp["clusters"]),
        "",
        "![segmentation coloured by sphericity (Fig. 9)](fig9_overlay.png)",
        "",
        "![morphology against the horizontal coordinate (Fig. 10)](fig10_features.png)",
        "",
        f"Total wall time: {total / 60:.1f} min. Models: `fusionnet/best.keras`, `unet/best.keras`.",
    ]


def _segment_and_score(exp: dict, configs: dict, prob: np.ndarray, gt: np.ndarray, name: str, out: Path):
    """Instances of one model's test prediction (written), their scores, and the paper's plain components."""
    from fusionnet_keras.data.io import write_volume

    threshold = configs[name]["predict"]["threshold"]
    inst = segment(prob, threshold, exp["min_voxels"], exp["instances"], exp["voxel_size"], exp["watershed_h"])
    write_volume(out / name / "test-instances.tif", inst, overwrite=True)
    scores = score(inst, gt)
    if exp["instances"] != "components":
        scores["components"] = score(segment(prob, threshold, exp["min_voxels"], "components"), gt)
    print(f"   {LABELS[name]}: V^Rand {scores['vrand']:.5f}  V^Info {scores['vinfo']:.5f}  Dice {scores['dice']:.5f}  "
          f"nuclei {scores['n_nuclei']} (ground truth {scores['n_gt_nuclei']})", flush=True)
    return inst, scores


def run(preset: str, out, experiment_dir, tta=8) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``)."""
    from fusionnet_keras.data.io import load_image, read_volume
    from fusionnet_keras.evaluation import figures, morphology

    t0, out = start(preset, out)
    exp = load_experiment(Path(experiment_dir) / "experiment.toml")
    info = prepare_data(exp, preset, out / "data")
    configs, trains = train_models(experiment_dir, preset, out, {
        key: info[key] for key in ("train_sections", "val_sections")} | {
        "images": info["train_images"], "labels": info["train_labels"]})

    test_image = load_image(info["test_image"])
    test_gt = read_volume(info["test_labels"])
    probs, _ = predict_models(out, configs, test_image, tta, "test-prediction.tif", "the test volume", progress=True)
    results, instances = {}, {}
    for name in MODELS:
        instances[name], results[name] = _segment_and_score(exp, configs, probs[name], test_gt, name, out)

    print("== morphology of the FusionNet nuclei ==", flush=True)
    voxel_size = tuple(exp["voxel_size"])
    records = morphology.analyze_nuclei(instances["fusionnet"], voxel_size, k=exp["clusters"], seed=exp["seed"])
    morphology.write_csv(records, out / "morphology.csv")
    figures.plot_overlay(test_image, instances["fusionnet"], records, out / "fig9_overlay.png", voxel_size=voxel_size)
    figures.plot_features(records, out / "fig10_features.png")
    summary = {"preset": preset, "source": exp["source"], "results": results, "train": trains,
               "n_nuclei": len(records)}
    return finish(out, t0, summary,
                  lambda total: report(preset, exp, info, configs, trains, results, records, total))
