"""The training data a configuration names: paths under ``$FUSIONNET_DATA_DIR``, image/label pairs, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.settings import data_dir


def resolve_data_path(spec: str) -> str:
    """A data path from the config: absolute, or relative to ``$FUSIONNET_DATA_DIR``."""
    path, sep, key = spec.partition(":") if spec.count(":") == 1 and not spec[1:3] == ":\\" else (spec, "", "")
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = data_dir() / p
    return f"{p}{sep}{key}"


def load_pairs(config: dict):
    """Read and check the image / label volumes named by ``config['data']``."""
    from fusionnet_keras.data.io import load_image, read_volume
    from fusionnet_keras.data.targets import binarize_labels

    images_path = resolve_data_path(config["data"]["images"])
    labels_path = resolve_data_path(config["data"]["labels"])
    for p in (images_path, labels_path):
        if not Path(p.split(":")[0]).exists():
            raise FusionNetError(
                f"data not found: {p} (set FUSIONNET_DATA_DIR to the folder holding it; see data/README.md)"
            )
    images = load_image(images_path)
    labels = read_volume(labels_path)
    if images.ndim == 2:
        images = images[None]
    if labels.ndim == 2:
        labels = labels[None]
    labels = binarize_labels(labels, images)
    if labels.min() == labels.max():
        what = "cell" if labels.flat[0] else "membrane"
        raise FusionNetError(f"labels {labels_path} are all {what}: a network cannot learn membranes from a single "
                             "value; expected 0 = membrane and one cell value")
    return images.astype("float32"), labels.astype("float32")


def split_sections(config: dict, n: int):
    from fusionnet_keras.data.splits import section_range

    train = section_range(config["data"]["train_sections"], n)
    val_spec = config["data"]["val_sections"].strip()
    val = section_range(val_spec, n) if val_spec else np.array([], dtype=int)
    overlap = set(np.asarray(train).tolist()) & set(np.asarray(val).tolist())
    if overlap:
        raise FusionNetError(f"train and validation sections overlap: {sorted(i + 1 for i in overlap)}")
    return np.asarray(train), np.asarray(val)

