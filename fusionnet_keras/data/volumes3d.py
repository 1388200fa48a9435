"""3-D EM volumes with dense neuron labels for affinity training: fib-medulla and gala-example.

Each dataset is cut into fixed, named **parts** (train / validation / test)
that never overlap, so the affinity networks, the agglomeration classifier and
the evaluation all read the same blocks (:data:`SPLITS`).

* ``fib-medulla`` (``$FUSIONNET_DATA_DIR/fib-medulla/fib-medulla.h5``; FIB-SEM
  Drosophila medulla, 250^3 at 10 nm, dense body ids) made anisotropic by
  keeping every 4th section (:data:`Z_STEP`): (63, 250, 250) at 10 x 10 x 40 nm,
  like CREMI / SNEMI3D. Split by y: train ``y in [0, 125)``, validation
  ``[125, 150)``, test ``[150, 250)`` (the test block, 63 x 100 x 250, holds
  about 200 ground-truth bodies, dozens of them whole). The same split as
  ``benchmarks/segmentation_fib_medulla.py``.
* ``gala-example`` (``$FUSIONNET_DATA_DIR/gala-example``, (50, 100, 200), ids 0 =
  boundary): train ``train-*`` with y in [0, 75), validation ``train-*`` with
  y in [75, 100), test the whole ``test-*`` volume.

Images are uint8 ``(Z, Y, X)``, labels uint64 ``(Z, Y, X)`` (0 = unlabelled).

Example:
    >>> block = Part("train", "train", (0, 125))
    >>> block.y_range
    (0, 125)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError

Z_STEP = 4
"""fib-medulla keeps every 4th section: 10 nm -> 40 nm in z (10 x 10 x 40 nm voxels)."""

VOXEL_NM = {"fib-medulla": (40, 10, 10), "gala-example": (10, 10, 10)}
"""Voxel size (z, y, x) in nm of each dataset as loaded."""


@dataclass(frozen=True)
class Part:
    """A named block of a dataset: the source volume (``"train"``/``"test"`` file) and its y range."""

    name: str
    source: str
    y_range: tuple[int, int] | None  # None = the whole source volume


SPLITS = {
    "fib-medulla": {
        "train": Part("train", "volume", (0, 125)),
        "validation": Part("validation", "volume", (125, 150)),
        "test": Part("test", "volume", (150, 250)),
    },
    "gala-example": {
        "train": Part("train", "train", (0, 75)),
        "validation": Part("validation", "train", (75, 100)),
        "test": Part("test", "test", None),
    },
}
"""The fixed split of each dataset into parts (see the module docstring)."""

DATASETS = tuple(SPLITS)
PARTS = ("train", "validation", "test")


def check_split(split: dict, shapes: dict) -> None:
    """Refuse a split whose parts overlap or leave their volume (``shapes``: source -> (Z, Y, X))."""
    ranges = {}
    for part in split.values():
        if part.source not in shapes:
            raise FusionNetError(f"part {part.name!r} reads unknown volume {part.source!r}")
        height = shapes[part.source][1]
        y0, y1 = part.y_range if part.y_range is not None else (0, height)
        if not 0 <= y0 < y1 <= height:
            raise FusionNetError(f"part {part.name!r}: y range [{y0}, {y1}) is not inside the volume (y size {height})")
        for other, (o0, o1, source) in ranges.items():
            if source == part.source and y0 < o1 and o0 < y1:
                raise FusionNetError(f"parts {other!r} and {part.name!r} overlap in y")
        ranges[part.name] = (y0, y1, part.source)


def _dataset_dir(name: str, root=None) -> Path:
    from fusionnet_keras.settings import DATA_DIR_ENV, data_dir

    folder = Path(root) if root is not None else data_dir() / name
    if not folder.is_dir():
        raise FusionNetError(f"dataset {name} not found at {folder}; set {DATA_DIR_ENV} to the folder holding {name}/")
    return folder


def _read(path: Path, key: str, index=slice(None)) -> np.ndarray:
    """Dataset ``key`` of the HDF5 file ``path`` (sections ``index``), by the package's reader: a missing,
    truncated or damaged file is a one-line error naming it."""
    from fusionnet_keras.data.io import open_volume
    from fusionnet_keras.data.io.paths import user_errors

    if not path.exists():
        raise FusionNetError(f"{path} not found; the {path.parent.name} dataset is incomplete")
    with open_volume(f"{path}:{key}") as volume, user_errors(f"cannot read {volume.name}"):
        return np.asarray(volume.lazy[index])


def _sources(name: str, root=None, z_step: int = Z_STEP) -> dict:
    """``{source: (image, labels)}`` of dataset ``name`` as loaded (fib-medulla: every ``z_step``-th section)."""
    folder = _dataset_dir(name, root)
    if name == "fib-medulla":
        path = folder / "fib-medulla.h5"
        every = slice(None, None, z_step)
        return {"volume": (_read(path, "image", every), _read(path, "labels", every))}
    return {
        source: (_read(folder / f"{source}-image.h5", "stack"), _read(folder / f"{source}-gt.lzf.h5", "stack"))
        for source in ("train", "test")
    }


def load_parts(name: str, parts=PARTS, root=None) -> dict:
    """``{part: (image uint8 (Z, Y, X), labels uint64 (Z, Y, X))}`` of dataset ``name``.

    Args:
        name: ``"fib-medulla"`` or ``"gala-example"`` (:data:`DATASETS`).
        parts: names of the parts to return (:data:`PARTS`).
        root: the dataset's folder (default ``$FUSIONNET_DATA_DIR/<name>``).
    """
    if name not in SPLITS:
        raise FusionNetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    split = SPLITS[name]
    unknown = [p for p in parts if p not in split]
    if unknown:
        raise FusionNetError(f"unknown part {unknown[0]!r}; choose among {', '.join(split)}")
    sources = _sources(name, root)
    for source, (image, labels) in sources.items():
        if image.shape != labels.shape:
            raise FusionNetError(f"{name} {source}: image {image.shape} and labels {labels.shape} differ in shape")
    check_split(split, {s: v[0].shape for s, v in sources.items()})
    out = {}
    for part_name in parts:
        part = split[part_name]
        image, labels = sources[part.source]
        ys = slice(*part.y_range) if part.y_range is not None else slice(None)
        out[part_name] = (np.ascontiguousarray(image[:, ys]), np.ascontiguousarray(labels[:, ys]).astype(np.uint64))
    return out


def whole_objects(labels: np.ndarray) -> int:
    """Number of non-zero ids of ``labels`` that touch none of the four y/x faces (whole in the block's xy)."""
    ids = np.unique(labels[labels > 0])
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    return int(np.setdiff1d(ids, border).size)
