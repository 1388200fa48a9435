"""Building blocks of the 3-D affinity networks: valid convolutions, xy-only up-sampling.

Channels-last tensors ``(batch, z, y, x, channels)``. Every convolution is
*valid* (no padding), so that a block of a volume predicts exactly what the
whole volume predicts there (see :mod:`fusionnet_keras.models.geometry`).
The order conv, ReLU, batch norm is the one of the 2-D blocks
(:mod:`fusionnet_keras.models.layers`).
"""

from __future__ import annotations

import keras
from keras import layers

from fusionnet_keras.models.layers import ConvReluBN
from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock3D(ConvReluBN):
    """Valid 3-D convolution followed by ReLU and batch normalisation.

    Args:
        filters: number of output feature maps.
        kernel_size: ``(kz, ky, kx)``, odd sizes (``(1, 3, 3)``: in-plane only).

    Keyword Args:
        kernel_initializer: Keras initializer name for the convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        gamma_initializer: initializer of the batch-norm scale.

    Examples:
        >>> import numpy as np
        >>> tuple(ConvBlock3D(4, (3, 3, 3))(np.zeros((1, 5, 16, 16, 1), "float32")).shape)
        (1, 3, 14, 14, 4)
    """

    def __init__(self, filters, kernel_size=(3, 3, 3), **kwargs):
        self.kernel_size = tuple(int(k) for k in kernel_size)
        super().__init__(filters, **kwargs)

    def _make_conv(self):
        return layers.Conv3D(
            self.filters, self.kernel_size, padding="valid", kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="conv",
        )

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock3D(layers.Layer):
    """Valid :class:`ConvBlock3D` s added to their input cropped to the same size (identity skip).

    FusionNet's residual block (three conv blocks and an identity skip; Quan
    et al. 2016) without padding: the identity is cropped centrally by what the
    convolutions lose.

    Args:
        filters: feature maps (in and out).
        n_convs: convolutions inside the block (FusionNet: 3).
        kernel_size: ``(kz, ky, kx)`` of every convolution.
        kernel_initializer: Keras initializer name.
        bn_momentum: momentum of the batch-norm moving statistics.
        zero_init: start the block as the identity (scale of the last batch norm
            of the branch initialised to 0, like :class:`~fusionnet_keras.models.layers.ResidualBlock`).

    Examples:
        >>> import numpy as np
        >>> tuple(ResidualBlock3D(4, kernel_size=(1, 3, 3))(np.ones((1, 3, 16, 16, 4), "float32")).shape)
        (1, 3, 10, 10, 4)
    """

    def __init__(
        self,
        filters,
        n_convs=3,
        kernel_size=(1, 3, 3),
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        zero_init=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.n_convs = n_convs
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.zero_init = bool(zero_init)
        self.convs = [
            ConvBlock3D(
                filters,
                self.kernel_size,
                kernel_initializer=kernel_initializer,
                bn_momentum=bn_momentum,
                gamma_initializer="zeros" if self.zero_init and i == n_convs - 1 else "ones",
                dtype=self.dtype_policy,
                name=f"conv{i + 1}",
            )
            for i in range(n_convs)
        ]
        # valid convolutions lose (k - 1) // 2 voxels per side each: crop the identity by as much
        self.crop = layers.Cropping3D(
            tuple(((k - 1) // 2 * n_convs,) * 2 for k in self.kernel_size), dtype=self.dtype_policy,
            name="identity_crop",
        )
        self.add = layers.Add(dtype=self.dtype_policy, name="skip_add")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(
                f"ResidualBlock3D({self.filters}) needs {self.filters} input channels, got {input_shape[-1]}"
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
        return self.add([self.crop(inputs), x])

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for conv in self.convs:
            shape = conv.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            n_convs=self.n_convs,
            kernel_size=list(self.kernel_size),
            kernel_initializer=self.kernel_initializer,
            bn_momentum=self.bn_momentum,
            zero_init=self.zero_init,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class UpConv3D(ConvReluBN):
    """Transposed convolution with kernel = stride = ``scale`` (xy only by default), ReLU, batch norm.

    Args:
        filters: output feature maps.
        scale: per axis up-sampling factor (``(1, 2, 2)``: never in z).

    Keyword Args:
        kernel_initializer: Keras initializer name.
        bn_momentum: momentum of the batch-norm moving statistics.
        gamma_initializer: initializer of the batch-norm scale.

    Examples:
        >>> import numpy as np
        >>> tuple(UpConv3D(4)(np.zeros((1, 3, 8, 8, 8), "float32")).shape)
        (1, 3, 16, 16, 4)
    """

    def __init__(self, filters, scale=(1, 2, 2), **kwargs):
        self.scale = tuple(int(k) for k in scale)
        super().__init__(filters, **kwargs)

    def _make_conv(self):
        return layers.Conv3DTranspose(
            self.filters, self.scale, strides=self.scale, padding="valid",
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="deconv",
        )

    def get_config(self):
        return {**super().get_config(), "scale": list(self.scale)}
