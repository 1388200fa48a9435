"""Input pipeline: ``tf.data`` datasets of 2-D sections in the 8 orientations (D4).

Data conventions
----------------
* ``images``: float32 ``(N, H, W)`` in ``[0, 1]``; one sample per EM section.
* ``labels``: float32 ``(N, H, W)`` in ``{0, 1}``: 1 = cell interior,
  0 = membrane (ISBI label 255 -> 1, see :func:`binarize_labels`).
* Datasets yield ``(image, label)`` tuples, each ``(B, H + 2p, W + 2p, 1)``
  float32, where ``p`` is the mirror padding (numpy ``"reflect"`` convention,
  edge pixel not repeated: :func:`fusionnet_keras.data.augment.mirror_pad`,
  the convention of the predictor's :func:`fusionnet_keras.inference.tiling.read_block`).

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

import numpy as np

from fusionnet_keras.data.orient import NUM_ORIENTATIONS
from fusionnet_keras.data.targets import binarize_labels, check_pair
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int

__all__ = [
    "orient_tf",
    "make_index_dataset",
    "make_dataset",
    "make_training_data",
]

# orientations in numpy live in fusionnet_keras.data.orient, shared with the predictor


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


def _check_pad(pad, height, width):
    pad = check_int("pad", pad, minimum=0)
    if pad > 0 and pad >= min(height, width):
        raise FusionNetError(
            f"mirror padding of {pad} px needs sections larger than {pad} px, got {height}x{width}"
        )
    return pad


def _pad_and_channel(x, pad):
    """Mirror-pad a section tensor (:func:`fusionnet_keras.data.augment.mirror_pad`) and add a channel axis."""
    from fusionnet_keras.data.augment import mirror_pad

    return mirror_pad(x, pad)[..., None]


def check_dataset_args(images, labels, batch_size, crop, pad, enrich):
    """The checks of :func:`make_dataset` (shared with :class:`fusionnet_keras.data.batches.SectionBatches`).

    Returns ``(images, labels, batch_size, crop, pad, (out_h, out_w))`` with
    float32 images in [0, 1], labels in {0, 1} and the sample size before padding.
    """
    images, labels = _prepare(images, labels)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    _, height, width = images.shape
    if crop is not None:
        crop = check_int("crop", crop, minimum=1)
        if crop > min(height, width):
            raise FusionNetError(
                f"crop size {crop} is larger than the sections ({height}x{width})"
            )
        pad = _check_pad(pad, crop, crop)
        return images, labels, batch_size, crop, pad, (crop, crop)
    pad = _check_pad(pad, height, width)
    if enrich and height != width:
        raise FusionNetError(
            f"8-orientation enrichment needs square sections, got {height}x{width}; "
            "pass crop= or enrich=False"
        )
    return images, labels, batch_size, crop, pad, (height, width)


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (else training uses the numpy batches)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def make_training_data(images, labels, batch_size, pipeline="auto", transform=None, **kwargs):
    """The training batches: :func:`make_dataset` (``tf.data``) or numpy :class:`~fusionnet_keras.data.batches.SectionBatches`.

    ``pipeline``: ``"tf.data"`` (needs the TensorFlow backend: its padding is a
    Keras op), ``"numpy"`` (backend-neutral: no TensorFlow needed, e.g. JAX
    machines), or ``"auto"`` (``tf.data`` under the TensorFlow backend, else
    numpy). Both visit the same (section, orientation) pairs per epoch with
    the same crops and padding conventions (their random draws differ).
    ``transform(x, y)`` maps each batch (e.g. to the training graph's inputs);
    other keyword arguments are those of :func:`make_dataset`.
    """
    import keras

    if pipeline not in ("auto", "tf.data", "numpy"):
        raise FusionNetError(f"pipeline must be auto, tf.data or numpy, got {pipeline!r}")
    tensorflow_backend = keras.backend.backend() == "tensorflow"
    if pipeline == "tf.data" and not tensorflow_backend:
        raise FusionNetError(f"pipeline 'tf.data' needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()}; "
                             "use 'numpy' or 'auto'")
    if pipeline == "tf.data" or (pipeline == "auto" and tensorflow_backend and tensorflow_available()):
        ds = make_dataset(images, labels, batch_size, **kwargs)
        return ds if transform is None else ds.map(transform)
    from fusionnet_keras.data.batches import SectionBatches

    return SectionBatches(images, labels, batch_size, transform=transform, **kwargs)


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

    n = check_int("number of sections", n, minimum=1)
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

    images, labels, batch_size, crop, pad, out_hw = check_dataset_args(images, labels, batch_size, crop, pad, enrich)
    n = images.shape[0]

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
