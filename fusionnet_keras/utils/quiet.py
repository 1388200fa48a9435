"""TensorFlow and Dask kept off the user's terminal: every import of TensorFlow quiet, in every process.

TensorFlow's C++ code writes its start-up lines (the oneDNN notice, absl's "All
log messages before absl::InitializeLog() ...", "Could not find cuda drivers")
to file descriptor 2 during ``import tensorflow``, before it reads
``TF_CPP_MIN_LOG_LEVEL``, and "failed call to cuInit" (an E-level line that the
level does not filter) when it first looks for a GPU. :func:`quiet_imports`
makes the *next* import of TensorFlow or Keras in this process, by whatever
code, run with file descriptor 2 pointed at /dev/null and look for GPUs while
it is (about a millisecond), after setting ``TF_CPP_MIN_LOG_LEVEL=2`` unless
the user set it. The command line calls it before any command runs, the
blockwise engine in every worker process; nothing is imported until needed.

TensorFlow and Keras are imported without optional extras that the package
never uses through them (``BACKEND_OPTIONAL``: TensorFlow Lite's JAX
converter, Keras' scikit-learn wrappers with ``scipy.stats``, image-gallery
plots); each is guarded by ``try: import ... except ImportError`` there, and
hiding them saves about a third of the import. Imported later, they load
normally.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys

BACKEND_OPTIONAL = ("jax", "sklearn", "matplotlib")
#: the modules whose first import :func:`quiet_imports` silences
BACKEND = ("tensorflow", "keras")
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def silenced_stderr_fd():
    """Point file descriptor 2 at /dev/null in the block (C++ libraries write there, not to sys.stderr)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (e.g. a detached process): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def hidden_modules(names):
    """Make ``import NAME`` raise ImportError in the block, for the ``names`` not imported yet."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


class _QuietLoader:
    """Runs the real loader of TensorFlow or Keras silenced; the module ends up with its real spec."""

    def __init__(self, spec, verbose: bool):
        self.spec, self.verbose = spec, verbose

    def create_module(self, spec):
        return self.spec.loader.create_module(self.spec)

    def exec_module(self, module):
        module.__spec__, module.__loader__ = self.spec, self.spec.loader
        silence = contextlib.nullcontext() if self.verbose else silenced_stderr_fd()
        with hidden_modules(BACKEND_OPTIONAL), silence:
            self.spec.loader.exec_module(module)
            if self.spec.name == "tensorflow" and not self.verbose:
                # "failed call to cuInit" on a machine without a GPU comes when TensorFlow first looks for one
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices("GPU")


class _QuietFinder:
    """Hands the first import of each of ``BACKEND`` to :class:`_QuietLoader`; gone once both are imported."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def find_spec(self, name, path=None, target=None):
        if name not in BACKEND or path is not None:
            return None
        if all(module in sys.modules for module in BACKEND):
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is None or spec.loader is None:
            return None
        quiet = importlib.machinery.ModuleSpec(name, _QuietLoader(spec, self.verbose), origin=spec.origin,
                                               is_package=spec.submodule_search_locations is not None)
        quiet.submodule_search_locations = spec.submodule_search_locations
        quiet.has_location, quiet.cached = spec.has_location, spec.cached
        return quiet


def quiet_imports(verbose: bool = False) -> None:
    """Make this process's first import of TensorFlow and Keras quiet (see the module); safe to call again.

    Sets ``KERAS_BACKEND=tensorflow`` and, unless ``verbose``,
    ``TF_CPP_MIN_LOG_LEVEL=2`` where the user set neither (worker processes
    started later inherit them). ``verbose`` keeps TensorFlow's lines.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if not verbose:
        os.environ.setdefault(LOG_LEVEL_ENV, "2")
    if os.environ["KERAS_BACKEND"] != "tensorflow" or all(module in sys.modules for module in BACKEND):
        return
    for finder in [f for f in sys.meta_path if isinstance(f, _QuietFinder)]:
        sys.meta_path.remove(finder)
    sys.meta_path.insert(0, _QuietFinder(verbose))


def import_backend(verbose: bool = False) -> None:
    """Import TensorFlow and Keras now, quietly (:func:`quiet_imports`); other Keras backends are left alone."""
    quiet_imports(verbose)
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import keras  # noqa: F401


class _TifffileFilter:
    """Drops tifffile's log records (e.g. "invalid page offset" of a truncated file) while this thread is in
    :func:`quiet_tifffile`: a reading problem is reported once, as the reader's one-line error."""

    def __init__(self):
        import threading

        self.local = threading.local()

    def filter(self, record):
        return not getattr(self.local, "depth", 0)


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile's log lines dropped in this thread while the block runs (the filter is added to tifffile's
    logger once, on first use)."""
    import logging

    logger = logging.getLogger("tifffile")
    quiet = next((f for f in logger.filters if isinstance(f, _TifffileFilter)), None)
    if quiet is None:
        quiet = _TifffileFilter()
        logger.addFilter(quiet)
    quiet.local.depth = getattr(quiet.local, "depth", 0) + 1
    try:
        yield
    finally:
        quiet.local.depth -= 1
