"""``fusionnet-keras predict``: probability maps of 2-D sections and stacks."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import (
    batch_size_option,
    blockwise_options,
    handle_errors,
    ome_options,
    overwrite_option,
    precision_option,
    quiet_backend,
    tta_option,
)
from fusionnet_keras.errors import FusionNetError

MAX_PAD = 4096  # px; more only repeats mirrored copies of the section (and can exhaust memory)


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option("--weights", "-w", default=None, type=click.Path(dir_okay=False),
              help="Trained model: a .keras file, a registry name ('fusionnet-keras models') or an "
                   "https://.../model.keras#sha256=... URL (downloaded once). Default: the shipped 2-D model.")
@tta_option
@click.option("--tile", type=click.IntRange(16), default=None,
              help="Tile core (px) for large images: each network window adds the receptive field on every "
                   "side, so any tile gives the untiled result; default: whole sections.")
@click.option("--pad", type=click.IntRange(0, MAX_PAD), default=64, show_default=True,
              help=f"Mirror padding (px) on every side (at most {MAX_PAD}).")
@batch_size_option
@precision_option
@click.option("--dtype", type=click.Choice(["float32", "uint8"]), default="float32", show_default=True,
              help="Output type: float32 in [0, 1] or uint8 (0-255).")
@blockwise_options
@ome_options
@overwrite_option
@handle_errors
def predict(input_path, output_path, weights, tta, tile, pad, batch_size, precision, dtype, workers, block,
            scheduler, voxel_size, pyramid, overwrite):
    """Predict cell-interior probability (1 = cell, 0 = membrane) for INPUT, write OUTPUT.

    INPUT and OUTPUT: .tif/.tiff, .h5/.hdf5 (file.h5:dataset), .zarr, or (input
    only) a directory of PNG/TIFF sections. 2-D images and 3-D stacks (Z, H, W).

    With --workers/--block/--scheduler the volume is processed block by block
    (Z,Y,X blocks with the receptive field as context in y and x) into a zarr
    OUTPUT chunked like the blocks; the same command again resumes an
    interrupted run, computing only the blocks not marked done.

    A zarr OUTPUT is an OME-Zarr image (voxel size from INPUT's metadata or
    --voxel-size, provenance in its attributes); HDF5 and TIFF outputs carry
    the voxel size as 'resolution' and the ImageJ spacing.
    """
    from fusionnet_keras.blockwise.job import blockwise_requested
    from fusionnet_keras.blockwise.pyramid import check_pyramid_output, pyramid_levels
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.pretrained.resolve import resolve_weights

    weights = resolve_weights(weights, "membranes-2d")
    check_not_input(output_path, input_path, files=[weights])
    check_pyramid_output(pyramid, output_path)
    if blockwise_requested(workers, block, scheduler):
        return _predict_blockwise(input_path, output_path, weights, int(tta), tile, pad, batch_size, precision,
                                  dtype, workers, block, scheduler, overwrite, voxel_size, pyramid)
    from fusionnet_keras.data.io import check_output, load_image, write_volume
    from fusionnet_keras.utils.validate import check_weights_path

    check_output(output_path, overwrite)
    check_weights_path(weights)
    image = load_image(input_path)
    quiet_backend()
    from fusionnet_keras.models.loading import load_model

    model = load_model(weights)
    from fusionnet_keras.inference.predictor import predict as run_predict

    try:
        out = run_predict(model, image, tta=int(tta), tile=tile, pad=pad, batch_size=batch_size,
                          progress=image.ndim == 3, precision=precision, once=True)
    except FusionNetError:
        raise
    except Exception as e:  # e.g. a model with a fixed input size that the padded image does not fit
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusionNetError(f"cannot run the model {weights} on {input_path}: {reason[:200]}") from None
    from fusionnet_keras.data.io.ome import output_meta

    meta = output_meta([input_path], voxel_size, command="predict", model=str(weights), tta=int(tta), tile=tile,
                       pad=pad, dtype=dtype, precision=precision)
    write_volume(output_path, out, overwrite=overwrite, dtype=dtype, meta=meta)
    click.echo(f"wrote {output_path} {out.shape} {dtype}{pyramid_levels(output_path, pyramid)}")


def _predict_blockwise(input_path, output_path, weights, tta, tile, pad, batch_size, precision, dtype, workers,
                       block, scheduler, overwrite, voxel_size, pyramid):
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.predict import predict_volume
    from fusionnet_keras.blockwise.pyramid import levels_note

    if tile is not None:
        raise FusionNetError("--tile is for whole-section prediction; blockwise, the --block is the tile")
    info = predict_volume(input_path, output_path, weights, block=None if block is None else parse_block(block),
                          workers=workers or 1, scheduler=scheduler, tta=tta, pad=pad, batch_size=batch_size,
                          dtype=dtype, overwrite=overwrite, precision=precision, voxel_size=voxel_size,
                          pyramid=pyramid)
    click.echo(f"wrote {output_path} {info['shape']} {dtype}: {info['blocks']} blocks of "
               f"{','.join(map(str, info['block']))}, {info['computed']} computed now{levels_note(info)}")
