"""What every blockwise job shares: when a command runs blockwise, its set-up, and the workers' start.

A command runs blockwise when any of ``--workers``, ``--block`` or
``--scheduler`` is given (:func:`blockwise_requested`); the same for every
command. A blockwise job then goes through :func:`open_job` (or
:func:`run_job` for a job of one pass): its outputs are checked before any
worker starts (an output of another job, shape or chunking refused without
``overwrite``), claimed for the run (a second run into them is refused), the
engine's client started once, and the outputs created or, when they hold an
interrupted run of the same job (same signature), reopened: running the same
command again resumes, computing only the blocks without a done marker.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from fusionnet_keras.blockwise.engine import default_threads, run_blocks, session


def blockwise_requested(workers=None, block=None, scheduler=None) -> bool:
    """Whether a job runs blockwise: any of ``workers``, ``block``, ``scheduler`` given (not None)."""
    return workers is not None or block is not None or scheduler is not None


def job_threads(workers: int = 1, scheduler=None, client=None) -> int | None:
    """CPU threads for each worker's numerical libraries: local workers share this machine's cores; else None."""
    return None if client is not None or scheduler is not None else default_threads(workers)


def file_tag(path) -> dict:
    """What identifies a file's content cheaply (for a job's signature): its resolved path, size and mtime."""
    from fusionnet_keras.data.io import parse_path

    p = Path(parse_path(path)[0]).resolve()
    try:
        st = os.stat(p)
        return {"path": str(path), "resolved": str(p), "size": st.st_size, "mtime": st.st_mtime_ns}
    except OSError:
        return {"path": str(p)}


def start_worker(threads) -> None:
    """What every model-running worker does first: TensorFlow imported quietly, its thread pools sized."""
    from fusionnet_keras.utils.quiet import import_backend

    import_backend()
    limit_threads(threads)


def limit_threads(threads) -> None:
    """Use ``threads`` CPU threads in TensorFlow's pools (before its first operation; else ignored)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # TensorFlow is already running in this process
        pass


@dataclass
class Job:
    """An open blockwise job (from :func:`open_job`): runs its passes on the job's client."""

    client: object
    workers: int
    progress: bool

    def run(self, task, grid) -> dict:
        """:func:`~fusionnet_keras.blockwise.engine.run_blocks` of ``task`` on ``grid``: ``{block id: result}``."""
        return run_blocks(task, grid, workers=self.workers, client=self.client, progress=self.progress)

    def pyramid(self, output_path, pyramid: bool = True) -> int:
        """With ``pyramid``, the downsampled levels of the OME-Zarr ``output_path`` (on the job's client); how many."""
        from fusionnet_keras.blockwise.pyramid import output_pyramid

        return output_pyramid(output_path, pyramid, self.client, self.progress)


@contextlib.contextmanager
def open_job(outputs, *, workers: int = 1, scheduler=None, client=None, overwrite: bool = False,
             progress: bool = True, threads: int | None = None, claims=None):
    """Check, claim and open a job's ``outputs``, start the engine; yields a :class:`Job`.

    Args:
        outputs: what the job writes, each with ``check(overwrite)`` and
            ``open(overwrite=...)``
            (:class:`~fusionnet_keras.blockwise.storage.BlockOutput`,
            :class:`~fusionnet_keras.blockwise.storage.WorkDir`): all checked
            before any worker starts, then created or reopened to resume.
        workers: local worker processes (0: this process).
        scheduler: address of a running Dask scheduler.
        client: an existing ``distributed.Client`` (overrides ``workers`` and ``scheduler``).
        overwrite: replace existing outputs of another job (and their markers).
        progress: show the progress bars.
        threads: CPU threads of each local worker (see :func:`job_threads`).
        claims: what the run holds so that a second run into it is refused (paths or outputs);
            default: the ``outputs``.
    """
    outputs = list(outputs)
    for output in outputs:  # every output checked before any worker starts
        output.check(overwrite)
    claims = outputs if claims is None else list(claims)
    with session(workers, scheduler, client, threads, outputs=claims) as client:
        for output in outputs:
            output.open(overwrite=overwrite)
        yield Job(client, workers, progress)


def run_job(task, grid, output, *, workers: int = 1, scheduler=None, client=None, overwrite: bool = False,
            progress: bool = True, pyramid: bool = False) -> dict:
    """A job of one pass: ``task`` over ``grid`` into ``output`` (a ``BlockOutput``), resumed where it stopped.

    The engine's local workers get ``task.threads`` CPU threads each; with
    ``pyramid`` the output's downsampled levels follow on the same client
    (:func:`~fusionnet_keras.blockwise.pyramid.output_pyramid`). Returns
    ``{"blocks": n, "computed": k, "shape": output shape, "block": grid block, "levels": l}``,
    ``k`` the blocks computed by this run (the others were done before), ``l`` the pyramid's levels.
    """
    with open_job([output], workers=workers, scheduler=scheduler, client=client, overwrite=overwrite,
                  progress=progress, threads=task.threads) as job:
        before = sum(output.markers.is_done(b) for b in grid)
        job.run(task, grid)
        levels = job.pyramid(output.display, pyramid)
    return {"blocks": len(grid), "computed": len(grid) - before, "shape": output.shape, "block": grid.block,
            "levels": levels}
