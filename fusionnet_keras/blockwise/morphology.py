"""Nucleus morphology of a label volume larger than memory, block by block: the single-process table, gathered.

Passes over the block grid, each resumable (done markers) and run by the
engine's workers; work files in ``OUT.work/`` beside the CSV, removed when it
is written:

1. **scan**: every block checked (whole non-negative numbers) and its smallest
   and largest non-zero value kept, which says whether the volume is a binary
   mask (a single non-zero value) when the caller does not;
2. binary masks only, **components**: the 3-D connected components of each
   block and one voxel around it (:func:`~fusionnet_keras.blockwise.stitch.number_block`),
   then the **stitches** of each block's rim, joined in one global union and
   numbered by their first voxel in scan order, as ``scipy.ndimage.label``
   numbers the whole volume's components;
3. **measure**: the per-object sums of each block
   (:func:`~fusionnet_keras.evaluation.mesh_parts.object_parts`: voxels,
   coordinate sums, bounding box, the marching-cubes area of the cells the block
   owns, read with the smoothing Gaussian's radius of context);
4. **gather** (one process): the blocks' rows of each object added up
   (:func:`~fusionnet_keras.evaluation.mesh_parts.combine_parts`) into the
   records of :func:`~fusionnet_keras.evaluation.morphology.measure_nuclei`,
   then the K-means clusters and outlier flags, and the CSV.

An object crossing blocks is measured once: volumes, centroids and bounding
boxes are exact integer sums (equal to the whole-volume table), the surface
area is the whole-volume mesh's, cell by cell (equal up to float32 round-off
of the vertices, relative 1e-7). Memory per worker is one block with its
context; the gathered table grows with the objects, not the voxels.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionnet_keras.blockwise.engine import BlockTask
from fusionnet_keras.inference.grid import BlockGrid, parse_block
from fusionnet_keras.blockwise.job import file_tag, open_job
from fusionnet_keras.blockwise.stitch import first_voxels_of, number_block, rim_stitches, union
from fusionnet_keras.blockwise.storage import BlockOutput, DoneMarkers, WorkDir, signature
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.atomic import atomic_path

#: Default block (z, y, x) of blockwise morphology.
DEFAULT_BLOCK = (64, 256, 256)


def _open_labels(path):
    from fusionnet_keras.data.io import open_volume

    volume = open_volume(path)
    if volume.ndim != 3 or volume.size == 0:
        volume.close()
        raise FusionNetError(f"labels {volume.name} must be a 3-D (Z, Y, X) label volume, got shape {volume.shape}")
    if volume.dtype.kind not in "biuf":
        volume.close()
        raise FusionNetError(f"labels {volume.name} must be integer labels, got dtype {volume.dtype}")
    return volume


def _as_ids(data, name) -> np.ndarray:
    """A block of labels as non-negative integers (floats must hold whole numbers)."""
    from fusionnet_keras.segmentation.inputs import check_labels

    return check_labels(data, name)


@dataclass
class LabelTask(BlockTask):
    """A pass over a label volume (``input``) whose markers are in ``work/<marker_dir>`` (a subclass's)."""

    input: str
    work: str
    sig: str
    marker_dir = ".blocks"

    @property
    def markers(self):
        return DoneMarkers(Path(self.work) / self.marker_dir, self.sig)

    def setup(self):
        return _open_labels(self.input)


@dataclass
class ScanTask(LabelTask):
    """Pass 1: check each block; its smallest and largest non-zero value."""

    name = "scan"
    marker_dir = "scan"

    def process(self, volume, block):
        ids = _as_ids(volume.lazy[block.region], f"labels {volume.name}")
        nonzero = ids[ids != 0]
        if not nonzero.size:
            return {"low": None, "high": None}
        return {"low": int(nonzero.min()), "high": int(nonzero.max())}


@dataclass
class ComponentTask(BlockTask):
    """Pass 2a (binary masks): connected components of each block, globally unique ids, the rim."""

    input: str
    output: BlockOutput
    rims: str
    connectivity: int
    block_size: int
    name = "components"

    @property
    def markers(self):
        return self.output.markers

    def setup(self):
        return _open_labels(self.input)

    def process(self, volume, block):
        from scipy import ndimage as ndi

        shape = volume.shape
        grown = block.grown((1, 1, 1), (1, 1, 1), shape)
        mask = _as_ids(volume.lazy[grown], f"labels {volume.name}") != 0
        view, _ = ndi.label(mask, structure=ndi.generate_binary_structure(3, 1 if self.connectivity == 6 else 3))
        core, n = number_block(view, grown, block, self.block_size, shape, Path(self.rims) / f"{block.id}.npz",
                               faces_only=False)
        self.output.write(block, core)
        return {"components": n}


@dataclass
class StitchTask(BlockTask):
    """Pass 2b (binary masks): the block's components and its neighbours' that touch across its faces."""

    components: BlockOutput
    rims: str
    sig: str
    name = "stitch"

    @property
    def markers(self):
        return DoneMarkers(Path(self.rims) / ".blocks", self.sig)

    def process(self, state, block):
        pairs = rim_stitches(Path(self.rims) / f"{block.id}.npz", self.components.array)
        with atomic_path(Path(self.rims) / f"{block.id}.stitch.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, pairs)
        return {"stitches": int(len(pairs))}


@dataclass
class MeasureTask(BlockTask):
    """Pass 3: the per-object sums of each block (voxels, coordinates, box, mesh area of its cells)."""

    input: str
    components: BlockOutput | None
    lut: str | None
    parts: str
    spacing: tuple
    smooth_sigma: float
    sig: str
    name = "measure"

    @property
    def markers(self):
        return DoneMarkers(Path(self.parts) / ".blocks", self.sig)

    def setup(self):
        lut = None
        if self.lut is not None:
            with np.load(self.lut) as f:
                lut = f["nodes"], f["labels"]
        return _open_labels(self.input), lut

    def process(self, state, block):
        from fusionnet_keras.evaluation.mesh_parts import object_parts, part_regions, read_part
        from fusionnet_keras.segmentation.agglomeration import map_ids

        volume, lut = state
        shape = volume.shape
        read, points = part_regions(block.region, shape, self.smooth_sigma)
        if lut is None:
            labels = _as_ids(read_part(volume.lazy, read, shape), f"labels {volume.name}")
        else:
            labels = map_ids(read_part(self.components.array, read, shape), *lut)
        local = lambda region: tuple(slice(r.start - o.start, r.stop - o.start)  # noqa: E731
                                     for r, o in zip(region, read))
        parts = object_parts(labels, [r.start for r in read], local(block.region), local(points), self.spacing,
                             self.smooth_sigma)
        with atomic_path(Path(self.parts) / f"{block.id}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **parts)
        return {"objects": int(parts["label"].size)}


def _component_lut(rims: Path, grid, path: Path) -> None:
    """Block component ids -> the whole volume's component labels (1..N in scan order of first voxels)."""
    nodes = np.concatenate([np.load(rims / f"{b.id}.npz")["nodes"] for b in grid])
    nodes.sort()
    stitches = np.concatenate([np.load(rims / f"{b.id}.stitch.npy") for b in grid])
    reps = union(nodes, stitches)
    groups, row = np.unique(reps, return_inverse=True)
    first = np.full(groups.size, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, row, first_voxels_of(nodes, rims, grid))
    rank = np.empty(groups.size, np.uint64)
    rank[np.argsort(first)] = np.arange(1, groups.size + 1, dtype=np.uint64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, nodes=nodes, labels=rank[row])


def _load(path) -> dict:
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def measure_volume(labels_path, voxel_size, *, binary=None, connectivity: int = 26, smooth_sigma: float = 0.5,
                   min_voxels: int = 1, out=None, block=None, workers: int = 1, scheduler=None, client=None,
                   overwrite: bool = False, progress: bool = True, keep_work: bool = False) -> tuple[list, dict]:
    """The records of :func:`~fusionnet_keras.evaluation.morphology.measure_nuclei`, block by block; resumable.

    Args:
        labels_path: a 3-D instance volume or binary mask (HDF5 and zarr are
            read block by block).
        voxel_size: as for ``measure_nuclei``.
        binary: as for ``measure_nuclei`` (``None``: a single non-zero value is a mask).
        connectivity: as for ``measure_nuclei``.
        smooth_sigma: as for ``measure_nuclei``.
        min_voxels: as for ``measure_nuclei``.
        out: the table's path; the work files go to ``OUT.work/`` (a temporary
            folder when None; no resume then).
        block: block shape (z, y, x); default :data:`DEFAULT_BLOCK` capped at the volume.
        workers: local worker processes (Dask ``LocalCluster``; see
            :func:`~fusionnet_keras.blockwise.engine.run_blocks`).
        scheduler: address of a running Dask scheduler whose workers run the blocks.
        client: an existing ``distributed.Client`` (overrides ``workers`` and ``scheduler``).
        overwrite: start over (remove the work files of any earlier run).
        keep_work: keep ``OUT.work/`` (the caller removes it, e.g. after drawing figures).

    Returns:
        ``(records, info)``: the records (unannotated) and ``{"blocks", "binary",
            "block", "work"}``; ``info["section"](axis, index)`` reads one section of
            the labels as measured (components for a mask) while the work files exist.
    """
    import tempfile

    from fusionnet_keras.evaluation.morphology import check_voxel_size, combine_parts, part_records

    vs_nm = check_voxel_size(voxel_size)
    if connectivity not in (6, 26):
        raise FusionNetError(f"connectivity must be 6 or 26, got {connectivity}")
    if not (np.isfinite(smooth_sigma) and smooth_sigma >= 0):
        raise FusionNetError(f"smooth_sigma must be >= 0, got {smooth_sigma}")
    with _open_labels(labels_path) as volume:
        shape, tag = volume.shape, {"input": file_tag(labels_path), "shape": volume.shape,
                                    "dtype": str(volume.dtype)}
    grid = BlockGrid(shape, parse_block(block or DEFAULT_BLOCK))
    temporary = out is None
    if temporary:
        out = Path(tempfile.mkdtemp(prefix="fusionnet-morphology-")) / "table.csv"
    else:
        from fusionnet_keras.data.io.paths import check_not_input

        for path in (out, f"{out}.work"):  # the table and the work files
            check_not_input(path, labels_path, whole=True)
    sig = signature({"job": "morphology", **tag, "block": grid.block, "binary": binary,
                     "connectivity": int(connectivity), "smooth_sigma": float(smooth_sigma),
                     "voxel_size": vs_nm.tolist()})
    work = Path(f"{out}.work")
    with open_job([WorkDir(work, sig)], workers=workers, scheduler=scheduler, client=client, overwrite=overwrite,
                  progress=progress, claims=[Path(out)]) as job:
        scans = job.run(ScanTask(str(labels_path), str(work), sig), grid)
        if binary is None:
            lows = [r["low"] for r in scans.values() if r["low"] is not None]
            highs = [r["high"] for r in scans.values() if r["high"] is not None]
            binary = not highs or max(highs) <= 1 or min(lows) == max(highs)
        components = lut = None
        if binary:
            rims = work / "rims"
            components = BlockOutput(str(work / "components.zarr"), shape, "uint64", grid.block, sig)
            components.open()
            job.run(ComponentTask(str(labels_path), components, str(rims), int(connectivity), grid.block_size), grid)
            job.run(StitchTask(components, str(rims), sig), grid)
            lut = work / "components-lut.npz"
            if not lut.exists():
                _component_lut(rims, grid, lut)
        parts = work / "parts"
        job.run(MeasureTask(str(labels_path), components, None if lut is None else str(lut), str(parts),
                            tuple(vs_nm / 1000.0), float(smooth_sigma), sig), grid)
    records = part_records(combine_parts(_load(parts / f"{b.id}.npz") for b in grid), shape, vs_nm, min_voxels)
    info = {"blocks": len(grid), "binary": bool(binary), "block": grid.block, "work": work,
            "section": lambda axis, index: _section(labels_path, components, lut, shape, axis, index)}
    if temporary:
        shutil.rmtree(work.parent, ignore_errors=True)
    elif not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return records, info


def _section(labels_path, components, lut, shape, axis: int, index: int) -> np.ndarray:
    """One section (``axis`` 0: x-y at z, 1: x-z at y) of the measured labels, read lazily."""
    from fusionnet_keras.segmentation.agglomeration import map_ids

    region = tuple(slice(index, index + 1) if a == axis else slice(0, n) for a, n in enumerate(shape))
    if lut is None:
        with _open_labels(labels_path) as volume:
            return np.squeeze(_as_ids(volume.lazy[region], f"labels {volume.name}"), axis)
    with np.load(lut) as f:
        return np.squeeze(map_ids(components.array[region], f["nodes"], f["labels"]), axis)
