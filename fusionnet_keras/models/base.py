"""What the segmentation networks share: the input-size check, the config and the dtype policy.

The networks follow keras-hub's model API: functional Keras models whose
constructor takes plain hyper-parameters (``image_shape``, the keras-hub name
of the channels-last input shape without the batch axis, and ``dtype``, the
dtype policy given to every layer) and whose ``get_config()`` returns exactly
those, so ``cls.from_config(model.get_config())`` rebuilds the same network.
Nothing here is specific to two spatial dimensions: a network sets
``spatial_dims`` and ``size_multiple`` (an int or one per spatial axis).
"""

from __future__ import annotations

import keras
from keras import layers

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models.layers import CHANNELS_LAST, UpConv
from fusionnet_keras.models.precision import input_dtype
from fusionnet_keras.utils.validate import check_int

_AXIS_NAMES = ("depth", "height", "width")


def check_spatial_shape(shape, multiple, spatial_dims: int = 2) -> tuple:
    """The one input-size check of the networks: ``shape`` is ``(*spatial, channels)``.

    Every known (not ``None``) spatial size must be a multiple of ``multiple``
    (an int, or one int per spatial axis). Returns ``shape`` as a tuple;
    raises :class:`FusionNetError` naming the axis otherwise.

    Examples:
        >>> check_spatial_shape((None, 64, 1), 16)
        (None, 64, 1)
    """
    shape = tuple(shape)
    names = _AXIS_NAMES[-spatial_dims:] if spatial_dims <= len(_AXIS_NAMES) else [
        f"axis {i}" for i in range(spatial_dims)]
    if len(shape) != spatial_dims + 1:
        raise FusionNetError(f"image_shape must be ({', '.join(names)}, channels), got {shape!r}")
    multiples = (multiple,) * spatial_dims if isinstance(multiple, int) else tuple(multiple)
    for axis, size, m in zip(names, shape, multiples):
        if size is not None and size % m:
            raise FusionNetError(
                f"input {axis} {size} is not divisible by {m} (the network's size multiple, 2**depth); "
                f"pad the image to a multiple of {m} (fusionnet_keras.predict does this)"
            )
    return shape


def u_shaped_graph(x, prefix, nb_filters, depth, level, merge, *, kernel_initializer, bn_momentum, dtype):
    """The U shape of FusionNet and the U-Net on tensor ``x``; returns the sigmoid output tensor.

    ``level(x, name, filters, first_dtype)`` builds the convolutions of one
    resolution level, its first block in ``first_dtype``, and ``merge(skip, up,
    name)`` joins the long skip with the up-sampled path. The first level's
    first block is the network's input block: float32 under a low-precision
    policy (:func:`fusionnet_keras.models.precision.input_dtype`), ``dtype``
    elsewhere.
    Going down, level ``i`` (``nb_filters * 2**i`` maps) is followed by 2x2
    max-pooling; the bridge has ``nb_filters * 2**depth`` maps; going up, a
    :class:`UpConv` halves the maps, is merged with the skip of its level, then
    a level follows. The output is a 1x1 convolution with a sigmoid, in float32
    under any dtype policy. Layer names: ``{prefix}down{i}_...``,
    ``{prefix}bridge_...``, ``{prefix}up{i}_...``, ``{prefix}output``.
    """
    skips = []
    first_dtype = input_dtype(dtype)
    for i in range(depth):
        x = level(x, f"{prefix}down{i + 1}", nb_filters * 2**i, first_dtype if i == 0 else dtype)
        skips.append(x)
        x = layers.MaxPooling2D(2, data_format=CHANNELS_LAST, dtype=dtype, name=f"{prefix}down{i + 1}_pool")(x)
    x = level(x, f"{prefix}bridge", nb_filters * 2**depth, first_dtype if depth == 0 else dtype)
    for i in reversed(range(depth)):
        filters = nb_filters * 2**i
        x = UpConv(filters, kernel_initializer=kernel_initializer, bn_momentum=bn_momentum, dtype=dtype,
                   name=f"{prefix}up{i + 1}_deconv")(x)
        x = merge(skips[i], x, f"{prefix}up{i + 1}_merge")
        x = level(x, f"{prefix}up{i + 1}", filters, dtype)
    return layers.Conv2D(1, 1, activation="sigmoid", data_format=CHANNELS_LAST, dtype="float32",
                         name=f"{prefix}output")(x)


class SegmentationModel(keras.Model):
    """Base class of the segmentation networks: shared config, dtype policy and input-size check.

    A subclass builds its graph with layers created with ``dtype=dtype``, calls
    ``super().__init__(inputs=..., outputs=..., name=name, **kwargs)`` and then
    :meth:`_set_hyperparameters`; it extends :meth:`get_config` with its own
    arguments. The constructors (and so ``from_config``, for files saved by
    0.1.0) also take the input shape under its old name ``input_shape``
    (:meth:`_image_shape`).
    """

    spatial_dims = 2

    #: Keyword arguments a network passes on to ``keras.Model`` (in every saved config).
    _MODEL_KWARGS = ("trainable",)

    @classmethod
    def _image_shape(cls, image_shape, kwargs: dict):
        """``image_shape``, or the one given under its 0.1.0 name ``input_shape``; ``kwargs``, the
        constructor's other keyword arguments, checked.

        A functional Keras model takes any keyword argument without a word
        (``input_shape``, a misspelt ``nb_filter``) and builds the default
        network: here ``input_shape`` is taken out of ``kwargs`` as the old name
        of ``image_shape`` and any other unknown name is a ``TypeError``.
        """
        unknown = sorted(set(kwargs) - {"input_shape", *cls._MODEL_KWARGS})
        if unknown:
            import inspect

            known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {unknown[0]!r}; its arguments: "
                            f"{', '.join(known + list(cls._MODEL_KWARGS))}")
        if "input_shape" not in kwargs:
            return image_shape
        old = kwargs.pop("input_shape")
        if tuple(image_shape) != (None,) * cls.spatial_dims + (1,):
            raise FusionNetError(f"give image_shape or its old name input_shape, not both (got {image_shape!r} "
                                 f"and {old!r})")
        return old

    @classmethod
    def _checked_input(cls, nb_filters, depth, image_shape, kwargs: dict):
        """``(nb_filters, depth, image_shape, input tensor)`` after the checks every network shares
        (``kwargs``: the constructor's other keyword arguments, see :meth:`_image_shape`)."""
        image_shape = cls._image_shape(image_shape, kwargs)
        nb_filters = check_int("nb_filters", nb_filters, minimum=1)
        depth = check_int("depth", depth, minimum=0)
        image_shape = check_spatial_shape(image_shape, 2**depth, cls.spatial_dims)
        return nb_filters, depth, image_shape, keras.Input(shape=image_shape, name="image")

    def _set_hyperparameters(self, nb_filters, depth, image_shape, kernel_initializer, bn_momentum, dtype):
        self.nb_filters = nb_filters
        self.depth = depth
        self.image_shape = tuple(image_shape)
        self.kernel_initializer = kernel_initializer
        self.bn_momentum = bn_momentum
        if dtype is not None:  # a functional model does not take the policy of its layers by itself
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def get_config(self):
        return {
            "nb_filters": self.nb_filters,
            "depth": self.depth,
            "image_shape": list(self.image_shape),
            "kernel_initializer": self.kernel_initializer,
            "bn_momentum": self.bn_momentum,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)  # files saved by fusionnet-keras 0.1.0 name it input_shape: see _image_shape

    @property
    def size_multiple(self):
        """Every spatial input size must be a multiple of this (``2**depth``)."""
        return 2**self.depth

    def call(self, inputs, training=None, mask=None):
        shape = getattr(inputs, "shape", None)
        if shape is not None and len(shape) == self.spatial_dims + 2:
            check_spatial_shape(tuple(shape[1:]), self.size_multiple, self.spatial_dims)
        return super().call(inputs, training=training, mask=mask)
