"""Blockwise prediction of 2-D sections: blocks (z, y, x) with context in y and x, any number of workers.

Each block is ``depth`` sections of a ``(y, x)`` region. For every section and
orientation the worker runs the network on one window: the region's core in the
mirror-padded frame grown by the receptive field and widened to the pooling
grid (:meth:`~fusionnet_keras.inference.predictor.SectionPredictor.predict_region`),
so a block gives the numbers the whole-section prediction gives there, for any
block shape and worker count. The model is loaded once per worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusionnet_keras.blockwise.engine import BlockTask
from fusionnet_keras.blockwise.job import file_tag, job_threads, run_job, start_worker
from fusionnet_keras.blockwise.storage import BlockOutput, signature
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.inference.grid import BlockGrid, check_multiple, normalize_block

#: Default block (z, y, x) of the 2-D predictor.
DEFAULT_BLOCK = (4, 512, 512)




@dataclass
class SectionBlockTask(BlockTask):
    """Predict the 2-D sections of a block and write them (float32 or uint8)."""

    input: str
    weights: str
    output: BlockOutput
    tta: int = 8
    pad: int = 64
    batch_size: int | None = None
    dtype: str = "float32"
    precision: str | None = None
    threads: int | None = None
    name = "predict"

    @property
    def markers(self):
        return self.output.markers

    def setup(self):
        start_worker(self.threads)
        from fusionnet_keras.data.io import open_image
        from fusionnet_keras.inference.predictor import SectionPredictor
        from fusionnet_keras.models.loading import load_model

        volume = open_image(self.input)
        predictor = SectionPredictor(load_model(self.weights), tta=self.tta, pad=self.pad,
                                     batch_size=self.batch_size, precision=self.precision)
        return volume, predictor

    def process(self, state, block):
        from fusionnet_keras.data.io.writers import convert_dtype
        from fusionnet_keras.inference.tiling import read_block

        volume, predictor = state
        source = volume.lazy
        flat = len(volume.shape) == 2  # one section: blocks (y, x)
        zs = (slice(0, 1),) if flat else block.region[:1]
        region = block.region[-2:]

        def read(box):
            data = read_block(source, box if flat else zs + box)
            return normalize_block(data[None] if flat else data, volume.name)

        y = predictor.predict_region(read, volume.shape[-2:], region, depth=zs[0].stop - zs[0].start)
        self.output.write(block, convert_dtype(y[0] if flat else y, self.dtype, self.output.display))
        return None


def predict_volume(input_path, output_path, weights, *, block=None, workers=1, scheduler=None, client=None,
                   tta=8, pad=64, batch_size=None, dtype="float32", overwrite=False, progress=True,
                   precision=None, voxel_size=None, pyramid=False) -> dict:
    """Predict a 2-D image or a (Z, H, W) stack block by block into a zarr array; resumable.

    Args:
        input_path: any readable volume (HDF5 and zarr are read block by block).
        output_path: a zarr array (``x.zarr`` or ``x.zarr:group/array``),
            created chunked like the blocks; an existing output of the same job
            is resumed (only the blocks without a done marker are computed).
        weights: the ``.keras`` model (loaded once per worker).
        block: (z, y, x) block (y, x multiples of the network's size multiple);
            default :data:`DEFAULT_BLOCK` capped at the volume.
        workers: local worker processes (Dask ``LocalCluster``; see
            :func:`~fusionnet_keras.blockwise.engine.run_blocks`).
        scheduler: address of a running Dask scheduler whose workers run the blocks.
        client: an existing ``distributed.Client`` (overrides ``workers`` and ``scheduler``).
        tta: as for :func:`fusionnet_keras.predict` and the ``predict`` command.
        pad: as for :func:`fusionnet_keras.predict` and the ``predict`` command.
        batch_size: as for :func:`fusionnet_keras.predict` and the ``predict`` command.
        dtype: as for :func:`fusionnet_keras.predict` and the ``predict`` command.
        precision: as for :func:`fusionnet_keras.predict` and the ``predict`` command.
        overwrite: replace an existing output (and its markers).
        voxel_size: (z, y, x) nm for the output's OME-Zarr metadata (default: the input's).
        pyramid: add downsampled levels (:func:`~fusionnet_keras.blockwise.pyramid.build_pyramid`).

    Returns:
        ``{"blocks": n, "computed": k, "shape": ...}``.
    """
    from fusionnet_keras.data.io import open_image
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.models.analysis import size_multiple
    from fusionnet_keras.models.loading import load_model

    if dtype not in ("float32", "uint8"):
        raise FusionNetError(f"dtype must be float32 or uint8, got {dtype!r}")
    check_not_input(output_path, input_path, files=[weights])
    with open_image(input_path) as volume:  # grey 2-D or 3-D, as the whole-section prediction reads it
        shape, in_dtype = tuple(volume.shape), str(volume.dtype)
    if len(shape) not in (2, 3):
        raise FusionNetError(f"expected a 2-D image or a 3-D stack (Z, H, W), got shape {shape}")
    multiple = size_multiple(load_model(weights))
    if block is None:
        block = tuple(min(b, -(-s // multiple) * multiple) for b, s in zip(DEFAULT_BLOCK, (1,) * (3 - len(shape)) + shape))
    block = tuple(block)[-len(shape):] if len(shape) == 2 and len(tuple(block)) == 3 else tuple(block)
    if len(block) != len(shape):
        raise FusionNetError(f"--block needs {len(shape)} values for an input of shape {shape}, got {block}")
    check_multiple(block[-2:], (multiple, multiple), "the network's size multiple")
    grid = BlockGrid(shape, block)
    sig = signature({"job": "predict-2d", "input": file_tag(input_path), "shape": shape, "in_dtype": in_dtype,
                     "weights": file_tag(weights), "tta": int(tta), "pad": int(pad), "dtype": dtype,
                     "block": grid.block, **({"precision": precision} if precision else {})})
    from fusionnet_keras.data.io.ome import output_meta

    meta = output_meta([input_path], voxel_size, command="predict", model=str(weights), tta=int(tta), pad=int(pad),
                       dtype=dtype, precision=precision, block=grid.block)
    output = BlockOutput(output_path, shape, dtype, grid.block, sig, meta=meta)
    task = SectionBlockTask(str(input_path), str(weights), output, tta=int(tta), pad=int(pad),
                            batch_size=None if batch_size is None else int(batch_size), dtype=dtype,
                            threads=job_threads(workers, scheduler, client), precision=precision)
    return run_job(task, grid, output, workers=workers, scheduler=scheduler, client=client, overwrite=overwrite,
                   progress=progress, pyramid=pyramid)
