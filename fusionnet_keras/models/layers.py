"""The building blocks of every network, 2-D and 3-D, written as Keras layers.

One block per idea, for any number of spatial axes (the rank is the length of a
per-axis ``kernel_size`` or ``scale``; an int means 2-D):
:class:`ConvBlock` (convolution, ReLU, batch norm: the order the FusionNet
paper lists them), :class:`ResidualBlock` (conv blocks and an identity skip)
and :class:`UpConv` (transposed convolution with kernel = stride, ReLU, batch
norm). With ``padding="same"`` a block keeps its input size (the 2-D
networks); with ``"valid"`` it loses ``k - 1`` voxels per axis and
convolution, and the residual identity is cropped centrally by as much (the
3-D affinity networks, whose blocks predict exactly what the whole volume
predicts there: :mod:`fusionnet_keras.models.geometry`).

``ConvBlock3D``, ``ResidualBlock3D`` and ``UpConv3D`` are the same blocks
with the 3-D defaults, under the names that the 3-D networks' files give
their weights (:func:`blocks`).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import layers

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE

# Every layer is channels-last, whatever keras.config.image_data_format() says: (N, *spatial, C) is the
# layout of the whole package (predictor, pipeline, augmentation) and the fast one of oneDNN and XLA.
CHANNELS_LAST = "channels_last"
PADDINGS = ("same", "valid")


def rank_of(value) -> int:
    """Spatial axes of a per-axis argument (``kernel_size``, ``scale``, ``pool``): its length; 2 for an int."""
    return len(value) if isinstance(value, (tuple, list)) else 2


def per_axis(value, rank: int) -> tuple:
    """``value`` (an int or one int per axis) as a tuple of ``rank`` ints."""
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * rank


def _per_axis_argument(value):
    """A per-axis argument as the blocks keep it: an int stays an int (2-D), a sequence becomes a tuple of ints."""
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else int(value)


def _as_config(value):
    """A per-axis argument as saved in a config: an int stays an int, a tuple becomes a list."""
    return list(value) if isinstance(value, (tuple, list)) else value


def spatial_layer(kind: str, rank: int):
    """The Keras layer class ``kind`` (``Conv``, ``ConvTranspose``, ``MaxPooling``, ``Cropping``) for ``rank``
    spatial axes, e.g. ``spatial_layer("Conv", 3)`` is ``keras.layers.Conv3D``."""
    if rank not in (1, 2, 3):
        raise FusionNetError(f"the networks have 1, 2 or 3 spatial axes, got {rank}")
    return getattr(layers, f"Conv{rank}DTranspose" if kind == "ConvTranspose" else f"{kind}{rank}D")


def check_padding(padding) -> str:
    if padding not in PADDINGS:
        raise FusionNetError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    return padding


class ConvReluBN(layers.Layer):
    """Base of the blocks of every network: a convolution (made by :meth:`_make_conv` of the
    subclass, stored under the attribute named by :attr:`conv_attribute`), ReLU, batch
    normalisation, in the order the FusionNet paper lists them."""

    #: the attribute holding the convolution: the path of its weights in a saved file
    conv_attribute = "conv"

    def __init__(self, filters, kernel_initializer="he_normal", bn_momentum=0.99, gamma_initializer="ones",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.gamma_initializer = gamma_initializer
        setattr(self, self.conv_attribute, self._make_conv())
        self.relu = layers.ReLU(dtype=self.dtype_policy, name="relu")
        self.bn = layers.BatchNormalization(
            momentum=bn_momentum, gamma_initializer=gamma_initializer, dtype=self.dtype_policy, name="bn"
        )

    def _make_conv(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def convolution(self):
        """The convolution (or transposed convolution) of the block."""
        return getattr(self, self.conv_attribute)

    def build(self, input_shape):
        self.convolution.build(input_shape)
        self.bn.build(self.convolution.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.bn(self.relu(self.convolution(inputs)), training=training)

    def compute_output_shape(self, input_shape):
        return self.convolution.compute_output_shape(input_shape)

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
    """A convolution followed by ReLU and batch normalisation, in 2-D or 3-D.

    Args:
        filters: number of output feature maps.
        kernel_size: convolution window: an int (2-D, that size on both axes) or one odd size per
            spatial axis, e.g. ``(kz, ky, kx)`` (``(1, 3, 3)``: in-plane only).
        padding: ``"same"`` (the output has the input's size) or ``"valid"`` (no padding).

    Keyword Args:
        kernel_initializer: Keras initializer name for the convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        gamma_initializer: initializer of the batch-norm scale ("zeros" makes
            the block output 0 at initialisation; see :class:`ResidualBlock`).

    Examples:
        >>> import numpy as np
        >>> tuple(ConvBlock(8)(np.zeros((1, 16, 16, 1), "float32")).shape)
        (1, 16, 16, 8)
        >>> tuple(ConvBlock(4, (3, 3, 3), padding="valid")(np.zeros((1, 5, 16, 16, 1), "float32")).shape)
        (1, 3, 14, 14, 4)
    """

    def __init__(self, filters, kernel_size=3, padding="same", **kwargs):
        self.kernel_size = _per_axis_argument(kernel_size)
        self.padding = check_padding(padding)
        super().__init__(filters, **kwargs)

    def _make_conv(self):
        return spatial_layer("Conv", rank_of(self.kernel_size))(
            self.filters, self.kernel_size, padding=self.padding, kernel_initializer=self.kernel_initializer,
            data_format=CHANNELS_LAST, dtype=self.dtype_policy, name="conv",
        )

    def get_config(self):
        return {**super().get_config(), "kernel_size": _as_config(self.kernel_size), "padding": self.padding}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """:class:`ConvBlock` s whose output is added to the input (identity skip), in 2-D or 3-D.

    FusionNet's residual block (three conv blocks and an identity skip; Quan et
    al. 2016). The input must already have ``filters`` channels (FusionNet puts
    a conv before every residual block for that reason). With
    ``padding="valid"`` the identity is cropped centrally by what the
    convolutions lose.

    Args:
        filters: number of feature maps (in and out).
        n_convs: convolutions inside the block (the paper: 3).
        kernel_size: of every convolution: an int (2-D) or one odd size per spatial axis.
        padding: ``"same"`` or ``"valid"``.
        kernel_initializer: Keras initializer name for the convolutions.
        bn_momentum: momentum of the batch-norm moving statistics.
        zero_init: initialise the scale of the last batch norm of the branch to
            zero, so that the block starts as the identity (Goyal et al. 2017,
            "zero-gamma"; the paper is silent on initialisation). Deep residual
            stacks then train faster on short schedules.

    Examples:
        >>> import numpy as np
        >>> tuple(ResidualBlock(4)(np.ones((2, 8, 8, 4), "float32")).shape)
        (2, 8, 8, 4)
        >>> block = ResidualBlock(4, kernel_size=(1, 3, 3), padding="valid")
        >>> tuple(block(np.ones((1, 3, 16, 16, 4), "float32")).shape)
        (1, 3, 10, 10, 4)
    """

    conv_block = ConvBlock

    def __init__(self, filters, n_convs=3, kernel_size=3, padding="same", kernel_initializer="he_normal",
                 bn_momentum=0.99, zero_init=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.n_convs = n_convs
        self.kernel_size = _per_axis_argument(kernel_size)
        self.padding = check_padding(padding)
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.zero_init = bool(zero_init)
        self.convs = [
            self.conv_block(
                filters,
                self.kernel_size,
                padding=self.padding,
                kernel_initializer=kernel_initializer,
                bn_momentum=bn_momentum,
                gamma_initializer="zeros" if self.zero_init and i == n_convs - 1 else "ones",
                dtype=self.dtype_policy,
                name=f"conv{i + 1}",
            )
            for i in range(n_convs)
        ]
        if self.padding == "valid":  # each valid convolution loses (k - 1) // 2 voxels per side
            rank = rank_of(self.kernel_size)
            self.crop = spatial_layer("Cropping", rank)(
                tuple(((k - 1) // 2 * n_convs,) * 2 for k in per_axis(self.kernel_size, rank)),
                data_format=CHANNELS_LAST, dtype=self.dtype_policy, name="identity_crop",
            )
        self.add = layers.Add(dtype=self.dtype_policy, name="skip_add")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(
                f"{type(self).__name__}({self.filters}) needs {self.filters} input channels, got {input_shape[-1]}"
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
        identity = self.crop(inputs) if self.padding == "valid" else inputs
        return self.add([identity, x])

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
            kernel_size=_as_config(self.kernel_size),
            padding=self.padding,
            kernel_initializer=self.kernel_initializer,
            bn_momentum=self.bn_momentum,
            zero_init=self.zero_init,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class UpConv(ConvReluBN):
    """Transposed convolution with kernel = stride = ``scale`` ("deconv"), ReLU and batch norm, in 2-D or 3-D.

    Args:
        filters: output feature maps.
        scale: up-sampling factor: an int (2-D, both axes) or one per spatial axis
            (``(1, 2, 2)``: never in z).

    Keyword Args:
        kernel_initializer: Keras initializer name.
        bn_momentum: momentum of the batch-norm moving statistics.
        gamma_initializer: initializer of the batch-norm scale.

    Examples:
        >>> import numpy as np
        >>> tuple(UpConv(4)(np.zeros((1, 8, 8, 8), "float32")).shape)
        (1, 16, 16, 4)
        >>> tuple(UpConv(4, (1, 2, 2))(np.zeros((1, 3, 8, 8, 8), "float32")).shape)
        (1, 3, 16, 16, 4)
    """

    conv_attribute = "deconv"

    def __init__(self, filters, scale=2, **kwargs):
        self.scale = _per_axis_argument(scale)
        super().__init__(filters, **kwargs)

    def _make_conv(self):
        return spatial_layer("ConvTranspose", rank_of(self.scale))(
            self.filters, self.scale, strides=self.scale, padding="valid",
            kernel_initializer=self.kernel_initializer, data_format=CHANNELS_LAST, dtype=self.dtype_policy,
            name="deconv",
        )

    def get_config(self):
        return {**super().get_config(), "scale": _as_config(self.scale)}


# Keras files name the weights of a model's layers after their classes ("conv_block3d_4/conv/vars"), so the
# 3-D networks build their blocks under the names their files were written with: the classes below only
# set the 3-D defaults. ``blocks(rank)`` gives the classes a network of ``rank`` spatial axes builds.


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock3D(ConvBlock):
    """:class:`ConvBlock` with the 3-D defaults (``(3, 3, 3)``, valid), under the name of the 3-D files."""

    def __init__(self, filters, kernel_size=(3, 3, 3), padding="valid", **kwargs):
        super().__init__(filters, kernel_size, padding, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock3D(ResidualBlock):
    """:class:`ResidualBlock` with the 3-D defaults (``(1, 3, 3)``, valid), under the name of the 3-D files."""

    conv_block = ConvBlock3D

    def __init__(self, filters, n_convs=3, kernel_size=(1, 3, 3), padding="valid", **kwargs):
        super().__init__(filters, n_convs, kernel_size, padding, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class UpConv3D(UpConv):
    """:class:`UpConv` with the 3-D default ``scale=(1, 2, 2)``, under the name of the 3-D files."""

    conv_attribute = "conv"

    def __init__(self, filters, scale=(1, 2, 2), **kwargs):
        super().__init__(filters, scale, **kwargs)


class Blocks(NamedTuple):
    conv: type
    residual: type
    up: type


def blocks(rank: int) -> Blocks:
    """The block classes a network with ``rank`` spatial axes is built of (the same blocks; in 3-D under
    the names its saved files use)."""
    return Blocks(ConvBlock3D, ResidualBlock3D, UpConv3D) if rank == 3 else Blocks(ConvBlock, ResidualBlock, UpConv)
