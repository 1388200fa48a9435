"""The building blocks of the 2-D networks, written as Keras layers.

:class:`ConvBlock` (3x3 conv, ReLU, batch norm: the order the FusionNet paper
lists them), :class:`ResidualBlock` (three conv blocks and an identity skip)
and :class:`UpConv` (2x2 stride-2 transposed convolution, ReLU, batch norm).
"""

from __future__ import annotations

import keras
from keras import layers

from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE

# Every layer is channels-last, whatever keras.config.image_data_format() says: (N, H, W, C) is the
# layout of the whole package (predictor, pipeline, augmentation) and the fast one of oneDNN and XLA.
CHANNELS_LAST = "channels_last"


class ConvReluBN(layers.Layer):
    """Base of the conv blocks of every network: a convolution (made by :meth:`_make_conv` of the
    subclass, attribute ``conv``), ReLU, batch normalisation, in the order the FusionNet paper lists them."""

    def __init__(self, filters, kernel_initializer="he_normal", bn_momentum=0.99, gamma_initializer="ones",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.gamma_initializer = gamma_initializer
        self.conv = self._make_conv()
        self.relu = layers.ReLU(dtype=self.dtype_policy, name="relu")
        self.bn = layers.BatchNormalization(
            momentum=bn_momentum, gamma_initializer=gamma_initializer, dtype=self.dtype_policy, name="bn"
        )

    def _make_conv(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.bn(self.relu(self.conv(inputs)), training=training)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_initializer=self.kernel_initializer,
            bn_momentum=self.bn_momentum,
            gamma_initializer=self.gamma_initializer,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(ConvReluBN):
    """3x3 "same" convolution followed by ReLU and batch normalisation.

    Args:
        filters: number of output feature maps.
        kernel_size: convolution window (default 3).

    Keyword Args:
        kernel_initializer: Keras initializer name for the convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        gamma_initializer: initializer of the batch-norm scale ("zeros" makes
            the block output 0 at initialisation; see :class:`ResidualBlock`).

    Examples:
        >>> import numpy as np
        >>> block = ConvBlock(8)
        >>> block(np.zeros((1, 16, 16, 1), "float32")).shape
        (1, 16, 16, 8)
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        self.kernel_size = kernel_size
        super().__init__(filters, **kwargs)

    def _make_conv(self):
        return layers.Conv2D(
            self.filters, self.kernel_size, padding="same", kernel_initializer=self.kernel_initializer,
            data_format=CHANNELS_LAST, dtype=self.dtype_policy, name="conv",
        )

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """Three :class:`ConvBlock` s whose output is added to the input (identity skip).

    The input must already have ``filters`` channels (FusionNet puts a conv
    before every residual block for that reason).

    Args:
        filters: number of feature maps (in and out).
        n_convs: convolutions inside the block (the paper: 3).
        kernel_initializer: Keras initializer name for the convolutions.
        bn_momentum: momentum of the batch-norm moving statistics.
        zero_init: initialise the scale of the last batch norm of the branch to
            zero, so that the block starts as the identity (Goyal et al. 2017,
            "zero-gamma"; the paper is silent on initialisation). Deep residual
            stacks then train faster on short schedules.

    Examples:
        >>> import numpy as np
        >>> ResidualBlock(4)(np.ones((2, 8, 8, 4), "float32")).shape
        (2, 8, 8, 4)
    """

    def __init__(
        self, filters, n_convs=3, kernel_initializer="he_normal", bn_momentum=0.99, zero_init=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.n_convs = n_convs
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.zero_init = bool(zero_init)
        self.convs = [
            ConvBlock(
                filters,
                kernel_initializer=kernel_initializer,
                bn_momentum=bn_momentum,
                gamma_initializer="zeros" if zero_init and i == n_convs - 1 else "ones",
                dtype=self.dtype_policy,
                name=f"conv{i + 1}",
            )
            for i in range(n_convs)
        ]
        self.add = layers.Add(dtype=self.dtype_policy, name="skip_add")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(
                f"ResidualBlock({self.filters}) needs {self.filters} input channels, got {input_shape[-1]}"
            )
        shape = input_shape
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for conv in self.convs:
            x = conv(x, training=training)
        return self.add([inputs, x])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            n_convs=self.n_convs,
            kernel_initializer=self.kernel_initializer,
            bn_momentum=self.bn_momentum,
            zero_init=self.zero_init,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class UpConv(layers.Layer):
    """2x2 stride-2 transposed convolution ("deconv") followed by ReLU and batch norm.

    Args:
        filters: output feature maps.
        kernel_initializer: Keras initializer name.

    Examples:
        >>> import numpy as np
        >>> UpConv(4)(np.zeros((1, 8, 8, 8), "float32")).shape
        (1, 16, 16, 4)
    """

    def __init__(self, filters, kernel_initializer="he_normal", bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        policy = self.dtype_policy
        self.deconv = layers.Conv2DTranspose(
            filters, 2, strides=2, padding="same", kernel_initializer=kernel_initializer, data_format=CHANNELS_LAST,
            dtype=policy, name="deconv"
        )
        self.relu = layers.ReLU(dtype=policy, name="relu")
        self.bn = layers.BatchNormalization(momentum=bn_momentum, dtype=policy, name="bn")

    def build(self, input_shape):
        self.deconv.build(input_shape)
        self.bn.build(self.deconv.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.bn(self.relu(self.deconv(inputs)), training=training)

    def compute_output_shape(self, input_shape):
        return self.deconv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_initializer=self.kernel_initializer, bn_momentum=self.bn_momentum
        )
        return config

