"""Whole volumes, block by block: resumable, multi-worker processing on Dask distributed.

A job is a :class:`~fusionnet_keras.blockwise.engine.BlockTask`: a block
function (read a region with its context, compute, write the block's core into
a chunked zarr array created up front, chunked like the blocks) plus a
done-check (a marker per block, written after the data). The engine
(:func:`~fusionnet_keras.blockwise.engine.run_blocks`) hands the blocks that
are not done to Dask distributed: local worker processes (``workers=N``), an
existing scheduler (``scheduler="tcp://host:8786"``, e.g. one started by
dask-jobqueue on SLURM/PBS), or this process (``workers=0``). Dask schedules,
reschedules the blocks of a killed worker and spawns the workers; each worker
sets the task up once (e.g. loads the model) and then runs block after block.

Modules: ``storage`` (chunked outputs, done markers; the blocks of a volume are
:mod:`fusionnet_keras.inference.grid`), ``engine`` (Dask), ``job`` (what every job shares: when a command
runs blockwise, :func:`~fusionnet_keras.blockwise.job.run_job`, the workers' start), ``stitch`` (labels
numbered per block and joined
across block faces), ``predict`` (2-D sections), ``affinities`` (3-D affinity
networks), ``segment`` (basins, region
graph, global size merging and agglomeration, relabelling), ``morphology``
(per-object measures gathered from blocks).
"""
