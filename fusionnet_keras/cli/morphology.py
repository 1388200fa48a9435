"""``fusionnet-keras morphology``: nucleus volume, surface area, sphericity, K-means."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import (
    blockwise_options,
    blockwise_requested,
    handle_errors,
    overwrite_option,
    voxel_size_option,
)
from fusionnet_keras.errors import FusionNetError


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
    from pathlib import Path

    import numpy as np

    from fusionnet_keras.data.io import load_image, open_image, read_volume
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.evaluation import figures as morph_figures
    from fusionnet_keras.evaluation import morphology as morph
    from fusionnet_keras.segmentation.inputs import check_labels
    from fusionnet_keras.utils.atomic import check_overwrite

    from fusionnet_keras.data.io.ome import voxel_size_of

    vs = voxel_size_of([labels], voxel_size)
    if vs is None:
        raise FusionNetError(f"{labels} carries no voxel size; give it as --voxel-size Z,Y,X (nm)")
    out_path = Path(out)
    targets = [out_path]
    fig_paths = []
    if figures is not None:
        fig_dir = Path(figures)
        if fig_dir.exists() and not fig_dir.is_dir():
            raise FusionNetError(f"--figures {fig_dir} is not a directory")
        fig_paths = [fig_dir / "fig9_overlay.png", fig_dir / "fig10_features.png"]
        targets += fig_paths
    work = [Path(f"{out_path}.work")] if blockwise_requested(workers, block, scheduler) else []  # replaced too
    for t in targets + work:
        check_not_input(t, labels, image, whole=True)
    for t in targets:
        check_overwrite(t, overwrite)

    if blockwise_requested(workers, block, scheduler):
        records, fig9 = _measure_blockwise(labels, vs, binary, image, workers, block, scheduler, out_path,
                                           bool(fig_paths), overwrite)
        inst = None
    else:
        raw = check_labels(read_volume(labels), f"labels {labels}")  # 3-D, not empty, whole non-negative numbers
        if image is not None:
            with open_image(image) as vol:
                image_shape = tuple(vol.shape)
            if image_shape != raw.shape:
                raise FusionNetError(f"--image {image} has shape {image_shape}, labels {labels} have {raw.shape}")
        if binary is None and raw.dtype.kind in "biuf":
            binary = morph.is_binary_mask(raw)
        inst = morph.instance_labels(raw, binary=binary)
        del raw
        records = morph.measure_nuclei(inst, vs, binary=False)
    morph.annotate(records, k=clusters, seed=seed, exclude_outliers=exclude_outliers)
    morph.write_csv(records, out_path, overwrite=overwrite)

    if not records:
        click.echo(f"no nuclei found in {labels}; wrote the header-only table {out_path}")
    else:
        n_out = sum(bool(r["outlier"]) for r in records)
        n_border = sum(bool(r["touches_border"]) for r in records)
        click.echo(f"{len(records)} nuclei ({n_border} touching the volume border), {n_out} outliers; "
                   f"voxel size {vs[0]:g} x {vs[1]:g} x {vs[2]:g} nm")
        click.echo(f"{'cluster':>8} {'nuclei':>7} {'volume um^3':>12} {'area um^2':>10} {'sphericity':>10}")
        for c in sorted({int(r["cluster"]) for r in records}):
            sel = [r for r in records if int(r["cluster"]) == c]
            name = str(c) if c >= 0 else "none"
            click.echo(f"{name:>8} {len(sel):>7} {np.mean([r['volume_um3'] for r in sel]):>12.3f} "
                       f"{np.mean([r['surface_area_um2'] for r in sel]):>10.3f} "
                       f"{np.mean([r['sphericity'] for r in sel]):>10.3f}")
        used = len({int(r["cluster"]) for r in records if int(r["cluster"]) >= 0})
        if used < clusters:  # K-means cannot make more clusters than distinct nuclei
            click.echo(f"note: {used} cluster{'s' if used != 1 else ''} instead of the {clusters} asked for "
                       f"(--clusters): K-means had only {used} distinct nuclei to fit")
        click.echo(f"wrote {out_path}")
    if fig_paths:
        if inst is None:
            morph_figures.plot_sections(records=records, path=fig_paths[0], voxel_size=vs, overwrite=overwrite, **fig9)
        elif image is not None:
            morph_figures.plot_overlay(load_image(image), inst, records, fig_paths[0], voxel_size=vs, binary=False,
                                       overwrite=overwrite)
        else:
            morph_figures.plot_overlay((inst != 0).astype(np.float32), inst, records, fig_paths[0], voxel_size=vs,
                                       binary=False, overwrite=overwrite)
        morph_figures.plot_features(records, fig_paths[1], overwrite=overwrite)
        click.echo(f"wrote {fig_paths[0]} and {fig_paths[1]}")


def _measure_blockwise(labels, vs, binary, image, workers, block, scheduler, out_path, figures, overwrite):
    """The records, block by block, and (with ``figures``) the sections of Fig. 9, read lazily (else None)."""
    import shutil

    import numpy as np

    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.morphology import measure_volume
    from fusionnet_keras.data.io import open_volume

    with open_volume(labels) as vol:
        shape = tuple(vol.shape)
    if image is not None:
        with open_volume(image) as vol:
            if tuple(vol.shape) != shape:
                raise FusionNetError(f"--image {image} has shape {tuple(vol.shape)}, labels {labels} have {shape}")
    records, info = measure_volume(labels, vs, binary=binary, out=out_path,
                                   block=None if block is None else parse_block(block), workers=workers or 1,
                                   scheduler=scheduler, overwrite=overwrite, keep_work=figures)
    if not figures:
        return records, None
    z, y = shape[0] // 2, shape[1] // 2
    try:
        lab_xy, lab_xz = info["section"](0, z), info["section"](1, y)
    finally:
        shutil.rmtree(info["work"], ignore_errors=True)
    if image is not None:
        with open_volume(image) as vol:
            img_xy, img_xz = np.asarray(vol.lazy[z]), np.asarray(vol.lazy[:, y, :])
    else:
        img_xy, img_xz = (lab_xy != 0).astype(np.float32), (lab_xz != 0).astype(np.float32)
    return records, {"xy": (img_xy, lab_xy), "xz": (img_xz, lab_xz), "z": z, "y": y}
