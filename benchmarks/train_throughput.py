"""Training throughput of FusionNet with Keras ``fit``, with and without on-device augmentation.

For the paper model (``nb_filters=64, depth=4``) on ``--size`` x ``--size``
(640 = 512 + 2 * 64 mirror padding) inputs this measures, each configuration in
a fresh subprocess (so its peak RSS is its own):

* training images/s and GFLOP/s at batch 1 and at the largest batch whose
  training process stays within ``--rss-budget-mb`` (8 GB) peak RSS, found by
  trying batch sizes 1, 2, 4, ... (a doubling is skipped, and the search ends,
  when the RSS growth measured so far extrapolates beyond the budget, so no run
  is started that is expected not to fit);
* the same with augmentation switched off: the *same* training wrapper
  (:func:`fusionnet_keras.train.build_training_model`, ``PairLoss``, Adam) with
  ``elastic_amplitude = 0`` and ``noise_sigma = 0``, which makes the
  :class:`~fusionnet_keras.augment.Augmenter` the identity; augmentation's share
  of the step time is ``1 - t_off / t_on``;
* the machine's measured fp32 matmul GFLOP/s (:func:`common.matmul_gflops`).

FLOP convention: one training step costs **3 x** the forward FLOPs (forward
pass, plus about 2x for the backward pass: gradients w.r.t. the activations and
w.r.t. the weights each cost about one forward pass), i.e.
``3 * flops_per_pixel * size**2 * batch``; the augmentation, batch norm, ReLU,
pooling and optimizer update are not counted (so they lower the GFLOP/s).

Steps are timed with a callback that waits for each step's loss (so
asynchronous devices are waited for) and records the time between consecutive
step ends; the first ``--warmup-steps`` (tracing, compilation, allocator
warm-up) are excluded. Data: a small in-memory set of random images and binary
labels, repeated.

``--quick`` is a smoke test (``nb_filters=8``, 128 px, 2 timed steps, batch 1 only;
add ``--max-batch 2`` to exercise the batch search). See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

import common

common.quiet_tensorflow()
common.ensure_repo_on_path()

RSS_BUDGET_MB = 8192.0
AUG_SHARE_TARGET = 0.10
EFFICIENCY_TARGET = 0.50
TRAIN_FLOPS_FACTOR = 3.0


# ----------------------------------------------------------------------------
# the worker (runs in a fresh process through common.run_isolated)


def train_worker(nb_filters, depth, size, batch_size, augment, warmup_steps, steps, seed=0, n_images=4, jit="auto",
                 precision="float32"):
    """Build, compile and ``fit`` the training model under the dtype policy ``precision``; return per-step seconds."""
    import keras

    keras.mixed_precision.set_global_policy(precision)  # as the trainer does with train.precision

    from fusionnet_keras.training import config as cfg
    from fusionnet_keras.models.fusionnet import FusionNet
    from fusionnet_keras.models.analysis import flops_per_pixel
    from fusionnet_keras.training.membranes import build_training_model, compile_wrapper

    keras.utils.set_random_seed(seed)
    config = cfg.defaults()
    config["model"]["nb_filters"] = nb_filters
    config["model"]["depth"] = depth
    config["train"]["batch_size"] = batch_size
    config["train"]["seed"] = seed
    if not augment:
        config["augment"]["elastic_amplitude"] = 0.0
        config["augment"]["noise_sigma"] = 0.0
    net = FusionNet(nb_filters=nb_filters, depth=depth)
    model = build_training_model(net, size, config)
    total = warmup_steps + steps
    compile_wrapper(model, config, steps_per_epoch=total)
    jit_used = common.apply_jit(model, jit)

    # a small in-memory data set, repeated: n_images random sections + membrane-like labels
    rng = np.random.default_rng(seed)
    n = max(1, min(n_images, batch_size))
    images = rng.random((n, size, size, 1), dtype=np.float32)
    labels = (rng.random((n, size, size, 1)) > 0.2).astype(np.float32)
    reps = math.ceil(batch_size / n)
    xb = np.concatenate([images] * reps)[:batch_size]
    yb = np.concatenate([labels] * reps)[:batch_size]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensors(((xb, yb), yb)).repeat().prefetch(2)
    else:

        class Repeat(keras.utils.PyDataset):
            def __len__(self):
                return total

            def __getitem__(self, i):
                return (xb, yb), yb

        data = Repeat()

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []
            self.start = None

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(np.asarray(logs["loss"]))  # wait for the step to finish
            self.ends.append(time.perf_counter())

    clock = StepClock()
    model.fit(data, epochs=1, steps_per_epoch=total, verbose=0, callbacks=[clock])
    ends = [clock.start] + clock.ends
    step_s = [b - a for a, b in zip(ends[:-1], ends[1:])]
    timed = step_s[warmup_steps:]
    return {
        "nb_filters": nb_filters,
        "depth": depth,
        "size": size,
        "batch_size": batch_size,
        "augment": bool(augment),
        "jit_compile": jit_used,
        "flops_per_pixel": flops_per_pixel(net),
        "warmup_step_seconds": step_s[:warmup_steps],
        "step_seconds_all": timed,
        "step_seconds": float(np.median(timed)) if timed else float("nan"),
        "step_seconds_mean": float(np.mean(timed)) if timed else float("nan"),
        "step_seconds_min": float(np.min(timed)) if timed else float("nan"),
    }


# ----------------------------------------------------------------------------


def measure(args, batch_size, augment, warmup_steps, steps):
    kwargs = {
        "nb_filters": args.nb_filters,
        "depth": args.depth,
        "size": args.size,
        "batch_size": batch_size,
        "augment": augment,
        "warmup_steps": warmup_steps,
        "steps": steps,
        "seed": args.seed,
        "jit": args.jit_compile,
        "precision": args.precision,
    }
    t0 = time.perf_counter()
    try:
        res = common.run_isolated(__file__, "train_worker", kwargs, timeout=args.timeout)
        res["ok"] = True
    except Exception as exc:  # out of memory (killed), timeout, ...
        res = dict(kwargs, ok=False, error=str(exc)[-600:], peak_rss_mb=None)
    res["process_seconds"] = time.perf_counter() - t0
    tag = "on " if augment else "off"
    if res["ok"]:
        print(f"  batch {batch_size:>3}, augmentation {tag}: {res['step_seconds']:.3f} s/step (median of "
              f"{len(res['step_seconds_all'])}), peak RSS {res['peak_rss_mb']:.0f} MB, XLA {res['jit_compile']}, "
              f"first step {res['warmup_step_seconds'][0] if res['warmup_step_seconds'] else float('nan'):.1f} s",
              flush=True)
    else:
        print(f"  batch {batch_size:>3}, augmentation {tag}: FAILED ({res['error'].splitlines()[-1] if res['error'] else ''})",
              flush=True)
    return res


def extrapolate(points, batch):
    """Peak RSS at ``batch`` from measured ``{batch: rss}`` (linear in batch, last two points)."""
    bs = sorted(points)
    if len(bs) == 1:
        return None
    b1, b2 = bs[-2], bs[-1]
    slope = (points[b2] - points[b1]) / (b2 - b1)
    return points[b2] + slope * (batch - b2)


def find_max_batch(args, first):
    """Largest power-of-two batch with peak RSS <= budget; returns ``(batch, probes, estimate)``."""
    points = {1: first["peak_rss_mb"]} if first.get("ok") else {}
    probes = []
    best = 1 if first.get("ok") and first["peak_rss_mb"] <= args.rss_budget_mb else None
    b = 2
    while b <= args.max_batch and best is not None and best == b // 2:
        predicted = extrapolate(points, b)
        if predicted is not None and predicted > args.rss_budget_mb * 1.10:
            print(f"  batch {b:>3}: skipped, predicted peak RSS {predicted:.0f} MB > budget", flush=True)
            probes.append({"batch_size": b, "skipped": True, "predicted_rss_mb": predicted})
            break
        res = measure(args, b, True, min(1, args.warmup_steps) if args.probe_steps < args.steps else args.warmup_steps,
                      args.probe_steps)
        probes.append(res)
        if not res["ok"]:
            break
        points[b] = res["peak_rss_mb"]
        if res["peak_rss_mb"] <= args.rss_budget_mb:
            best = b
        b *= 2
    estimate = None
    if len(points) >= 2:
        bs = sorted(points)
        slope = (points[bs[-1]] - points[bs[-2]]) / (bs[-1] - bs[-2])
        if slope > 0:
            estimate = int(bs[-1] + (args.rss_budget_mb - points[bs[-1]]) // slope)
    return best, probes, estimate, points


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: nb_filters 8, 128 px, batch 1 only")
    p.add_argument("--size", type=int, default=None, help="training input side (default 640; quick 128)")
    p.add_argument("--nb-filters", type=int, default=None, help="default 64 (the paper); quick 8")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated batch sizes to time instead of '1 + the largest that fits'")
    p.add_argument("--max-batch", type=int, default=None, help="upper limit of the batch search (default 64; quick 1)")
    p.add_argument("--rss-budget-mb", type=float, default=RSS_BUDGET_MB, help="peak RSS budget of the batch search")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="untimed steps (tracing, compilation); default 2 (quick 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 5; quick 2)")
    p.add_argument("--probe-steps", type=int, default=None,
                   help="timed steps of the batch-search probes (default 1; quick: --steps). A probe with at least "
                        "--steps timed steps is reused as the timing run of its batch size")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--jit-compile", type=common.parse_jit, default="auto",
                   help="XLA for the training step: auto (what fusionnet_keras training uses: "
                        "utils.hardware.training_jit_compile), on, off")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   help="dtype policy of the training step (train.precision); the matmul reference is measured "
                        "in its compute dtype")
    p.add_argument("--timeout", type=float, default=None, help="seconds per subprocess (default none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None, help="also write the result JSON here")
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (128 if q else 640)
    args.nb_filters = args.nb_filters or (8 if q else 64)
    args.steps = args.steps or (2 if q else 5)
    args.max_batch = args.max_batch or (1 if q else 64)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (1 if q else 2)
    args.probe_steps = args.probe_steps or (args.steps if q else 1)
    if args.size % 2**args.depth:
        p.error(f"--size must be a multiple of 2**depth = {2**args.depth}")
    if args.batch_sizes:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    return args


def main(argv=None):
    args = parse_args(argv)
    from fusionnet_keras.models.fusionnet import FusionNet
    from fusionnet_keras.models.analysis import flops_per_pixel

    result = {"benchmark": "train_throughput", "quick": args.quick, "machine": common.machine_info()}
    print(f"machine: {result['machine']}", flush=True)
    compute = args.precision.replace("mixed_", "")
    mm = common.matmul_gflops(args.matmul_n, dtype=compute, repeats=args.matmul_repeats)
    print(f"{compute} matmul n={args.matmul_n}: {mm['backend_gflops']:.1f} GFLOP/s ({mm['backend']})"
          + (f", numpy {mm['numpy_gflops']:.1f} GFLOP/s" if "numpy_gflops" in mm else ""), flush=True)
    fpp = flops_per_pixel(FusionNet(nb_filters=args.nb_filters, depth=args.depth))
    step_flops_per_image = TRAIN_FLOPS_FACTOR * fpp * args.size**2
    result["model"] = {"nb_filters": args.nb_filters, "depth": args.depth, "flops_per_pixel": fpp,
                       "train_flops_factor": TRAIN_FLOPS_FACTOR, "train_flops_per_image": step_flops_per_image}
    print(f"model: FusionNet({args.nb_filters}, {args.depth}) at {args.size}x{args.size}: "
          f"{step_flops_per_image / 1e12:.3f} TFLOP per training image (3 x forward)", flush=True)

    runs = {}  # (batch, augment) -> result
    search = None
    print("timing (each configuration in a fresh process):", flush=True)
    if args.batch_sizes:
        batches = args.batch_sizes
        for b in batches:
            runs[(b, True)] = measure(args, b, True, args.warmup_steps, args.steps)
    else:
        runs[(1, True)] = measure(args, 1, True, args.warmup_steps, args.steps)
        print(f"batch search (peak RSS <= {args.rss_budget_mb:.0f} MB, batches 2, 4, ... <= {args.max_batch}):",
              flush=True)
        best, probes, estimate, points = find_max_batch(args, runs[(1, True)])
        search = {"largest_fitting_batch": best, "linear_estimate_max_batch": estimate,
                  "peak_rss_mb_by_batch": {str(k): v for k, v in points.items()}, "probes": probes,
                  "budget_mb": args.rss_budget_mb}
        print(f"  largest batch within budget: {best} (linear RSS extrapolation: {estimate})", flush=True)
        batches = [1] + ([best] if best and best > 1 else [])
        if best and best > 1:
            probe = next(r for r in probes if r.get("batch_size") == best and r.get("ok"))
            if len(probe["step_seconds_all"]) >= args.steps and len(probe["warmup_step_seconds"]) >= args.warmup_steps:
                runs[(best, True)] = probe  # the probe was a full timing run already
            else:
                runs[(best, True)] = measure(args, best, True, args.warmup_steps, args.steps)
    for b in batches:
        runs[(b, False)] = measure(args, b, False, args.warmup_steps, args.steps)

    mm2 = common.matmul_gflops(args.matmul_n, dtype=compute, repeats=args.matmul_repeats, numpy=False)
    mm["backend_gflops_before"] = mm["backend_gflops"]
    mm["backend_gflops_after"] = mm2["backend_gflops"]
    mm["backend_gflops"] = max(mm["backend_gflops"], mm2["backend_gflops"])
    ref = mm["backend_gflops"]

    rows, table, verdicts = [], [], []
    for b in batches:
        on, off = runs.get((b, True)), runs.get((b, False))
        entry = {"batch_size": b}
        for name, r in (("augment_on", on), ("augment_off", off)):
            if r and r["ok"] and r["step_seconds"] > 0:
                gf = step_flops_per_image * b / r["step_seconds"] / 1e9
                r.update({"images_per_s": b / r["step_seconds"], "gflops": gf, "pct_matmul": 100 * gf / ref})
            entry[name] = r
        share = None
        if on and off and on.get("ok") and off.get("ok"):
            share = 1.0 - off["step_seconds"] / on["step_seconds"]
        entry["augment_share"] = share
        if share is not None:
            entry["augment_share_min"] = 1.0 - off["step_seconds_min"] / on["step_seconds_min"]
            if share < 0:
                print(f"note: batch {b}: augmentation off was slower than on: timing noise (shared machine?) "
                      "exceeds the augmentation cost; use more --steps on an idle machine", flush=True)
        table.append(entry)
        for name, r in (("on", on), ("off", off)):
            if r and r.get("ok"):
                rows.append([b, name, f"{r['step_seconds']:.3f}", f"{r['images_per_s']:.3f}",
                             f"{r['gflops']:.1f}", f"{r['pct_matmul']:.0f} %", f"{r['peak_rss_mb']:.0f}",
                             "" if share is None or name == "off" else f"{100 * share:.1f} %"])
            elif r:
                rows.append([b, name, "failed", "-", "-", "-", "-", ""])
        verdicts.append(common.verdict(f"augmentation share of step time, batch {b}",
                                       None if share is None else 100 * share, 100 * AUG_SHARE_TARGET, "<=", " %"))
        verdicts.append(common.verdict(f"step GFLOP/s % of matmul (augmentation on), batch {b}",
                                       on.get("pct_matmul") if on else None, 100 * EFFICIENCY_TARGET, ">=", " %"))
    common.print_table(
        rows,
        ["batch", "augment", "s/step", "images/s", "GFLOP/s", "% matmul", "peak RSS MB", "augment share"],
        title=(f"train: FusionNet({args.nb_filters}, {args.depth}), {args.size}x{args.size}, {args.precision}, Adam, "
               f"median of {args.steps} steps after {args.warmup_steps} warm-up; matmul {ref:.1f} GFLOP/s"),
    )
    common.print_verdicts(verdicts)
    result.update({"matmul": mm, "batch_search": search, "runs": table, "verdicts": verdicts,
                   "settings": {k: v for k, v in vars(args).items() if k != "json_out"}})
    common.emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
