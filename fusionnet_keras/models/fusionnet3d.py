"""FusionNet carried to anisotropic 3-D affinities: residual levels, summation skips, xy-only pooling."""

from __future__ import annotations

import functools

import keras

from fusionnet_keras.models.base import _AffinityModel, check_odd
from fusionnet_keras.models.fusionnet import fusionnet_level
from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE
from fusionnet_keras.utils.validate import check_int


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionNet3D(_AffinityModel):
    """FusionNet (Quan, Hildebrand, Jeong 2016/2021) carried to 3-D affinities on anisotropic EM.

    Every level is FusionNet's conv + residual block (``n_residual`` convs and an identity skip) +
    conv; max-pooling (1, 2, 2) down; a (1, 2, 2) transposed convolution up whose output is **added**
    to the encoder map of the same level (FusionNet's summation long skip); feature maps
    ``nb_filters * 2**level``; the output is 3 sigmoid affinity channels (z, y, x) in float32, the
    convention of :mod:`fusionnet_keras.data.affinities`, exactly as :class:`UNet3D`.

    Like :class:`UNet3D` every convolution is valid (the residual identity and the long skips are
    cropped centrally), so both networks have the same contract: a block in, the affinities of its
    centre out, sizes from ``model.geometry``. Choices (the 2-D paper has no 3-D version): the
    level's first and last convolutions are ``(kz, 3, 3)`` and carry the z context (``z_kernels``,
    default 3: z loses 28 + 2 by the head, 33 -> 3 like :class:`UNet3D`); the residual block is
    in-plane, ``(residual_z_kernel, 3, 3)`` with ``residual_z_kernel=1``. Five 3x3 convolutions per
    level lose more in y and x than the U-Net's two: 220 voxels at depth 3, so the output
    (3, 116, 116) needs the input (33, 336, 336).

    Args:
        nb_filters: feature maps at the first level, doubled at every level down.
        depth: number of (1, 2, 2) poolings.
        image_shape: ``(z, y, x, 1)``; ``None`` sizes accept any size that fits.
        xy_kernel: in-plane kernel size of every level convolution (odd).
        z_kernels: z kernel size of each level's first and last convolution: one value, or
            ``depth + 1`` values (levels 1..depth, then the bridge).
        residual_z_kernel: z kernel size inside the residual blocks (odd; 1 = in-plane).
        n_residual: convolutions per residual block (FusionNet: 3).
        head_z_kernel: z kernel size of the output convolution (odd).
        kernel_initializer: initializer of every convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        zero_init_residual: start the residual blocks as the identity (zero-gamma; see
            :class:`~fusionnet_keras.models.layers.ResidualBlock`).
        dtype: dtype policy of every layer (default: the global policy); the sigmoid output is
            always float32. Saved with the model.
        name: model name.
        offsets: one output channel per affinity offset ``(dz, dy, dx)``, the three nearest neighbours
            first (:func:`~fusionnet_keras.data.affinities.check_network_offsets`); default those three.
            Long-range offsets feed the mutex watershed; the context must reach them.

    Examples:
        >>> import numpy as np
        >>> model = FusionNet3D(nb_filters=2, depth=1)
        >>> model.geometry.output_shape((17, 48, 48))
        (3, 8, 8)
        >>> tuple(model(np.zeros((1, 17, 48, 48, 1), "float32")).shape)
        (1, 3, 8, 8, 3)
    """

    def __init__(
        self,
        nb_filters=64,
        depth=3,
        image_shape=(None, None, None, 1),
        xy_kernel=3,
        z_kernels=None,
        residual_z_kernel=1,
        n_residual=3,
        head_z_kernel=3,
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        zero_init_residual=False,
        dtype=None,
        name="fusionnet3d",
        offsets=None,
        **kwargs,
    ):
        residual_z_kernel = check_odd("residual_z_kernel", residual_z_kernel)
        n_residual = check_int("n_residual", n_residual, minimum=1)
        zero_init_residual = bool(zero_init_residual)

        level = functools.partial(fusionnet_level, padding="valid", zero_init=zero_init_residual,
                                  kernel_initializer=kernel_initializer, bn_momentum=bn_momentum, dtype=dtype)

        self._build(
            nb_filters, depth, image_shape, xy_kernel, z_kernels, head_z_kernel, kernel_initializer,
            bn_momentum, dtype, level, "add", name, {"residual_z_kernel": residual_z_kernel, "n_residual": n_residual},
            offsets=offsets, **kwargs,
        )
        self.residual_z_kernel = residual_z_kernel
        self.n_residual = n_residual
        self.zero_init_residual = zero_init_residual

    @classmethod
    def _level_kernels(cls, depth, xy_kernel, z_kernels, residual_z_kernel=1, n_residual=3):
        level = [
            [(kz, xy_kernel, xy_kernel), *[(residual_z_kernel, xy_kernel, xy_kernel)] * n_residual,
             (kz, xy_kernel, xy_kernel)]
            for kz in z_kernels
        ]
        return {"down": level[:depth], "bridge": level[depth], "up": level[:depth]}

    def get_config(self):
        return {
            **super().get_config(),
            "residual_z_kernel": self.residual_z_kernel,
            "n_residual": self.n_residual,
            "zero_init_residual": self.zero_init_residual,
        }
