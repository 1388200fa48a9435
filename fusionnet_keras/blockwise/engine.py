"""Running a block task on Dask distributed: local worker processes, a cluster's scheduler, or in process.

Dask does the scheduling, the worker processes and the recovery: when a worker
dies (``kill -9``, out of memory, a lost node) its nanny starts a new one and
the scheduler hands its blocks to the workers left. This module only says what
a block is (:class:`BlockTask`), skips the blocks whose done marker is valid,
and shows a progress bar (blocks done, rate, ETA). Every worker sets the task
up once (:meth:`BlockTask.setup`: e.g. loads the model) and keeps the state
for all its blocks, in a Dask worker plugin.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int

#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT = 10


class BlockTask:
    """One blockwise job: subclasses define :meth:`setup` and :meth:`process` (both run on the workers).

    The task is pickled to every worker, so it holds settings and paths only.
    ``markers`` (a :class:`~fusionnet_keras.blockwise.storage.DoneMarkers`) is
    the done-check: :meth:`process` writes the block's data, then the engine
    writes its marker with the small JSON result :meth:`process` returned.
    """

    #: shown on the progress bar
    name = "blocks"
    markers = None
    #: CPU threads for each worker's numerical libraries (None: leave them alone)
    threads = None

    def setup(self):
        """The per-worker state (loaded once per worker process); default None."""
        return None

    def process(self, state, block):  # pragma: no cover - abstract
        """Compute and write ``block``; return a small JSON-able result (kept in its marker)."""
        raise NotImplementedError


def _plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class TaskPlugin(WorkerPlugin):
        """Holds a task and its per-worker state on every worker."""

        def __init__(self, task):
            self.task = task
            self.state = None
            self.ready = False

        def teardown(self, worker):
            self.state = None

    return TaskPlugin


def _state(plugin):
    if not plugin.ready:
        plugin.state = plugin.task.setup()
        plugin.ready = True
    return plugin.state


def run_one(task, state, block):
    """Process ``block`` and mark it done (data first, then the marker); returns its result."""
    result = task.process(state, block)
    if task.markers is not None:
        task.markers.mark(block, result, worker=worker_info())
    return result


def worker_info() -> dict:
    """This process's id and peak resident memory (MB), kept in every block's marker."""
    import resource

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"pid": os.getpid(), "peak_rss_mb": round(peak_kb / 1024.0, 1)}


def _process_on_worker(plugin_name, block):
    from distributed import get_worker

    plugin = get_worker().plugins[plugin_name]
    return run_one(plugin.task, _state(plugin), block)


def _progress(total, done, desc, show):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="block", disable=not show, file=sys.stderr,
                smoothing=0.1, dynamic_ncols=True)


def connect(workers: int = 1, scheduler: str | None = None, threads: int | None = None):
    """A Dask client: to ``scheduler`` (address) if given, else to ``workers`` new local worker processes."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FusionNetError(f"cannot reach the Dask scheduler at {scheduler}: {reason[:160]}") from None
    env = {}
    if threads:
        env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=0, silence_logs=logging.ERROR, env=env)
    return Client(cluster, set_as_default=False)


@contextlib.contextmanager
def session(workers: int = 1, scheduler: str | None = None, client=None, threads: int | None = None):
    """The client every pass of a job uses (``None``: in this process); local workers are closed at the end.

    Connecting first means an unreachable scheduler fails before any output is
    created, and a job of several passes starts its local workers once.
    """
    workers = check_int("workers", workers, 0)
    if client is not None or (scheduler is None and workers == 0):
        yield client
        return
    client = connect(workers, scheduler, threads)
    try:
        yield client
    finally:
        cluster = client.cluster if scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()


def default_threads(workers: int) -> int:
    """CPU threads per worker when ``workers`` share this machine."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def run_blocks(task: BlockTask, blocks, *, workers: int = 1, scheduler: str | None = None, client=None,
               progress: bool = True) -> dict:
    """Run ``task`` on every block whose done marker is missing; returns ``{block id: result}`` of all blocks.

    Args:
        task: the :class:`BlockTask`.
        blocks: the blocks (:class:`~fusionnet_keras.blockwise.grid.Block`).
        workers: local worker processes (Dask ``LocalCluster``); 0 runs the
            blocks in this process, one after the other.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``)
            whose workers run the blocks (``workers`` is then ignored).
        client: an existing ``distributed.Client`` (e.g. of a dask-jobqueue
            cluster); overrides ``workers`` and ``scheduler``.
        progress: show the progress bar (blocks done, rate, ETA).

    Results of blocks done by an earlier (interrupted) run come from their markers.
    """
    blocks = list(blocks)
    workers = check_int("workers", workers, 0)
    markers = task.markers
    results, pending = {}, []
    for block in blocks:
        marker = None if markers is None else markers.read(block)
        if marker is None:
            pending.append(block)
        else:
            results[block.id] = marker.get("result")
    bar = _progress(len(blocks), len(blocks) - len(pending), task.name, progress)
    try:
        if not pending:
            return results
        if client is None and scheduler is None and workers == 0:
            state = task.setup()
            for block in pending:
                results[block.id] = run_one(task, state, block)
                bar.update(1)
            return results
        results.update(_run_dask(task, pending, workers, scheduler, client, bar))
        return results
    finally:
        bar.close()


def _run_dask(task, pending, workers, scheduler, client, bar) -> dict:
    from distributed import as_completed

    own = client is None
    if own:
        client = connect(workers or 1, scheduler, task.threads)
    name = f"fusionnet-{task.name}-{uuid.uuid4().hex[:8]}"
    results = {}
    try:
        client.register_plugin(_plugin_class()(task), name=name)
        futures = {client.submit(_process_on_worker, name, block, key=f"{name}-{block.id}", pure=False): block
                   for block in pending}
        for future in as_completed(futures, loop=client.loop):
            try:
                results[futures[future].id] = future.result()
            except Exception:
                for other in futures:
                    other.cancel()
                raise
            bar.update(1)
        return results
    finally:
        try:
            if not own:
                client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - the workers may be gone already
            pass
        if own:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
