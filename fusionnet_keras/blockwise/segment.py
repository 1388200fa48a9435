"""Blockwise segmentation of volumes larger than memory: fragments, region graph, agglomeration, relabelling.

Four passes over the block grid, each resumable (done markers) and run by the
engine's workers, except the third:

1. **basins**: the z-watershed's basins (steps 1-2, no size merging) of each
   block read with ``context`` voxels around it, cropped to the block, numbered
   ``block.id * block voxels + 1, ...`` (globally unique) into a uint64 zarr
   array; beside them the block's view of the one-voxel rim around it (the
   layer of its neighbours that touches each face) and the scan-order index of
   each basin's first voxel;
2. **graph**: the block's region graph (:func:`~fusionnet_keras.segmentation.graph.region_graph`)
   from its basins and affinities with one voxel of the lower neighbours
   (``start``), so the edges across block faces are counted once; each block's
   graph is a file in the job's graph table (``graph/<block>.npz``), with the
   block's *stitches*: every pair (its basin, a neighbour's basin) that meet
   on the rim, where the block's watershed saw its basin continue;
3. **agglomeration** (one process; the multicuts too, solved once on the global graph): the block graphs merged
   (:func:`~fusionnet_keras.segmentation.graph.merge_graphs`: statistics add up
   exactly), the stitched basins contracted into the whole volume's basins, the
   watershed's size merging (step 3) done on that global basin graph, then the
   agglomeration, mean or learned, all thresholds in one pass; the result is a
   lookup table basin -> segment (ids 1..K);
4. **relabel**: every block's basins through the lookup table, into the
   output arrays (one per threshold).

Why it agrees with whole-volume segmentation: a basin is decided by its
voxels' steepest-ascent paths, which the context holds near the block, so a
block's basins are pieces of the whole volume's and its view one voxel past a
face is as good as of its own voxels; stitching every pair that meets there
joins the pieces (on fib-medulla into exactly the whole volume's basins). The
size merging is a single linkage over the *whole* basin graph (per block it
would see truncated sizes), with ties between equally strong edges broken by
the basins' first voxels, not by their ids, so it does not depend on the blocks.

The work files live beside the output, in ``OUT.work/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionnet_keras.blockwise.engine import BlockTask
from fusionnet_keras.inference.grid import BlockGrid, parse_block
from fusionnet_keras.blockwise.job import file_tag, open_job
from fusionnet_keras.blockwise.stitch import first_voxels_of, number_block, rim_stitches, union
from fusionnet_keras.blockwise.storage import BlockOutput, DoneMarkers, signature, zarr_target
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults
from fusionnet_keras.utils.atomic import atomic_path

#: Default block and watershed context (z, y, x) of blockwise segmentation.
DEFAULT_BLOCK = (32, 256, 256)
DEFAULT_CONTEXT = (8, 48, 48)


def read_affinities(source, region, invert: bool = False, name: str = "input") -> np.ndarray:
    """Affinities ``(3, ...)`` of ``region`` of an affinity or boundary-map array, as the whole volume has them.

    A boundary map is read with one more voxel on the low sides (the link of
    ``v`` to ``v - e_c``), so the block's affinities equal the whole volume's there.
    """
    from fusionnet_keras.segmentation.inputs import as_affinities

    if len(source.shape) == 4:  # the 3 nearest-neighbour channels (a long-range network's others are not read)
        return as_affinities(np.asarray(source[(slice(0, 3),) + tuple(region)]), invert=invert, name=name)
    grown = tuple(slice(max(0, r.start - 1), r.stop) for r in region)
    affs = as_affinities(np.asarray(source[grown]), invert=invert, name=name)
    return np.ascontiguousarray(affs[(slice(None),) + tuple(slice(r.start - g.start, None) for r, g in zip(region, grown))])


def _open_input(path):
    from fusionnet_keras.data.io import open_volume

    volume = open_volume(path)
    if volume.ndim not in (3, 4) or (volume.ndim == 4 and volume.shape[0] < 3):
        volume.close()
        raise FusionNetError(f"{volume.name} must be affinities (3, Z, Y, X) or a boundary map (Z, Y, X), "
                             f"got shape {volume.shape}")
    return volume


@dataclass
class FragmentTask(BlockTask):
    """Pass 1: z-watershed basins of each block (with context), globally unique ids; the rim and first voxels."""

    input: str
    output: BlockOutput
    invert: bool
    watershed: object
    context: tuple
    block_size: int
    rims: str
    name = "fragments"

    @property
    def markers(self):
        return self.output.markers

    def setup(self):
        return _open_input(self.input)

    def process(self, volume, block):
        from dataclasses import replace

        shape = volume.shape[-3:]
        grown = block.grown(self.context, self.context, shape)
        affs = read_affinities(volume.lazy, grown, self.invert, volume.name)
        basins = replace(self.watershed, size=0).run(affs)  # the size merging is global (pass 3)
        core, n = number_block(basins, grown, block, self.block_size, shape, Path(self.rims) / f"{block.id}.npz")
        self.output.write(block, core)
        return {"fragments": n}


@dataclass
class GraphTask(BlockTask):
    """Pass 2: the region graph of each block, its lower faces included once, and its stitches; one file each."""

    input: str
    fragments: BlockOutput
    table: str
    rims: str
    invert: bool
    bins: int
    sig: str
    name = "graph"

    @property
    def markers(self):
        return DoneMarkers(Path(self.table) / ".blocks", self.sig)

    def setup(self):
        return _open_input(self.input)

    def process(self, volume, block):
        from fusionnet_keras.segmentation.graph import region_graph

        shape = volume.shape[-3:]
        grown = block.grown((1, 1, 1), (0, 0, 0), shape)
        affs = read_affinities(volume.lazy, grown, self.invert, volume.name)
        frags = np.asarray(self.fragments.array[grown])
        start = tuple(r.start - g.start for r, g in zip(block.region, grown))
        graph = region_graph(affs, frags, bins=self.bins, start=start)
        graph.save(Path(self.table) / f"{block.id}.npz")
        pairs = rim_stitches(Path(self.rims) / f"{block.id}.npz", self.fragments.array)
        with atomic_path(Path(self.table) / f"{block.id}.stitch.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, pairs)
        return {"nodes": graph.num_nodes, "edges": graph.num_edges, "stitches": int(len(pairs))}


@dataclass
class RelabelTask(BlockTask):
    """Pass 4: fragments -> segments through the lookup tables, one output per threshold."""

    fragments: BlockOutput
    outputs: list
    lut: str
    name = "relabel"

    @property
    def markers(self):
        return self.outputs[0].markers

    def setup(self):
        with np.load(self.lut) as f:
            return f["nodes"], [f[f"ids_{i}"] for i in range(len(self.outputs))]

    def process(self, state, block):
        from fusionnet_keras.segmentation.agglomeration import map_ids

        nodes, luts = state
        frags = np.asarray(self.fragments.array[block.region])
        for out, ids in zip(self.outputs[::-1], luts[::-1]):  # the first output (the marker's) last
            out.write(block, map_ids(frags, nodes, ids))
        return None


def _compact(ids) -> np.ndarray:
    """Segment ids renumbered 1..K in order of their ids."""
    _, inverse = np.unique(ids, return_inverse=True)
    return (inverse + 1).astype(np.uint64)


def contract(graph, pairs):
    """Merge the fragments of ``pairs`` (stitches) in ``graph``; returns ``(representative of each node, graph)``.

    A representative is the smallest fragment id of its stitched group; the
    statistics of a group add up, and its inner boundaries become inner statistics.

    Examples:
        >>> from fusionnet_keras.segmentation.graph import region_graph
        >>> g = region_graph(np.full((3, 1, 1, 3), 0.5, np.float32), np.array([[[1, 2, 3]]], np.uint64))
        >>> reps, c = contract(g, np.array([[2, 3]], np.uint64))
        >>> reps.tolist(), c.nodes.tolist(), c.size.tolist()
        ([1, 2, 2], [1, 2], [1, 2])
    """
    from dataclasses import replace

    from fusionnet_keras.segmentation.graph import merge_graphs

    pairs = np.asarray(pairs, np.uint64).reshape(-1, 2)
    graph.node_index(pairs.ravel())  # every id a node
    reps = union(graph.nodes, pairs)
    u, v = reps[graph.node_index(graph.u)], reps[graph.node_index(graph.v)]
    inside = u == v
    inner_count, inner_sum = graph.inner_count.copy(), graph.inner_sum.copy()
    rows = graph.node_index(u[inside])
    np.add.at(inner_count, rows, graph.count[inside])
    np.add.at(inner_sum, rows, graph.sum[inside])
    inner_hist = None
    if graph.bins:
        inner_hist = graph.inner_hist.copy()
        np.add.at(inner_hist, rows, graph.hist[inside])
    keep = ~inside
    lo, hi = np.minimum(u, v)[keep], np.maximum(u, v)[keep]
    mapped = replace(graph, nodes=reps, inner_count=inner_count, inner_sum=inner_sum, inner_hist=inner_hist,
                     u=lo, v=hi, count=graph.count[keep], sum=graph.sum[keep], max=graph.max[keep],
                     hist=None if graph.hist is None else graph.hist[keep])
    return reps, merge_graphs([mapped])


def _agglomerate(table: Path, rims: Path, grid, method, thresholds, classifier, options, hops, weighting):
    """The lookup tables basin -> segment (ids 1..K) of every threshold, from the block graphs."""
    from fusionnet_keras.segmentation.agglomeration import MeanAffinity, agglomerate
    from fusionnet_keras.segmentation.graph import RegionGraph, merge_graphs
    from fusionnet_keras.segmentation.zwatershed import size_merge

    graph = merge_graphs(RegionGraph.load(table / f"{b.id}.npz") for b in grid)
    stitches = np.concatenate([np.load(table / f"{b.id}.stitch.npy") for b in grid])
    reps, basins = contract(graph, stitches)
    first = np.full(basins.num_nodes, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, basins.node_index(reps), first_voxels_of(graph.nodes, rims, grid))
    roots = size_merge(basins, options.size, options.merge_affinity, first)
    merged, contracted = contract(basins, np.stack([basins.nodes, basins.nodes[roots]], axis=1))
    reps = merged[basins.node_index(reps)]
    rows = contracted.node_index(reps)
    if method == "watershed":
        return graph.nodes, [_compact(reps)]
    if method in ("multicut", "lifted-multicut"):  # the whole graph, solved once per beta
        from fusionnet_keras.segmentation.multicut import multicut_graph

        lifted_hops = hops if method == "lifted-multicut" else 0
        solutions = multicut_graph(contracted, thresholds, classifier, hops=lifted_hops, weighting=weighting)
        return graph.nodes, [_compact(ids[rows]) for _, ids in solutions]
    if method == "learned":
        from fusionnet_keras.segmentation.learned import LearnedScore

        scorer = LearnedScore(classifier)
    else:
        scorer = MeanAffinity()
    return graph.nodes, [_compact(ids[rows]) for _, ids in agglomerate(contracted, thresholds, scorer)]


def segment_volume(input_path, outputs, *, method="mean", thresholds=None, classifier=None, classifier_path=None,
                   invert=False, watershed_options=None, block=None, context=DEFAULT_CONTEXT, workers=1,
                   scheduler=None, client=None, overwrite=False, progress=True, hops=defaults.LIFTED_HOPS,
                   voxel_size=None, pyramid=False, command="segment", model=None,
                   weighting=None) -> dict:
    """Segment affinities (or a boundary map) larger than memory, block by block; resumable.

    Args:
        input_path: ``(3, Z, Y, X)`` affinities or a ``(Z, Y, X)`` boundary map
            (read block by block; HDF5, zarr, TIFF).
        outputs: zarr array paths, one per threshold (sorted thresholds) or one
            for ``method="watershed"``; created chunked like the blocks.
        method: as for :func:`fusionnet_keras.segmentation.segment` (no ``"mws"``).
        thresholds: as for :func:`fusionnet_keras.segmentation.segment`.
        classifier: a loaded :class:`~fusionnet_keras.segmentation.learned.BoundaryClassifier`, as for
            :func:`fusionnet_keras.segmentation.segment`.
        invert: as for :func:`fusionnet_keras.segmentation.segment`.
        watershed_options: as for :func:`fusionnet_keras.segmentation.segment`.
        hops: as for :func:`fusionnet_keras.segmentation.segment` (the lifted edges blockwise come from hops).
        weighting: as for :func:`fusionnet_keras.segmentation.segment` (None: the method's default).
        classifier_path: the classifier's file (part of the job's signature).
        block: block shape (z, y, x), a tuple or ``"Z,Y,X"``.
        context: watershed context (z, y, x) around each block, a tuple or ``"Z,Y,X"``.
        workers: local worker processes (Dask ``LocalCluster``; see
            :func:`~fusionnet_keras.blockwise.engine.run_blocks`).
        scheduler: address of a running Dask scheduler whose workers run the blocks.
        client: an existing ``distributed.Client`` (overrides ``workers`` and ``scheduler``).
        overwrite: replace existing outputs and work files.
        voxel_size: as for :func:`~fusionnet_keras.blockwise.predict.predict_volume`.
        pyramid: as for :func:`~fusionnet_keras.blockwise.predict.predict_volume`.
        command: the command recorded in the outputs' provenance.
        model: the model recorded in the outputs' provenance.

    Returns:
        ``{"blocks": n, "fragments": f, "segments": [k per threshold]}``.
    """
    from dataclasses import replace

    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.segmentation.agglomeration import check_thresholds
    from fusionnet_keras.segmentation.multicut import check_betas
    from fusionnet_keras.segmentation.pipeline import WatershedOptions

    options = watershed_options or WatershedOptions()
    if weighting is None and method in defaults.MULTICUT_WEIGHTING:
        weighting = defaults.MULTICUT_WEIGHTING[method]  # resolved here: part of the job's signature
    if method == "mws" or method not in defaults.METHODS:
        raise FusionNetError(f"method {method!r} is not supported blockwise")
    if method in defaults.BETA_METHODS:
        thresholds = check_betas(thresholds or [defaults.BETA])
    else:
        thresholds = None if method == "watershed" else check_thresholds(thresholds or [defaults.THRESHOLD])
    for path in outputs:
        check_not_input(path, input_path, files=[classifier_path])
    with _open_input(input_path) as volume:
        shape, tag = tuple(volume.shape[-3:]), {"input": file_tag(input_path), "shape": volume.shape,
                                                 "dtype": str(volume.dtype), "invert": bool(invert)}
    grid = BlockGrid(shape, parse_block(block or DEFAULT_BLOCK))
    context = parse_block(context, name="--context")
    file, _ = zarr_target(outputs[0])
    work = Path(str(file) + ".work")
    bins = classifier.bins if classifier is not None and method in ("learned", "multicut", "lifted-multicut") else 0
    frag_sig = signature({"job": "basins", **tag, "watershed": replace(options, size=0), "block": grid.block,
                          "context": context})
    fragments = BlockOutput(f"{work / 'fragments.zarr'}", shape, "uint64", grid.block, frag_sig)
    graph_sig = signature({"job": "graph", "fragments": frag_sig, "bins": bins})
    seg_sig = signature({"job": "segment", "graph": graph_sig, "watershed": options, "method": method,
                         "thresholds": thresholds, **({"hops": int(hops)} if method == "lifted-multicut" else {}),
                         **({"weighting": weighting} if weighting not in (None, "none") else {}),
                         "classifier": None if classifier_path is None else file_tag(classifier_path)})
    from fusionnet_keras.data.io.ome import output_meta

    metas = [output_meta([input_path], voxel_size, labels=True, command=command, model=model, method=method,
                         threshold=None if thresholds is None else thresholds[i], watershed=options,
                         classifier=classifier_path, block=grid.block) for i in range(len(outputs))]
    outs = [BlockOutput(p, shape, "uint64", grid.block, seg_sig, meta=m) for p, m in zip(outputs, metas)]
    with open_job([*outs, fragments], workers=workers, scheduler=scheduler, client=client, overwrite=overwrite,
                  progress=progress, claims=[*outs, work]) as job:
        table, rims = work / "graph", work / "rims"
        graph_task = GraphTask(str(input_path), fragments, str(table), str(rims), bool(invert), bins, graph_sig)
        if overwrite:
            graph_task.markers.clear()
        counts = job.run(FragmentTask(str(input_path), fragments, bool(invert), options, context, grid.block_size,
                                      str(rims)), grid)
        job.run(graph_task, grid)
        lut = work / f"lut-{seg_sig}.npz"
        if not lut.exists():
            nodes, luts = _agglomerate(table, rims, grid, method, thresholds, classifier, options, hops, weighting)
            with atomic_path(lut) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, nodes=nodes, **{f"ids_{i}": ids for i, ids in enumerate(luts)})
        job.run(RelabelTask(fragments, outs, str(lut)), grid)
        levels = [job.pyramid(p, pyramid) for p in outputs]
    with np.load(lut) as f:
        segments = [int(f[f"ids_{i}"].max(initial=0)) for i in range(len(outs))]
    return {"blocks": len(grid), "fragments": sum(c["fragments"] for c in counts.values()), "segments": segments,
            "block": grid.block, "levels": levels[0] if levels else 0}
