"""FusionNet and chained FusionNetW^k (Keras 3, backend-agnostic).

FusionNet is described in Quan, Hildebrand and Jeong, *FusionNet: a deep fully
residual convolutional neural network for image segmentation in connectomics*
(arXiv 1612.05360, 2016; Frontiers in Computer Science 3:613981, 2021).

Architecture (the paper's Table 1, ``nb_filters=64``, ``depth=4``):

=============  ==========================  =================
level          ingredients                 output (640 input)
=============  ==========================  =================
down 1         conv + res + conv, maxpool  640x640x64
down 2         conv + res + conv, maxpool  320x320x128
down 3         conv + res + conv, maxpool  160x160x256
down 4         conv + res + conv, maxpool  80x80x512
bridge         conv + res + conv           40x40x1024
up 4..1        deconv + add + conv+res+conv 80x80x512 .. 640x640x64
output         1x1 conv, sigmoid           640x640x1
=============  ==========================  =================

Choices where the paper is silent (documented in ``docs/models.md``):

* every conv is 3x3 "same", followed by ReLU then batch normalisation, in the
  order the paper lists them ("a regular convolutional layer followed by
  rectified linear unit activation and batch normalization");
* the residual block is three such conv blocks whose output is added to the
  block's input (identity skip);
* the deconvolution is a 2x2, stride-2 transposed convolution to half the
  feature maps, followed by ReLU and batch normalisation, and is merged with the
  encoder feature map of the same level (the output of that level's last conv,
  before pooling) by addition;
* the output is a 1x1 convolution to one channel with a sigmoid, high = cell
  interior (the ISBI convention).
"""

from __future__ import annotations

import functools

import keras

from fusionnet_keras.models.base import SegmentationModel, same_kernels, u_graph
from fusionnet_keras.models.layers import PACKAGE, blocks
from fusionnet_keras.utils.validate import check_int

#: the kernel sizes of a 2-D FusionNet level: conv, the residual block's three convs, conv
LEVEL_KERNELS = [3] * 5


def fusionnet_level(x, name, filters, kernels, first_dtype, *, padding, zero_init, dtype, **kw):
    """One FusionNet level on ``x`` (2-D or 3-D): conv + residual block + conv, with the kernel sizes
    ``kernels`` (the first conv's, the residual block's ``len(kernels) - 2`` convs' (all
    ``kernels[1]``), the last conv's); the first conv in ``first_dtype``. ``kw``: ``kernel_initializer``
    and ``bn_momentum``."""
    block = blocks(len(x.shape) - 2)
    x = block.conv(filters, kernels[0], padding=padding, **kw, dtype=first_dtype, name=f"{name}_conv_in")(x)
    x = block.residual(filters, n_convs=len(kernels) - 2, kernel_size=kernels[1], padding=padding,
                       zero_init=zero_init, **kw, dtype=dtype, name=f"{name}_res")(x)
    return block.conv(filters, kernels[-1], padding=padding, **kw, dtype=dtype, name=f"{name}_conv_out")(x)


def _fusionnet_graph(x, prefix, nb_filters, depth, kernel_initializer, bn_momentum, zero_init_residual, dtype):
    """Build one FusionNet unit on tensor ``x``; return its sigmoid output tensor."""
    kw = {"kernel_initializer": kernel_initializer, "bn_momentum": bn_momentum, "dtype": dtype}
    level = functools.partial(fusionnet_level, padding="same", zero_init=zero_init_residual, **kw)
    # the long skip is a summation
    return u_graph(x, same_kernels(LEVEL_KERNELS, depth), level, "add", nb_filters, pool=2, head=(1, 1),
                   prefix=prefix, **kw)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionNet(SegmentationModel):
    """FusionNet: a deep fully residual U-shaped network (Quan et al. 2016, Table 1).

    Each of the ``2 * depth + 1`` levels is conv + residual block (3 convs and an
    identity skip) + conv; 2x2 max-pooling goes down, a stride-2 transposed
    convolution goes up and is merged with the encoder feature map of the same
    level by **addition** (the long skip). Every conv is followed by ReLU and
    batch normalisation. A final 1x1 conv with a sigmoid gives the probability
    of cell interior (1) versus membrane (0).

    Args:
        nb_filters: feature maps at the first level; doubled at every level down
            (the paper: 64, giving 64..1024).
        depth: number of max-pooling steps (the paper: 4, i.e. 5 resolution levels).
        image_shape: ``(height, width, 1)``; ``None`` sizes accept any multiple of
            ``2**depth`` (the paper trains on 640x640: 512 + 2 * 64 mirror padding).
        kernel_initializer: initializer for every convolution.
        bn_momentum: momentum of the batch-norm moving statistics (Keras' default
            0.99; lower values track the weights faster on short schedules).
        zero_init_residual: start every residual block as the identity (scale of
            the last batch norm of its branch initialised to 0; see
            :class:`ResidualBlock`). The paper is silent; default False.
        dtype: dtype policy of every layer (e.g. ``"mixed_bfloat16"``; default:
            the global policy); the input block and the sigmoid output stay
            float32 (:mod:`fusionnet_keras.models.precision`). Saved with the model.
        name: model name.

    Examples:
        >>> import numpy as np
        >>> model = FusionNet(nb_filters=4, depth=2, image_shape=(64, 64, 1))
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
        zero_init_residual=False,
        dtype=None,
        name="fusionnet",
        **kwargs,
    ):
        nb_filters, depth, image_shape, inputs = self._checked_input(nb_filters, depth, image_shape, kwargs)
        zero_init_residual = bool(zero_init_residual)
        outputs = _fusionnet_graph(
            inputs, "", nb_filters, depth, kernel_initializer, bn_momentum, zero_init_residual, dtype
        )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_hyperparameters(nb_filters, depth, image_shape, kernel_initializer, bn_momentum, dtype)
        self.zero_init_residual = zero_init_residual

    def get_config(self):
        return {**super().get_config(), "zero_init_residual": self.zero_init_residual}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionNetW(SegmentationModel):
    """FusionNetW^k: ``units`` FusionNet units chained (Quan et al. 2021, section 3.4).

    Unit ``i + 1`` takes the output probability map of unit ``i``; the model has
    one input and ``units`` outputs named ``unit1_output`` .. ``unitK_output``, one loss per
    unit. The paper trains unit by unit within every epoch: train unit i, freeze it,
    train unit i + 1 (:mod:`fusionnet_keras.training.units`); :meth:`set_trainable_unit`
    does the freezing.

    Args:
        units: number of chained FusionNet units (k >= 1).
        nb_filters: as for :class:`FusionNet`, for every unit.
        depth: as for :class:`FusionNet`, for every unit.
        image_shape: as for :class:`FusionNet`, for every unit.
        kernel_initializer: as for :class:`FusionNet`, for every unit.
        bn_momentum: as for :class:`FusionNet`, for every unit.
        zero_init_residual: as for :class:`FusionNet`, for every unit.
        dtype: as for :class:`FusionNet`, for every unit.
        name: model name.

    Examples:
        >>> import numpy as np
        >>> model = FusionNetW(units=2, nb_filters=4, depth=2)
        >>> [p.shape for p in model(np.zeros((1, 64, 64, 1), "float32"))]
        [(1, 64, 64, 1), (1, 64, 64, 1)]
    """

    def __init__(
        self,
        units=2,
        nb_filters=64,
        depth=4,
        image_shape=(None, None, 1),
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        zero_init_residual=False,
        dtype=None,
        name="fusionnet_w",
        **kwargs,
    ):
        units = check_int("units", units, minimum=1)
        nb_filters, depth, image_shape, inputs = self._checked_input(nb_filters, depth, image_shape, kwargs)
        zero_init_residual = bool(zero_init_residual)
        x = inputs
        outputs = []
        for u in range(units):
            x = _fusionnet_graph(
                x, f"unit{u + 1}_", nb_filters, depth, kernel_initializer, bn_momentum, zero_init_residual, dtype
            )
            outputs.append(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.units = units
        self.zero_init_residual = zero_init_residual
        self._set_hyperparameters(nb_filters, depth, image_shape, kernel_initializer, bn_momentum, dtype)

    def unit_layers(self, unit):
        """The layers of unit ``unit`` (1-based)."""
        prefix = f"unit{unit}_"
        return [layer for layer in self.layers if layer.name.startswith(prefix)]

    def set_trainable_unit(self, unit):
        """Make unit ``unit`` (1-based) trainable and freeze every other unit.

        Frozen units also run their batch normalisation in inference mode.
        Recompile the model after calling this.
        """
        if not 1 <= unit <= self.units:
            raise ValueError(f"unit must be in 1..{self.units}, got {unit}")
        for u in range(1, self.units + 1):
            for layer in self.unit_layers(u):
                layer.trainable = u == unit

    def get_config(self):
        return {"units": self.units, **super().get_config(), "zero_init_residual": self.zero_init_residual}


