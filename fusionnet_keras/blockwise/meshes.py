"""Meshes of a label volume, block by block: per-block fragments joined by neuroglancer (or by label).

Two passes, the first resumable (done markers), work files in ``OUT.work/``:

1. **mesh** (the engine's workers): each block is read with one voxel more on
   its upper faces (:func:`~fusionnet_keras.viewing.meshes.read_block`), meshed
   with zmesh, and every label's mesh written as a fragment file
   ``LABEL:0:BLOCK`` (vertices in nm); the block's labels are its result;
2. **gather** (one process): for the precomputed format one manifest per
   label listing its blocks' fragments, and ``info``; the folder is then
   renamed to ``OUT`` (a reader sees no directory or the complete one). For
   PLY/OBJ each label's fragments are joined into one mesh (shared vertices
   on block faces merged) and written to ``OUT/LABEL.ply`` (or ``.obj``).

Without a block (the command without ``--workers``/``--block``) the whole
volume is one block meshed in this process. Memory per worker is one block
(as uint64) and its meshes; the gather holds one label's mesh at a time.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fusionnet_keras.inference.grid import BlockGrid, parse_block
from fusionnet_keras.blockwise.job import file_tag, open_job
from fusionnet_keras.blockwise.morphology import LabelTask, _as_ids, _open_labels
from fusionnet_keras.blockwise.storage import WorkDir, signature
from fusionnet_keras.errors import FusionNetError, OutputExistsError
from fusionnet_keras.utils.atomic import atomic_dir, atomic_path, atomic_write_text
from fusionnet_keras.viewing import meshes as mesh_io

#: Default block (z, y, x) of blockwise meshing.
DEFAULT_BLOCK = (64, 256, 256)


@dataclass
class MeshTask(LabelTask):
    """Pass 1: the meshes of each block's labels, one fragment file per label (markers in ``work/.blocks``)."""

    voxel_size: tuple
    simplify: int
    max_error: float | None
    name = "meshes"

    def process(self, volume, block):
        data, origin = mesh_io.read_block(volume.lazy, block.region, volume.shape)
        data = _as_ids(data, f"labels {volume.name}")
        meshes = mesh_io.block_meshes(data, origin, self.voxel_size, self.simplify, self.max_error)
        for label, mesh in meshes.items():
            with atomic_path(Path(self.work) / mesh_io.fragment_name(label, block.id), suffix="") as tmp:
                tmp.write_bytes(mesh.to_precomputed())
        return {"labels": sorted(meshes)}


def check_mesh_output(out, labels_path, fmt: str, overwrite: bool) -> Path:
    """The output folder, checked before any work: not an input, not an existing output without ``overwrite``."""
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.utils.atomic import check_writable_parent

    if fmt not in mesh_io.FORMATS:
        raise FusionNetError(f"mesh format must be one of {', '.join(mesh_io.FORMATS)}, got {fmt!r}")
    out = Path(out)
    for path in (out, f"{out}.work"):
        check_not_input(path, labels_path, whole=True)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputExistsError(f"output exists: {out} (use --overwrite)")
    if out.exists() and not out.is_dir():
        raise FusionNetError(f"output {out} is a file; the meshes are written to a folder")
    check_writable_parent(out)
    return out


def mesh_volume(labels_path, out, voxel_size, *, fmt: str = "precomputed", simplify: int = mesh_io.DEFAULT_SIMPLIFY,
                max_error: float | None = None, block=None, workers: int = 0, scheduler=None, client=None,
                overwrite: bool = False, progress: bool = True) -> dict:
    """Mesh every label of ``labels_path`` into the folder ``out``; resumable when run blockwise.

    Args:
        labels_path: a 3-D label volume (0 = background; HDF5 and zarr read by block).
        out: the output folder (precomputed mesh directory, or PLY/OBJ files).
        voxel_size: (z, y, x) nm.
        fmt: ``precomputed``, ``ply`` or ``obj``.
        simplify: zmesh's triangle reduction factor (see :func:`~fusionnet_keras.viewing.meshes.block_meshes`).
        max_error: the most (nm) the simplification may move a vertex (None: the largest voxel side).
        block: block shape (z, y, x); None meshes the whole volume as one block.
        workers: local worker processes (0: the blocks run in this process).
        scheduler: the address of a running Dask scheduler, instead of local workers.
        client: an existing ``distributed.Client``, instead of both.
        overwrite: replace ``out`` and start over (remove the work files of any earlier run).

    Returns:
        ``{"labels", "blocks", "fragments", "block", "voxel_size"}``.
    """
    from fusionnet_keras.evaluation.morphology import check_voxel_size

    vs = tuple(float(v) for v in check_voxel_size(voxel_size))
    simplify = int(simplify)
    if simplify < 0:
        raise FusionNetError(f"--simplify must be 0 (none) or a reduction factor >= 2, got {simplify}")
    if max_error is not None and not (max_error >= 0 and max_error < float("inf")):
        raise FusionNetError(f"--max-error must be a distance >= 0 in nm, got {max_error}")
    out = check_mesh_output(out, labels_path, fmt, overwrite)
    with _open_labels(labels_path) as volume:
        shape, tag = volume.shape, {"input": file_tag(labels_path), "shape": volume.shape,
                                    "dtype": str(volume.dtype)}
    grid = BlockGrid(shape, shape if block is None else parse_block(block))
    sig = signature({"job": "meshes", **tag, "block": grid.block, "voxel_size": vs, "simplify": simplify,
                     "max_error": max_error})
    work = Path(f"{out}.work")
    with open_job([WorkDir(work, sig)], workers=workers, scheduler=scheduler, client=client, overwrite=overwrite,
                  progress=progress, claims=[out]) as job:
        results = job.run(MeshTask(str(labels_path), str(work), sig, vs, simplify, max_error), grid)
        where = {}  # label -> the blocks that hold a fragment of it
        for block_id in sorted(results):
            for label in results[block_id]["labels"]:
                where.setdefault(int(label), []).append(int(block_id))
        if not where:
            shutil.rmtree(work, ignore_errors=True)
            raise FusionNetError(f"labels {labels_path} hold no labels (all zero): nothing to mesh")
        meta = {"voxel_size_nm": list(vs), "shape": list(shape), "source": str(labels_path), "block": list(grid.block),
                "simplify": simplify, "max_error_nm": max_error, "labels": len(where)}
        if fmt == "precomputed":
            _finish_precomputed(work, out, where, meta)
        else:
            _finish_files(work, out, where, fmt)
    return {"labels": len(where), "blocks": len(grid), "fragments": sum(map(len, where.values())),
            "block": grid.block, "voxel_size": vs}


def _finish_precomputed(work: Path, out: Path, where: dict, meta: dict) -> None:
    """Manifests and ``info`` into the work folder, which then becomes ``out`` (swapped in whole)."""
    for label, blocks in where.items():
        fragments = [mesh_io.fragment_name(label, b) for b in blocks]
        atomic_write_text(work / mesh_io.manifest_name(label), json.dumps({"fragments": fragments}))
    atomic_write_text(work / "info", mesh_io.info_json(meta))
    shutil.rmtree(work / ".blocks", ignore_errors=True)
    (work / "job.json").unlink(missing_ok=True)
    with atomic_dir(out) as tmp:
        os.rename(work, tmp)


def _finish_files(work: Path, out: Path, where: dict, fmt: str) -> None:
    """One ``LABEL.FMT`` file per label, its fragments joined, into a new folder swapped in as ``out``."""
    with atomic_dir(out) as tmp:
        tmp.mkdir(parents=True)
        for label, blocks in where.items():
            parts = [mesh_io.load_fragment(work / mesh_io.fragment_name(label, b)) for b in blocks]
            mesh = mesh_io.join_fragments(parts, label)
            (tmp / f"{label}.{fmt}").write_bytes(mesh_io.encode(mesh, fmt))
    shutil.rmtree(work, ignore_errors=True)
