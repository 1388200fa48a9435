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
:mod:`fusionnet_keras.synthetic`, announced as such) or ``source = "files"``
with paths to real volumes (relative to ``$FUSIONNET_DATA_DIR``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.experiments.common import LABELS, MODELS, train_models
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
    # source = "files": paths relative to $FUSIONNET_DATA_DIR (any reader of fusionnet_keras.io)
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


def prepare_data(exp: dict, preset: str, data_out: Path):
    """Write the training stack and test volume under ``data_out``; return paths and section ranges.

    Training volumes are stacked along z (they must share their (Y, X) size);
    the last ``val_fraction`` of each volume validates.
    """
    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.evaluation.morphology import is_binary_mask

    data_out = Path(data_out).resolve()  # absolute: config data paths are otherwise relative to the data dir
    marker = data_out / "data.json"
    settings = {"experiment": exp, "preset": preset}
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("settings") == json.loads(json.dumps(settings)):
            return info
        print("== experiment settings changed: preparing the data again ==", flush=True)
    if exp["source"] == "synthetic":
        from fusionnet_keras.data.synthetic import make_dataset_volumes

        print(f"== SYNTHETIC data: seeded EM-like nucleus volumes ({preset} preset, seed {exp['seed']}); "
              "set source = \"files\" in experiments/zebrafish/experiment.toml for real volumes ==", flush=True)
        vols = make_dataset_volumes(preset, seed=exp["seed"], voxel_size=tuple(exp["voxel_size"]))
        train = [(np.asarray(i), np.asarray(l)) for i, l in vols["train"]]
        test_image, test_labels = vols["test"]
        train = [(i.astype(np.float32) / 255.0, l) for i, l in train]
        test_image = test_image.astype(np.float32) / 255.0
    else:
        train = [_read_pair(i, l) for i, l in zip(exp["train_images"], exp["train_labels"])]
        test_image, test_labels = _read_pair(exp["test_image"], exp["test_labels"])
        test_labels = np.asarray(test_labels)
        if test_labels.dtype.kind in "biu" and test_labels.any() and is_binary_mask(test_labels):
            # a binary mask (0/1, 0/255): its nuclei are the 3-D components, as for the predictions
            from scipy import ndimage

            test_labels, _ = ndimage.label(test_labels != 0)
    shapes = {v[0].shape[1:] for v in train}
    if len(shapes) != 1:
        raise FusionNetError(f"training volumes must share their (Y, X) size, got {sorted(shapes)}")
    train_ranges, val_ranges, start = [], [], 1
    for image, _ in train:
        z = image.shape[0]
        n_val = int(round(z * exp["val_fraction"]))
        if z < 4 or n_val < 1 or z - n_val < 1:
            raise FusionNetError(f"a training volume of {z} sections is too small for a train/validation split")
        train_ranges.append(f"{start}-{start + z - n_val - 1}")
        val_ranges.append(f"{start + z - n_val}-{start + z - 1}")
        start += z
    images = np.concatenate([i for i, _ in train]).astype(np.float32)
    masks = np.concatenate([(np.asarray(l) > 0) for _, l in train]).astype(np.uint8)
    data_out.mkdir(parents=True, exist_ok=True)
    write_volume(data_out / "train-image.tif", images, overwrite=True)
    write_volume(data_out / "train-labels.tif", masks * 255, overwrite=True)
    write_volume(data_out / "test-image.tif", test_image.astype(np.float32), overwrite=True)
    write_volume(data_out / "test-labels.tif", np.asarray(test_labels).astype(np.int32), overwrite=True)
    info = {
        "train_images": str(data_out / "train-image.tif"),
        "train_labels": str(data_out / "train-labels.tif"),
        "test_image": str(data_out / "test-image.tif"),
        "test_labels": str(data_out / "test-labels.tif"),
        "train_sections": ",".join(train_ranges),
        "val_sections": ",".join(val_ranges),
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


def write_report(out: Path, preset: str, exp: dict, info: dict, configs, trains, results, records, total):
    lines = ["# Zebrafish nucleus segmentation: FusionNet vs U-Net, and nucleus morphology", ""]
    if exp["source"] == "synthetic":
        lines += [
            "**SYNTHETIC DATA.** The paper's zebrafish volumes are not available here with labels, so this run "
            "uses the project's seeded generator of EM-like nucleus volumes (`fusionnet_keras.synthetic`: "
            "textured neuropil, irregular ellipsoidal nuclei with a dark envelope and chromatin texture, "
            "touching neighbours, section jitter, noise). The numbers are not comparable with the paper's; "
            "set `source = \"files\"` in `experiments/zebrafish/experiment.toml` to run on real volumes.",
            "",
        ]
    if preset == "cpu":
        lines += [
            "**CPU preset**: smaller networks, crops and a short schedule so the target finishes on 2 CPU cores "
            "(`experiments/zebrafish/cpu.toml`); `make zebrafish PRESET=paper` runs the paper's configuration.",
            "",
        ]
    vs = exp["voxel_size"]
    lines += [
        f"Training volumes {info['train_shapes']} (sections {info['train_sections']} train, "
        f"{info['val_sections']} validate), test volume {info['test_shape']}, voxel size "
        f"{vs[0]} x {vs[1]} x {vs[2]} nm (Z, Y, X). Test predictions: 8-orientation averaging, threshold 0.5, "
        f"" + (
            "3-D connected components (6-connectivity)" if exp["instances"] == "components" else
            f"3-D connected components split by a distance-transform watershed from h-maxima (h = {exp['watershed_h']}) "
            "to separate touching nuclei (`instances = \"watershed\"`; the paper used plain connected components, "
            "shown in the last rows)") + f", objects under {exp['min_voxels']} voxels removed.",
        "",
        "## Table 3 layout",
        "",
        "| metric | FusionNet | U-Net | paper FusionNet | paper U-Net |",
        "|---|---|---|---|---|",
    ]
    for i, key in enumerate(("vrand", "vinfo", "dice")):
        name = {"vrand": "V^Rand", "vinfo": "V^Info", "dice": "V^Dice"}[key]
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
    lines += ["", "## Training", "", "| model | nb_filters | depth | epochs | train time (min) | best epoch |",
              "|---|---|---|---|---|---|"]
    for name in MODELS:
        c, t = configs[name], trains[name]
        lines.append(f"| {LABELS[name]} | {c['model']['nb_filters']} | {c['model']['depth']} | {t['epochs']} | "
                     f"{(t.get('train_seconds') or 0) / 60:.1f} | {t['best_epoch']} |")
    lines += ["", "## Morphology (FusionNet nuclei of the test volume)", ""]
    if not records:
        lines += ["No nuclei were found in the test volume: no morphology to report."]
    else:
        interior = [r for r in records if not r["touches_border"]] or records
        vol = np.array([r["volume_um3"] for r in interior])
        area = np.array([r["surface_area_um2"] for r in interior])
        sph = np.array([r["sphericity"] for r in interior])
        outl = sum(bool(r["outlier"]) for r in records)
        n_border = sum(bool(r["touches_border"]) for r in records)
        lines += [
            f"{len(records)} nuclei, {n_border} of them cut by the volume border (their size and shape are "
            f"truncated: left out of the statistics below and of the K-means fit); {outl} flagged as outliers "
            "(robust z-score > 3.5 of volume or area, or sphericity < 0.6). Per-nucleus values in `morphology.csv`.",
            "",
            f"Statistics of the {len(interior)} nuclei{' inside the volume' if len(interior) < len(records) else ''}:",
            "",
            "| | median | 5th percentile | 95th percentile |",
            "|---|---|---|---|",
            f"| volume (um^3) | {np.median(vol):.1f} | {np.percentile(vol, 5):.1f} | {np.percentile(vol, 95):.1f} |",
            f"| surface area (um^2) | {np.median(area):.1f} | {np.percentile(area, 5):.1f} | {np.percentile(area, 95):.1f} |",
            f"| sphericity | {np.median(sph):.3f} | {np.percentile(sph, 5):.3f} | {np.percentile(sph, 95):.3f} |",
            "",
            f"K-means (k = {exp['clusters']}) on standardised (volume, surface area, sphericity):",
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
    lines += [
        "",
        "![segmentation coloured by sphericity (Fig. 9)](fig9_overlay.png)",
        "",
        "![morphology against the horizontal coordinate (Fig. 10)](fig10_features.png)",
        "",
        f"Total wall time: {total / 60:.1f} min. Models: `fusionnet/best.keras`, `unet/best.keras`.",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def run(preset: str, out, experiment_dir, tta=8) -> dict:
    import keras

    from fusionnet_keras.data.io import read_volume, write_volume
    from fusionnet_keras.evaluation import figures, morphology
    from fusionnet_keras.inference.predictor import predict

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    experiment_dir = Path(experiment_dir)
    exp = load_experiment(experiment_dir / "experiment.toml")
    if preset == "cpu":
        print("== CPU preset: reduced networks and schedule for 2 CPU cores (PRESET=paper for the paper's) ==",
              flush=True)
    info = prepare_data(exp, preset, out / "data")

    configs, trains = train_models(experiment_dir, preset, out, {
        key: info[key] for key in ("train_sections", "val_sections")} | {
        "images": info["train_images"], "labels": info["train_labels"]})

    from fusionnet_keras.data.io import load_image

    test_image = load_image(info["test_image"])
    test_gt = read_volume(info["test_labels"])
    results, instances = {}, {}
    for name in MODELS:
        print(f"== predicting the test volume with {LABELS[name]} (tta {tta}) ==", flush=True)
        net = keras.saving.load_model(out / name / "best.keras", compile=False)
        prob = predict(net, test_image, tta=tta, pad=configs[name]["predict"]["pad"], progress=True)
        write_volume(out / name / "test-prediction.tif", prob, overwrite=True)
        threshold = configs[name]["predict"]["threshold"]
        inst = segment(prob, threshold, exp["min_voxels"], exp["instances"], exp["voxel_size"], exp["watershed_h"])
        write_volume(out / name / "test-instances.tif", inst, overwrite=True)
        instances[name] = inst
        results[name] = score(inst, test_gt)
        if exp["instances"] != "components":
            cc = segment(prob, threshold, exp["min_voxels"], "components")
            results[name]["components"] = score(cc, test_gt)
        r = results[name]
        print(f"   V^Rand {r['vrand']:.5f}  V^Info {r['vinfo']:.5f}  Dice {r['dice']:.5f}  "
              f"nuclei {r['n_nuclei']} (ground truth {r['n_gt_nuclei']})", flush=True)

    print("== morphology of the FusionNet nuclei ==", flush=True)
    records = morphology.analyze_nuclei(instances["fusionnet"], tuple(exp["voxel_size"]), k=exp["clusters"],
                                        seed=exp["seed"])
    morphology.write_csv(records, out / "morphology.csv")
    figures.plot_overlay(test_image, instances["fusionnet"], records, out / "fig9_overlay.png",
                            voxel_size=tuple(exp["voxel_size"]))
    figures.plot_features(records, out / "fig10_features.png")
    total = time.time() - t0
    summary = {"preset": preset, "source": exp["source"], "results": results, "train": trains,
               "n_nuclei": len(records), "total_seconds": total}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_report(out, preset, exp, info, configs, trains, results, records, total)
    print(f"== wrote {out / 'report.md'} ({total / 60:.1f} min) ==", flush=True)
    return summary
