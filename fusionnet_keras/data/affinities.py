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

Targets from instance labels ``(Z, Y, X)`` (0 = unlabelled): an edge's target
affinity is 1 where both voxels carry the same non-zero id, else 0; its mask is
0 where the edge does not exist or touches an unlabelled voxel, else 1.

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


def affinities_from_labels(labels):
    """Target affinities and mask, both float32 ``(3, Z, Y, X)``, from instance labels ``(Z, Y, X)``.

    Example:
        >>> labels = np.array([[[1, 1, 0, 2]]])
        >>> aff, mask = affinities_from_labels(labels)
        >>> aff[2, 0, 0].tolist(), mask[2, 0, 0].tolist()
        ([0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    """
    labels = _check_labels(labels)
    affinities = np.zeros((N_AFFINITIES, *labels.shape), np.float32)
    mask = np.zeros_like(affinities)
    for c in range(N_AFFINITIES):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[c] = slice(1, None)
        before[c] = slice(None, -1)
        a, b = labels[tuple(here)], labels[tuple(before)]
        labelled = (a != 0) & (b != 0)
        affinities[(c, *here)] = labelled & (a == b)
        mask[(c, *here)] = labelled
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

    Calling it gives ``(affinities, mask)``, float32 ``(3, Z, Y, X)`` (see the module docstring
    for the convention); :meth:`y_true` gives the packed channels-last array the affinity
    losses take; :meth:`tf_map` does that inside a ``tf.data`` pipeline.

    Example:
        >>> labels = np.zeros((2, 3, 3), np.uint64); labels[:, :2, :2] = 7; labels[:, 2, :] = 9
        >>> aff, mask = AffinityTargets()(labels)
        >>> float(aff[0].sum()), float(mask[0].sum())  # z edges inside 7 (4) and 9 (3)
        (7.0, 7.0)
        >>> y = AffinityTargets().y_true(labels)
        >>> y.shape, sorted(set(y[..., 6].ravel().tolist()))
        ((2, 3, 3, 7), [0.0, 1.0, 2.0])
    """

    def __call__(self, labels):
        return affinities_from_labels(labels)

    def y_true(self, labels):
        """Packed ``(Z, Y, X, 7)`` float32: target affinities, mask, ids relabelled 1..K."""
        labels = relabel_consecutive(labels)
        affinities, mask = affinities_from_labels(labels)
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
