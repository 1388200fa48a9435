"""The U-Net baseline (Ronneberger et al. 2015), built with the same blocks as FusionNet."""

from __future__ import annotations

import functools

import keras

from fusionnet_keras.models.base import SegmentationModel, same_kernels, u_graph
from fusionnet_keras.models.layers import PACKAGE, blocks


def unet_level(x, name, filters, kernels, first_dtype, *, padding, dtype, **kw):
    """One U-Net level on ``x`` (2-D or 3-D): a conv block per kernel size in ``kernels``, the first in
    ``first_dtype``. ``kw``: ``kernel_initializer`` and ``bn_momentum``."""
    conv = blocks(len(x.shape) - 2).conv
    for j, kernel in enumerate(kernels):
        x = conv(filters, kernel, padding=padding, **kw, dtype=first_dtype if j == 0 else dtype,
                 name=f"{name}_conv{j + 1}")(x)
    return x


@keras.saving.register_keras_serializable(package=PACKAGE)
class UNet(SegmentationModel):
    """The U-Net baseline (Ronneberger et al. 2015) built like :class:`FusionNet`.

    Two conv blocks (3x3 conv, ReLU, batch norm) per level, 2x2 max-pooling down,
    the same transposed convolution up, long skips merged by **concatenation**,
    the same widths (``nb_filters * 2**level``), depth and sigmoid output, so
    that the paper's FusionNet vs U-Net comparisons (Quan et al. 2016, Tables
    2 and 3) can be rerun side by side.

    Args:
        nb_filters: feature maps at the first level (64 in both papers).
        depth: number of max-pooling steps.
        image_shape: ``(height, width, 1)``; ``None`` sizes accept any multiple of ``2**depth``.
        kernel_initializer: initializer for every convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        dtype: dtype policy of every layer (default: the global policy); the
            input block and the sigmoid output stay float32
            (:mod:`fusionnet_keras.models.precision`). Saved with the model.
        name: model name.

    Examples:
        >>> import numpy as np
        >>> model = UNet(nb_filters=4, depth=2)
        >>> model(np.zeros((1, 64, 64, 1), "float32")).shape
        (1, 64, 64, 1)
    """

    def __init__(
        self,
        nb_filters=64,
        depth=4,
        image_shape=(None, None, 1),
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        dtype=None,
        name="unet",
        **kwargs,
    ):
        nb_filters, depth, image_shape, inputs = self._checked_input(nb_filters, depth, image_shape, kwargs)
        kw = {"kernel_initializer": kernel_initializer, "bn_momentum": bn_momentum, "dtype": dtype}
        level = functools.partial(unet_level, padding="same", **kw)
        # the long skip is a concatenation
        outputs = u_graph(inputs, same_kernels([3, 3], depth), level, "concat", nb_filters, pool=2, head=(1, 1),
                          **kw)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_hyperparameters(nb_filters, depth, image_shape, kernel_initializer, bn_momentum, dtype)
