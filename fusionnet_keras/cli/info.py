"""``fusionnet-keras info``: backend, devices, precision, architecture, shapes, parameters and FLOPs."""

from __future__ import annotations

import json

import click

from fusionnet_keras.cli.options import (
    handle_errors,
    quiet_backend,
)
from fusionnet_keras.errors import FusionNetError


@click.command()
@click.argument("weights", required=False)
@click.option("--size", type=click.IntRange(1), default=640, show_default=True, help="Input size for the shape table.")
@click.option("--architecture", type=click.Choice(["fusionnet", "fusionnet_w", "unet"]), default="fusionnet",
              show_default=True, help="Without WEIGHTS: which paper configuration to describe.")
@handle_errors
def info(weights, size, architecture):
    """Backend, devices, precision, architecture, per-level shapes, parameter count and FLOPs per pixel.

    Without WEIGHTS, describes the paper configuration (nb_filters 64, depth 4).
    """
    if weights:
        from fusionnet_keras.utils.validate import check_weights_path

        check_weights_path(weights)
    quiet_backend()
    from fusionnet_keras import models

    if weights:
        from fusionnet_keras.models.loading import load_model

        model = load_model(weights)
        if not isinstance(model, tuple(models.ARCHITECTURES.values())):
            raise FusionNetError(
                f"cannot describe {weights}: not a FusionNet, FusionNetW or U-Net model of fusionnet-keras "
                f"(got {type(model).__name__})"
            )
    else:
        model = models.build_model(architecture, nb_filters=64, depth=4)
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
                   "fusionnet-keras predict uses it unless --precision is given)")
    click.echo(f"parameters: {model.count_params():,}")
    fpp = models.flops_per_pixel(model)
    click.echo(f"FLOPs per pixel (forward): {fpp:,.0f}  ({fpp * size * size / 1e9:.1f} GFLOP per {size}x{size} input)")
    click.echo(f"level shapes for a {size}x{size} input:")
    for name, shape in models.level_shapes(model, size, size):
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
