"""Training targets made from labels: binary cell-interior masks (2-D membranes)."""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------
def check_pair(images, labels):
    """Raise :class:`FusionNetError` unless ``images`` and ``labels`` have equal shapes."""
    ishape = tuple(np.shape(images))
    lshape = tuple(np.shape(labels))
    if ishape != lshape:
        raise FusionNetError(f"image shape {ishape} differs from label shape {lshape}")


def binarize_labels(labels, images=None):
    """Map a binary label stack to float32 ``{0, 1}`` (1 = cell interior).

    Accepted inputs have at most two distinct values: ``{0, 1}`` is kept,
    ``{0, 255}`` (ISBI) becomes ``{0, 1}``; any other pair ``lo < hi`` maps
    ``lo -> 0`` and ``hi -> 1``. A constant stack maps to 0 if its value is
    ``<= 0`` and to 1 otherwise. More than two distinct values (or non-finite
    values) raise :class:`FusionNetError`. If ``images`` is given, the shapes
    must match.
    """
    labels = np.asarray(labels)
    if images is not None:
        check_pair(images, labels)
    if labels.size == 0:
        raise FusionNetError(f"labels are empty (shape {labels.shape})")
    if labels.dtype == bool:
        return labels.astype(np.float32)
    if not np.issubdtype(labels.dtype, np.number):
        raise FusionNetError(f"labels must be numeric, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(labels)):
        raise FusionNetError("labels contain NaN or infinite values")
    values = np.unique(labels)
    if values.size > 2:
        shown = ", ".join(str(v) for v in values[:5])
        more = ", ..." if values.size > 5 else ""
        raise FusionNetError(
            f"labels must be binary, found {values.size} distinct values ({shown}{more})"
        )
    if values.size == 1:
        return np.full(labels.shape, 1.0 if values[0] > 0 else 0.0, dtype=np.float32)
    return (labels == values[1]).astype(np.float32)

