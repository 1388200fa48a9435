"""What the segmentation networks share, 2-D and 3-D: the U-shaped graph, the input-size checks, the
config and the dtype policy.

The networks follow keras-hub's model API: functional Keras models whose
constructor takes plain hyper-parameters (``image_shape``, the keras-hub name
of the channels-last input shape without the batch axis, and ``dtype``, the
dtype policy given to every layer) and whose ``get_config()`` returns exactly
those, so ``cls.from_config(model.get_config())`` rebuilds the same network.
Nothing here is specific to two spatial dimensions: a network sets
``spatial_dims`` and ``size_multiple`` (an int or one per spatial axis).

:func:`u_graph` builds the U shape of every network, FusionNet's and the
U-Net's, in 2-D (same padding, 2x2 pooling) and 3-D (valid convolutions,
pooling and up-sampling in y and x only). The 3-D affinity networks
(:class:`~fusionnet_keras.models.unet3d.UNet3D`,
:class:`~fusionnet_keras.models.fusionnet3d.FusionNet3D`) take an EM block
``(batch, z, y, x, 1)`` and give the affinities of its centre
``(batch, z', y', x', 3)``, channel order (z, y, x), as defined in
:mod:`fusionnet_keras.data.affinities`; their sizes follow
:class:`~fusionnet_keras.models.geometry.ValidGeometry` (``model.geometry``).
"""

from __future__ import annotations

import keras
from keras import layers

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models.geometry import ValidGeometry
from fusionnet_keras.models.layers import CHANNELS_LAST, blocks, spatial_layer
from fusionnet_keras.models.precision import input_dtype
from fusionnet_keras.utils.validate import check_int

_AXIS_NAMES = ("depth", "height", "width")
#: pooling and up-sampling of the 3-D networks: in y and x only (the data is anisotropic)
POOL = (1, 2, 2)
N_AFFINITIES = 3


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


def check_odd(name, value):
    value = check_int(name, value, minimum=1)
    if value % 2 == 0:
        raise FusionNetError(f"{name} must be odd (valid convolutions keep voxels centred), got {value}")
    return value


def level_z_kernels(z_kernels, depth):
    """``z_kernels`` per level (``depth + 1`` values: levels 1..depth, then the bridge)."""
    if z_kernels is None:
        return (3,) * (depth + 1)
    z_kernels = tuple(z_kernels) if isinstance(z_kernels, (list, tuple)) else (z_kernels,) * (depth + 1)
    if len(z_kernels) != depth + 1:
        raise FusionNetError(
            f"z_kernels needs depth + 1 = {depth + 1} values (levels 1..{depth}, then the bridge), got {len(z_kernels)}"
        )
    return tuple(check_odd("z_kernels", k) for k in z_kernels)


def u_graph(x, kernels, level, merge, nb_filters, *, pool, head, crops=None, prefix="", kernel_initializer,
            bn_momentum, dtype):
    """The U shape of FusionNet and the U-Net on tensor ``x``, 2-D or 3-D; returns the sigmoid output tensor.

    Going down, level ``i`` (``nb_filters * 2**i`` maps) is followed by
    max-pooling by ``pool``; the bridge has ``nb_filters * 2**depth`` maps;
    going up, an :class:`~fusionnet_keras.models.layers.UpConv` by ``pool``
    halves the maps and is merged with the skip of its level (cropped by
    ``crops[i]`` in a valid network), then a level follows. The output is a
    convolution to ``head = (channels, kernel_size)`` with a sigmoid, in float32
    under any dtype policy. Layer names: ``{prefix}down{i}_...``,
    ``{prefix}bridge_...``, ``{prefix}up{i}_...``, ``{prefix}output``.

    Args:
        x: the input tensor.
        kernels: ``{"down": [...], "bridge": [...], "up": [...]}``, the kernel sizes of every level's
            convolutions (``depth`` levels down and up; :func:`same_kernels` for a 2-D network).
        level: ``level(x, name, filters, kernels, first_dtype) -> x``: one level's convolutions, the
            first in ``first_dtype``: float32 for the network's input block under a low-precision policy
            (:func:`fusionnet_keras.models.precision.input_dtype`), ``dtype`` elsewhere.
        merge: ``"add"`` (FusionNet's summation) or ``"concat"`` (the U-Net) of the skip and the up-sampled map.
        nb_filters: feature maps of the first level.
        pool: pooling factor, an int (2-D) or one per spatial axis.
        head: ``(channels, kernel_size)`` of the output convolution.
        crops: per level, the cropping of the skip (:attr:`ValidGeometry.crops`); ``None``: same padding.
        prefix: of every layer name (the units of FusionNetW).
        kernel_initializer: of the up-sampling blocks.
        bn_momentum: of the up-sampling blocks.
        dtype: dtype policy of the network.
    """
    rank = len(x.shape) - 2
    depth = len(kernels["down"])
    first_dtype = input_dtype(dtype)
    skips = []
    for i in range(depth):
        x = level(x, f"{prefix}down{i + 1}", nb_filters * 2**i, kernels["down"][i], first_dtype if i == 0 else dtype)
        skips.append(x)
        x = spatial_layer("MaxPooling", rank)(pool, data_format=CHANNELS_LAST, dtype=dtype,
                                              name=f"{prefix}down{i + 1}_pool")(x)
    x = level(x, f"{prefix}bridge", nb_filters * 2**depth, kernels["bridge"], first_dtype if depth == 0 else dtype)
    for i in reversed(range(depth)):
        filters = nb_filters * 2**i
        x = blocks(rank).up(filters, pool, kernel_initializer=kernel_initializer, bn_momentum=bn_momentum, dtype=dtype,
                   name=f"{prefix}up{i + 1}_deconv")(x)
        skip = skips[i]
        if crops is not None:
            skip = spatial_layer("Cropping", rank)(crops[i], data_format=CHANNELS_LAST, dtype=dtype,
                                                   name=f"{prefix}up{i + 1}_crop")(skip)
        if merge == "add":
            x = layers.Add(dtype=dtype, name=f"{prefix}up{i + 1}_merge")([x, skip])
        else:
            x = layers.Concatenate(dtype=dtype, name=f"{prefix}up{i + 1}_merge")([skip, x])
        x = level(x, f"{prefix}up{i + 1}", filters, kernels["up"][i], dtype)
    channels, kernel_size = head
    return spatial_layer("Conv", rank)(channels, kernel_size, activation="sigmoid", data_format=CHANNELS_LAST,
                                       dtype="float32", name=f"{prefix}output")(x)


def same_kernels(level_kernels, depth):
    """The kernels of a network whose every level has the convolutions ``level_kernels`` (for :func:`u_graph`)."""
    return {"down": [level_kernels] * depth, "bridge": level_kernels, "up": [level_kernels] * depth}


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

    def with_policy(self, policy):
        """The same network (new, untrained weights) under the dtype ``policy``: its input block and output
        stay float32 (:func:`fusionnet_keras.models.precision.with_precision` copies the weights)."""
        return type(self).from_config({**self.get_config(), "dtype": policy})

    @property
    def size_multiple(self):
        """Every spatial input size must be a multiple of this (``2**depth``)."""
        return 2**self.depth

    def call(self, inputs, training=None, mask=None):
        shape = getattr(inputs, "shape", None)
        if shape is not None and len(shape) == self.spatial_dims + 2:
            check_spatial_shape(tuple(shape[1:]), self.size_multiple, self.spatial_dims)
        return super().call(inputs, training=training, mask=mask)


class _AffinityModel(SegmentationModel):
    """What the 3-D affinity networks share: sizes (``geometry``), the input check and the config; one
    output channel per affinity offset (``offsets``: the 3 nearest neighbours, then any long-range ones).

    Subclasses define ``_level_kernels(depth, xy_kernel, z_kernels, **extra)`` and build their graph
    through :meth:`_build`, whose ``level(x, name, filters, kernels, first_dtype)`` builds one level of
    valid convolutions (see :func:`u_graph`). Input sizes are checked against the geometry (valid sizes are not
    multiples of anything, so :meth:`SegmentationModel.call`'s divisibility check does not apply).
    """

    spatial_dims = 3

    @classmethod
    def _level_kernels(cls, depth, xy_kernel, z_kernels, **extra):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _geometry(cls, depth, xy_kernel, z_kernels, head_z_kernel, **extra):
        kernels = cls._level_kernels(depth, xy_kernel, z_kernels, **extra)
        return ValidGeometry.from_kernels(
            kernels["down"], kernels["bridge"], kernels["up"], (head_z_kernel, 1, 1), POOL
        )

    def _build(self, nb_filters, depth, image_shape, xy_kernel, z_kernels, head_z_kernel, kernel_initializer,
               bn_momentum, dtype, level, merge, name, extra, offsets=None, **kwargs):
        from fusionnet_keras.data.affinities import check_network_offsets

        offsets = check_network_offsets(offsets)
        nb_filters = check_int("nb_filters", nb_filters, minimum=1)
        depth = check_int("depth", depth, minimum=0)
        xy_kernel = check_odd("xy_kernel", xy_kernel)
        head_z_kernel = check_odd("head_z_kernel", head_z_kernel)
        z_kernels = level_z_kernels(z_kernels, depth)
        image_shape = tuple(self._image_shape(image_shape, kwargs))
        if len(image_shape) != 4 or image_shape[-1] != 1:
            raise FusionNetError(f"image_shape must be (z, y, x, 1), got {image_shape!r}")
        geometry = self._geometry(depth, xy_kernel, z_kernels, head_z_kernel, **extra)
        geometry.output_shape(image_shape[:3])  # one-line error naming the nearest sizes that fit
        kernels = self._level_kernels(depth, xy_kernel, z_kernels, **extra)
        inputs = keras.Input(shape=image_shape, name="image")
        outputs = u_graph(
            inputs, kernels, level, merge, nb_filters, pool=POOL, head=(len(offsets), (head_z_kernel, 1, 1)),
            crops=geometry.crops, kernel_initializer=kernel_initializer, bn_momentum=bn_momentum, dtype=dtype,
        )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._set_hyperparameters(nb_filters, depth, image_shape, kernel_initializer, bn_momentum, dtype)
        self.xy_kernel = xy_kernel
        self.z_kernels = z_kernels
        self.head_z_kernel = head_z_kernel
        self.geometry = geometry
        #: the affinity offset of each output channel (:mod:`fusionnet_keras.data.affinities`)
        self.offsets = offsets

    @property
    def size_multiple(self):
        """Per axis (z, y, x): valid input sizes differ by multiples of this (``(1, 2**depth, 2**depth)``)."""
        return self.geometry.multiple

    def output_shape_for(self, input_shape):
        """Spatial output shape for a spatial input shape ``(z, y, x)`` (one-line error if it does not fit)."""
        return self.geometry.output_shape(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        # checked before Keras wraps errors raised in call(), so the message stays one line
        shape = getattr(inputs, "shape", None)
        if shape is not None and len(shape) == 5:
            self.geometry.output_shape(tuple(shape[1:4]))
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        return super(SegmentationModel, self).call(inputs, training=training, mask=mask)

    def get_config(self):
        return {
            **super().get_config(),
            "xy_kernel": self.xy_kernel,
            "z_kernels": list(self.z_kernels),
            "head_z_kernel": self.head_z_kernel,
            "offsets": [list(o) for o in self.offsets],
        }
