"""``fusionnet-keras pyramid``: downsampled levels of an OME-Zarr image, block by block on Dask."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import blockwise_options, handle_errors, overwrite_option


@click.command()
@click.argument("input_path", metavar="IN")
@click.option("--levels", type=click.IntRange(1, 12), default=None,
              help="Levels to add above level 0. Default: until y or x of the next level would be under 32 "
                   "(at least one).")
@blockwise_options(writes="every level is written by block",
                   block_help="Block shape (Z,Y,X) of the levels, also their chunks. Default: level 0's chunks.")
@overwrite_option
@handle_errors
def pyramid(input_path, levels, workers, block, scheduler, overwrite):
    """Add a multiscale pyramid to the OME-Zarr image IN (x.zarr or x.zarr:group).

    Level n halves level n - 1 in y and x, and in z once the voxels are
    near-isotropic (z < 2 x the y size), so anisotropic EM is downsampled in x
    and y first. Images and probabilities are averaged, segmentations (label
    images) take each window's most frequent label. The levels and their
    scales are listed in the image's multiscales when all are done; the same
    command again resumes an interrupted run.
    """
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.pyramid import build_pyramid

    info = build_pyramid(input_path, levels=levels, block=None if block is None else parse_block(block),
                         workers=0 if workers is None and scheduler is None else workers or 1, scheduler=scheduler, overwrite=overwrite)
    for level in info["levels"]:
        shape = "x".join(map(str, level["shape"]))
        scale = ", ".join(f"{s:g}" for s in level["scale"])
        click.echo(f"level {level['path']}: {shape} (scale {scale})")
    click.echo(f"wrote {len(info['levels'])} levels ({info['method']}) to {input_path}")
