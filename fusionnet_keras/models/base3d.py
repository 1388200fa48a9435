"""What the 3-D affinity networks share: the U-shaped graph of valid convolutions, sizes, config.

Both networks (:class:`~fusionnet_keras.models.unet3d.UNet3D`,
:class:`~fusionnet_keras.models.fusionnet3d.FusionNet3D`) take an EM block
``(batch, z, y, x, 1)`` and give the affinities of its centre
``(batch, z', y', x', 3)``, channel order (z, y, x), as defined in
:mod:`fusionnet_keras.data.affinities`; with ``offsets`` (long-range affinities)
one channel per offset, the three nearest neighbours first. They pool and up-sample in y and x only
(the data is anisotropic) and use valid convolutions throughout, so their sizes
follow :class:`~fusionnet_keras.models.geometry.ValidGeometry`
(``model.geometry``).
"""

from __future__ import annotations

import keras
from keras import layers

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models.base import SegmentationModel
from fusionnet_keras.models.geometry import ValidGeometry
from fusionnet_keras.models.layers3d import UpConv3D
from fusionnet_keras.models.precision import input_dtype
from fusionnet_keras.utils.validate import check_int

POOL = (1, 2, 2)
N_AFFINITIES = 3


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


def u_graph(inputs, kernels, level, merge, nb_filters, crops, head_kernel, kw, channels=N_AFFINITIES):
    """The U-shaped graph on ``inputs``; returns the sigmoid affinity tensor.

    Args:
        kernels: ``{"down": [...], "bridge": [...], "up": [...]}``, the kernel list of every level.
        level: ``level(x, name, filters, kernels, first_dtype) -> x``: one level's convolutions, the
            first in ``first_dtype``: float32 for the network's input block under a low-precision policy
            (:func:`fusionnet_keras.models.precision.input_dtype`), ``dtype`` elsewhere.
        merge: ``"add"`` (FusionNet) or ``"concat"`` (U-Net) of the cropped encoder map and the up-sampled map.
        crops: per level, the ``Cropping3D`` amounts (from :attr:`ValidGeometry.crops`).
        kw: ``kernel_initializer``, ``bn_momentum`` and ``dtype`` of the blocks.
        channels: output channels, one per affinity offset (3: the nearest neighbours).
    """
    depth = len(kernels["down"])
    dtype = kw["dtype"]
    first_dtype = input_dtype(dtype)
    skips = []
    x = inputs
    for i in range(depth):
        x = level(x, f"down{i + 1}", nb_filters * 2**i, kernels["down"][i], first_dtype if i == 0 else dtype)
        skips.append(x)
        x = layers.MaxPooling3D(POOL, dtype=dtype, name=f"down{i + 1}_pool")(x)
    x = level(x, "bridge", nb_filters * 2**depth, kernels["bridge"], first_dtype if depth == 0 else dtype)
    for i in reversed(range(depth)):
        filters = nb_filters * 2**i
        x = UpConv3D(filters, POOL, **kw, name=f"up{i + 1}_deconv")(x)
        skip = layers.Cropping3D(crops[i], dtype=dtype, name=f"up{i + 1}_crop")(skips[i])
        if merge == "add":
            x = layers.Add(dtype=dtype, name=f"up{i + 1}_merge")([x, skip])
        else:
            x = layers.Concatenate(dtype=dtype, name=f"up{i + 1}_merge")([skip, x])
        x = level(x, f"up{i + 1}", filters, kernels["up"][i], dtype)
    # the output stays float32 under a mixed-precision policy
    return layers.Conv3D(
        channels, head_kernel, activation="sigmoid", dtype="float32", name="output"
    )(x)


class _AffinityModel(SegmentationModel):
    """What the 3-D affinity networks share: sizes (``geometry``), the input check and the config.

    Subclasses define ``_level_kernels(depth, xy_kernel, z_kernels, **extra)`` and build their graph
    through :meth:`_build`. Input sizes are checked against the geometry (valid sizes are not
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
        kw = {"kernel_initializer": kernel_initializer, "bn_momentum": bn_momentum, "dtype": dtype}
        inputs = keras.Input(shape=image_shape, name="image")
        outputs = u_graph(
            inputs, kernels, lambda x, name, filters, kernels_, first_dtype: level(
                x, name, filters, kernels_, kw, first_dtype), merge, nb_filters, geometry.crops,
            (head_z_kernel, 1, 1), kw, len(offsets),
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
