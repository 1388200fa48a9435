"""The U-Net baseline (Ronneberger et al. 2015), built with the same blocks as FusionNet."""

from __future__ import annotations

import keras
from keras import layers

from fusionnet_keras.models.base import (
    _check_input_shape,
    _check_int,
    _SegmentationModel,
)
from fusionnet_keras.models.layers import PACKAGE, ConvBlock, UpConv


@keras.saving.register_keras_serializable(package=PACKAGE)
class UNet(_SegmentationModel):
    """The U-Net baseline (Ronneberger et al. 2015) built like :class:`FusionNet`.

    Two conv blocks (3x3 conv, ReLU, batch norm) per level, 2x2 max-pooling down,
    the same transposed convolution up, long skips merged by **concatenation**,
    the same widths (``nb_filters * 2**level``), depth and sigmoid output, so
    that the paper's FusionNet vs U-Net comparisons can be rerun side by side.

    Args:
        nb_filters: feature maps at the first level (64 in both papers).
        depth: number of max-pooling steps.
        input_shape: ``(height, width, 1)``.
        kernel_initializer: initializer for every convolution.
        bn_momentum: momentum of the batch-norm moving statistics (Keras' default
            0.99; lower values track the weights faster on short schedules).
        name: model name.

    Example:
        >>> import numpy as np
        >>> model = UNet(nb_filters=4, depth=2)
        >>> model(np.zeros((1, 64, 64, 1), "float32")).shape
        (1, 64, 64, 1)
    """

    def __init__(
        self,
        nb_filters=64,
        depth=4,
        input_shape=(None, None, 1),
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        name="unet",
        **kwargs,
    ):
        _check_int("nb_filters", nb_filters, 1)
        _check_int("depth", depth, 0)
        input_shape = tuple(input_shape)
        _check_input_shape(input_shape, depth)
        inputs = keras.Input(shape=input_shape, name="image")
        kw = {"kernel_initializer": kernel_initializer, "bn_momentum": bn_momentum}

        def level(x, name, filters):
            x = ConvBlock(filters, **kw, name=f"{name}_conv1")(x)
            return ConvBlock(filters, **kw, name=f"{name}_conv2")(x)

        x = inputs
        skips = []
        for i in range(depth):
            x = level(x, f"down{i + 1}", nb_filters * 2**i)
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"down{i + 1}_pool")(x)
        x = level(x, "bridge", nb_filters * 2**depth)
        for i in reversed(range(depth)):
            filters = nb_filters * 2**i
            x = UpConv(filters, **kw, name=f"up{i + 1}_deconv")(x)
            x = layers.Concatenate(name=f"up{i + 1}_merge")([skips[i], x])
            x = level(x, f"up{i + 1}", filters)
        outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="output")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_hyperparameters(nb_filters, depth, input_shape, kernel_initializer, bn_momentum)

