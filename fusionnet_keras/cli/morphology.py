"""``fusionnet-keras morphology``: nucleus volume, surface area, sphericity, K-means."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import blockwise_options, handle_errors, overwrite_option, voxel_size_option


@click.command()
@click.argument("labels")
@voxel_size_option(help="Voxel size in nm, (Z, Y, X) order, e.g. 60,56.4,56.4 (the paper's zebrafish data). "
                        "Default: LABELS' own (OME-Zarr scale, HDF5 resolution, ImageJ TIFF spacing).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="CSV table to write.")
@click.option("--clusters", "-k", type=click.IntRange(1), default=3, show_default=True,
              help="K-means clusters of (volume, surface area, sphericity).")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Folder for fig9_overlay.png (sections coloured by sphericity) and fig10_features.png.")
@click.option("--image", type=str, default=None,
              help="EM volume behind the overlay figure (same shape as LABELS); default: the label mask.")
@click.option("--seed", type=int, default=0, show_default=True, help="K-means random seed.")
@click.option("--exclude-outliers", is_flag=True,
              help="Fit the K-means without the flagged outliers (the project's pre-flagging; the paper fits "
                   "all whole nuclei and finds the outliers as a cluster of their own).")
@click.option("--binary/--instances", "binary", default=None,
              help="Read LABELS as a binary mask (split into 3-D connected components, 26-connectivity) or as "
                   "instance ids. Default: binary when it holds a single non-zero value (e.g. 0/1 or 0/255).")
@blockwise_options(writes="LABELS is read by block (work files in OUT.work/, removed at the end)",
                   block_help="Block shape for blockwise measuring [default: 64,256,256].")
@overwrite_option
@handle_errors
def morphology(labels, voxel_size, out, clusters, figures, image, seed, exclude_outliers, binary, workers, block, scheduler,
               overwrite):
    """Measure every nucleus of LABELS: volume, surface area, sphericity, K-means.

    LABELS: a 3-D (Z, Y, X) instance volume (0 = background, one id per
    nucleus) or a binary mask, in any format that `predict` reads. Writes one
    CSV row per nucleus (sizes in um, um^2, um^3; centroids in um and voxels;
    bounding box; cluster; outlier) and prints a summary.

    With --workers/--block/--scheduler, volumes larger than memory (HDF5, zarr):
    the measures are gathered block by block (objects crossing blocks measured
    once; a mask's components joined across blocks), the same table as without.
    """
    from fusionnet_keras.workflows.morphology import measure_path

    measure_path(labels, voxel_size, out, clusters=clusters, figures=figures, image=image, seed=seed,
                 exclude_outliers=exclude_outliers, binary=binary, workers=workers, block=block, scheduler=scheduler,
                 overwrite=overwrite, report=click.echo)
