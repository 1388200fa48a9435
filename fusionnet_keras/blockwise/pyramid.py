"""Multiscale pyramids of OME-Zarr images, computed block by block on the Dask engine.

Level ``n`` (array ``n`` of the image group) is level ``n - 1`` downsampled by
2 in y and x, and in z too once the voxels are near-isotropic (z no more than
twice as large as y and x): anisotropic EM (e.g. 40 x 4 x 4 nm) is
downsampled in x and y first. Intensities and probabilities are averaged
(mean of each 2 x 2 (x 2) window, rounded for integer images); segmentations
(an NGFF label image, or integers of 32 bits and more) take the most frequent
label of the window (mode; a tie goes to the window's first voxel in scan
order), so no new label appears and no label is blended with another. A
window cut by the volume's end repeats its last voxels. The levels and their
scales are written into the group's ``multiscales`` only once every block is
done: an interrupted run lists none of its levels and resumes with the same
command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.blockwise.engine import BlockTask
from fusionnet_keras.inference.grid import BlockGrid
from fusionnet_keras.blockwise.job import open_job
from fusionnet_keras.blockwise.storage import BlockOutput, signature, zarr_target
from fusionnet_keras.errors import FusionNetError, OutputExistsError

#: Levels are added while the smaller of y and x stays at least this many voxels (the first one always).
MIN_SIZE = 32
#: At most this many levels above level 0.
MAX_LEVELS = 12


def level_factors(shape, voxel_size=None, levels: int | None = None) -> list[tuple]:
    """The per-level factors ``(z, y, x)`` (relative to the level before) of a pyramid of ``shape``.

    ``levels``: how many (None: while min(y, x) of the next level is at least
    :data:`MIN_SIZE`, at least one where one fits, at most :data:`MAX_LEVELS`). z is halved only where its
    voxel is less than twice y's (near-isotropic) and it has more than one
    section. 2-D shapes ``(y, x)`` get ``(y, x)`` factors.

    Example:
        >>> level_factors((30, 512, 512), (50, 4, 4), levels=5)
        [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    """
    shape = [int(s) for s in shape]
    flat = len(shape) == 2
    if flat:
        shape = [1] + shape
    size = list(voxel_size) if voxel_size is not None else [1.0, 1.0, 1.0]
    steps = []
    while len(steps) < (MAX_LEVELS if levels is None else levels):
        fz = 2 if size[0] < 2 * min(size[1], size[2]) and shape[0] > 1 else 1
        fy, fx = (2 if shape[1] > 1 else 1), (2 if shape[2] > 1 else 1)
        nxt = [-(-shape[0] // fz), -(-shape[1] // fy), -(-shape[2] // fx)]
        if (fz, fy, fx) == (1, 1, 1) or (levels is None and steps and min(nxt[1], nxt[2]) < MIN_SIZE):
            break
        steps.append((fz, fy, fx))
        shape, size = nxt, [size[0] * fz, size[1] * fy, size[2] * fx]
    if levels is not None and len(steps) < levels:
        raise FusionNetError(f"a volume of shape {tuple(shape)} at level {len(steps)} cannot be downsampled further; "
                             f"use --levels {len(steps)} or fewer")
    return [s[1:] for s in steps] if flat else steps


def _windows(data: np.ndarray, factors: tuple, lead: int) -> np.ndarray:
    """``data`` (``lead`` leading axes, then the space axes) padded to whole windows (its last voxels
    repeated) and reshaped to ``(*lead, n0, ..., k)``: each window's voxels on the last axis."""
    space = data.shape[lead:]
    pad = [(0, 0)] * lead + [(0, (-s) % f) for s, f in zip(space, factors)]
    if any(p[1] for p in pad):
        data = np.pad(data, pad, mode="edge")
    split = list(data.shape[:lead])
    for s, f in zip(data.shape[lead:], factors):
        split += [s // f, f]
    data = data.reshape(split)
    n = len(factors)
    order = list(range(lead)) + [lead + 2 * i for i in range(n)] + [lead + 2 * i + 1 for i in range(n)]
    data = data.transpose(order)
    return data.reshape(data.shape[:lead + n] + (-1,))


def downsample(data: np.ndarray, factors, method: str, lead: int = 0) -> np.ndarray:
    """``data`` downsampled by ``factors`` (one per space axis, after ``lead`` leading axes): ``"mean"``
    (integers rounded back to their type) or ``"mode"`` (the most frequent value of each window; ties:
    the first in scan order).

    Example:
        >>> downsample(np.array([[1, 1, 2, 3]]), (1, 2), "mode").tolist(), downsample(np.array([[0., 1.]]), (1, 2), "mean").tolist()
        ([[1, 2]], [[0.5]])
    """
    windows = _windows(np.asarray(data), tuple(int(f) for f in factors), lead)
    if method == "mean":
        mean = windows.mean(axis=-1, dtype=np.float64)
        if data.dtype.kind in "iub":
            return np.rint(mean).astype(data.dtype)
        return mean.astype(data.dtype)
    if method != "mode":
        raise FusionNetError(f"unknown downsampling method {method!r} (mean or mode)")
    k = windows.shape[-1]
    counts = np.zeros(windows.shape, dtype=np.int16)
    for j in range(k):
        counts[..., j] = (windows == windows[..., j:j + 1]).sum(axis=-1)
    best = np.argmax(counts, axis=-1)  # the first of the most frequent
    return np.take_along_axis(windows, best[..., None], axis=-1)[..., 0]


class DownsampleTask(BlockTask):
    """Writes the blocks of one level from the level below it (zarr arrays of one image group)."""

    name = "pyramid"

    def __init__(self, file: str, source: str, output: BlockOutput, factors: tuple, method: str, lead: int):
        self.file, self.source, self.output = file, source, output
        self.factors, self.method, self.lead = tuple(factors), method, lead
        self.markers = output.markers

    def setup(self):
        import zarr

        return zarr.open_array(store=self.file, path=self.source, mode="r")

    def process(self, source, block):
        region = tuple(slice(s.start * f, min(s.stop * f, n))
                       for s, f, n in zip(block.region, self.factors, source.shape[self.lead:]))
        data = np.asarray(source[(slice(None),) * self.lead + region])
        self.output.write(block, downsample(data, self.factors, self.method, self.lead))
        return None


def pyramid_method(meta, dtype) -> str:
    """``"mode"`` for segmentations (label images, integers of 32 bits or more), else ``"mean"``."""
    dtype = np.dtype(dtype)
    return "mode" if meta.labels or (dtype.kind in "iu" and dtype.itemsize >= 4) else "mean"


def _open_image(path):
    """``(file, image key, group, ImageMeta, level-0 array)`` of an OME-Zarr image; one-line errors else."""
    import zarr

    from fusionnet_keras.data.io.containers import zarr_is_group
    from fusionnet_keras.data.io.ome import is_ome_group, level_path, read_meta
    from fusionnet_keras.data.io.paths import _display, user_errors

    file, key = zarr_target(path, "pyramid input")
    display = _display(file, key)
    if not (file / key if key else file).exists():
        raise FusionNetError(f"file not found: {display}")
    with user_errors(f"cannot read {display}"):
        node = zarr.open(store=str(file), mode="r", path=key or "")
    if not zarr_is_group(node):
        raise FusionNetError(f"{display} is a plain zarr array, not an OME-Zarr image; a pyramid needs an image "
                             "group (write it again with this version, or give the group)")
    if not is_ome_group(node):
        raise FusionNetError(f"{display} is a zarr group without OME-Zarr multiscales, not an image")
    meta = read_meta(node, display)
    level0 = node[level_path(node, display)]
    spatial = level0.ndim - (1 if meta.channels else 0)
    if spatial not in (2, 3) or level0.ndim != len(meta.channels * "c") + spatial:
        raise FusionNetError(f"{display} is not a 2-D or 3-D image (level 0 has shape {tuple(level0.shape)})")
    return file, key, node, meta, level0


def build_pyramid(path, *, levels: int | None = None, block=None, workers: int = 1, scheduler=None, client=None,
                  overwrite: bool = False, progress: bool = True) -> dict:
    """Add downsampled levels to the OME-Zarr image ``path`` (``x.zarr`` or ``x.zarr:group``), block by block.

    Args:
        levels: levels above level 0 (None: see :func:`level_factors`).
        block: (z, y, x) blocks of the levels (also their chunks); default level 0's chunks.
        workers: local worker processes (see :func:`~fusionnet_keras.blockwise.engine.run_blocks`).
        scheduler: address of a running Dask scheduler whose workers run the blocks.
        client: an existing ``distributed.Client`` (overrides ``workers`` and ``scheduler``).
        overwrite: replace the levels of an earlier pyramid.

    Returns:
        ``{"levels": [{"path", "shape", "scale"}...], "method": "mean" | "mode"}``.
    """
    import shutil

    from fusionnet_keras.data.io.ome import array_options, level_scale, multiscale, write_attributes

    file, key, group, meta, level0 = _open_image(path)
    display = f"{file}:{key}" if key else str(file)
    ms = multiscale(group.attrs, display)
    if len(ms["datasets"]) > 1 and not overwrite:
        raise OutputExistsError(f"output exists: {display} has {len(ms['datasets']) - 1} downsampled levels already "
                                "(use --overwrite)")
    lead = 1 if meta.channels else 0
    space = tuple(level0.shape[lead:])
    vs = meta.voxel_size if meta.voxel_size is None or len(space) == 3 else (1.0,) + tuple(meta.voxel_size[1:])
    steps = level_factors(space, vs, levels)
    if not steps:
        raise FusionNetError(f"{display} ({'x'.join(map(str, space))}) cannot be downsampled (one voxel in y and x)")
    method = pyramid_method(meta, level0.dtype)
    chunks = tuple(block) if block is not None else tuple(level0.chunks[lead:])
    if len(chunks) != len(space):
        raise FusionNetError(f"--block needs {len(space)} values for {display}, got {len(chunks)}")
    base = f"{key}/" if key else ""
    outputs, shapes, total = [], [], [1] * len(space)
    source_shape = space
    for n, factors in enumerate(steps, start=1):
        shape = tuple(-(-s // f) for s, f in zip(source_shape, factors))
        sig = signature({"job": "pyramid", "level": n, "factors": factors, "method": method, "source": source_shape,
                         "dtype": str(level0.dtype), "chunks": chunks})
        out = BlockOutput(f"{file}:{base}{n}", level0.shape[:lead] + shape, level0.dtype,
                          level0.shape[:lead] + chunks, sig, array_options=array_options(group, level0.ndim, meta))
        outputs.append((n, factors, out))
        shapes.append(shape)
        source_shape = shape
    for n in range(1, len(ms["datasets"])):  # an earlier pyramid's levels (--overwrite)
        stale = Path(file) / f"{base}{ms['datasets'][n]['path']}"
        if str(ms["datasets"][n]["path"]) not in {str(i) for i, _, _ in outputs} and stale.exists():
            shutil.rmtree(stale)
    with open_job([o for _, _, o in outputs], workers=workers, scheduler=scheduler, client=client,
                  overwrite=overwrite, progress=progress) as job:
        for n, factors, out in outputs:
            source = f"{base}{n - 1}" if n > 1 else f"{base}{ms['datasets'][0]['path']}"
            job.run(DownsampleTask(str(file), source, out, factors, method, lead), BlockGrid(shapes[n - 1], chunks))
    records, listed = [], [(ms["datasets"][0]["path"], None)]
    for (n, factors, _), shape in zip(outputs, shapes):
        total = [t * f for t, f in zip(total, factors)]
        listed.append((str(n), tuple(total)))
        records.append({"path": str(n), "shape": shape, "scale": level_scale(level0.ndim, meta, total)})
    import zarr

    write_attributes(zarr.open_group(str(file), mode="r+", path=key or ""), level0.ndim, meta, listed, method)
    return {"levels": records, "method": method}


def output_pyramid(output_path, pyramid: bool, client, progress: bool = True) -> int:
    """With ``pyramid``, the levels of a blockwise job's output just written (on the job's ``client``; None:
    in this process), replacing any earlier ones; returns their number."""
    if not pyramid:
        return 0
    info = build_pyramid(output_path, client=client, workers=0 if client is None else 1, overwrite=True,
                         progress=progress)
    return len(info["levels"])


def check_pyramid_output(pyramid: bool, output) -> None:
    """``--pyramid`` needs a zarr output (levels live in an OME-Zarr group)."""
    if not pyramid:
        return
    from fusionnet_keras.data.io.paths import ZARR_EXTS, parse_path

    file, _ = parse_path(output)
    if file.suffix.lower() not in ZARR_EXTS:
        raise FusionNetError(f"--pyramid needs a zarr output (x.zarr or x.zarr:group), got {output}")


def levels_note(info: dict) -> str:
    """``", N pyramid levels"`` for a job's result with levels, else nothing."""
    n = info.get("levels") or 0
    return f", {n} pyramid level{'s' if n != 1 else ''}" if n else ""


def pyramid_levels(output, pyramid: bool) -> str:
    """With ``pyramid``: the levels of an output written in memory, added in this process; the note to print."""
    if not pyramid:
        return ""
    info = build_pyramid(output, workers=0, overwrite=True, progress=False)
    return levels_note({"levels": len(info["levels"])})
