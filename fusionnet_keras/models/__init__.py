"""The networks: FusionNet, FusionNetW^k and the U-Net baseline (2-D), the 3-D affinity networks
UNet3D and FusionNet3D, their blocks and inspection.

Importing this package registers every model and layer class with Keras, so
``keras.saving.load_model`` can rebuild them from ``.keras`` files.
"""

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.models.analysis import (  # noqa: F401
    flops_per_output_voxel,
    flops_per_pixel,
    forward_flops,
    level_shapes,
    receptive_field_margin,
    size_multiple,
)
from fusionnet_keras.models.fusionnet import FusionNet, FusionNetW  # noqa: F401
from fusionnet_keras.models.fusionnet3d import FusionNet3D  # noqa: F401
from fusionnet_keras.models.layers import (  # noqa: F401  (the 3-D names load files saved before)
    ConvBlock,
    ConvBlock3D,
    ResidualBlock,
    ResidualBlock3D,
    UpConv,
    UpConv3D,
)
from fusionnet_keras.models.unet import UNet  # noqa: F401
from fusionnet_keras.models.unet3d import UNet3D  # noqa: F401

ARCHITECTURES = {
    "fusionnet": FusionNet,
    "fusionnet_w": FusionNetW,
    "unet": UNet,
    "unet3d": UNet3D,
    "fusionnet3d": FusionNet3D,
}


def build_model(architecture, **kwargs):
    """Build a model by name: ``fusionnet``, ``fusionnet_w``, ``unet``, ``unet3d`` or ``fusionnet3d``."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise FusionNetError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None
    return cls(**kwargs)

