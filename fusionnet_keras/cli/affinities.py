"""``fusionnet-keras affinities``: 3-D affinity graphs of EM volumes with a 3-D affinity network."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import (
    blockwise_options,
    handle_errors,
    ome_options,
    overwrite_option,
    precision_option,
    quiet_backend,
)
from fusionnet_keras.errors import FusionNetError


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option("--weights", "-w", default=None, type=click.Path(dir_okay=False),
              help="Trained 3-D affinity network (UNet3D or FusionNet3D): a .keras file, a registry name "
                   "('fusionnet-keras models') or an https://...#sha256=... URL. Default: the shipped 3-D model.")
@click.option("--tta", type=click.Choice(["1", "4", "8"]), default="1", show_default=True,
              help="Test-time xy orientations averaged: 1 plain, 4 the xy flips, 8 flips and transposes "
                   "(each costs one more pass).")
@precision_option
@click.option("--tile", default=None, metavar="Z,Y,X",
              help="In memory: the block (Z,Y,X) the volume is predicted in, with the network's context around "
                   "it; any shape gives the same numbers [default: 16,128,128, capped at the volume]. Blockwise, "
                   "--block is the tile.")
@blockwise_options(
    writes="the zarr OUTPUT is written by block",
    block_help="Block (Z,Y,X) for blockwise processing (also the OUTPUT's chunks), with the network's context "
               "around it; any shape gives the same numbers [default: 16,128,128, capped at the volume].")
@click.option("--resume", is_flag=True, hidden=True,
              help="Accepted for scripts written before blockwise runs resumed by themselves: asks for a "
                   "blockwise run, which finishes an interrupted one anyway.")
@ome_options
@overwrite_option
@handle_errors
def affinities(input_path, output_path, weights, tta, precision, tile, workers, block, scheduler, resume,
               voxel_size, pyramid, overwrite):
    """Predict the affinity graph of the 3-D volume INPUT, write it to OUTPUT.

    OUTPUT is float32 (3, Z, Y, X) in [0, 1], channel order (z, y, x): channel c
    at voxel v is the affinity between v and v - e_c (1 = same object). A
    long-range network (model.offsets) gives one channel per offset, the 3
    nearest first; HDF5 and zarr OUTPUTs store the offsets (attribute
    affinity_offsets of the HDF5 dataset or of the OME-Zarr group), which
    'segment --method mws' reads. The
    volume is predicted block by block with the network's context (mirrored at
    the volume border), so OUTPUT has INPUT's shape.

    INPUT: .tif/.tiff stack, file.h5:dataset, .zarr (uint8/uint16, or float in
    [0, 1]). OUTPUT: .tif/.tiff, .h5 (file.h5:dataset), .zarr, written atomically.
    With --workers/--block/--scheduler the blocks run on Dask worker processes
    and OUTPUT (zarr) is written block by block; the same command again
    resumes an interrupted run, computing only the blocks not marked done.

    A zarr OUTPUT is an OME-Zarr image with axes c, z, y, x (voxel size from
    INPUT's metadata or --voxel-size, provenance in its attributes).
    """
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.job import blockwise_requested
    from fusionnet_keras.blockwise.pyramid import check_pyramid_output, levels_note, pyramid_levels
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.pretrained.resolve import resolve_weights

    weights = resolve_weights(weights, "affinities-3d")
    check_not_input(output_path, input_path, files=[weights])
    tile = None if tile is None else parse_block(tile, name="--tile")
    check_pyramid_output(pyramid, output_path)
    if resume and overwrite:
        raise FusionNetError("--resume and --overwrite contradict each other: --resume finishes the blocks an "
                             "interrupted run left, --overwrite starts again; give one")
    if blockwise_requested(workers, block, scheduler) or resume:  # --resume: an alias kept for earlier scripts
        if tile is not None:
            raise FusionNetError("--tile is for in-memory prediction; blockwise, the --block is the tile")
        quiet_backend()
        from fusionnet_keras.blockwise.affinities import affinities_volume

        info = affinities_volume(input_path, output_path, weights, block=None if block is None else parse_block(block),
                                 workers=workers or 1, scheduler=scheduler, orientations=int(tta),
                                 precision=precision, overwrite=overwrite, voxel_size=voxel_size, pyramid=pyramid)
        click.echo(f"wrote {output_path} {info['shape']} float32: {info['blocks']} blocks of "
                   f"{','.join(map(str, info['block']))}, {info['computed']} computed now{levels_note(info)}")
        return
    from fusionnet_keras.blockwise.affinities import open_affinity_input
    from fusionnet_keras.data.io import check_output, write_volume
    from fusionnet_keras.utils.validate import check_weights_path

    check_output(output_path, overwrite)
    check_weights_path(weights)
    quiet_backend()
    with open_affinity_input(input_path) as volume:
        from fusionnet_keras.inference.affinities import model_offsets, offsets_attrs, predict_affinities
        from fusionnet_keras.models.loading import load_model

        model = load_model(weights, spatial_dims=3)
        out = predict_affinities(model, volume, block=tile, precision=precision, orientations=int(tta),
                                 progress=True)
    from fusionnet_keras.data.io.ome import output_meta

    meta = output_meta([input_path], voxel_size, channels=True, command="affinities", model=str(weights),
                       attributes=offsets_attrs(model_offsets(model)), orientations=int(tta),
                       precision=precision, block=tile)
    write_volume(output_path, out, overwrite=overwrite, meta=meta)
    click.echo(f"wrote {output_path} {out.shape} float32{pyramid_levels(output_path, pyramid)}")
