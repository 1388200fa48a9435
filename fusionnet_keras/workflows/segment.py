"""Segmenting a file (the ``segment`` command): the options checked, in memory or block by block, the outputs.

:func:`segment_path` checks every option against the others and the outputs
before any work, then segments in memory
(:func:`~fusionnet_keras.segmentation.pipeline.segment`, written atomically) or,
when any of ``workers``, ``block``, ``scheduler`` is given, block by block on
Dask (:func:`~fusionnet_keras.blockwise.segment.segment_volume`, into zarr,
resumed by running it again).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults
from fusionnet_keras.segmentation.agglomeration import check_thresholds
from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment


def parse_thresholds(threshold=None, thresholds=None):
    """One ``threshold`` or several ``thresholds`` (a list or ``"T1,T2,..."``) -> a list of floats, or None."""
    if threshold is not None and thresholds is not None:
        raise FusionNetError("give either --threshold or --thresholds, not both")
    if thresholds is None:
        return None if threshold is None else [threshold]
    try:
        parts = thresholds.split(",") if isinstance(thresholds, str) else list(thresholds)
        values = [float(t) for t in parts if str(t).strip()]
    except (TypeError, ValueError):
        raise FusionNetError(f"--thresholds must be numbers separated by commas, got {thresholds!r}") from None
    if not values:
        raise FusionNetError("--thresholds is empty")
    return values


def dataset_name(threshold: float) -> str:
    """Name of the volume of one threshold in the output container, e.g. ``threshold_0.5``."""
    return f"threshold_{threshold:g}"


def member(out, name):
    """``out`` for one volume (``name`` None), else ``out[:group]/name``."""
    if name is None:
        return out
    from fusionnet_keras.data.io import parse_path

    file, key = parse_path(out)
    return f"{file}:{key}/{name}" if key else f"{file}:{name}"


@dataclass(frozen=True)
class SegmentJob:
    """The checked settings of :func:`segment_path`."""

    method: str
    thresholds: list | None
    names: list
    classifier: str | None
    hops: int
    offsets: list | None
    stride: tuple
    mws_size: int = 0
    weighting: str | None = None
    hops_given: bool = False


def _check_job(input_path, out, method, threshold, thresholds, classifier, lifted_hops, offsets, mws_stride,
               fragments, blockwise, context, mws_size=None, weighting=None) -> SegmentJob:
    """The options of :func:`segment_path` checked against each other, before any work."""
    from fusionnet_keras.data.io.paths import check_not_input

    values = parse_thresholds(threshold, thresholds)
    names = [dataset_name(t) for t in check_thresholds(values)] if thresholds is not None else [None]
    for name in names:
        check_not_input(member(out, name), input_path, fragments, files=[classifier])
    if method is None:
        method = "learned" if classifier else "mean"
    if method == "watershed" and values is not None:
        raise FusionNetError("--method watershed takes no --threshold/--thresholds")
    if method not in defaults.CLASSIFIER_METHODS and classifier is not None:
        raise FusionNetError(f"--classifier is for --method {', '.join(defaults.CLASSIFIER_METHODS)}; "
                             f"--method {method} does not use it")
    long_range, stride = _long_range_settings(method, offsets, mws_stride, blockwise)
    if mws_size is not None and method != "mws":
        raise FusionNetError("--mws-size is for --method mws")
    if lifted_hops is not None and method != "lifted-multicut":
        raise FusionNetError("--lifted-hops is for --method lifted-multicut")
    if lifted_hops is not None and offsets is not None:
        raise FusionNetError("the lifted edges come from the long-range channels (--offsets) or from --lifted-hops, "
                             "not both")
    if weighting is not None and method not in ("multicut", "lifted-multicut"):
        raise FusionNetError("--multicut-weighting is for --method multicut and lifted-multicut")
    if method in defaults.BETA_METHODS and values is not None:
        from fusionnet_keras.segmentation.multicut import check_betas

        check_betas(values)
    if context is not None and not blockwise:
        raise FusionNetError("--context is for blockwise segmentation (with --workers, --block or --scheduler)")
    if fragments and blockwise:
        raise FusionNetError("--fragments is not supported blockwise (the fragments are computed per block)")
    hops = defaults.LIFTED_HOPS if lifted_hops is None else lifted_hops
    return SegmentJob(method, values, names, classifier, hops, long_range, stride, mws_size or 0,
                      weighting or defaults.MULTICUT_WEIGHTING.get(method), lifted_hops is not None)


def _long_range_settings(method, offsets, stride, blockwise):
    """``offsets`` (mws, lifted-multicut) and ``stride`` (mws) checked: (long-range offsets or None, stride)."""
    if stride is not None and method != "mws":
        raise FusionNetError("--mws-stride is for --method mws")
    if method not in ("mws", "lifted-multicut"):
        if offsets is not None:
            raise FusionNetError("--offsets is for --method mws and lifted-multicut")
        return None, (1, 1, 1)
    if blockwise and (method == "mws" or offsets is not None):
        raise FusionNetError(f"--method {method} with long-range channels is not supported blockwise (it needs the "
                             "long-range edges of the whole volume)")
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.segmentation.mws import parse_offsets

    offsets = parse_offsets(offsets) if isinstance(offsets, str) else offsets  # None: those stored in the input
    return offsets, (1, 1, 1) if stride is None else parse_block(stride, name="--mws-stride")


def _long_range_channels(path) -> bool:
    """Whether the affinity file ``path`` has channels after the 3 nearest-neighbour ones."""
    from fusionnet_keras.data.io import open_volume

    with open_volume(path) as vol:
        return len(vol.shape) == 4 and vol.shape[0] > 3


def _load_long_range(path, invert, given):
    """``(affinities (C, Z, Y, X) float32 in [0, 1] (1 - x with invert), long-range offsets)``: the offsets
    are ``given`` (``--offsets``) or read from the file's metadata
    (:func:`~fusionnet_keras.segmentation.mws.stored_offsets`)."""
    from fusionnet_keras.data.io import open_volume
    from fusionnet_keras.data.io.images import as_probability
    from fusionnet_keras.segmentation.mws import stored_offsets

    with open_volume(path) as vol:
        long_range = stored_offsets(vol, given)
        a = as_probability(vol.read(), vol.name)
    return (1.0 - a if invert else a), long_range


def segment_path(input_path, out, *, method=None, threshold=None, thresholds=None, classifier=None,
                 lifted_hops=None, offsets=None, mws_stride=None, mws_size=None, weighting=None, fragments=None,
                 invert=False,
                 watershed_options: WatershedOptions | None = None, workers=None, block=None, scheduler=None,
                 context=None, voxel_size=None, pyramid=False, overwrite=False, progress=True, report=None) -> dict:
    """Segment the affinities (or boundary map) in the file ``input_path`` into ``out``: the ``segment`` command.

    In memory, or block by block on Dask when any of ``workers``, ``block``,
    ``scheduler`` is given (:func:`~fusionnet_keras.blockwise.job.blockwise_requested`;
    :func:`~fusionnet_keras.blockwise.segment.segment_volume`, into zarr, resumed
    by running it again). Every option is checked before any work starts.

    Args:
        input_path: ``(3, Z, Y, X)`` affinities or a ``(Z, Y, X)`` boundary map; affinities may have
            long-range channels after the first 3 (the methods but ``"mws"`` read the first 3).
        out: the labels' file; with ``thresholds`` an HDF5 file or zarr group holding one volume per value
            (:func:`dataset_name`).
        method: as for :func:`~fusionnet_keras.segmentation.pipeline.segment`; default ``"learned"`` with a
            classifier, else ``"mean"``.
        threshold: one threshold (or beta).
        thresholds: several (a list or ``"T1,T2,..."``); not with ``threshold``.
        classifier: the classifier's file, registry name or URL (resolved; the shipped one for
            ``"learned"`` when None).
        lifted_hops: ``"lifted-multicut"``: as ``hops`` of
            :func:`~fusionnet_keras.segmentation.pipeline.segment`.
        offsets: ``"mws"``, ``"lifted-multicut"``: the long-range offsets, ``"dz,dy,dx;..."`` or a list;
            default those stored in the input by ``fusionnet-keras affinities`` (given, they must agree).
            The lifted multicut (in memory) takes its lifted edges from the long-range channels when the
            input has them and ``lifted_hops`` is not given, else from hops.
        mws_stride: ``"mws"``: ``"z,y,x"`` (default 1,1,1).
        mws_size: ``"mws"``: segments under this many voxels merge into their strongest neighbour (default 0).
        weighting: the multicuts' edge weighting, ``"none"`` or ``"size"``; default the method's
            (:data:`~fusionnet_keras.segmentation.defaults.MULTICUT_WEIGHTING`).
        fragments: a file of fragments to agglomerate (in memory only).
        invert: the input is high on cell interiors.
        watershed_options: :class:`WatershedOptions`.
        workers: blockwise: local worker processes (default 1 when blockwise; 0: in this process).
        block: blockwise: block shape (``"Z,Y,X"`` or a tuple).
        scheduler: blockwise: a Dask scheduler's address.
        context: blockwise: the watershed's context (``"Z,Y,X"`` or a tuple).
        voxel_size: nm (z, y, x) for the outputs' metadata (default: the input's).
        pyramid: add downsampled levels to a zarr (OME-Zarr) output.
        overwrite: replace existing outputs.
        progress: blockwise: progress bars.
        report: called with each line of the summary (e.g. ``click.echo``).

    Returns:
        ``{"method", "blockwise", "segments": [k per result], "seconds"}`` (blockwise also ``"blocks"``,
        ``"fragments"``).
    """
    import time

    from fusionnet_keras.blockwise.job import blockwise_requested

    from fusionnet_keras.blockwise.pyramid import check_pyramid_output

    report = report or (lambda line: None)
    blockwise = blockwise_requested(workers, block, scheduler)
    check_pyramid_output(pyramid, out)
    job = _check_job(input_path, out, method, threshold, thresholds, classifier, lifted_hops, offsets, mws_stride,
                     fragments, blockwise, context, mws_size, weighting)
    if not blockwise:
        from fusionnet_keras.data.io import check_output, check_outputs

        if thresholds is not None:
            check_outputs(out, job.names, overwrite)
        else:
            check_output(out, overwrite)
    classifier, clf = _classifier(job)
    start = time.perf_counter()
    run = _segment_blockwise if blockwise else _segment_in_memory
    info = run(input_path, out, job, clf, classifier, invert=invert, fragments=fragments, context=context,
               watershed_options=watershed_options or WatershedOptions(), workers=workers, block=block,
               scheduler=scheduler, voxel_size=voxel_size, pyramid=pyramid, overwrite=overwrite, progress=progress,
               report=report)
    info.update(method=job.method, blockwise=blockwise, seconds=time.perf_counter() - start)
    report(f"wrote {out} ({job.method}{', blockwise' if blockwise else ''}, {info['seconds']:.1f} s)"
           + info.get("note", ""))
    return info


def _classifier(job: SegmentJob):
    """(the classifier's file, the loaded classifier) of a job, or (None, None)."""
    path = job.classifier
    if job.method == "learned" or path is not None:
        from fusionnet_keras.pretrained.resolve import resolve_classifier

        path = resolve_classifier(path)
    if path is None:
        return None, None
    from fusionnet_keras.segmentation.learned import BoundaryClassifier

    return path, BoundaryClassifier.load(path)


def _segment_blockwise(input_path, out, job, clf, classifier_path, *, invert, fragments, context, watershed_options,
                       workers, block, scheduler, voxel_size, pyramid, overwrite, progress, report) -> dict:
    from fusionnet_keras.blockwise.pyramid import levels_note
    from fusionnet_keras.blockwise.segment import DEFAULT_CONTEXT, segment_volume

    info = segment_volume(input_path, [member(out, n) for n in job.names], method=job.method,
                          thresholds=job.thresholds, classifier=clf, classifier_path=classifier_path, invert=invert,
                          watershed_options=watershed_options, block=block,
                          workers=1 if workers is None else workers,
                          context=DEFAULT_CONTEXT if context is None else context, scheduler=scheduler,
                          overwrite=overwrite, hops=job.hops, weighting=job.weighting, progress=progress,
                          voxel_size=voxel_size,
                          pyramid=pyramid)
    report(f"{info['fragments']} fragments in {info['blocks']} blocks; "
           + ", ".join(f"{n} segments" for n in info["segments"]) + levels_note(info))
    return info


def _segment_in_memory(input_path, out, job, clf, classifier_path, *, invert, fragments, watershed_options,
                       voxel_size, pyramid, overwrite, report, **_blockwise) -> dict:
    from fusionnet_keras.blockwise.pyramid import pyramid_levels
    from fusionnet_keras.data.io import write_volume, write_volumes
    from fusionnet_keras.data.io.ome import output_meta
    from fusionnet_keras.segmentation.inputs import load_affinities, load_labels

    lifted_from_affinities = job.method == "lifted-multicut" and not job.hops_given and (
        job.offsets is not None or _long_range_channels(input_path))
    if job.method == "mws" or lifted_from_affinities:
        affs, long_range = _load_long_range(input_path, invert, job.offsets)
        job = dataclasses.replace(job, offsets=long_range)
    else:
        affs = load_affinities(input_path, invert=invert)
    frags = load_labels(fragments, "fragments", shape=affs.shape[1:]) if fragments else None
    results, counts = {}, []
    kind = "beta" if job.method in defaults.BETA_METHODS else "threshold"
    for t, labels in segment(affs, job.method, job.thresholds, fragments=frags, classifier=clf,
                             watershed_options=watershed_options, hops=job.hops, offsets=job.offsets,
                             stride=job.stride, mws_size=job.mws_size, weighting=job.weighting):
        results[t] = labels
        n = int(np.count_nonzero(np.unique(labels)))
        counts.append(n)
        report(f"{n} fragments" if t is None else f"{n} segments at {kind} {t:g}")
    meta = output_meta([input_path], voxel_size, labels=True, command="segment", method=job.method,
                       thresholds=job.thresholds, classifier=classifier_path, fragments=fragments, invert=invert,
                       watershed=watershed_options,
                       **({"offsets": job.offsets, "mws_stride": job.stride, "mws_size": job.mws_size}
                          if job.method == "mws" else {}),
                       **({"offsets": job.offsets, "weighting": job.weighting}
                          if job.method in ("multicut", "lifted-multicut") else {}))
    if job.names != [None]:
        write_volumes(out, {dataset_name(t): v for t, v in results.items()}, overwrite=overwrite, meta=meta)
        note = [pyramid_levels(member(out, dataset_name(t)), pyramid) for t in results][0]  # each the same
    else:
        write_volume(out, next(iter(results.values())).astype(np.uint64), overwrite=overwrite, meta=meta)
        note = pyramid_levels(out, pyramid)
    return {"segments": counts, "note": note}
