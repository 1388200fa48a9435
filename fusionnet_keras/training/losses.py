"""Losses of the 2-D training graph, and the pointwise errors the affinity losses share."""

from __future__ import annotations

import keras
from keras import ops

from fusionnet_keras.settings import KERAS_PACKAGE

LOSSES = ("mae", "mse", "bce")
BCE_EPSILON = 1e-6


def pointwise_error(kind, pred, target):
    """Per-element loss of ``pred`` against ``target``: ``"mae"``, ``"mse"`` or ``"bce"`` (clipped to
    ``[1e-6, 1 - 1e-6]``)."""
    if kind == "bce":
        pred = ops.clip(pred, BCE_EPSILON, 1.0 - BCE_EPSILON)
        return -(target * ops.log(pred) + (1.0 - target) * ops.log(1.0 - pred))
    if kind == "mae":
        return ops.abs(pred - target)
    return ops.square(pred - target)


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class PairLoss(keras.losses.Loss):
    """Loss between channel 0 (prediction) and channel 1 (warped label) of ``y_pred``.

    The training graph warps the label together with the image inside the model
    (:func:`fusionnet_keras.training.trainer.build_training_model`), so ``y_pred``
    carries both and ``y_true`` is ignored.

    Args:
        kind: ``"mae"`` (the 2021 paper), ``"mse"`` (the 2016 paper) or ``"bce"``
            (binary cross-entropy; not in the papers, faster on short schedules).
        membrane_weight: weight of membrane pixels (label 0); cell pixels weigh 1.

    Examples:
        >>> import numpy as np
        >>> y = np.stack([np.full((1, 4, 4), 0.25), np.ones((1, 4, 4))], -1).astype("float32")
        >>> float(PairLoss("mae")(None, y))
        0.75
    """

    def __init__(self, kind="mae", membrane_weight=1.0, name=None, **kwargs):
        super().__init__(name=name or f"pair_{kind}", **kwargs)
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
        if not membrane_weight > 0:
            raise ValueError(f"membrane_weight must be > 0, got {membrane_weight!r}")
        self.kind = kind
        self.membrane_weight = float(membrane_weight)

    def call(self, y_true, y_pred):
        target = y_pred[..., 1]
        err = pointwise_error(self.kind, y_pred[..., 0], target)
        if self.membrane_weight != 1.0:
            # membrane pixels (label 0) weigh membrane_weight, cell pixels 1
            err = err * (1.0 + (self.membrane_weight - 1.0) * (1.0 - target))
        return ops.mean(err, axis=(1, 2))

    def get_config(self):
        return {"kind": self.kind, "membrane_weight": self.membrane_weight, "name": self.name,
                "reduction": self.reduction}
