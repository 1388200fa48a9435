"""Blockwise 3-D affinities: blocks (z, y, x) with the network's context, any number of workers, resumable.

Each block is predicted alone by
:meth:`~fusionnet_keras.inference.affinities.AffinityPredictor.predict_region`
(its window on the network's pooling grid, mirrored context at the volume
border), so the output equals :func:`fusionnet_keras.predict_affinities` of the
whole volume for any block shape and worker count. The output is a zarr array
``(3, Z, Y, X)`` float32 chunked ``(3, *block)``, written block by block with a
done marker per block (:class:`~fusionnet_keras.blockwise.storage.BlockOutput`);
the model is loaded once per worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionnet_keras.blockwise.engine import BlockTask
from fusionnet_keras.inference.grid import BlockGrid
from fusionnet_keras.blockwise.job import file_tag, job_threads, run_job, start_worker
from fusionnet_keras.blockwise.storage import BlockOutput, signature
from fusionnet_keras.errors import FusionNetError


@dataclass
class AffinityBlockTask(BlockTask):
    """Predict the affinities of a block and write them into the ``(3, Z, Y, X)`` output."""

    input: str
    weights: str
    output: BlockOutput
    orientations: int = 1
    precision: str | None = None
    threads: int | None = None
    name = "affinities"

    @property
    def markers(self):
        return self.output.markers

    def setup(self):
        start_worker(self.threads)
        from fusionnet_keras.data.io import open_volume
        from fusionnet_keras.inference.affinities import AffinityPredictor
        from fusionnet_keras.models.loading import load_model

        predictor = AffinityPredictor(load_model(self.weights, spatial_dims=3), precision=self.precision,
                                      orientations=self.orientations)
        return open_volume(self.input), predictor

    def process(self, state, block):
        volume, predictor = state
        self.output.write(block, predictor.predict_region(volume.lazy, block.region, volume.name))
        return None


def open_affinity_input(input_path):
    """The input volume (opened lazily) after the checks of :func:`predict_affinities`: grey, 3-D, not empty."""
    from fusionnet_keras.data.io import open_image
    from fusionnet_keras.inference.affinities import check_volume

    volume = open_image(input_path)
    try:
        if len(volume.shape) != 3:
            raise FusionNetError(f"expected a 3-D volume (Z, Y, X) in {volume.name}, got shape {volume.shape}; "
                                 "for 2-D sections use 'fusionnet-keras predict'")
        check_volume(volume)
    except BaseException:
        volume.close()
        raise
    return volume


def affinities_volume(input_path, output_path, weights, *, block=None, workers=1, scheduler=None, client=None,
                      orientations=1, precision=None, overwrite=False, progress=True, voxel_size=None,
                      pyramid=False) -> dict:
    """Affinities of a (Z, Y, X) volume, block by block into a zarr array; resumable.

    Args:
        input_path: any readable volume (HDF5 and zarr are read block by block).
        output_path: a zarr array (``x.zarr`` or ``x.zarr:group/array``), created ``(3, Z, Y, X)``
            float32, chunked ``(3, *block)``; an existing output of the same job
            is resumed (only the blocks without a done marker are computed).
        weights: the ``.keras`` 3-D affinity network (loaded once per worker).
        block: (z, y, x) block (any shape; default
            :data:`~fusionnet_keras.inference.affinities.DEFAULT_BLOCK` capped at the volume).
        workers: local worker processes (Dask ``LocalCluster``; see
            :func:`~fusionnet_keras.blockwise.engine.run_blocks`).
        scheduler: address of a running Dask scheduler whose workers run the blocks.
        client: an existing ``distributed.Client`` (overrides ``workers`` and ``scheduler``).
        orientations: as for :func:`fusionnet_keras.predict_affinities`.
        precision: as for :func:`fusionnet_keras.predict_affinities`.
        overwrite: replace an existing output (and its markers).
        voxel_size: as for :func:`~fusionnet_keras.blockwise.predict.predict_volume`.
        pyramid: as for :func:`~fusionnet_keras.blockwise.predict.predict_volume`.

    Returns:
        ``{"blocks": n, "computed": k, "shape": (3, Z, Y, X), "block": ...}``.
    """
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.inference.affinities import N_CHANNELS, AffinityPredictor, check_block
    from fusionnet_keras.models.loading import load_model

    check_not_input(output_path, input_path, files=[weights])
    with open_affinity_input(input_path) as volume:
        shape, in_dtype = tuple(volume.shape), str(volume.dtype)
    grid = BlockGrid(shape, check_block(block, shape))
    sig = signature({"job": "affinities-3d", "input": file_tag(input_path), "shape": shape, "in_dtype": in_dtype,
                     "weights": file_tag(weights), "orientations": int(orientations), "block": grid.block,
                     **({"precision": precision} if precision else {})})
    from fusionnet_keras.data.io.ome import output_meta

    meta = output_meta([input_path], voxel_size, channels=True, command="affinities", model=str(weights),
                       orientations=int(orientations), precision=precision, block=grid.block)
    output = BlockOutput(output_path, (N_CHANNELS, *shape), "float32", (N_CHANNELS, *grid.block), sig, meta=meta)
    output.check(overwrite)  # an existing output of another job refused before the model is loaded
    # a model of the other kind, bad settings: refused here, not by every worker
    AffinityPredictor(load_model(weights, spatial_dims=3), precision=precision, orientations=orientations)
    task = AffinityBlockTask(str(input_path), str(weights), output, orientations=int(orientations),
                             precision=precision, threads=job_threads(workers, scheduler, client))
    return run_job(task, grid, output, workers=workers, scheduler=scheduler, client=client, overwrite=overwrite,
                   progress=progress, pyramid=pyramid)
