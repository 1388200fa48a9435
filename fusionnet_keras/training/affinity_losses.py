"""Losses of the 3-D affinity networks: MALIS (exact, optionally constrained) and class-balanced BCE.

Both take the packed ``y_true`` of :mod:`fusionnet_keras.data.affinities`
(``(batch, Z, Y, X, 7)``: target affinities, mask, instance ids; made by
:meth:`~fusionnet_keras.data.affinities.AffinityTargets.y_true`) and the
network's ``y_pred`` ``(batch, Z, Y, X, 3)``, and return one value per sample.

* :class:`BalancedBCELoss` (the baseline): binary cross-entropy over the masked
  edges, positive (affinity 1) and negative edges weighted to equal total
  weight per sample.
* :class:`MalisLoss` (Turaga et al. 2009): each masked edge weighted by the
  MALIS pair counts of the *predicted* affinity graph
  (:func:`~fusionnet_keras.training.malis.malis_weights`), positive counts
  normalised to sum 1 and negative counts to sum 1 per sample (their mean when
  both exist), squared error (default) or BCE against the target affinity. With
  ``constrained=True`` (Funke et al. 2018) the positive counts lie on edges of
  target 1 (as long as no object is split into pieces inside the block) and the
  negative counts on edges of target 0 (barring predictions of exactly 1), so
  this is Turaga's pair loss (positive pairs pull their maximin edge to 1,
  negative pairs to 0); without it, it is the MALIS-weighted edge loss (as in
  Lee et al. 2017). The weights are constants of the step (no gradient flows through
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


def host_call(fn, *tensors):
    """``fn(*numpy_arrays)`` -> float32 array shaped like ``tensors[0]``, run on the host inside the
    training graph of any backend, without gradient."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        out = tf.numpy_function(fn, [tf.stop_gradient(t) for t in tensors], tf.float32, stateful=False)
        out.set_shape(tensors[0].shape)
        return out
    if backend == "jax":
        import jax

        spec = jax.ShapeDtypeStruct(tuple(tensors[0].shape), np.float32)
        return jax.pure_callback(fn, spec, *(jax.lax.stop_gradient(t) for t in tensors))
    arrays = [ops.convert_to_numpy(ops.stop_gradient(t)) for t in tensors]
    return ops.convert_to_tensor(fn(*arrays))


def malis_loss_weights(y_pred, y_true, constrained=False):
    """Per-edge MALIS loss weights, float32 ``(batch, Z, Y, X, 3)`` (numpy in, numpy out).

    Per sample: ``mask * (positive / P + negative / Q) / t``, ``P`` and ``Q`` the masked totals of
    the counts and ``t`` the number of non-zero totals (so the weights sum to 1, or 0 without pairs).
    """
    from fusionnet_keras.training.malis import malis_weights

    y_pred = np.asarray(y_pred, np.float32)
    y_true = np.asarray(y_true, np.float32)
    _, mask, labels = split_y_true(y_true)
    weights = np.zeros(y_pred.shape, np.float32)
    for b in range(y_pred.shape[0]):
        counts = malis_weights(np.moveaxis(y_pred[b], -1, 0), labels[b].astype(np.int64), constrained)
        m = np.moveaxis(mask[b], -1, 0).astype(np.float64)
        totals = [float((m * c).sum()) for c in counts]
        terms = [m * c / total for c, total in zip(counts, totals) if total > 0]
        if terms:
            weights[b] = np.moveaxis(sum(terms) / len(terms), 0, -1)
    return weights


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


@keras.saving.register_keras_serializable(package=PACKAGE)
class MalisLoss(keras.losses.Loss):
    """MALIS loss (Turaga et al. 2009), or constrained MALIS (Funke et al. 2018), exact.

    Args:
        kind: ``"mse"`` (squared error, Turaga et al.) or ``"bce"`` against the target affinity.
        constrained: the positive counts from the affinities capped by the target, the negative
            counts from the affinities floored by it (trains more stably).
        name: loss name.

    Example:
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
        weights = host_call(functools.partial(malis_loss_weights, constrained=self.constrained), y_pred, y_true)
        target = split_y_true(y_true)[0]
        return ops.sum(weights * pointwise_error(self.kind, y_pred, target), axis=SPATIAL)

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

    Example:
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
