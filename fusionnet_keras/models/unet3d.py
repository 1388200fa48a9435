"""The 3-D U-Net of the affinity paper: xy-only pooling, valid convolutions, 3 affinity channels."""

from __future__ import annotations

import functools

import keras

from fusionnet_keras.models.base import _AffinityModel
from fusionnet_keras.models.unet import unet_level
from fusionnet_keras.settings import KERAS_PACKAGE as PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class UNet3D(_AffinityModel):
    """3-D U-Net for affinities on anisotropic EM (the third paper in the project's paper folder,
    "anisotropic EM segmentation by 3D affinity learning and agglomeration", sec. 4: "a 3D U-net with
    depth 3 [...] we only pool in x and y", input (33, 204, 204) -> output (3, 116, 116) in z, y, x).

    Per level two valid convolutions (``(kz, xy_kernel, xy_kernel)``, ReLU, batch norm), max-pooling
    (1, 2, 2) down, a (1, 2, 2) transposed convolution up, the encoder map of the same level cropped
    and concatenated (Ronneberger et al. 2015; Cicek et al. 2016), feature maps
    ``nb_filters * 2**level``. The output is a ``(head_z_kernel, 1, 1)`` convolution to 3 sigmoid
    channels in float32: the affinities to the previous voxel in z, y and x (the convention of
    :mod:`fusionnet_keras.data.affinities`).

    Sizes (``model.geometry``): in y and x the 3x3 convolutions lose 88 voxels at depth 3
    (204 -> 116; valid sizes 92 + 8k). In z the 14 level convolutions with ``kz = 3`` lose 28; the
    paper's 33 -> 3 loses 30, so the output convolution spans 3 sections (``head_z_kernel=3``, the
    default). With ``head_z_kernel=1`` the same network gives the paper's other run, 44 -> 16.

    Args:
        nb_filters: feature maps at the first level, doubled at every level down.
        depth: number of (1, 2, 2) poolings (the paper: 3).
        image_shape: ``(z, y, x, 1)``; ``None`` sizes accept any size that fits.
        xy_kernel: in-plane kernel size of every level convolution (odd).
        z_kernels: z kernel size of the convolutions of each level: one value for all, or
            ``depth + 1`` values (levels 1..depth, then the bridge; a level's decoder uses its
            encoder's value). Default 3 everywhere.
        head_z_kernel: z kernel size of the output convolution (odd; 3 gives 33 -> 3).
        kernel_initializer: initializer of every convolution.
        bn_momentum: momentum of the batch-norm moving statistics.
        dtype: dtype policy of every layer (default: the global policy); the sigmoid output is
            always float32. Saved with the model.
        name: model name.
        offsets: one output channel per affinity offset ``(dz, dy, dx)``, the three nearest neighbours
            first (:func:`~fusionnet_keras.data.affinities.check_network_offsets`); default those three.
            Long-range offsets feed the mutex watershed; the context must reach them.

    Examples:
        >>> import numpy as np
        >>> model = UNet3D(nb_filters=2, depth=1)
        >>> model.geometry.output_shape((17, 24, 24))
        (3, 8, 8)
        >>> tuple(model(np.zeros((1, 17, 24, 24, 1), "float32")).shape)
        (1, 3, 8, 8, 3)
    """

    def __init__(
        self,
        nb_filters=64,
        depth=3,
        image_shape=(None, None, None, 1),
        xy_kernel=3,
        z_kernels=None,
        head_z_kernel=3,
        kernel_initializer="he_normal",
        bn_momentum=0.99,
        dtype=None,
        name="unet3d",
        offsets=None,
        **kwargs,
    ):
        level = functools.partial(unet_level, padding="valid", kernel_initializer=kernel_initializer,
                                  bn_momentum=bn_momentum, dtype=dtype)
        self._build(
            nb_filters, depth, image_shape, xy_kernel, z_kernels, head_z_kernel, kernel_initializer,
            bn_momentum, dtype, level, "concat", name, {}, offsets=offsets, **kwargs,
        )

    @classmethod
    def _level_kernels(cls, depth, xy_kernel, z_kernels):
        level = [[(kz, xy_kernel, xy_kernel)] * 2 for kz in z_kernels]
        return {"down": level[:depth], "bridge": level[depth], "up": level[:depth]}
