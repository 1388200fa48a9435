"""Affinity graphs of 3-D volumes: THE convention of fusionnet-keras, and training targets.

The convention (the one of waterz and gunpowder; every affinity array of the
package follows it, and the rest of the code links here):

* Voxels of a volume ``(Z, Y, X)`` are the nodes; each is linked to its nearest
  neighbour before it along z, y and x (offsets ``(-1, 0, 0)``, ``(0, -1, 0)``,
  ``(0, 0, -1)``, :data:`OFFSETS`).
* ``affinities`` has shape ``(3, Z, Y, X)``, float32 in [0, 1], channel order
  (z, y, x): ``affinities[c, v]`` is the affinity between voxel ``v`` and
  ``v - e_c``; 1 = same object, 0 = boundary.
  ``affinities[0, z, y, x]`` links ``(z - 1, y, x)`` and ``(z, y, x)``.
* The first slice along each axis has no predecessor: ``affinities[0, 0]``,
  ``affinities[1, :, 0]`` and ``affinities[2, :, :, 0]`` are not edges
  (:func:`edge_mask`); their values mean nothing.
* The networks (:class:`~fusionnet_keras.models.unet3d.UNet3D`,
  :class:`~fusionnet_keras.models.fusionnet3d.FusionNet3D`) output the same
  three channels channels-last, ``(batch, Z, Y, X, 3)``; ``np.moveaxis(out, -1, 0)``
  gives this layout.

Targets from instance labels ``(Z, Y, X)``: an edge's target affinity is 1
where both voxels carry the same non-zero id, else 0. What id 0 means is a
property of the dataset (:data:`LABEL_ZERO`, the config key ``data.label_zero``):

* ``"background"`` (the default; gunpowder's and the MALIS authors' convention):
  0 is background or boundary, a class of its own: every edge touching it has
  target 0 and is trained (mask 1). ``gala-example``, whose 0 marks the
  boundaries between neurons, needs it.
* ``"unknown"``: 0 is unlabelled; every edge touching it is masked out (mask 0,
  never trained), for sparse or partial ground truth.

In both, the mask is 0 where the edge does not exist (:func:`edge_mask`), and
voxels of id 0 are never paired by MALIS (:mod:`fusionnet_keras.training.malis`).

The affinity losses (:mod:`fusionnet_keras.training.affinity_losses`) get their
targets as one channels-last ``y_true`` array ``(batch, Z, Y, X, 7)``
(:data:`Y_TRUE_CHANNELS`): channels 0-2 the target affinities (z, y, x), 3-5 the
mask, 6 the instance ids (relabelled 1..K per sample, so float32 holds them
exactly). :meth:`AffinityTargets.y_true` makes it; :func:`split_y_true` takes it
apart.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.errors import FusionNetError

OFFSETS = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
N_AFFINITIES = 3
Y_TRUE_CHANNELS = 2 * N_AFFINITIES + 1
MAX_FLOAT32_ID = 2**24  # float32 holds every integer up to this exactly
LABEL_ZERO = ("background", "unknown")
"""What label 0 means: ``"background"`` (edges into it have target 0 and are trained) or ``"unknown"``
(edges touching it are masked out)."""


def check_label_zero(label_zero: str) -> str:
    if label_zero not in LABEL_ZERO:
        raise FusionNetError(f"label 0 must mean one of {', '.join(LABEL_ZERO)}, got {label_zero!r}")
    return label_zero


def _check_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise FusionNetError(f"labels must be a 3-D (z, y, x) volume, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels))
                and np.all(labels == np.round(labels))):
            raise FusionNetError(f"labels must hold integer instance ids, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise FusionNetError("labels must be >= 0 (0 = unlabelled)")
    return labels


def edge_mask(shape):
    """Boolean ``(3, Z, Y, X)``: True where the edge exists (the voxel has a predecessor on that axis)."""
    mask = np.ones((N_AFFINITIES, *shape), bool)
    for c in range(N_AFFINITIES):
        index = [c] + [slice(None)] * 3
        index[1 + c] = 0
        mask[tuple(index)] = False
    return mask


def affinities_from_labels(labels, label_zero: str = "background"):
    """Target affinities and mask, both float32 ``(3, Z, Y, X)``, from instance labels ``(Z, Y, X)``.

    ``label_zero``: ``"background"`` (edges touching id 0 have target 0 and mask 1) or ``"unknown"``
    (they are masked out); see the module docstring.

    Examples:
        >>> labels = np.array([[[1, 1, 0, 2]]])
        >>> aff, mask = affinities_from_labels(labels)
        >>> aff[2, 0, 0].tolist(), mask[2, 0, 0].tolist()
        ([0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0])
        >>> affinities_from_labels(labels, "unknown")[1][2, 0, 0].tolist()
        [0.0, 1.0, 0.0, 0.0]
    """
    check_label_zero(label_zero)
    labels = _check_labels(labels)
    affinities = np.zeros((N_AFFINITIES, *labels.shape), np.float32)
    mask = np.zeros_like(affinities)
    for c in range(N_AFFINITIES):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[c] = slice(1, None)
        before[c] = slice(None, -1)
        a, b = labels[tuple(here)], labels[tuple(before)]
        affinities[(c, *here)] = (a != 0) & (a == b)
        mask[(c, *here)] = True if label_zero == "background" else (a != 0) & (b != 0)
    return affinities, mask


def relabel_consecutive(labels):
    """``labels`` with ids renumbered 1..K in increasing order (0 stays 0), as int32
    (:func:`fusionnet_keras.evaluation.postprocess.relabel`)."""
    from fusionnet_keras.evaluation.postprocess import relabel

    out = relabel(_check_labels(labels))[0].astype(np.int32)
    if out.size and out.max() >= MAX_FLOAT32_ID:
        raise FusionNetError(f"a training block holds {out.max()} objects; at most {MAX_FLOAT32_ID - 1} fit float32")
    return out


def split_y_true(y_true):
    """``(affinities, mask, labels)`` from a packed channels-last ``y_true`` (numpy or backend tensor)."""
    n = N_AFFINITIES
    return y_true[..., :n], y_true[..., n : 2 * n], y_true[..., 2 * n]


class AffinityTargets:
    """Transform: instance labels ``(Z, Y, X)`` -> affinity targets, from numpy or a ``tf.data`` map.

    ``label_zero``: what id 0 means, ``"background"`` (default) or ``"unknown"`` (:data:`LABEL_ZERO`).

    Calling it gives ``(affinities, mask)``, float32 ``(3, Z, Y, X)`` (see the module docstring
    for the convention); :meth:`y_true` gives the packed channels-last array the affinity
    losses take; :meth:`tf_map` does that inside a ``tf.data`` pipeline.

    Examples:
        >>> labels = np.zeros((2, 3, 3), np.uint64); labels[:, :2, :2] = 7; labels[:, 2, :] = 9
        >>> aff, mask = AffinityTargets()(labels)
        >>> float(aff[0].sum()), float(mask[0].sum())  # z edges inside 7 (4) and 9 (3); 9 of them exist
        (7.0, 9.0)
        >>> y = AffinityTargets().y_true(labels)
        >>> y.shape, sorted(set(y[..., 6].ravel().tolist()))
        ((2, 3, 3, 7), [0.0, 1.0, 2.0])
    """

    def __init__(self, label_zero: str = "background"):
        self.label_zero = check_label_zero(label_zero)

    def __call__(self, labels):
        return affinities_from_labels(labels, self.label_zero)

    def y_true(self, labels):
        """Packed ``(Z, Y, X, 7)`` float32: target affinities, mask, ids relabelled 1..K."""
        labels = relabel_consecutive(labels)
        affinities, mask = affinities_from_labels(labels, self.label_zero)
        return np.concatenate(
            [np.moveaxis(affinities, 0, -1), np.moveaxis(mask, 0, -1), labels[..., None].astype(np.float32)],
            axis=-1,
        )

    def tf_map(self, labels):
        """:meth:`y_true` on a ``tf.Tensor`` ``(Z, Y, X)`` inside ``tf.data`` (``dataset.map(t.tf_map)``)."""
        import tensorflow as tf

        out = tf.numpy_function(self.y_true, [labels], tf.float32, stateful=False)
        out.set_shape([*labels.shape, Y_TRUE_CHANNELS])
        return out
