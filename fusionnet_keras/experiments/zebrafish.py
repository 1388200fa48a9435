"""The zebrafish nucleus experiment: 3-D nucleus segmentation, Table 3 scores and morphology.

Used by ``experiments/zebrafish/run.py`` (``make zebrafish``). The paper's
protocol (Quan et al. 2016, sec. 4.2; 2021, sec. 4.2): two training volumes,
three quarters of each for training and one quarter for validation, a
separate labelled test volume; FusionNet and U-Net are trained on 2-D
sections and the test volume is predicted section by section with
8-orientation averaging. Every network is trained with ``seeds`` training
seeds (same data), and Table 3 is their mean and spread.

Table 3 the paper's way (:func:`~fusionnet_keras.segmentation.nuclei.nucleus_table3_scores`): "foreground-restricted Rand
scoring after border thinning" and its information-theoretic twin, the ISBI
2012 challenge's scores (Arganda-Carreras et al. 2015, which the papers cite
for them), computed as the challenge's Fiji script does on a stack: per
section, plain 4-connected components of the thresholded prediction, border
thinning, foreground-restricted (the nucleus voxels of the binary test mask,
the paper's area-lists exported as binary masks), maximised over thresholds
0.0..1.0; and the Dice coefficient of the masks at threshold 0.5. The
project's own rows (:func:`~fusionnet_keras.segmentation.nuclei.nucleus_scores`) score 3-D nucleus
instances (by default split by a seeded watershed,
:func:`~fusionnet_keras.segmentation.nuclei.segment_nuclei`) against the test
volume's nucleus ids. Then the morphology of every nucleus of the first
seed's FusionNet (volume, surface area, sphericity, K-means on all whole
nuclei, the left-right symmetry check) and the figures.

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
    finish,
    predict_models,
    start,
    train_models,
)
from fusionnet_keras.segmentation.nuclei import nucleus_scores, nucleus_table3_scores, segment_nuclei
from fusionnet_keras.training import schema
from fusionnet_keras.utils.atomic import atomic_write_text


def _voxel_size_rule(value):
    return None if not value else schema.list_of(float, length=3, positive=True)(value)


EXPERIMENT_SCHEMA = {  # the training/schema.py machinery: (type, default, rule)
    "source": (str, "synthetic", ("synthetic", "files")),
    # seed of the synthetic data
    "seed": (int, 0, (0, 2**31 - 1)),
    # every network is trained with train.seed = 0 .. seeds - 1 (same data); Table 3 = mean and spread
    "seeds": (int, 3, (1, 100)),
    # voxel size in nm, (Z, Y, X); empty: the synthetic preset's (cpu: 120 x 112.8 x 112.8, twice the
    # paper's; paper: 60 x 56.4 x 56.4), or the paper's 60 x 56.4 x 56.4 for files
    "voxel_size": (list, [], _voxel_size_rule),
    # K-means clusters of (volume, surface area, sphericity), fitted on all whole nuclei (the paper)
    "clusters": (int, 3, (1, 1000)),
    # leave the pre-flagged outliers out of the K-means fit (the project's option; not the paper's)
    "exclude_outliers": (bool, False, None),
    # x of the midline (um) for the left-right symmetry check; 0 = the middle of the test volume
    "midline_x_um": (float, 0.0, (0.0, 1e9)),
    # 3-D objects smaller than this are dropped (um^3)
    "min_volume_um3": (float, 1.0, (0.0, 1e9)),
    # the 3-D instances of the project's rows and of the morphology: "watershed" (connected components
    # split by a watershed of the distance transform seeded at maxima at least min_radius_um apart, which
    # separates touching nuclei) or "components" (plain 3-D connected components)
    "instances": (str, "watershed", ("components", "watershed")),
    # smallest nucleus radius (um): watershed seeds are at least this far apart
    "min_radius_um": (float, 2.0, schema.greater_than(0)),
    # source = "files": paths relative to $FUSIONNET_DATA_DIR (any reader of fusionnet_keras.data.io)
    "train_images": (list, [], schema.list_of(str)),
    "train_labels": (list, [], schema.list_of(str)),
    "test_image": (str, "", None),
    "test_labels": (str, "", None),
    # fraction of each training volume used for validation (the last sections)
    "val_fraction": (float, 0.25, schema.strictly_between(0, 1)),
}


def load_experiment(path) -> dict:
    """Read and validate ``experiment.toml`` (a missing file gives the defaults; unknown keys are refused)."""
    exp = schema.load_settings(EXPERIMENT_SCHEMA, [path] if path is not None and Path(path).exists() else [])
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
    """``(train pairs, test image, test labels, voxel size)`` from the seeded generator; images float32
    in [0, 1]."""
    from fusionnet_keras.data.synthetic import make_dataset_volumes

    print(f"== SYNTHETIC data: seeded EM-like nucleus volumes ({preset} preset, seed {exp['seed']}); "
          "set source = \"files\" in experiments/zebrafish/experiment.toml for real volumes ==", flush=True)
    vols = make_dataset_volumes(preset, seed=exp["seed"], voxel_size=tuple(exp["voxel_size"]) or None)
    train = [(np.asarray(i).astype(np.float32) / 255.0, np.asarray(l)) for i, l in vols["train"]]
    test_image, test_labels = vols["test"]
    return train, test_image.astype(np.float32) / 255.0, test_labels, vols["voxel_size"]


def _file_volumes(exp: dict):
    """``(train pairs, test image, test labels, voxel size)`` read from the files of ``exp``; a binary
    test mask becomes its 3-D components (as the predictions do)."""
    from fusionnet_keras.data.synthetic import DEFAULT_VOXEL_SIZE
    from fusionnet_keras.evaluation.morphology import is_binary_mask

    train = [_read_pair(i, l) for i, l in zip(exp["train_images"], exp["train_labels"])]
    test_image, test_labels = _read_pair(exp["test_image"], exp["test_labels"])
    test_labels = np.asarray(test_labels)
    if test_labels.dtype.kind in "biu" and test_labels.any() and is_binary_mask(test_labels):
        from scipy import ndimage

        test_labels, _ = ndimage.label(test_labels != 0)
    return train, test_image, test_labels, tuple(exp["voxel_size"]) or DEFAULT_VOXEL_SIZE


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
        train, test_image, test_labels, voxel_size = _synthetic_volumes(exp, preset)
    else:
        train, test_image, test_labels, voxel_size = _file_volumes(exp)
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
        "voxel_size": [float(v) for v in voxel_size],
        "settings": settings,
    }
    atomic_write_text(marker, json.dumps(info, indent=2) + "\n")
    return info


def _score_model(exp: dict, config: dict, prob: np.ndarray, gt: np.ndarray, voxel_size, folder: Path) -> dict:
    """Table 3 and the project's 3-D scores of one test prediction; writes ``test-instances.tif``."""
    from fusionnet_keras.data.io import write_volume

    threshold = config["predict"]["threshold"]
    min_voxels = int(np.ceil(exp["min_volume_um3"] / (np.prod(voxel_size) * 1e-9)))
    inst = segment_nuclei(prob, threshold, min_voxels, exp["instances"], voxel_size, exp["min_radius_um"])
    write_volume(folder / "test-instances.tif", inst, overwrite=True)
    return {"table3": nucleus_table3_scores(prob, gt, threshold), "instances": nucleus_scores(inst, gt)}


def _train_seed(exp, experiment_dir, preset: str, out: Path, seed: int, info: dict, test_image, test_gt, tta):
    """Train both networks with ``train.seed = seed`` in ``out/seed<seed>``, predict and score the test volume."""
    folder = out / f"seed{seed}"
    data = {key: info[key] for key in ("train_sections", "val_sections")} | {
        "images": info["train_images"], "labels": info["train_labels"]}
    configs, trains = train_models(experiment_dir, preset, folder, data, overrides=[f"train.seed={seed}"])
    probs, _ = predict_models(folder, configs, test_image, tta, "test-prediction.tif",
                              f"the test volume (seed {seed})", progress=True)
    results = {}
    for name in configs:
        results[name] = _score_model(exp, configs[name], probs[name], test_gt, info["voxel_size"], folder / name)
        t, i = results[name]["table3"], results[name]["instances"]
        print(f"   {LABELS[name]} seed {seed}: V^Rand {t['vrand']:.5f}  V^Info {t['vinfo']:.5f}  Dice {t['dice']:.5f}"
              f" | 3-D instances V^Rand {i['vrand']:.5f}, nuclei {i['n_nuclei']} (ground truth {i['n_gt_nuclei']})",
              flush=True)
    return configs, trains, results


def morphology_seed(trains: dict) -> int:
    """The seed whose FusionNet the morphology uses: the best validation V^Rand (the first seed on a tie).

    Chosen on the validation sections, never on the test volume.

    Examples:
        >>> morphology_seed({0: {"fusionnet": {"best_vrand": 0.91}}, 1: {"fusionnet": {"best_vrand": 0.93}}})
        1
    """
    return max(trains, key=lambda s: (float(trains[s]["fusionnet"]["best_vrand"]), -s))


def morphology_summary(instances: np.ndarray, exp: dict, voxel_size, shape) -> dict:
    """Nucleus records (K-means on all whole nuclei), silhouettes for k = 2..6 and the symmetry check."""
    from fusionnet_keras.evaluation import morphology, population

    records = morphology.analyze_nuclei(instances, voxel_size, k=exp["clusters"], seed=exp["seed"],
                                        exclude_outliers=exp["exclude_outliers"])
    midline = exp["midline_x_um"] or (shape[2] - 1) / 2 * voxel_size[2] / 1000.0
    return {"records": records, "silhouettes": population.silhouettes(records, seed=exp["seed"]),
            "symmetry": population.symmetry(records, midline)}


def run(preset: str, out, experiment_dir, tta=8) -> dict:
    """Run the whole experiment; return the results dict (also written to ``results.json``)."""
    from fusionnet_keras.data.io import load_image, read_volume
    from fusionnet_keras.evaluation import figures, morphology
    from fusionnet_keras.experiments.zebrafish_report import report

    t0, out = start(preset, out)
    exp = load_experiment(Path(experiment_dir) / "experiment.toml")
    info = prepare_data(exp, preset, out / "data")
    test_image = load_image(info["test_image"])
    test_gt = read_volume(info["test_labels"])
    seeds = list(range(exp["seeds"]))
    configs, trains, results = {}, {}, {}
    for seed in seeds:
        configs[seed], trains[seed], results[seed] = _train_seed(exp, experiment_dir, preset, out, seed, info,
                                                                 test_image, test_gt, tta)

    morph_seed = morphology_seed(trains)
    print(f"== morphology of the FusionNet nuclei (seed {morph_seed}, the best validation V^Rand) ==", flush=True)
    voxel_size = tuple(info["voxel_size"])
    instances = read_volume(out / f"seed{morph_seed}" / "fusionnet" / "test-instances.tif")
    morph = {**morphology_summary(instances, exp, voxel_size, test_image.shape), "seed": morph_seed}
    morphology.write_csv(morph["records"], out / "morphology.csv")
    figures.plot_overlay(test_image, instances, morph["records"], out / "fig9_overlay.png", voxel_size=voxel_size)
    figures.plot_features(morph["records"], out / "fig10_features.png")
    summary = {"preset": preset, "source": exp["source"], "seeds": seeds, "results": results, "train": trains,
               "morphology_seed": morph_seed, "n_nuclei": len(morph["records"]), "silhouettes": morph["silhouettes"],
               "symmetry": morph["symmetry"]}
    return finish(out, t0, summary,
                  lambda total: report(preset, exp, info, configs, trains, results, morph, total))
