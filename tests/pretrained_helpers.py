"""Tiny registries for the tests of :mod:`fusionnet_keras.pretrained`: seeded, built in seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from conftest import randomize_batchnorm
from segmentation_helpers import bodies, degrade, gt_affinities

NAME_2D = "tiny-2d"
NAME_3D = "tiny-3d"
SETTINGS_2D = {"tta": 1, "pad": 8}
SETTINGS_3D = {"orientations": 1}


def toml_value(value) -> str:
    """A TOML value of the simple kinds a card holds (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def write_card(folder: Path, card: dict) -> None:
    """``card.toml`` of ``card`` (top-level scalars, then one [table] per dict)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in card.items() if not isinstance(v, dict)]
    for key, table in card.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    (folder / "card.toml").write_text("\n".join(lines) + "\n")


def base_card(name, task, sha256, default=True):
    return {
        "name": name, "task": task, "summary": f"a tiny {task} test network", "file": "model.keras",
        "sha256": sha256, "weights_dtype": "float16", "package_version": "0.1.0", "seed": 0, "default": default,
        "regenerate": f"echo {name} >> regenerated.txt",
        "training": {"data": "random", "split": "none", "config": "untrained", "time": "0 s", "hardware": "any"},
        "scores": {"command": "none", "headline": "V_rand", "values": {"V_rand": 0.5, "V_info": 0.25}},
        "data": {"licence": "CC0", "credit": "the test suite"},
        "test": {"input": "test_input.npy", "output": "test_output.npy"},
    }


def add_entry(registry: Path, name: str, model, task: str, image, settings: dict, classifier=None,
              default=True) -> Path:
    """Write a complete registry entry for ``model`` (stored float16) with its expected output."""
    import fusionnet_keras as fk
    from fusionnet_keras.pretrained.registry import sha256_file
    from fusionnet_keras.pretrained.storage import save_compact

    folder = registry / name
    folder.mkdir(parents=True)
    save_compact(model, folder / "model.keras", "float16")
    stored = fk.load_model(folder / "model.keras", spatial_dims=None)
    if task == "membranes-2d":
        out = fk.predict(stored, image, precision="float32", **settings)
    else:
        out = fk.predict_affinities(stored, image, precision="float32", **settings)
    np.save(folder / "test_input.npy", image)
    np.save(folder / "test_output.npy", np.asarray(out, np.float32))
    (folder / "card.md").write_text(f"# {name}\n\nA tiny test network.\n")
    card = base_card(name, task, sha256_file(folder / "model.keras"), default)
    card["test"]["settings"] = settings
    if classifier is not None:
        shutil.copy(classifier, folder / "classifier.npz")
        card["segmentation"] = {"classifier": "classifier.npz",
                                "classifier_sha256": sha256_file(folder / "classifier.npz"),
                                "threshold": 0.5, "ws_size": 10, "chosen_on": "validation",
                                "validation_curve": [[0.4, 1.5], [0.5, 1.4]]}
    write_card(folder, card)
    return folder


def tiny_classifier(path: Path) -> tuple[Path, np.ndarray]:
    """A tiny agglomeration classifier saved at ``path``, and the affinities it was trained on."""
    from fusionnet_keras.segmentation.learned import train_classifier

    gt = bodies((4, 24, 24), 8, seed=3)
    affs = degrade(gt_affinities(gt), seed=4)
    frags = np.arange(gt.size, dtype=np.uint64).reshape(gt.shape) // 8 + 1
    train_classifier(affs, frags, gt, epochs=1, trees=3, seed=0).save(path)
    return path, affs


def build_registry(root: Path) -> dict:
    """A registry with one default 2-D and one default 3-D entry; paths and arrays the tests use."""
    import keras

    from fusionnet_keras.models.fusionnet import FusionNet
    from fusionnet_keras.models.unet3d import UNet3D

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    registry = root / "registry"
    net2d = randomize_batchnorm(FusionNet(nb_filters=2, depth=1), seed=1)
    image = rng.random((20, 24)).astype(np.float32)
    add_entry(registry, NAME_2D, net2d, "membranes-2d", image, SETTINGS_2D)
    net3d = randomize_batchnorm(UNet3D(nb_filters=2, depth=1, z_kernels=1, head_z_kernel=1), seed=1)
    volume = (rng.random((4, 12, 12)) * 255).astype(np.uint8)
    clf, affs = tiny_classifier(root / "clf.npz")
    add_entry(registry, NAME_3D, net3d, "affinities-3d", volume, SETTINGS_3D, classifier=clf)
    return {"registry": registry, "image": image, "volume": volume, "affs": affs, "net2d": net2d}


def copy_registry(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
