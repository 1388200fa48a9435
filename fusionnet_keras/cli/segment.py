"""``fusionnet-keras segment``: neuron labels from affinities or a boundary map."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import (
    blockwise_options,
    blockwise_requested,
    handle_errors,
    ome_options,
    overwrite_option,
)
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults


def invert_option(func):
    return click.option("--invert", is_flag=True,
                        help="The input is high on cell interiors (or affinities given as boundary "
                             "probabilities): use 1 - input.")(func)


def watershed_options(func):
    """The z-watershed settings (``--ws-*``)."""
    for opt in reversed([
        click.option("--ws-low", type=click.FloatRange(0, 1), default=defaults.WATERSHED_LOW, show_default=True,
                     help="T_low: affinities at or below it are cut; voxels with no link above it are background (0)."),
        click.option("--ws-high", type=click.FloatRange(0, 1), default=defaults.WATERSHED_HIGH, show_default=True,
                     help="T_high: affinities at or above it always join their voxels."),
        click.option("--ws-size", type=click.IntRange(0), default=defaults.WATERSHED_SIZE, show_default=True,
                     help="T_size: fragments smaller than this (voxels) merge with their strongest neighbour (0: off)."),
        click.option("--ws-merge-affinity", type=click.FloatRange(0, 1), default=defaults.WATERSHED_MERGE_AFFINITY,
                     show_default=True, help="T_e: the size merging only follows boundaries at least this strong."),
    ]):
        func = opt(func)
    return func


def watershed_settings(ws_low, ws_high, ws_size, ws_merge_affinity):
    from fusionnet_keras.segmentation.pipeline import WatershedOptions

    return WatershedOptions(low=ws_low, high=ws_high, size=ws_size, merge_affinity=ws_merge_affinity)


def parse_thresholds(threshold, thresholds):
    """``--threshold`` / ``--thresholds`` -> a list of floats, or None for the default."""
    if threshold is not None and thresholds is not None:
        raise FusionNetError("give either --threshold or --thresholds, not both")
    if thresholds is None:
        return None if threshold is None else [threshold]
    try:
        values = [float(t) for t in thresholds.split(",") if t.strip()]
    except ValueError:
        raise FusionNetError(f"--thresholds must be numbers separated by commas, got {thresholds!r}") from None
    if not values:
        raise FusionNetError("--thresholds is empty")
    return values


def dataset_name(threshold: float) -> str:
    """Name of the volume of one threshold in the output container, e.g. ``threshold_0.5``."""
    return f"threshold_{threshold:g}"


@click.command()
@click.argument("affinities")
@click.argument("out")
@click.option("--method", type=click.Choice(defaults.METHODS), default=None,
              help="watershed: the fragments only; mean: agglomerate by mean boundary affinity; learned: by a "
                   "classifier from train-agglomeration; multicut, lifted-multicut: partition the fragments' "
                   "region graph (GAEC + Kernighan-Lin; costs from --classifier, else the mean affinity); mws: "
                   "mutex watershed of the voxels (needs long-range channels, --offsets). "
                   "Default: learned with --classifier, else mean.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help=f"Agglomeration threshold (higher = more merging) [default: {defaults.THRESHOLD:g}]; for "
                   f"multicut, lifted-multicut and mws the boundary bias beta in (0, 1) (higher = more "
                   f"splitting) [default: {defaults.BETA:g}].")
@click.option("--thresholds", default=None, metavar="T1,T2,...",
              help="Several thresholds (or betas), one call: OUT is an HDF5 file or zarr group with one volume "
                   "per value, named threshold_T.")
@click.option("--classifier", default=None, type=click.Path(dir_okay=False),
              help="Classifier for --method learned (or the multicuts' costs): a file from train-agglomeration, "
                   "a 3-D registry model's name or an https://...#sha256=... URL. Default for --method learned: "
                   "the shipped 3-D model's.")
@click.option("--lifted-hops", type=click.IntRange(2), default=None,
              help=f"lifted-multicut: lifted edges join fragments up to this many boundaries apart "
                   f"[default: {defaults.LIFTED_HOPS}].")
@click.option("--offsets", default=None, metavar="DZ,DY,DX;...",
              help="mws: offsets of the long-range (repulsive) channels that follow the 3 nearest-neighbour "
                   "ones in AFFINITIES (channel c at v links v and v + offset), e.g. '-3,0,0;0,-9,0;0,0,-9'.")
@click.option("--mws-stride", default=None, metavar="Z,Y,X",
              help="mws: only voxels on this grid keep their repulsive edges (faster, less memory) [default: 1,1,1].")
@click.option("--fragments", default=None, help="Agglomerate these fragments (same shape) instead of the watershed's.")
@invert_option
@watershed_options
@blockwise_options
@click.option("--context", default=None, metavar="Z,Y,X",
              help="Blockwise: voxels around each block that its watershed sees [default: 8,48,48]; it must hold "
                   "the steepest-ascent paths of the block's basins (less gives blocks that disagree at faces).")
@ome_options
@overwrite_option
@handle_errors
def segment(affinities, out, method, threshold, thresholds, classifier, lifted_hops, offsets, mws_stride,
            fragments, invert, ws_low, ws_high, ws_size, ws_merge_affinity, workers, block, scheduler, context,
            voxel_size, pyramid, overwrite):
    """Segment AFFINITIES into neurons; write uint64 labels to OUT.

    AFFINITIES: (3, Z, Y, X) in [0, 1], channels (z, y, x), channel c at voxel v
    linking v and v - e_c (for --method mws followed by the long-range channels
    of --offsets); or a (Z, Y, X) boundary map, high = boundary
    (--invert when high = interior), turned into affinities 1 - max(b(v), b(v - e_c)).
    Fragments come from the z-watershed (Zlateski & Seung 2015); label 0 only
    where the input says background (no affinity above --ws-low).

    With --workers/--block/--scheduler, volumes larger than memory: fragments
    per block (with context), the region graph gathered per block, one global
    agglomeration (or multicut of the gathered graph), then relabelling by
    block into zarr OUT (work files in OUT.work/); the same command again
    resumes an interrupted run.

    A zarr OUT is an OME-Zarr label image (one per threshold with --thresholds;
    voxel size from AFFINITIES' metadata or --voxel-size, provenance in its
    attributes); HDF5 and TIFF outputs carry 'resolution' and the ImageJ spacing.
    """
    import time

    import numpy as np

    from fusionnet_keras.cli.options import check_pyramid_output, levels_note, pyramid_levels
    from fusionnet_keras.data.io import check_output, check_outputs, write_volume, write_volumes
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.segmentation.agglomeration import check_thresholds
    from fusionnet_keras.segmentation.inputs import load_affinities, load_labels
    from fusionnet_keras.segmentation.pipeline import segment as run

    values = parse_thresholds(threshold, thresholds)
    check_pyramid_output(pyramid, out)
    several = thresholds is not None
    for member in [_member(out, dataset_name(t)) for t in check_thresholds(values)] if several else [out]:
        check_not_input(member, affinities, fragments, files=[classifier])
    if method is None:
        method = "learned" if classifier else "mean"
    if method == "watershed" and values is not None:
        raise FusionNetError("--method watershed takes no --threshold/--thresholds")
    if method not in defaults.CLASSIFIER_METHODS and classifier is not None:
        raise FusionNetError(f"--classifier is for --method {', '.join(defaults.CLASSIFIER_METHODS)}; "
                             f"--method {method} does not use it")

    long_range, stride = _mws_settings(method, offsets, mws_stride, blockwise_requested(workers, block, scheduler))
    if lifted_hops is not None and method != "lifted-multicut":
        raise FusionNetError("--lifted-hops is for --method lifted-multicut")
    hops = defaults.LIFTED_HOPS if lifted_hops is None else lifted_hops
    if method in defaults.BETA_METHODS and values is not None:
        from fusionnet_keras.segmentation.multicut import check_betas

        check_betas(values)

    if context is not None and not blockwise_requested(workers, block, scheduler):
        raise FusionNetError("--context is for blockwise segmentation (with --workers, --block or --scheduler)")
    if blockwise_requested(workers, block, scheduler):
        pass  # the blockwise outputs are checked (and resumed) by segment_volume
    elif several:
        check_outputs(out, [dataset_name(t) for t in check_thresholds(values)], overwrite)
    else:
        check_output(out, overwrite)
    clf = None
    if method == "learned" or classifier is not None:
        from fusionnet_keras.pretrained.resolve import resolve_classifier

        classifier = resolve_classifier(classifier)
    if classifier is not None:
        from fusionnet_keras.segmentation.learned import BoundaryClassifier

        clf = BoundaryClassifier.load(classifier)
    start = time.perf_counter()
    if blockwise_requested(workers, block, scheduler):
        from fusionnet_keras.inference.grid import parse_block
        from fusionnet_keras.blockwise.segment import DEFAULT_CONTEXT, segment_volume

        if fragments:
            raise FusionNetError("--fragments is not supported blockwise (the fragments are computed per block)")
        names = [dataset_name(t) for t in check_thresholds(values)] if several else [None]
        info = segment_volume(affinities, [_member(out, n) for n in names], method=method, thresholds=values,
                              classifier=clf, classifier_path=classifier, invert=invert,
                              watershed_options=watershed_settings(ws_low, ws_high, ws_size, ws_merge_affinity),
                              block=None if block is None else parse_block(block), workers=workers or 1,
                              context=DEFAULT_CONTEXT if context is None else parse_block(context, name="--context"),
                              scheduler=scheduler, overwrite=overwrite, hops=hops, voxel_size=voxel_size,
                              pyramid=pyramid)
        click.echo(f"{info['fragments']} fragments in {info['blocks']} blocks; "
                   + ", ".join(f"{n} segments" for n in info["segments"]) + levels_note(info))
        click.echo(f"wrote {out} ({method}, blockwise, {time.perf_counter() - start:.1f} s)")
        return
    affs = _load_long_range(affinities, invert) if method == "mws" else load_affinities(affinities, invert=invert)
    frags = load_labels(fragments, "fragments", shape=affs.shape[1:]) if fragments else None
    results = {}
    for t, labels in run(affs, method, values, fragments=frags, classifier=clf,
                         watershed_options=watershed_settings(ws_low, ws_high, ws_size, ws_merge_affinity),
                         hops=hops, offsets=long_range, stride=stride):
        results[t] = labels
        n = int(np.count_nonzero(np.unique(labels)))
        kind = "beta" if method in defaults.BETA_METHODS else "threshold"
        what = "fragments" if t is None else f"segments at {kind} {t:g}"
        click.echo(f"{n} {what}")
    from fusionnet_keras.data.io.ome import output_meta

    meta = output_meta([affinities], voxel_size, labels=True, command="segment", method=method, thresholds=values,
                       classifier=classifier, fragments=fragments, invert=invert,
                       watershed=watershed_settings(ws_low, ws_high, ws_size, ws_merge_affinity))
    if several:
        write_volumes(out, {dataset_name(t): v for t, v in results.items()}, overwrite=overwrite, meta=meta)
        note = [pyramid_levels(_member(out, dataset_name(t)), pyramid) for t in results][0]  # each the same
    else:
        write_volume(out, next(iter(results.values())).astype(np.uint64), overwrite=overwrite, meta=meta)
        note = pyramid_levels(out, pyramid)
    click.echo(f"wrote {out} ({method}, {time.perf_counter() - start:.1f} s){note}")


def _member(out, name):
    """``OUT`` for one volume, else ``OUT[:group]/name``."""
    if name is None:
        return out
    from fusionnet_keras.data.io import parse_path

    file, key = parse_path(out)
    return f"{file}:{key}/{name}" if key else f"{file}:{name}"


def _mws_settings(method, offsets, stride, blockwise):
    """``--offsets`` and ``--mws-stride`` checked: (long-range offsets or None, stride)."""
    if method != "mws":
        if offsets is not None or stride is not None:
            raise FusionNetError("--offsets and --mws-stride are for --method mws")
        return None, (1, 1, 1)
    if blockwise:
        raise FusionNetError("--method mws is not supported blockwise (it partitions the voxels of the whole volume)")
    if offsets is None:
        raise FusionNetError("--method mws needs long-range affinity channels and their --offsets")
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.segmentation.mws import parse_offsets

    return parse_offsets(offsets), (1, 1, 1) if stride is None else parse_block(stride, name="--mws-stride")


def _load_long_range(path, invert):
    """Affinities with long-range channels ``(C, Z, Y, X)`` as float32 in [0, 1] (``1 - x`` with invert)."""
    from fusionnet_keras.data.io import open_volume
    from fusionnet_keras.data.io.images import as_probability

    with open_volume(path) as vol:
        a = as_probability(vol.read(), vol.name)
    return 1.0 - a if invert else a
