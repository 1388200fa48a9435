"""``fusionnet-keras info``: backend, devices, precision, architecture, shapes, parameters and FLOPs."""

from __future__ import annotations

import json
import math

import click

from fusionnet_keras.cli.options import (
    handle_errors,
    quiet_backend,
)
from fusionnet_keras.errors import FusionNetError


@click.command()
@click.argument("weights", required=False)
@click.option("--size", type=click.IntRange(1), default=640, show_default=True,
              help="Input size for the shape table (3-D networks: the y and x size of the block predicted).")
@click.option("--architecture", type=click.Choice(["fusionnet", "fusionnet_w", "unet"]), default="fusionnet",
              show_default=True, help="Without WEIGHTS: which paper configuration to describe.")
@handle_errors
def info(weights, size, architecture):
    """Backend, devices, precision, architecture, per-level shapes, parameter count and FLOPs per pixel.

    Without WEIGHTS, describes the paper configuration (nb_filters 64, depth 4).
    For a 3-D affinity network (UNet3D, FusionNet3D): its valid input sizes and
    context, the input a block of 16 x SIZE x SIZE voxels needs, FLOPs per output
    voxel and the level shapes at that input.
    """
    if weights:
        from fusionnet_keras.utils.validate import check_weights_path

        check_weights_path(weights)
    quiet_backend()
    from fusionnet_keras import models

    if weights:
        from fusionnet_keras.models.loading import load_model

        model = load_model(weights, spatial_dims=None)
        if not isinstance(model, tuple(models.ARCHITECTURES.values())):
            raise FusionNetError(
                f"cannot describe {weights}: not a FusionNet, FusionNetW, U-Net, UNet3D or FusionNet3D model of "
                f"fusionnet-keras (got {type(model).__name__})"
            )
    else:
        model = models.build_model(architecture, nb_filters=64, depth=4)
    three_d = getattr(model, "spatial_dims", 2) == 3
    multiple = 2**model.depth
    if size % multiple:
        raise FusionNetError(f"--size {size} is not divisible by 2**depth = {multiple}")
    _describe_machine()
    config = {k: v for k, v in model.get_config().items() if k not in ("name", "trainable")}
    config["dtype"] = model.dtype_policy.name
    click.echo(f"model: {model.__class__.__name__} {json.dumps(config)}")
    if weights:
        from fusionnet_keras.models.precision import precision_of

        click.echo(f"saved precision: {precision_of(model)} (policy {model.dtype_policy.name}; "
                   f"fusionnet-keras {'affinities' if three_d else 'predict'} uses it unless --precision is given)")
    click.echo(f"parameters: {model.count_params():,}")
    if three_d:
        _describe_3d(model, size)
        return
    fpp = models.flops_per_pixel(model)
    click.echo(f"FLOPs per pixel (forward): {fpp:,.0f}  ({fpp * size * size / 1e9:.1f} GFLOP per {size}x{size} input)")
    click.echo(f"level shapes for a {size}x{size} input:")
    for name, shape in models.level_shapes(model, size, size):
        click.echo(f"  {name:28s} {'x'.join(str(s) for s in shape)}")


def _describe_3d(model, size):
    """Sizes of a 3-D affinity network (valid convolutions): context, the input a block needs, FLOPs, shapes."""
    from fusionnet_keras import models
    from fusionnet_keras.inference.affinities import DEFAULT_BLOCK

    g = model.geometry
    xyz = "x".join
    click.echo(f"input (z, y, x): valid sizes {xyz(map(str, g.min_input))} + k * {xyz(map(str, g.multiple))}; "
               f"output = input - {xyz(map(str, g.loss))}; context per side {xyz(map(str, g.context))}")
    core = (DEFAULT_BLOCK[0], size, size)
    input_shape, _ = g.block(core)
    out = g.output_shape(input_shape)
    fpv = models.flops_per_output_voxel(model, input_shape)
    click.echo(f"a {xyz(map(str, core))} block (fusionnet-keras affinities --block {','.join(map(str, core))}) "
               f"reads {xyz(map(str, input_shape))} and predicts {xyz(map(str, out))}")
    click.echo(f"FLOPs per output voxel (forward): {fpv:,.0f}  "
               f"({fpv * math.prod(out) / 1e9:.1f} GFLOP per {xyz(map(str, input_shape))} input)")
    click.echo(f"level shapes for a {xyz(map(str, input_shape))} input:")
    for name, shape in models.level_shapes(model, spatial_shape=input_shape):
        click.echo(f"  {name:28s} {'x'.join(str(s) for s in shape)}")


def _describe_machine():
    """The backend, the devices it sees and the global precision policy."""
    import keras

    from fusionnet_keras.utils import hardware

    click.echo(f"backend: {keras.backend.backend()} (Keras {keras.__version__}; set KERAS_BACKEND to change)")
    for kind, name, model in hardware.devices():
        click.echo(f"device: {name} {model}".rstrip())
    low = hardware.cpu_low_precision()
    click.echo(f"CPU low-precision instructions: {', '.join(low) if low else 'none found'}")
    click.echo(f"precision policy: {keras.mixed_precision.global_policy().name} (global; "
               "fusionnet-keras predict --precision float32|bfloat16|float16)")
    from fusionnet_keras.models.precision import check_precision

    click.echo(f"precision auto: {check_precision('auto')} on this backend and device (docs/precision.md)")
