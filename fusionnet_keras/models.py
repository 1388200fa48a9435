"""FusionNet, chained FusionNetW^k and the U-Net baseline (Keras 3, backend-agnostic).

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

Choices where the paper is silent (documented in the README):

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

import keras
from keras import layers

PACKAGE = "fusionnet_keras"


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_input_shape(input_shape, depth):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    multiple = 2**depth
    for axis, size in zip(("height", "width"), input_shape[:2]):
        if size is not None and size % multiple:
            raise ValueError(
                f"input {axis} {size} is not divisible by 2**depth = {multiple}; "
                f"pad the image to a multiple of {multiple} (fusionnet_keras.predict does this)"
            )


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(layers.Layer):
    """3x3 "same" convolution followed by ReLU and batch normalisation.

    Args:
        filters: number of output feature maps.
        kernel_size: convolution window (default 3).
        kernel_initializer: Keras initializer name for the convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        gamma_initializer: initializer of the batch-norm scale ("zeros" makes
            the block output 0 at initialisation; see :class:`ResidualBlock`).

    Example:
        >>> import numpy as np
        >>> block = ConvBlock(8)
        >>> block(np.zeros((1, 16, 16, 1), "float32")).shape
        (1, 16, 16, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        gamma_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.gamma_initializer = gamma_initializer
        self.conv = layers.Conv2D(
            filters, kernel_size, padding="same", kernel_initializer=kernel_initializer, name="conv"
        )
        self.relu = layers.ReLU(name="relu")
        self.bn = layers.BatchNormalization(momentum=bn_momentum, gamma_initializer=gamma_initializer, name="bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        out_shape = self.conv.compute_output_shape(input_shape)
        self.bn.build(out_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.bn(self.relu(self.conv(inputs)), training=training)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            kernel_initializer=self.kernel_initializer,
            bn_momentum=self.bn_momentum,
            gamma_initializer=self.gamma_initializer,
        )
        return config


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

    Example:
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
                name=f"conv{i + 1}",
            )
            for i in range(n_convs)
        ]
        self.add = layers.Add(name="skip_add")

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

    Example:
        >>> import numpy as np
        >>> UpConv(4)(np.zeros((1, 8, 8, 8), "float32")).shape
        (1, 16, 16, 4)
    """

    def __init__(self, filters, kernel_initializer="he_normal", bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        self.deconv = layers.Conv2DTranspose(
            filters, 2, strides=2, padding="same", kernel_initializer=kernel_initializer, name="deconv"
        )
        self.relu = layers.ReLU(name="relu")
        self.bn = layers.BatchNormalization(momentum=bn_momentum, name="bn")

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


def _fusionnet_graph(x, prefix, nb_filters, depth, kernel_initializer, bn_momentum=0.99, zero_init_residual=False):
    """Build one FusionNet unit on tensor ``x``; return its sigmoid output tensor."""
    kw = {"kernel_initializer": kernel_initializer, "bn_momentum": bn_momentum}

    def level(x, name, filters):
        x = ConvBlock(filters, **kw, name=f"{name}_conv_in")(x)
        x = ResidualBlock(filters, **kw, zero_init=zero_init_residual, name=f"{name}_res")(x)
        return ConvBlock(filters, **kw, name=f"{name}_conv_out")(x)

    skips = []
    for i in range(depth):
        x = level(x, f"{prefix}down{i + 1}", nb_filters * 2**i)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}down{i + 1}_pool")(x)
    x = level(x, f"{prefix}bridge", nb_filters * 2**depth)
    for i in reversed(range(depth)):
        filters = nb_filters * 2**i
        x = UpConv(filters, **kw, name=f"{prefix}up{i + 1}_deconv")(x)
        x = layers.Add(name=f"{prefix}up{i + 1}_merge")([x, skips[i]])
        x = level(x, f"{prefix}up{i + 1}", filters)
    # the output stays float32 under a mixed-precision policy
    return layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name=f"{prefix}output")(x)


class _SegmentationModel(keras.Model):
    """What the segmentation models share: their config and the input size check."""

    def _set_hyperparameters(self, nb_filters, depth, input_shape, kernel_initializer, bn_momentum):
        self.nb_filters = nb_filters
        self.depth = depth
        self.image_shape = input_shape
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum

    def get_config(self):
        return {
            "nb_filters": self.nb_filters,
            "depth": self.depth,
            "input_shape": list(self.image_shape),
            "kernel_initializer": self.kernel_initializer,
            "bn_momentum": self.bn_momentum,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


    @property
    def size_multiple(self):
        """Input height and width must be multiples of this (2**depth)."""
        return 2 ** self.depth

    def call(self, inputs, training=None, mask=None):
        shape = getattr(inputs, "shape", None)
        if shape is not None and len(shape) == 4:
            multiple = 2**self.depth
            for axis, size in zip(("height", "width"), shape[1:3]):
                if size is not None and size % multiple:
                    raise ValueError(
                        f"input {axis} {size} is not divisible by 2**depth = {multiple}; "
                        f"pad the image to a multiple of {multiple} (fusionnet_keras.predict does this)"
                    )
        return super().call(inputs, training=training, mask=mask)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionNet(_SegmentationModel):
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
        input_shape: ``(height, width, 1)``; ``None`` sizes accept any multiple of
            ``2**depth`` (the paper trains on 640x640: 512 + 2 * 64 mirror padding).
        kernel_initializer: initializer for every convolution.
        bn_momentum: momentum of the batch-norm moving statistics (Keras' default
            0.99; lower values track the weights faster on short schedules).
        zero_init_residual: start every residual block as the identity (scale of
            the last batch norm of its branch initialised to 0; see
            :class:`ResidualBlock`). The paper is silent; default False.
        name: model name.

    Example:
        >>> import numpy as np
        >>> model = FusionNet(nb_filters=4, depth=2, input_shape=(64, 64, 1))
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
        zero_init_residual=False,
        name="fusionnet",
        **kwargs,
    ):
        _check_int("nb_filters", nb_filters, 1)
        _check_int("depth", depth, 0)
        input_shape = tuple(input_shape)
        _check_input_shape(input_shape, depth)
        zero_init_residual = bool(zero_init_residual)
        inputs = keras.Input(shape=input_shape, name="image")
        outputs = _fusionnet_graph(inputs, "", nb_filters, depth, kernel_initializer, bn_momentum, zero_init_residual)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_hyperparameters(nb_filters, depth, input_shape, kernel_initializer, bn_momentum)
        self.zero_init_residual = zero_init_residual

    def get_config(self):
        return {**super().get_config(), "zero_init_residual": self.zero_init_residual}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionNetW(_SegmentationModel):
    """FusionNetW^k: ``units`` FusionNet units chained (Quan et al. 2021, section 3.4).

    Unit ``i + 1`` takes the output probability map of unit ``i``; the model has
    one input and ``units`` outputs named ``unit1_output`` .. ``unitK_output``, one loss per
    unit. The paper trains unit by unit: train unit i, freeze it, train unit
    i + 1; :meth:`set_trainable_unit` does the freezing.

    Args:
        units: number of chained FusionNet units (k >= 1).
        nb_filters: feature maps at the first level of every unit.
        depth: max-pooling steps in every unit.
        input_shape: ``(height, width, 1)``.
        kernel_initializer: initializer for every convolution.
        bn_momentum: momentum of the batch-norm moving statistics (Keras' default
            0.99; lower values track the weights faster on short schedules).
        zero_init_residual: start every residual block as the identity (scale of
            the last batch norm of its branch initialised to 0; see
            :class:`ResidualBlock`). The paper is silent; default False.
        name: model name.

    Example:
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
        input_shape=(None, None, 1),
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        zero_init_residual=False,
        name="fusionnet_w",
        **kwargs,
    ):
        _check_int("units", units, 1)
        _check_int("nb_filters", nb_filters, 1)
        _check_int("depth", depth, 0)
        input_shape = tuple(input_shape)
        _check_input_shape(input_shape, depth)
        zero_init_residual = bool(zero_init_residual)
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        outputs = []
        for u in range(units):
            x = _fusionnet_graph(
                x, f"unit{u + 1}_", nb_filters, depth, kernel_initializer, bn_momentum, zero_init_residual
            )
            outputs.append(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.units = units
        self.zero_init_residual = zero_init_residual
        self._set_hyperparameters(nb_filters, depth, input_shape, kernel_initializer, bn_momentum)

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


ARCHITECTURES = {"fusionnet": FusionNet, "fusionnet_w": FusionNetW, "unet": UNet}


def build_model(architecture, **kwargs):
    """Build a model by name: ``fusionnet``, ``fusionnet_w`` or ``unet``."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None
    return cls(**kwargs)


def _conv_layers(layer):
    """Yield the Conv2D / Conv2DTranspose layers inside ``layer`` (recursively)."""
    if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
        yield layer
        return
    for attr in ("conv", "deconv", "convs", "layers"):
        sub = getattr(layer, attr, None)
        if sub is None:
            continue
        for s in sub if isinstance(sub, (list, tuple)) else [sub]:
            if isinstance(s, layers.Layer):
                yield from _conv_layers(s)


def level_shapes(model, height=640, width=640):
    """Output shape (H, W, C) of every named block of ``model`` for an input of ``height x width``."""
    probe = model.__class__.from_config({**model.get_config(), "input_shape": [height, width, 1]})
    shapes = []
    for layer in probe.layers:
        if isinstance(layer, (ConvBlock, ResidualBlock, UpConv, layers.Conv2D, layers.MaxPooling2D)):
            out = layer.output.shape
            shapes.append((layer.name, tuple(out[1:])))
    return shapes


def flops_per_pixel(model):
    """Floating-point operations per input pixel of one forward pass (2 FLOPs per multiply-add).

    Counts every convolution and transposed convolution (batch norm, ReLU,
    pooling and additions are a negligible fraction and are not counted). The
    count is exact for any input size divisible by ``2**depth``.
    """
    size = 2**model.depth * 8
    probe = model.__class__.from_config({**model.get_config(), "input_shape": [size, size, 1]})
    macs = 0.0
    for layer in probe.layers:
        out_pixels = layer.output.shape[1] * layer.output.shape[2] if layer.output.shape[1:3] else 0
        for conv in _conv_layers(layer):
            kh, kw = conv.kernel_size
            if isinstance(conv, layers.Conv2DTranspose):
                # every input pixel scatters a kh x kw x cout patch
                cout, cin = conv.kernel.shape[2], conv.kernel.shape[3]
                sh, sw = conv.strides
                macs += out_pixels / (sh * sw) * kh * kw * cin * cout
            else:
                cin, cout = conv.kernel.shape[2], conv.kernel.shape[3]
                macs += out_pixels * kh * kw * cin * cout
    return 2.0 * macs / (size * size)
