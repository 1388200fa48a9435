"""Measuring the nuclei of a label file (the ``morphology`` command): in memory or block by block.

:func:`measure_path` checks its outputs (the CSV, the figures, ``OUT.work/``
when blockwise) before any work, measures every nucleus in memory
(:func:`~fusionnet_keras.evaluation.morphology.measure_nuclei`) or, when any of
``workers``, ``block``, ``scheduler`` is given, block by block on Dask
(:func:`~fusionnet_keras.blockwise.morphology.measure_volume`, resumed by
running it again), then clusters, writes the CSV and draws Fig. 9 and 10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError

#: Names of the figures written into ``figures``.
FIGURES = ("fig9_overlay.png", "fig10_features.png")


def _targets(labels, image, out: Path, figures, blockwise: bool, overwrite: bool) -> list:
    """The figure paths (none without ``figures``), after checking every output can be written."""
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.utils.atomic import check_overwrite

    fig_paths = []
    if figures is not None:
        fig_dir = Path(figures)
        if fig_dir.exists() and not fig_dir.is_dir():
            raise FusionNetError(f"--figures {fig_dir} is not a directory")
        fig_paths = [fig_dir / name for name in FIGURES]
    work = [Path(f"{out}.work")] if blockwise else []  # replaced too
    for t in [out, *fig_paths, *work]:
        check_not_input(t, labels, image, whole=True)
    for t in [out, *fig_paths]:
        check_overwrite(t, overwrite)
    return fig_paths


def measure_path(labels, voxel_size, out, *, clusters: int = 3, figures=None, image=None, seed: int = 0,
                 exclude_outliers: bool = False, binary=None, workers=None, block=None, scheduler=None,
                 overwrite: bool = False, progress: bool = True, report=None) -> list[dict]:
    """Measure every nucleus of the label file ``labels``; write the CSV ``out`` (and figures); the records.

    Args:
        labels: a 3-D instance volume or binary mask (any readable format).
        voxel_size: nm (Z, Y, X): three numbers or ``"Z,Y,X"``; None: the labels' own (OME-Zarr scale, HDF5
            resolution, ImageJ TIFF spacing).
        out: the CSV table.
        clusters: K-means clusters.
        figures: a folder for Fig. 9 and Fig. 10 (:data:`FIGURES`), or None.
        image: the EM volume behind Fig. 9 (same shape); default the label mask.
        seed: K-means seed.
        exclude_outliers: fit the K-means without the flagged outliers.
        binary: read ``labels`` as a mask (True), instances (False), or decide (None).
        workers: blockwise: local worker processes (default 1 when blockwise; 0: in this process).
        block: blockwise: block shape (``"Z,Y,X"`` or a tuple).
        scheduler: blockwise: a Dask scheduler's address.
        overwrite: replace existing outputs (and another run's work files).
        progress: blockwise: progress bars.
        report: called with each line of the summary (e.g. ``click.echo``).
    """
    from fusionnet_keras.blockwise.job import blockwise_requested
    from fusionnet_keras.evaluation import morphology as morph

    report = report or (lambda line: None)
    from fusionnet_keras.data.io.voxel_sizes import voxel_size_of

    vs = voxel_size_of([labels], voxel_size)
    if vs is None:
        raise FusionNetError(f"{labels} carries no voxel size; give it as --voxel-size Z,Y,X (nm)")
    out = Path(out)
    blockwise = blockwise_requested(workers, block, scheduler)
    fig_paths = _targets(labels, image, out, figures, blockwise, overwrite)
    if blockwise:
        records, sections = _measure_blockwise(labels, vs, binary, image, workers, block, scheduler, out,
                                               bool(fig_paths), overwrite, progress)
    else:
        records, sections = _measure_in_memory(labels, vs, binary, image, bool(fig_paths))
    morph.annotate(records, k=clusters, seed=seed, exclude_outliers=exclude_outliers)
    morph.write_csv(records, out, overwrite=overwrite)
    for line in summary(records, vs, clusters):
        report(line)
    report(f"no nuclei found in {labels}; wrote the header-only table {out}" if not records else f"wrote {out}")
    if fig_paths:
        from fusionnet_keras.evaluation import figures as morph_figures

        morph_figures.plot_sections(records=records, path=fig_paths[0], voxel_size=vs, overwrite=overwrite,
                                    **sections)
        morph_figures.plot_features(records, fig_paths[1], overwrite=overwrite)
        report(f"wrote {fig_paths[0]} and {fig_paths[1]}")
    return records


def summary(records, voxel_size, clusters: int) -> list[str]:
    """The lines the ``morphology`` command prints about annotated ``records``: counts and cluster means."""
    if not records:
        return []
    n_out = sum(bool(r["outlier"]) for r in records)
    n_border = sum(bool(r["touches_border"]) for r in records)
    lines = [f"{len(records)} nuclei ({n_border} touching the volume border), {n_out} outliers; "
             f"voxel size {voxel_size[0]:g} x {voxel_size[1]:g} x {voxel_size[2]:g} nm",
             f"{'cluster':>8} {'nuclei':>7} {'volume um^3':>12} {'area um^2':>10} {'sphericity':>10}"]
    used = sorted({int(r["cluster"]) for r in records})
    for c in used:
        sel = [r for r in records if int(r["cluster"]) == c]
        name = str(c) if c >= 0 else "none"
        lines.append(f"{name:>8} {len(sel):>7} {np.mean([r['volume_um3'] for r in sel]):>12.3f} "
                     f"{np.mean([r['surface_area_um2'] for r in sel]):>10.3f} "
                     f"{np.mean([r['sphericity'] for r in sel]):>10.3f}")
    fitted = len([c for c in used if c >= 0])
    if fitted < clusters:  # K-means cannot make more clusters than distinct nuclei
        lines.append(f"note: {fitted} cluster{'s' if fitted != 1 else ''} instead of the {clusters} asked for "
                     f"(--clusters): K-means had only {fitted} distinct nuclei to fit")
    return lines


def _sections(image, labels_xy, labels_xz, z: int, y: int) -> dict:
    """Fig. 9's two sections (x-y at ``z``, x-z at ``y``) with their image: ``image``'s, else the label mask."""
    if image is not None:
        from fusionnet_keras.data.io import open_image

        with open_image(image) as vol:
            img_xy, img_xz = np.asarray(vol.lazy[z]), np.asarray(vol.lazy[:, y, :])
    else:
        img_xy, img_xz = (labels_xy != 0).astype(np.float32), (labels_xz != 0).astype(np.float32)
    return {"xy": (img_xy, labels_xy), "xz": (img_xz, labels_xz), "z": z, "y": y}


def _check_image(image, labels, shape) -> None:
    if image is None:
        return
    from fusionnet_keras.data.io import open_image

    with open_image(image) as vol:
        if tuple(vol.shape) != tuple(shape):
            raise FusionNetError(f"--image {image} has shape {tuple(vol.shape)}, labels {labels} have {tuple(shape)}")


def _measure_in_memory(labels, vs, binary, image, figures: bool):
    """The records of the whole volume, and (with ``figures``) Fig. 9's sections (else None)."""
    from fusionnet_keras.data.io import read_volume
    from fusionnet_keras.evaluation import morphology as morph
    from fusionnet_keras.segmentation.inputs import check_labels

    raw = check_labels(read_volume(labels), f"labels {labels}")  # 3-D, not empty, whole non-negative numbers
    _check_image(image, labels, raw.shape)
    if binary is None and raw.dtype.kind in "biuf":
        binary = morph.is_binary_mask(raw)
    inst = morph.instance_labels(raw, binary=binary)
    del raw
    records = morph.measure_nuclei(inst, vs, binary=False)
    if not figures:
        return records, None
    z, y = inst.shape[0] // 2, inst.shape[1] // 2
    return records, _sections(image, inst[z], inst[:, y, :], z, y)


def _measure_blockwise(labels, vs, binary, image, workers, block, scheduler, out, figures: bool, overwrite,
                       progress):
    """The records, block by block, and (with ``figures``) Fig. 9's sections, read lazily (else None)."""
    import shutil

    from fusionnet_keras.blockwise.morphology import measure_volume
    from fusionnet_keras.data.io import open_volume

    with open_volume(labels) as vol:
        shape = tuple(vol.shape)
    _check_image(image, labels, shape)
    records, info = measure_volume(labels, vs, binary=binary, out=out, block=block,
                                   workers=1 if workers is None else workers, scheduler=scheduler,
                                   overwrite=overwrite, keep_work=figures, progress=progress)
    if not figures:
        return records, None
    z, y = shape[0] // 2, shape[1] // 2
    try:
        lab_xy, lab_xz = info["section"](0, z), info["section"](1, y)
    finally:
        shutil.rmtree(info["work"], ignore_errors=True)
    return records, _sections(image, lab_xy, lab_xz, z, y)
