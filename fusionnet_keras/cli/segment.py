"""``fusionnet-keras segment``: neuron labels from affinities or a boundary map."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import blockwise_options, handle_errors, ome_options, overwrite_option
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


@click.command()
@click.argument("affinities")
@click.argument("out")
@click.option("--method", type=click.Choice(defaults.METHODS), default=None,
              help="watershed: the fragments only; mean: agglomerate by mean boundary affinity; learned: by a "
                   "classifier from train-agglomeration; multicut, lifted-multicut: partition the fragments' "
                   "region graph (GAEC + Kernighan-Lin; costs from --classifier, else the mean affinity); mws: "
                   "mutex watershed of the voxels (needs long-range channels: their offsets stored in AFFINITIES, or "
                   "--offsets). "
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
@click.option("--multicut-weighting", type=click.Choice(defaults.MULTICUT_WEIGHTINGS), default=None,
              help="multicut, lifted-multicut: none: every boundary counts once; size: each cost times the "
                   "boundary's contact area (over the mean) [default: "
                   + ", ".join(f"{w} for {m}" for m, w in defaults.MULTICUT_WEIGHTING.items()) + "].")
@click.option("--offsets", default=None, metavar="DZ,DY,DX;...",
              help="mws, lifted-multicut: offsets of the long-range channels that follow the 3 nearest-neighbour "
                   "ones in AFFINITIES (channel c at v links v and v + offset), e.g. '-3,0,0;0,-9,0;0,0,-9'. "
                   "Default: the offsets stored in AFFINITIES by 'fusionnet-keras affinities' (HDF5, zarr). "
                   "The lifted multicut takes its lifted edges from these channels when AFFINITIES has them "
                   "(in memory) and --lifted-hops is not given, else from hops.")
@click.option("--mws-stride", default=None, metavar="Z,Y,X",
              help="mws: only voxels on this grid keep their repulsive edges (faster, less memory) [default: 1,1,1].")
@click.option("--mws-size", type=click.IntRange(0), default=None,
              help="mws: segments smaller than this (voxels) merge into their strongest neighbour (highest "
                   "nearest-neighbour affinity) [default: 0, off].")
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
def segment(affinities, out, method, threshold, thresholds, classifier, lifted_hops, multicut_weighting, offsets,
            mws_stride, mws_size,
            fragments, invert, ws_low, ws_high, ws_size, ws_merge_affinity, workers, block, scheduler, context,
            voxel_size, pyramid, overwrite):
    """Segment AFFINITIES into neurons; write uint64 labels to OUT.

    AFFINITIES: (3, Z, Y, X) in [0, 1], channels (z, y, x), channel c at voxel v
    linking v and v - e_c, possibly followed by long-range channels (the
    agglomerations and multicut read the first 3; mws and lifted-multicut all
    of them, with the offsets stored in the file or given by --offsets); or a (Z, Y, X)
    boundary map, high = boundary
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
    from fusionnet_keras.workflows.segment import segment_path

    segment_path(affinities, out, method=method, threshold=threshold, thresholds=thresholds, classifier=classifier,
                 lifted_hops=lifted_hops, weighting=multicut_weighting, offsets=offsets, mws_stride=mws_stride,
                 mws_size=mws_size,
                 fragments=fragments, invert=invert,
                 watershed_options=watershed_settings(ws_low, ws_high, ws_size, ws_merge_affinity), workers=workers,
                 block=block, scheduler=scheduler, context=context, voxel_size=voxel_size, pyramid=pyramid,
                 overwrite=overwrite, report=click.echo)
