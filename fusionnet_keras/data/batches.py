"""Backend-neutral training batches: the ``tf.data`` pipeline's sampling in numpy, as a Keras ``PyDataset``.

Machines without TensorFlow (e.g. JAX on an accelerator) train through
:class:`SectionBatches`; :func:`fusionnet_keras.data.pipeline.make_training_data`
picks it when TensorFlow is not installed. It follows
:func:`fusionnet_keras.data.pipeline.make_dataset` rule for rule:

* one epoch visits every ``(section, orientation)`` pair once (``8 * N`` with
  ``enrich``, else ``N``), in a seeded permutation drawn anew every epoch;
* each sample is oriented (:func:`fusionnet_keras.data.orient.orient`),
  optionally cropped at a seeded uniform offset (new every epoch),
  mirror-padded by ``pad`` px (``numpy.pad(mode="reflect")``, the convention of
  :func:`fusionnet_keras.data.augment.mirror_pad`) and given a channel axis;
* samples are batched in order; with ``repeat`` the epochs follow each other
  without a break (batches may straddle two epochs, as ``repeat()`` before
  ``batch()`` does), else the last batch is short unless ``drop_remainder``.

The random draws are numpy's (``default_rng((seed, epoch))``), not
TensorFlow's, so the two pipelines give the same kind of stream, not the same
numbers. Every batch is a pure function of its index, so the order in which
Keras asks for batches does not matter.
"""

from __future__ import annotations

import keras
import numpy as np

from fusionnet_keras.data.orient import NUM_ORIENTATIONS, orient
from fusionnet_keras.data.pipeline import check_dataset_args

__all__ = ["SectionBatches"]


class SectionBatches(keras.utils.PyDataset):
    """Mirror-padded ``(image, label)`` training batches, ``(B, S + 2 pad, S + 2 pad, 1)`` float32.

    Same arguments and checks as :func:`fusionnet_keras.data.pipeline.make_dataset`,
    plus ``transform(x, y)``, applied to every batch (e.g. to build the
    training graph's inputs).

    Examples:
        >>> import numpy as np
        >>> images = np.random.default_rng(0).random((2, 16, 16), dtype=np.float32)
        >>> labels = (images > 0.5).astype(np.float32)
        >>> ds = SectionBatches(images, labels, batch_size=3, pad=4, seed=1)
        >>> len(ds), ds[0][0].shape, ds[5][0].shape   # 16 pairs: 5 full batches and one of 1
        (6, (3, 24, 24, 1), (1, 24, 24, 1))
    """

    def __init__(self, images, labels, batch_size, shuffle=True, seed=0, enrich=True, pad=64, repeat=False,
                 crop=None, drop_remainder=False, transform=None):
        super().__init__()
        checked = check_dataset_args(images, labels, batch_size, crop, pad, enrich)
        self.images, self.labels, self.batch_size, self.crop, self.pad, self.sample_shape = checked
        self.shuffle, self.seed, self.repeat = bool(shuffle), int(seed), bool(repeat)
        self.drop_remainder, self.transform = bool(drop_remainder), transform
        self.per_section = NUM_ORIENTATIONS if enrich else 1
        self.epoch_size = len(self.images) * self.per_section
        self._epochs = {}

    @property
    def num_batches(self):
        """Batches of one pass (``None``: endless with ``repeat``)."""
        if self.repeat:
            return None
        full, rest = divmod(self.epoch_size, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def __len__(self):
        if self.repeat:
            raise TypeError("a repeated SectionBatches is endless")
        return self.num_batches

    def _epoch(self, epoch):
        """The pair order and crop offsets of one epoch (the last two epochs asked for are kept)."""
        if epoch in self._epochs:
            return self._epochs[epoch]
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(self.epoch_size) if self.shuffle else np.arange(self.epoch_size)
        offsets = None
        if self.crop is not None:
            h, w = self.images.shape[1:]
            offsets = np.stack([rng.integers(0, h - self.crop + 1, self.epoch_size),
                                rng.integers(0, w - self.crop + 1, self.epoch_size)], axis=1)
        self._epochs = {e: v for e, v in self._epochs.items() if e == epoch - 1}
        self._epochs[epoch] = order, offsets
        return order, offsets

    def sample(self, position):
        """``(image, label)`` of the ``position``-th sample of the stream, each ``(H, W, 1)``."""
        epoch, i = divmod(int(position), self.epoch_size)
        order, offsets = self._epoch(epoch)
        section, k = divmod(int(order[i]), self.per_section)
        out = []
        for volume in (self.images, self.labels):
            x = orient(volume[section], k)
            if offsets is not None:
                oy, ox = offsets[i]
                x = x[oy:oy + self.crop, ox:ox + self.crop]
            x = np.pad(x, self.pad, mode="reflect") if self.pad else x
            out.append(np.ascontiguousarray(x, dtype=np.float32)[..., None])
        return tuple(out)

    def __getitem__(self, index):
        start = int(index) * self.batch_size
        stop = start + self.batch_size
        if not self.repeat:
            if index >= self.num_batches or index < 0:
                raise IndexError(f"batch {index} out of range ({self.num_batches} batches)")
            stop = min(stop, self.epoch_size)
        samples = [self.sample(p) for p in range(start, stop)]
        x, y = (np.stack(part) for part in zip(*samples))
        return (x, y) if self.transform is None else self.transform(x, y)
