"""Shared helpers for the benchmark scripts: machine FLOP rate, memory, timing, output.

* :func:`matmul_gflops` - measured fp32 matrix-multiply rate of this machine,
  through the Keras backend in use (``keras.ops.matmul``; TensorFlow here) and
  through numpy (its BLAS). This is the yardstick the benchmarks compare the
  network's FLOP rate with: a dense ``n x n`` matmul is close to the best rate
  the hardware reaches through that software stack.
* :func:`peak_rss_mb` / :func:`current_rss_mb` - memory of this process.
* :func:`run_isolated` - run a function of a script in a **fresh Python
  process** and return its result together with that process' peak RSS, so the
  number is not polluted by what the parent process allocated before.
* :class:`Timer`, :func:`best_time` - wall-clock timing.
* :func:`print_table`, :func:`emit_json`, :func:`verdict` - output.

The scripts are run as ``python benchmarks/<name>.py``, so this file is
imported as the top-level module ``common`` (``benchmarks/`` is on
``sys.path``). Running ``python benchmarks/common.py`` prints the matmul rates.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_RESULT_MARK = "@@BENCH_RESULT@@"


# ----------------------------------------------------------------------------
# environment


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter as the command line does (call before importing keras)."""
    ensure_repo_on_path()
    from fusionnet_keras.cli.options import quiet_backend

    quiet_backend()


def ensure_repo_on_path() -> None:
    """Make ``fusionnet_keras`` importable from a source checkout."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def machine_info() -> dict:
    """Backend, library versions, CPU count and accelerators (a short dict)."""
    import keras

    info = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return info


def load_average():
    """The 1, 5 and 15 minute load averages (rounded), or None: speed ratios on shared cores need them."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


# ----------------------------------------------------------------------------
# timing


class Timer:
    """Context manager measuring wall-clock seconds: ``with Timer() as t: ...; t.seconds``."""

    def __init__(self):
        self.start = None
        self.seconds = None

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def best_time(func, repeats=3, warmup=1):
    """Best (minimum) wall-clock seconds of ``func()`` over ``repeats`` runs after ``warmup`` runs.

    Returns ``(best_seconds, all_seconds, last_result)``.
    """
    result = None
    for _ in range(warmup):
        result = func()
    times = []
    for _ in range(max(1, repeats)):
        with Timer() as t:
            result = func()
        times.append(t.seconds)
    return min(times), times, result


# ----------------------------------------------------------------------------
# machine FLOP rate


def matmul_gflops(n=2048, dtype="float32", repeats=5, warmup=2, backend=True, numpy=True):
    """Measured ``n x n`` matrix-multiply rate in GFLOP/s (``2 n^3`` FLOPs per product).

    Best of ``repeats`` timed products after ``warmup`` untimed ones. Returns a
    dict with ``backend_gflops`` (``keras.ops.matmul`` on backend tensors; the
    result is brought back to the host so asynchronous devices are waited for)
    and ``numpy_gflops`` (``numpy.matmul``), plus ``n``, ``dtype`` and
    ``backend_gflops_all`` / ``numpy_gflops_all`` (every repeat). ``dtype``
    may be ``"bfloat16"`` or ``"float16"`` (the backend's low-precision rate;
    numpy is then skipped: it has no fast kernels for them).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype("float32")
    b = rng.standard_normal((n, n)).astype("float32")
    flops = 2.0 * n**3
    out = {"n": int(n), "dtype": str(dtype), "repeats": int(repeats)}
    numpy = numpy and str(dtype) == "float32"
    if backend:
        import keras
        from keras import ops

        ta = ops.cast(ops.convert_to_tensor(a), dtype)
        tb = ops.cast(ops.convert_to_tensor(b), dtype)

        def run():
            return ops.convert_to_numpy(ops.matmul(ta, tb))

        # sanity check once (catches a silently lower-precision path)
        ref = a[:64].astype(np.float64) @ b.astype(np.float64)
        got = run()[:64].astype(np.float64)
        rel = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-30))
        best, times, _ = best_time(run, repeats=repeats, warmup=warmup)
        out["backend"] = keras.backend.backend()
        out["backend_gflops"] = flops / best / 1e9
        out["backend_gflops_all"] = [flops / t / 1e9 for t in times]
        out["backend_rel_error"] = rel
    if numpy:
        best, times, _ = best_time(lambda: a @ b, repeats=repeats, warmup=warmup)
        out["numpy_gflops"] = flops / best / 1e9
        out["numpy_gflops_all"] = [flops / t / 1e9 for t in times]
    return out


# ----------------------------------------------------------------------------
# memory


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def current_rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process where Linux allows it.

    Returns True on success. Note ``ru_maxrss`` is *not* reset by this; use
    :func:`hwm_rss_mb` to read the mark.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_rss_mb() -> float | None:
    """``VmHWM`` (peak RSS since start or the last :func:`reset_peak_rss`) in MiB, Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def run_isolated(script, function, kwargs=None, timeout=None, env=None):
    """Run ``function(**kwargs)`` from the file ``script`` in a fresh Python process.

    The function must return a JSON-serialisable dict. It runs in a new
    interpreter (same executable), so its memory is not polluted by the caller's
    earlier allocations. Returned: the function's dict plus

    * ``peak_rss_mb``: peak RSS of the whole child process since it started
      (Linux ``VmHWM``: interpreter, imports and framework start-up included -
      what a user running this work as its own program would see). Not
      ``ru_maxrss``: Linux carries the *parent's* high-water mark into a child
      created by fork/vfork + exec, which is exactly the pollution to avoid
      (``ru_maxrss`` is the fallback where ``/proc`` is missing, and is reported
      as ``ru_maxrss_mb``);
    * ``import_rss_mb``: RSS after importing ``script`` (before the call);
    * ``startup_peak_rss_mb``: peak RSS before the call;
    * ``work_peak_rss_mb``: peak RSS *during* the call (``VmHWM`` reset just
      before it), i.e. without earlier start-up transients;
    * ``wall_s``: seconds of the call.

    Raises ``RuntimeError`` with the child's output tail if it fails.
    """
    payload = json.dumps({"script": str(Path(script).resolve()), "function": function, "kwargs": kwargs or {}})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_isolated", payload]
    child_env = dict(os.environ)
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(HERE)] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else [])
    )
    if env:
        child_env.update(env)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            result = json.loads(line[len(_RESULT_MARK):])
            if proc.returncode == 0:
                return result
    tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
    raise RuntimeError(f"isolated run of {function} failed (exit {proc.returncode}):\n{tail}")


def _isolated_main(payload: str) -> int:
    spec = json.loads(payload)
    path = Path(spec["script"])
    mod_spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module
    mod_spec.loader.exec_module(module)
    import_rss = current_rss_mb()
    startup_hwm = hwm_rss_mb()
    reset_ok = startup_hwm is not None and reset_peak_rss()
    t0 = time.perf_counter()
    result = getattr(module, spec["function"])(**spec["kwargs"])
    wall = time.perf_counter() - t0
    result = dict(result or {})
    work_hwm = hwm_rss_mb()
    if startup_hwm is not None and work_hwm is not None:
        result["peak_rss_mb"] = max(startup_hwm, work_hwm)
    else:
        result["peak_rss_mb"] = peak_rss_mb()
    result["ru_maxrss_mb"] = peak_rss_mb()
    result["import_rss_mb"] = import_rss
    result["startup_peak_rss_mb"] = startup_hwm
    result["work_peak_rss_mb"] = work_hwm if reset_ok else None
    result["wall_s"] = wall
    sys.stdout.flush()
    print(_RESULT_MARK + json.dumps(result, default=_json_default), flush=True)
    return 0


# ----------------------------------------------------------------------------
# output


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj):
    """Replace non-finite floats by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return None
    return obj


def emit_json(result: dict, path=None, prefix="RESULT ") -> str:
    """Print ``result`` as one JSON line (after ``prefix``); also write it to ``path`` if given."""
    text = json.dumps(_clean(result), default=_json_default, sort_keys=False)
    print(prefix + text, flush=True)
    if path:
        from fusionnet_keras.utils.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(_clean(result), default=_json_default, indent=2) + "\n")
    return text


def fmt(value, digits=3):
    """Compact number formatting for tables."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.{digits}e}"
        return f"{v:.{digits}g}" if abs(v) < 100 else f"{v:,.1f}"
    return str(value)


def print_table(rows, headers, title=None, file=None):
    """Print a markdown table; ``rows`` are sequences (values formatted with :func:`fmt`)."""
    file = file or sys.stdout
    cells = [[fmt(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    if title:
        print(f"\n### {title}\n", file=file)
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |", file=file)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=file)
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |", file=file)
    file.flush()


def verdict(name, value, target, op=">=", unit=""):
    """A PASS/FAIL record: ``{"name", "value", "target", "op", "pass"}`` (``pass`` None if unmeasured)."""
    ok = None
    if value is not None and math.isfinite(float(value)):
        ok = bool(value >= target) if op == ">=" else bool(value <= target)
    return {"name": name, "value": value, "target": target, "op": op, "unit": unit, "pass": ok}


def print_verdicts(verdicts, title="Targets"):
    rows = []
    for v in verdicts:
        status = "n/a" if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
        rows.append([v["name"], fmt(v["value"]) + v["unit"], f"{v['op']} {fmt(v['target'])}{v['unit']}", status])
    print_table(rows, ["target", "measured", "required", "result"], title=title)


def parse_jit(text):
    """``--jit-compile`` value: ``auto`` (Keras' default; XLA where the model supports it), ``on``, ``off``."""
    text = str(text).lower()
    if text in ("auto",):
        return "auto"
    if text in ("on", "true", "1", "xla"):
        return True
    if text in ("off", "false", "0"):
        return False
    raise argparse.ArgumentTypeError("--jit-compile must be auto, on or off")


def apply_jit(model, jit):
    """Set ``model.jit_compile`` unless ``jit == "auto"``; return the value the model will use."""
    if jit != "auto":
        model.jit_compile = bool(jit)
    return bool(model.jit_compile)


def temp_dir(prefix="fusionnet-bench-"):
    """A temporary directory (a ``TemporaryDirectory`` context manager)."""
    return tempfile.TemporaryDirectory(prefix=prefix)


# ----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="Measured fp32 matmul GFLOP/s of this machine.")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--_isolated", dest="isolated", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.isolated is not None:
        return _isolated_main(args.isolated)
    quiet_tensorflow()
    ensure_repo_on_path()
    res = matmul_gflops(args.n, repeats=args.repeats)
    res["machine"] = machine_info()
    print_table(
        [["keras.ops.matmul (" + res["backend"] + ")", res["backend_gflops"]], ["numpy.matmul", res["numpy_gflops"]]],
        ["fp32 matmul n=%d" % args.n, "GFLOP/s"],
    )
    emit_json(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
