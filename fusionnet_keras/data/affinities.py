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

**Long-range offsets** (``model.offsets``; for the mutex watershed,
:mod:`fusionnet_keras.segmentation.mws`): a network may predict more channels,
one per offset ``(dz, dy, dx)``; channel ``c`` at ``v`` is then the affinity of
``v`` and ``v + offsets[c]`` (the nearest-neighbour channels are the case
``-e_c``). The list always starts with the three of :data:`OFFSETS`, so the
first three channels are the nearest-neighbour graph every agglomeration reads
(:func:`check_network_offsets`). Targets and mask of every channel follow the
rules above (an edge exists where ``v + offset`` lies in the volume; label 0
as for the nearest neighbours); ``y_true`` then has ``2 * len(offsets) + 1``
channels: targets, mask, ids.
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


def check_network_offsets(offsets) -> tuple[tuple[int, int, int], ...]:
    """The affinity offsets of a network: three integers each, not all 0, no repeats, starting with the
    three nearest neighbours of :data:`OFFSETS` (the channels every agglomeration reads); a one-line error
    otherwise. ``None`` gives :data:`OFFSETS`.

    Example:
        >>> check_network_offsets([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -9, 0]])[3:]
        ((0, -9, 0),)
    """
    if offsets is None:
        return OFFSETS
    try:
        offsets = tuple(tuple(int(x) for x in o) for o in offsets)
    except (TypeError, ValueError):
        raise FusionNetError(f"offsets must be a list of [dz, dy, dx] integer triples, got {offsets!r}") from None
    bad = [o for o in offsets if len(o) != 3 or o == (0, 0, 0)]
    if bad:
        raise FusionNetError(f"an offset must be three integers [dz, dy, dx], not all 0; got {list(bad[0])}")
    if offsets[:N_AFFINITIES] != OFFSETS:
        raise FusionNetError("offsets must start with the 3 nearest neighbours [-1, 0, 0], [0, -1, 0], [0, 0, -1] "
                             f"(the channels the agglomerations read), got {[list(o) for o in offsets[:3]]}")
    if len(set(offsets)) != len(offsets):
        raise FusionNetError(f"offsets repeat an offset: {[list(o) for o in offsets]}")
    return offsets


def offset_reach(offsets=OFFSETS) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(before, after)``: per axis (z, y, x), how far the offsets reach before and after a voxel.

    Example:
        >>> offset_reach([(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 9, -9)])
        ((1, 1, 9), (0, 9, 0))
    """
    before = tuple(max(0, *(-o[a] for o in offsets)) for a in range(3))
    after = tuple(max(0, *(o[a] for o in offsets)) for a in range(3))
    return before, after


def edge_mask(shape, offsets=OFFSETS):
    """Boolean ``(C, Z, Y, X)``: True where the edge of channel ``c`` exists (``v + offsets[c]`` lies in the
    volume; for :data:`OFFSETS`: the voxel has a predecessor on that axis)."""
    mask = np.zeros((len(offsets), *shape), bool)
    for c, (here, _) in enumerate(offset_pairs(shape, offsets)):
        mask[(c, *here)] = True
    return mask


def offset_pairs(shape, offsets, step=(1, 1, 1)):
    """Per offset ``o``: the slices ``(here, there)`` of the voxels ``v`` whose ``v + o`` lies in ``shape``
    (every ``step`` voxels along each axis), and of those ``v + o``: ``array[here]`` and ``array[there]``
    are the two ends of the offset's edges.

    Example:
        >>> here, there = next(offset_pairs((1, 1, 5), [(0, 0, -3)]))
        >>> np.arange(5)[here[2]].tolist(), np.arange(5)[there[2]].tolist()
        ([3, 4], [0, 1])
    """
    for offset in offsets:
        here = tuple(slice(max(0, -o), max(max(0, -o), n - max(0, o)), int(s))
                     for o, n, s in zip(offset, shape, step))
        there = tuple(slice(h.start + o, h.stop + o, h.step) for h, o in zip(here, offset))
        yield here, there


def affinities_from_labels(labels, label_zero: str = "background", offsets=OFFSETS):
    """Target affinities and mask, both float32 ``(C, Z, Y, X)``, from instance labels ``(Z, Y, X)``.

    ``label_zero``: ``"background"`` (edges touching id 0 have target 0 and mask 1) or ``"unknown"``
    (they are masked out); see the module docstring. ``offsets``: one channel per offset (default the
    three nearest neighbours, :data:`OFFSETS`); channel ``c`` at ``v`` links ``v`` and ``v + offsets[c]``.

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
    affinities = np.zeros((len(offsets), *labels.shape), np.float32)
    mask = np.zeros_like(affinities)
    for c, (here, there) in enumerate(offset_pairs(labels.shape, offsets)):
        a, b = labels[here], labels[there]
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
    """``(affinities, mask, labels)`` from a packed channels-last ``y_true`` (numpy or backend tensor) of
    ``2 * C + 1`` channels (``C`` affinity channels)."""
    n = (int(y_true.shape[-1]) - 1) // 2
    return y_true[..., :n], y_true[..., n : 2 * n], y_true[..., 2 * n]


class AffinityTargets:
    """Transform: instance labels ``(Z, Y, X)`` -> affinity targets, from numpy or a ``tf.data`` map.

    ``label_zero``: what id 0 means, ``"background"`` (default) or ``"unknown"`` (:data:`LABEL_ZERO`).
    ``offsets``: the network's channels (default the three nearest neighbours; see
    :func:`check_network_offsets`).

    Calling it gives ``(affinities, mask)``, float32 ``(C, Z, Y, X)`` (see the module docstring
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

    def __init__(self, label_zero: str = "background", offsets=None):
        self.label_zero = check_label_zero(label_zero)
        self.offsets = check_network_offsets(offsets)

    @property
    def channels(self) -> int:
        """Channels of :meth:`y_true`: ``2 * len(offsets) + 1``."""
        return 2 * len(self.offsets) + 1

    def __call__(self, labels):
        return affinities_from_labels(labels, self.label_zero, self.offsets)

    def y_true(self, labels):
        """Packed ``(Z, Y, X, 2C + 1)`` float32 (7 channels for the nearest neighbours): target affinities,
        mask, ids relabelled 1..K."""
        labels = relabel_consecutive(labels)
        affinities, mask = affinities_from_labels(labels, self.label_zero, self.offsets)
        return np.concatenate(
            [np.moveaxis(affinities, 0, -1), np.moveaxis(mask, 0, -1), labels[..., None].astype(np.float32)],
            axis=-1,
        )

    def tf_map(self, labels):
        """:meth:`y_true` on a ``tf.Tensor`` ``(Z, Y, X)`` inside ``tf.data`` (``dataset.map(t.tf_map)``)."""
        import tensorflow as tf

        out = tf.numpy_function(self.y_true, [labels], tf.float32, stateful=False)
        out.set_shape([*labels.shape, self.channels])
        return out
