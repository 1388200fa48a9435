"""Losses of the 3-D affinity networks: MALIS (exact, optionally constrained) and class-balanced BCE.

Both take the packed ``y_true`` of :mod:`fusionnet_keras.data.affinities`
(``(batch, Z, Y, X, 7)``: target affinities, mask, instance ids; made by
:meth:`~fusionnet_keras.data.affinities.AffinityTargets.y_true`) and the
network's ``y_pred`` ``(batch, Z, Y, X, 3)``, and return one value per sample.

* :class:`BalancedBCELoss` (the baseline): binary cross-entropy over the masked
  edges, positive (affinity 1) and negative edges weighted to equal total
  weight per sample.
* :class:`MalisLoss` (Turaga et al. 2009): the loss of the voxel pairs. Every
  pair of labelled voxels has a *maximin edge* in the predicted affinity graph
  (:func:`~fusionnet_keras.training.malis.malis_weights`); a positive pair (same
  id) pushes its maximin edge towards 1, a negative pair (different ids) towards
  0, whatever the edge's own target. Per sample, each edge's loss is
  ``P_e / P * err(a_e, 1) + N_e / N * err(a_e, 0)`` (``P_e``, ``N_e`` the positive
  and negative pairs whose maximin edge it is, within the mask; ``P``, ``N``
  their totals; the mean of the two terms when both exist), ``err`` the squared
  error (default) or BCE. With ``constrained=True``, Funke et al. 2018's
  constrained MALIS: the positive pass runs on ``min(prediction, target)`` and
  keeps counts on target-1 edges only, the negative pass on ``max(prediction,
  target)`` and keeps counts on target-0 edges only. The pair counts are
  constants of the step (no gradient flows through
  the spanning tree), computed on the host: ``tf.numpy_function`` on TensorFlow,
  ``jax.pure_callback`` on JAX, plain numpy on eager backends (:func:`host_call`).
  On TensorFlow, compile with ``jit_compile=False`` (XLA cannot run a host
  callback; ``MalisLoss.xla_compatible`` is False for code that compiles models).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from fusionnet_keras.data.affinities import split_y_true
from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE
from fusionnet_keras.training.losses import pointwise_error

SPATIAL = (1, 2, 3, 4)
KINDS = ("mse", "bce")


def host_call(fn, *tensors, shape=None):
    """``fn(*numpy_arrays)`` -> float32 array of ``shape`` (default: shaped like ``tensors[0]``), run on
    the host inside the training graph of any backend, without gradient."""
    shape = tuple(tensors[0].shape) if shape is None else tuple(shape)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        out = tf.numpy_function(fn, [tf.stop_gradient(t) for t in tensors], tf.float32, stateful=False)
        out.set_shape(shape)
        return out
    if backend == "jax":
        import jax

        spec = jax.ShapeDtypeStruct(shape, np.float32)
        return jax.pure_callback(fn, spec, *(jax.lax.stop_gradient(t) for t in tensors))
    arrays = [ops.convert_to_numpy(ops.stop_gradient(t)) for t in tensors]
    return ops.convert_to_tensor(fn(*arrays))


def malis_loss_weights(y_pred, y_true, constrained=False):
    """Per-edge MALIS pair weights, float32 ``(batch, Z, Y, X, 3, 2)`` (numpy in, numpy out):
    ``[..., 0]`` the weight pulling the edge to 1 (positive pairs), ``[..., 1]`` to 0 (negative pairs).

    Per sample: ``mask * positive / P`` and ``mask * negative / Q``, ``P`` and ``Q`` the masked totals of the
    counts, each divided by the number of non-zero totals (so all weights sum to 1, or 0 without pairs).
    """
    from fusionnet_keras.training.malis import malis_weights

    y_pred = np.asarray(y_pred, np.float32)
    y_true = np.asarray(y_true, np.float32)
    _, mask, labels = split_y_true(y_true)
    weights = np.zeros((*y_pred.shape, 2), np.float32)
    for b in range(y_pred.shape[0]):
        counts = malis_weights(np.moveaxis(y_pred[b], -1, 0), labels[b].astype(np.int64), constrained)
        m = np.moveaxis(mask[b], -1, 0).astype(np.float64)
        totals = [float((m * c).sum()) for c in counts]
        n_terms = sum(total > 0 for total in totals)
        for k, (c, total) in enumerate(zip(counts, totals)):
            if total > 0:
                weights[b, ..., k] = np.moveaxis(m * c / (total * n_terms), 0, -1)
    return weights


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


@keras.saving.register_keras_serializable(package=PACKAGE)
class MalisLoss(keras.losses.Loss):
    """MALIS loss (Turaga et al. 2009), or constrained MALIS (Funke et al. 2018), exact.

    Each positive pair pulls its maximin edge towards 1, each negative pair towards 0 (see the module
    docstring for the weights).

    Args:
        kind: ``"mse"`` (squared error, Turaga et al.) or ``"bce"`` against the pair's target.
        constrained: the positive counts from the affinities capped by the target (kept on target-1
            edges), the negative counts from the affinities floored by it (kept on target-0 edges).
        name: loss name.

    Examples:
        >>> import numpy as np
        >>> from fusionnet_keras.data.affinities import AffinityTargets
        >>> labels = np.zeros((1, 4, 4), np.int32); labels[:, :, :2] = 1; labels[:, :, 2:] = 2
        >>> y_true = AffinityTargets().y_true(labels)[None]
        >>> y_pred = np.full((1, 1, 4, 4, 3), 0.5, "float32")
        >>> round(float(MalisLoss()(y_true, y_pred)), 4)
        0.25
    """

    xla_compatible = False

    def __init__(self, kind="mse", constrained=False, name=None, **kwargs):
        self.kind = _check_kind(kind)
        self.constrained = bool(constrained)
        default = f"{'constrained_' if self.constrained else ''}malis_{kind}"
        super().__init__(name=name or default, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        weights = host_call(functools.partial(malis_loss_weights, constrained=self.constrained), y_pred, y_true,
                            shape=(*y_pred.shape, 2))
        pull_up = weights[..., 0] * pointwise_error(self.kind, y_pred, ops.ones_like(y_pred))
        pull_down = weights[..., 1] * pointwise_error(self.kind, y_pred, ops.zeros_like(y_pred))
        return ops.sum(pull_up + pull_down, axis=SPATIAL)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "constrained": self.constrained}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BalancedBCELoss(keras.losses.Loss):
    """Masked, class-balanced binary cross-entropy on affinities (the baseline of the MALIS paper's
    comparison: "standard affinity learning").

    Within the mask, positive edges (target 1) and negative edges (target 0) get equal total weight
    (half each; all of it when one class is absent); the weights of a sample sum to 1.

    Args:
        name: loss name.

    Examples:
        >>> import numpy as np
        >>> from fusionnet_keras.data.affinities import AffinityTargets
        >>> y_true = AffinityTargets().y_true(np.ones((2, 2, 2), np.int32))[None]  # one object
        >>> round(float(BalancedBCELoss()(y_true, np.full((1, 2, 2, 2, 3), 0.5, "float32"))), 4)  # log(2)
        0.6931
    """

    xla_compatible = True

    def __init__(self, name="balanced_bce", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        target, mask, _ = split_y_true(y_true)
        positive = ops.sum(mask * target, axis=SPATIAL)
        negative = ops.sum(mask * (1.0 - target), axis=SPATIAL)
        share = ops.where((positive > 0) & (negative > 0), 0.5, 1.0)
        per_sample = (-1,) + (1,) * len(SPATIAL)
        w_pos = ops.reshape(share / ops.maximum(positive, 1.0), per_sample)
        w_neg = ops.reshape(share / ops.maximum(negative, 1.0), per_sample)
        weights = mask * (target * w_pos + (1.0 - target) * w_neg)
        return ops.sum(weights * pointwise_error("bce", y_pred, target), axis=SPATIAL)


AFFINITY_LOSSES = {
    "balanced_bce": BalancedBCELoss,
    "malis": functools.partial(MalisLoss, constrained=False),
    "constrained_malis": functools.partial(MalisLoss, constrained=True),
}
