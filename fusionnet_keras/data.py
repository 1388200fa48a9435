"""Input pipeline: orientations (D4), ``tf.data`` datasets, splits and label checks.

Data conventions
----------------
* ``images``: float32 ``(N, H, W)`` in ``[0, 1]``; one sample per EM section.
* ``labels``: float32 ``(N, H, W)`` in ``{0, 1}``: 1 = cell interior,
  0 = membrane (ISBI label 255 -> 1, see :func:`binarize_labels`).
* Datasets yield ``(image, label)`` tuples, each ``(B, H + 2p, W + 2p, 1)``
  float32, where ``p`` is the mirror padding (numpy ``"reflect"`` convention,
  edge pixel not repeated - the same convention as
  :func:`fusionnet_keras.augment.mirror_pad` and the predictor).

Orientations
------------
The 8 elements of the dihedral group D4 are numbered ``k = 0..7``::

    orient(x, k) = np.rot90(m, k % 4, axes)   with   m = x if k < 4 else flip(x, axes[1])

i.e. for ``k >= 4`` the section is first mirrored left-right (last axis
reversed) and *then* rotated counter-clockwise by ``k % 4`` quarter turns
(``np.rot90`` semantics). ``unorient`` applies the inverse: rotate back by
``k % 4`` quarter turns, then un-mirror. ``k = 0`` is the identity.
"""

from __future__ import annotations

import re

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.orient import NUM_ORIENTATIONS, orient, orientations, unorient  # noqa: F401

__all__ = [
    "NUM_ORIENTATIONS",
    "orient",
    "unorient",
    "orientations",
    "orient_tf",
    "unorient_tf",
    "binarize_labels",
    "check_pair",
    "make_index_dataset",
    "make_dataset",
    "make_validation_dataset",
    "kfold_splits",
    "section_range",
]



# orientations (numpy) live in fusionnet_keras.orient, shared with the predictor


# --------------------------------------------------------------------------
# orientations (TensorFlow, for tf.data; k may be a tensor)
# --------------------------------------------------------------------------
def _rot90_tf(x, quarter_turns):
    """``np.rot90(x, q, axes=(-2, -1))`` for a tensor ``q`` in 0..3."""
    import tensorflow as tf

    def transpose(t):
        return tf.linalg.matrix_transpose(t)

    branches = [
        lambda: x,
        lambda: tf.reverse(transpose(x), axis=[-2]),
        lambda: tf.reverse(x, axis=[-2, -1]),
        lambda: tf.reverse(transpose(x), axis=[-1]),
    ]
    return tf.switch_case(tf.cast(quarter_turns, tf.int32), branches)


def orient_tf(x, k):
    """TensorFlow version of :func:`orient` over the last two axes (``k`` may be a tensor)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    k = tf.cast(k, tf.int32)
    x = tf.cond(k >= 4, lambda: tf.reverse(x, axis=[-1]), lambda: x)
    return _rot90_tf(x, k % 4)


def unorient_tf(x, k):
    """TensorFlow version of :func:`unorient` over the last two axes."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    k = tf.cast(k, tf.int32)
    x = _rot90_tf(x, (4 - k % 4) % 4)
    return tf.cond(k >= 4, lambda: tf.reverse(x, axis=[-1]), lambda: x)


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


def _check_images(images):
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise FusionNetError(
            f"images must have shape (N, H, W), got shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise FusionNetError("no sections given (the image stack is empty)")
    if not np.issubdtype(images.dtype, np.number):
        raise FusionNetError(f"images must be numeric, got dtype {images.dtype}")
    images = images.astype(np.float32, copy=False)
    if not np.all(np.isfinite(images)):
        raise FusionNetError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise FusionNetError(
            f"images must be scaled to [0, 1], got values in [{lo:g}, {hi:g}]"
        )
    return images


def _prepare(images, labels):
    images_arr = np.asarray(images)
    labels_arr = np.asarray(labels)
    if images_arr.ndim == 2 and labels_arr.ndim == 2:
        images_arr, labels_arr = images_arr[None], labels_arr[None]
    check_pair(images_arr, labels_arr)
    images_arr = _check_images(images_arr)
    labels_arr = binarize_labels(labels_arr)
    return images_arr, labels_arr


def _check_positive_int(value, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise FusionNetError(f"{what} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise FusionNetError(f"{what} must be a positive integer, got {value}")
    return int(value)


def _check_pad(pad, height, width):
    if isinstance(pad, (bool, np.bool_)) or not isinstance(pad, (int, np.integer)):
        raise FusionNetError(f"pad must be a non-negative integer, got {pad!r}")
    pad = int(pad)
    if pad < 0:
        raise FusionNetError(f"pad must be a non-negative integer, got {pad}")
    if pad > 0 and pad >= min(height, width):
        raise FusionNetError(
            f"mirror padding of {pad} px needs sections larger than {pad} px, got {height}x{width}"
        )
    return pad


def _pad_and_channel(x, pad):
    import tensorflow as tf

    if pad:
        x = tf.pad(x, [[pad, pad], [pad, pad]], mode="REFLECT")
    return x[..., None]


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------
def make_index_dataset(n, shuffle=True, seed=0, enrich=True, repeat=False):
    """Dataset of ``(index, k)`` int32 pairs, one epoch = every pair exactly once.

    With ``enrich`` an epoch holds the ``8 * n`` pairs ``(i, k)`` (every section
    in every orientation), otherwise the ``n`` pairs ``(i, 0)``. With
    ``shuffle`` the pairs are permuted by a full-buffer, seeded shuffle that
    is re-drawn every epoch (same seed -> same sequence of epochs).
    ``repeat=True`` repeats epochs forever.
    """
    import tensorflow as tf

    n = _check_positive_int(n, "number of sections")
    per = NUM_ORIENTATIONS if enrich else 1
    total = n * per
    ds = tf.data.Dataset.range(total)
    if shuffle:
        ds = ds.shuffle(total, seed=int(seed), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def split(p):
        p = tf.cast(p, tf.int32)
        return p // per, p % per

    return ds.map(split)


def make_dataset(
    images,
    labels,
    batch_size,
    shuffle=True,
    seed=0,
    enrich=True,
    pad=64,
    repeat=False,
    crop=None,
    drop_remainder=False,
):
    """Training dataset of mirror-padded ``(image, label)`` batches.

    One epoch visits every ``(section, orientation)`` pair exactly once
    (``8 * N`` samples with ``enrich``, ``N`` without), in an order fixed by
    ``seed`` and re-shuffled each epoch (see :func:`make_index_dataset`).
    Each sample is oriented (:func:`orient_tf`), optionally randomly cropped
    to ``crop x crop`` (seeded, new offsets every epoch), mirror-padded by
    ``pad`` px on each side (``reflect``), given a channel axis, then batched
    and prefetched. Output shapes: ``(B, S + 2 * pad, S + 2 * pad, 1)`` with
    ``S = crop`` or the section size. Enrichment of non-square sections needs
    ``crop`` (rotations would change the shape).
    """
    import tensorflow as tf

    images, labels = _prepare(images, labels)
    batch_size = _check_positive_int(batch_size, "batch_size")
    n, height, width = images.shape
    if crop is not None:
        crop = _check_positive_int(crop, "crop")
        if crop > min(height, width):
            raise FusionNetError(
                f"crop size {crop} is larger than the sections ({height}x{width})"
            )
        pad = _check_pad(pad, crop, crop)
        out_hw = (crop, crop)
    else:
        pad = _check_pad(pad, height, width)
        if enrich and height != width:
            raise FusionNetError(
                f"8-orientation enrichment needs square sections, got {height}x{width}; "
                "pass crop= or enrich=False"
            )
        out_hw = (height, width)

    image_t = tf.constant(images)
    label_t = tf.constant(labels)
    pairs = make_index_dataset(n, shuffle=shuffle, seed=seed, enrich=enrich, repeat=repeat)

    def load(index, k):
        img = orient_tf(tf.gather(image_t, index), k)
        lab = orient_tf(tf.gather(label_t, index), k)
        return img, lab

    def finish(img, lab):
        img = tf.ensure_shape(img, out_hw)
        lab = tf.ensure_shape(lab, out_hw)
        return _pad_and_channel(img, pad), _pad_and_channel(lab, pad)

    if crop is None:
        ds = pairs.map(lambda i, k: finish(*load(i, k)), num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
    else:
        randoms = tf.data.Dataset.random(seed=int(seed) + 1, rerandomize_each_iteration=True)

        def load_crop(pair, r):
            index, k = pair
            img, lab = load(index, k)
            h = tf.shape(img)[0]
            w = tf.shape(img)[1]
            u = tf.random.stateless_uniform(
                [2], seed=tf.stack([r, tf.constant(int(seed), tf.int64)]), dtype=tf.float32
            )
            oy = tf.minimum(tf.cast(u[0] * tf.cast(h - crop + 1, tf.float32), tf.int32), h - crop)
            ox = tf.minimum(tf.cast(u[1] * tf.cast(w - crop + 1, tf.float32), tf.int32), w - crop)
            img = tf.slice(img, [oy, ox], [crop, crop])
            lab = tf.slice(lab, [oy, ox], [crop, crop])
            return finish(img, lab)

        ds = tf.data.Dataset.zip((pairs, randoms)).map(
            load_crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_validation_dataset(images, labels, batch_size, pad=64):
    """Validation dataset: sections in order, no orientation, no crop, no shuffle.

    Yields mirror-padded ``(image, label)`` batches of shape
    ``(B, H + 2 * pad, W + 2 * pad, 1)``.
    """
    import tensorflow as tf

    images, labels = _prepare(images, labels)
    batch_size = _check_positive_int(batch_size, "batch_size")
    _, height, width = images.shape
    pad = _check_pad(pad, height, width)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.map(lambda i, l: (_pad_and_channel(i, pad), _pad_and_channel(l, pad)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------
def kfold_splits(n, k=3, seed=0):
    """Seeded k-fold split of ``n`` sections: list of ``(train_idx, val_idx)``.

    The indices are shuffled with ``numpy.random.default_rng(seed)`` and cut
    into ``k`` folds of near-equal size; each index is in exactly one
    validation fold. Index arrays are sorted int64.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise FusionNetError(f"number of sections must be a non-negative integer, got {n!r}")
    n = int(n)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 2:
        raise FusionNetError(f"k-fold cross-validation needs k >= 2 folds, got {k!r}")
    k = int(k)
    if n < k:
        raise FusionNetError(
            f"need at least {k} sections for {k}-fold cross-validation, got {n}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    splits = []
    for i, fold in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        splits.append((np.sort(train).astype(np.int64), np.sort(fold).astype(np.int64)))
    return splits


_RANGE_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def section_range(spec, n):
    """Parse a 1-based inclusive section spec into 0-based indices.

    ``"1-20"`` -> ``[0, ..., 19]``; single numbers and comma-separated parts
    (``"1-10,15,21-30"``) are accepted. Indices keep the given order; parts
    out of ``1..n``, reversed ranges and repeated sections raise
    :class:`FusionNetError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise FusionNetError(f"invalid section range {spec!r}; expected e.g. '1-20'")
    indices = []
    for part in spec.split(","):
        match = _RANGE_PART.match(part)
        if not match:
            raise FusionNetError(f"invalid section range {spec!r}; expected e.g. '1-20'")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if start > end:
            raise FusionNetError(f"invalid section range {spec!r}: {start} > {end}")
        if start < 1 or end > n:
            raise FusionNetError(
                f"section range {spec!r} is out of range: the stack has {n} sections (1-{n})"
            )
        indices.extend(range(start - 1, end))
    if len(set(indices)) != len(indices):
        raise FusionNetError(f"section range {spec!r} lists a section more than once")
    return np.asarray(indices, dtype=np.int64)
