"""Input checks shared by the metrics: shapes, binary labels, probability maps."""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _binary_labels(labels, name: str = "labels") -> np.ndarray:
    """Return a boolean cell mask from 0/255, 0/1 or bool labels."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise FusionNetError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise FusionNetError(f"{name} contain NaN or infinite values")
    values = np.unique(arr)
    if values.size > 2:
        shown = ", ".join(f"{v:g}" for v in values[:5])
        more = ", ..." if values.size > 5 else ""
        raise FusionNetError(
            f"{name} are not binary: found {values.size} distinct values "
            f"({shown}{more}); expected 0 = membrane and one cell value (1 or 255)"
        )
    if values.size == 2 and values[0] != 0:
        raise FusionNetError(
            f"{name} are not binary 0/cell: found values {values[0]:g} and "
            f"{values[1]:g}; expected 0 = membrane"
        )
    if values.size and values.min() < 0:
        raise FusionNetError(f"{name} contain negative values")
    return arr > 0


def _check_proposal(proposal, name: str = "prediction") -> np.ndarray:
    arr = np.asarray(proposal)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise FusionNetError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise FusionNetError(f"{name} contains {bad} NaN or infinite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise FusionNetError(
            f"{name} values must lie in [0, 1], found range "
            f"[{float(arr.min()):g}, {float(arr.max()):g}]"
        )
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, a_name="prediction", b_name="labels"):
    if a.shape != b.shape:
        raise FusionNetError(
            f"{a_name} shape {_shape_str(a.shape)} differs from "
            f"{b_name} shape {_shape_str(b.shape)}"
        )


def _as_sections(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise FusionNetError(
        f"{name} must be 2-D (H, W) or 3-D (Z, H, W), got shape {_shape_str(arr.shape)}"
    )


def _binarize(section: np.ndarray, threshold: float) -> np.ndarray:
    # Fiji compares the float32 pixel value with a double threshold.
    return section.astype(np.float64) > float(threshold)

