"""Running a block task on Dask distributed: local worker processes, a cluster's scheduler, or in process.

Dask does the scheduling, the worker processes and the recovery: when a worker
dies (``kill -9``, out of memory, a lost node) its nanny starts a new one and
the scheduler hands its blocks to the workers left. This module only says what
a block is (:class:`BlockTask`), skips the blocks whose done marker is valid,
and shows a progress bar (blocks done, rate, ETA). Every worker sets the task
up once (:meth:`BlockTask.setup`: e.g. loads the model) and keeps the state
for all its blocks, in a Dask worker plugin.

Only the command's own lines reach the user: a block that fails (a bad value
in the input, say) is returned to this process as a :class:`BlockFailure`
rather than raised on the worker (which Dask would log with a traceback for
every block), and this process raises its error once. Dask's own log lines
are kept off the terminal in this process while a job runs and in the local
workers, which also import TensorFlow quietly
(:func:`fusionnet_keras.utils.quiet.quiet_imports`); the scheduler's HTTP
server listens on a free port of localhost, so a second job beside the first
does not warn that port 8787 is taken.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.utils.validate import check_int

#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT = 10
#: The port of a Dask scheduler address that names none.
DEFAULT_PORT = 8786
#: Chunks a block's zarr read or write decodes at once (zarr's ``async.concurrency``, 10 by default): a read
#: that spans many chunks (a block with its context touches up to 27) then costs its region plus about this
#: many decoded chunks, not ten (measured: docs/benchmarks.md, "Figures behind the code's defaults").
READ_CONCURRENCY = 2


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


#: Loggers of Dask and the libraries under it, kept quiet while a job runs (their handlers write to stderr).
DASK_LOGGERS = ("distributed", "distributed.client", "distributed.gc", "tornado", "tornado.application",
                "asyncio", "bokeh")


def silence_dask_logs() -> list:
    """Drop the records of :data:`DASK_LOGGERS` from now on; their ``(logger, level)`` before."""
    import logging

    loggers = [logging.getLogger(name) for name in DASK_LOGGERS]
    before = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    return before


@contextlib.contextmanager
def quiet_dask_logs():
    """:func:`silence_dask_logs` in the block."""
    before = silence_dask_logs()
    try:
        yield
    finally:
        for logger, level in before:
            logger.setLevel(level)


@dataclass
class BlockFailure:
    """A block's error, returned by the worker as a result instead of raised there (see the module)."""

    error: BaseException | None
    kind: str
    message: str
    traceback: str

    @classmethod
    def of(cls, error: BaseException) -> BlockFailure:
        import pickle
        import traceback

        text = "".join(traceback.format_exception(error))
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # noqa: BLE001 - an exception that does not travel: its type and message do
            return cls(None, type(error).__name__, str(error), text)
        return cls(error, type(error).__name__, str(error), text)

    def exception(self) -> BaseException:
        """The error to raise here; the worker's traceback is attached as a note (shown by ``--debug``)."""
        error = self.error if self.error is not None else RuntimeError(f"{self.kind}: {self.message}")
        error.add_note(f"raised in a worker process:\n{self.traceback}")
        return error


def _plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class TaskPlugin(WorkerPlugin):
        """Holds a task and its per-worker state on every worker."""

        def __init__(self, task, local: bool):
            self.task = task
            self.local = local
            self.state = None
            self.ready = False

        def setup(self, worker):
            from fusionnet_keras.utils.quiet import quiet_imports

            quiet_imports()
            if self.local:  # a worker of this machine writes to the user's terminal (and ends with the job)
                silence_dask_logs()

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
    import zarr

    with zarr.config.set({"async.concurrency": READ_CONCURRENCY}):
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
    """Run ``block`` on a worker; any error comes back as a :class:`BlockFailure` (see the module)."""
    try:
        from distributed import get_worker

        plugin = get_worker().plugins[plugin_name]
        return run_one(plugin.task, _state(plugin), block)
    except Exception as e:  # noqa: BLE001 - raised in the client, once
        return BlockFailure.of(e)


def _progress(total, done, desc, show):
    from tqdm.auto import tqdm

    # on a terminal only: in a log or a pipe the bar's redraws are noise around the command's own lines
    return tqdm(total=total, initial=done, desc=desc, unit="block", disable=None if show else True, file=sys.stderr,
                smoothing=0.1, dynamic_ncols=True)


def _probe(address: str) -> None:
    """Fail at once (OSError) when a ``tcp://host:port`` address refuses connections or names no host.

    Dask's client keeps retrying such an address until its timeout; a plain
    socket tells an unknown host or a closed port in milliseconds.
    """
    import socket

    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://"):].rpartition(":")
    if not port.isdigit() or not host:  # no port: Dask's default
        host, port = address[len("tcp://"):], str(DEFAULT_PORT)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
        pass


def connect(workers: int = 1, scheduler: str | None = None, threads: int | None = None):
    """A Dask client: to ``scheduler`` (address) if given, else to ``workers`` new local worker processes."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            _probe(scheduler)
            return Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FusionNetError(f"cannot reach the Dask scheduler at {scheduler}: {reason[:160]}") from None
    env = {}
    if threads:
        env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    # no dashboard; the scheduler's HTTP server (health checks) on a free port of localhost, not on 8787
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, memory_limit=0,
                           silence_logs=logging.CRITICAL, env=env)
    return Client(cluster, set_as_default=False)


def _close(client, own_cluster: bool) -> None:
    cluster = client.cluster if own_cluster else None
    client.close()
    if cluster is not None:
        cluster.close()


def _claim(output):
    """:func:`~fusionnet_keras.utils.locking.claim` of an output: a path or a :class:`BlockOutput`."""
    from fusionnet_keras.utils.locking import claim

    file, key = getattr(output, "file", None), getattr(output, "key", None)
    if file is None:
        return claim(output)
    name = file.name + (f"-{key.replace('/', '-')}" if key else "")
    return claim(file.parent / name, output.display)


@contextlib.contextmanager
def session(workers: int = 1, scheduler: str | None = None, client=None, threads: int | None = None,
            outputs=()):
    """The client every pass of a job uses (``None``: in this process); local workers are closed at the end.

    Connecting first means an unreachable scheduler fails before any output is
    created, and a job of several passes starts its local workers once.
    ``outputs`` (paths or :class:`~fusionnet_keras.blockwise.storage.BlockOutput`)
    are claimed for the session first: a second run into one of them is refused.
    """
    workers = check_int("workers", workers, 0)
    with contextlib.ExitStack() as claims:
        for output in outputs:
            claims.enter_context(_claim(output))
        with _client(workers, scheduler, client, threads) as client:
            yield client


@contextlib.contextmanager
def _client(workers, scheduler, client, threads):
    if client is not None or (scheduler is None and workers == 0):
        yield client
        return
    with quiet_dask_logs():
        client = connect(workers, scheduler, threads)
        try:
            yield client
        finally:
            _close(client, scheduler is None)


def default_threads(workers: int) -> int:
    """CPU threads per worker when ``workers`` share this machine."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def run_blocks(task: BlockTask, blocks, *, workers: int = 1, scheduler: str | None = None, client=None,
               progress: bool = True) -> dict:
    """Run ``task`` on every block whose done marker is missing; returns ``{block id: result}`` of all blocks.

    Args:
        task: the :class:`BlockTask`.
        blocks: the blocks (:class:`~fusionnet_keras.inference.grid.Block`).
        workers: local worker processes (Dask ``LocalCluster``); 0 runs the
            blocks in this process, one after the other.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``)
            whose workers run the blocks (``workers`` is then ignored).
        client: an existing ``distributed.Client`` (e.g. of a dask-jobqueue
            cluster); overrides ``workers`` and ``scheduler``.
        progress: show the progress bar (blocks done, rate, ETA) when stderr is a terminal.

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
    from distributed import LocalCluster, as_completed

    own = client is None
    with quiet_dask_logs():
        if own:
            client = connect(workers or 1, scheduler, task.threads)
        name = f"fusionnet-{task.name}-{uuid.uuid4().hex[:8]}"
        local = isinstance(getattr(client, "cluster", None), LocalCluster)
        results = {}
        try:
            client.register_plugin(_plugin_class()(task, local), name=name)
            futures = {client.submit(_process_on_worker, name, block, key=f"{name}-{block.id}", pure=False): block
                       for block in pending}
            for future in as_completed(futures, loop=client.loop):
                result = future.result()
                if isinstance(result, BlockFailure):
                    for other in futures:
                        other.cancel()
                    raise result.exception()
                results[futures[future].id] = result
                bar.update(1)
            return results
        finally:
            try:
                if not own:
                    client.unregister_worker_plugin(name)
            except Exception:  # noqa: BLE001 - the workers may be gone already
                pass
            if own:
                _close(client, True)
