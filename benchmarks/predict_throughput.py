"""Inference throughput, FLOP efficiency, tiling overhead and peak memory of FusionNet.

Measures, for the paper model (``nb_filters=64, depth=4``, random weights, batch
norm in inference mode) on a ``--size`` x ``--size`` (2048) float image:

* output megapixels/s with ``tta=1`` and ``tta=8`` (``fusionnet_keras.predict``);
* the model's forward FLOPs per pixel the network processes
  (:func:`fusionnet_keras.models.analysis.flops_per_pixel`) and per *output* pixel
  (including padding / tile overlap and the TTA factor);
* the achieved GFLOP/s counting only useful FLOPs
  (``flops_per_pixel * output pixels * tta / seconds``) and the GFLOP/s actually
  executed (``flops_per_pixel * pixels the network processed / seconds``; the
  processed pixels are counted at the model call), each next to the machine's
  measured fp32 matmul GFLOP/s (:func:`common.matmul_gflops`) as a percentage;
* the share of FLOPs spent on mirror padding and tile overlap,
  ``(processed - output * tta) / processed``;
* the peak RSS of predicting a ``(--stack-sections, size, size)`` uint8 stack
  read lazily from a TIFF file (normalised section by section) into a zarr
  array on disk, in a fresh subprocess, ``tta=1``.

and prints PASS/FAIL against the targets (executed GFLOP/s at tta 1 >= 70 % of
matmul, padding/overlap overhead <= 25 %, peak RSS <= 4 GB), a markdown summary
and a final ``RESULT {json}`` line. ``--quick`` is a smoke test (``nb_filters=8``,
256 x 256, 2 stack sections). See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

import common

common.quiet_tensorflow()
common.ensure_repo_on_path()

# Tiling defaults for the 2048 x 2048 benchmark image; see docs/benchmarks.md, "Tile choice".
# ``--tile`` is the predictor's tile core: windows are core + 2 x overlap = 1168 px.
DEFAULT_TILE = 1072
DEFAULT_OVERLAP = 48
DEFAULT_PAD = 64
RSS_TARGET_MB = 4096.0
OVERHEAD_TARGET = 0.25
EFFICIENCY_TARGET = 0.70

# Memory model used for the analytic tile table and ``--tile auto``: peak RSS
# ~= BASE + batch * window pixels * nb_filters * BYTES_PER_PX_FILTER. Calibrated
# on TensorFlow-CPU 2.21 / Keras 3.15 with the paper model (measured growth
# 0.88-0.92 KiB per window pixel at 64 filters for 256..768 px windows, i.e.
# ~14 B per pixel and filter, about 3.6 live full-resolution float32 feature
# maps; rounded up to 16) and a ~1.0 GiB process after importing TF and building
# the model. An estimate only; the stack run measures the real peak.
BASE_RSS_MB = 1200.0
BYTES_PER_PX_FILTER = 16.0


# ----------------------------------------------------------------------------
# geometry: the predictor's own plan and batching (checked against a pixel count at the model call)


def section_predictor(model, tile, overlap, pad, batch_size, tta=1):
    """The :class:`~fusionnet_keras.inference.predictor.SectionPredictor` that ``predict`` builds."""
    from fusionnet_keras.inference.predictor import SectionPredictor

    return SectionPredictor(model, tta=tta, tile=tile, pad=pad, batch_size=batch_size, overlap=overlap)


def window_geometry(predictor, height, width):
    """Windows and batches ``predictor`` runs for one ``height x width`` section.

    Returns a dict: ``windows`` (count), ``processed_px`` (pixels through the
    network), ``output_px`` (``height * width * tta``), ``overhead`` (FLOP share
    of padding + overlap), ``window_shapes`` and ``batches`` (list of
    ``(n, h, w)`` model calls, in order).
    """
    batches = predictor.schedule((height, width))
    processed = sum(n * h * w for n, h, w in batches)
    output = height * width * predictor.tta
    return {
        "windows": sum(n for n, _, _ in batches),
        "window_shapes": sorted({(h, w) for _, h, w in batches}),
        "batches": batches,
        "processed_px": int(processed),
        "output_px": int(output),
        "overhead": 1.0 - output / processed,
    }


def estimate_rss_mb(window_px, batch_size, nb_filters):
    return BASE_RSS_MB + batch_size * window_px * nb_filters * BYTES_PER_PX_FILTER / 2**20


def tile_candidates(model, size, overlap, pad, nb_filters, batch_size):
    """Analytic table over tile cores: windows, overhead, estimated peak RSS.

    Every multiple of the model's size multiple up to the padded image is
    considered (plus ``None``, the whole image); returns rows sorted by tile.
    """
    whole = section_predictor(model, None, overlap, pad, batch_size)
    full = max(window_geometry(whole, size, size)["window_shapes"][0])
    rows = []
    for tile in list(range(whole.multiple, full, whole.multiple)) + [None]:
        predictor = section_predictor(model, tile, overlap, pad, batch_size)
        g = window_geometry(predictor, size, size)
        h, w = g["window_shapes"][0]
        rows.append(
            {
                "tile": tile,
                "overlap": predictor.context,
                "exact": predictor.exact,
                "windows": g["windows"],
                "window": h,
                "overhead": g["overhead"],
                "est_rss_mb": estimate_rss_mb(h * w, min(batch_size, g["windows"]), nb_filters),
            }
        )
    return rows


def auto_tile(rows, budget_mb=RSS_TARGET_MB):
    """The tile with the least overhead whose estimated peak RSS fits ``budget_mb`` (ties: smaller window)."""
    fitting = [r for r in rows if r["est_rss_mb"] <= budget_mb] or rows[:1]
    return min(fitting, key=lambda r: (round(r["overhead"], 6), r["window"]))["tile"]


def parse_tile(text):
    text = str(text).strip().lower()
    if text in ("none", "0", "full", "whole"):
        return None
    if text == "auto":
        return "auto"
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("tile must be a positive integer, 'auto' or 'none'")
    return value


# ----------------------------------------------------------------------------
# model helpers


class CountingModel:
    """Wraps a model; counts the pixels and calls that reach ``predict_on_batch``."""

    def __init__(self, model):
        self._model = model
        self.pixels = 0
        self.calls = 0

    def predict_on_batch(self, x):
        self.pixels += int(np.prod(x.shape[:3]))
        self.calls += 1
        return self._model.predict_on_batch(x)

    def __getattr__(self, name):
        return getattr(self._model, name)


def build_model(nb_filters, depth, seed=0):
    import keras

    from fusionnet_keras.models.fusionnet import FusionNet

    keras.utils.set_random_seed(seed)
    return FusionNet(nb_filters=nb_filters, depth=depth)


def warm_up(model, batches):
    """Compile the inference function for every distinct batch shape (untimed)."""
    seen = set()
    for shape in batches:
        if shape not in seen:
            seen.add(shape)
            model.predict_on_batch(np.zeros(shape + (1,), np.float32))
    return len(seen)


# ----------------------------------------------------------------------------
# the stack run (executed in a fresh process by common.run_isolated)


class NormalizedSections:
    """Lazy float32 view of a uint8/uint16 volume: ``view[z]`` reads and normalises one section."""

    def __init__(self, volume):
        self.volume = volume
        self.shape = tuple(volume.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        from fusionnet_keras.data.io.images import normalize

        return normalize(self.volume[key])


def write_test_stack(path, sections, size, seed=0):
    """Write a ``(sections, size, size)`` uint8 TIFF section by section (never all in memory)."""
    import tifffile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    with tifffile.TiffWriter(str(path)) as tw:
        for z in range(sections):
            # membrane-like pattern plus noise, so the input is not constant
            base = 128 + 60 * np.sin((xx + 7 * z) / 23.0) * np.cos((yy - 5 * z) / 31.0)
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            tw.write(img, contiguous=True)


def stack_worker(path, out_dir, nb_filters, depth, tile, overlap, pad, batch_size, seed=0, jit="auto"):
    """Predict the TIFF stack at ``path`` with tta 1 into a zarr array under ``out_dir``."""
    from fusionnet_keras.data.io.images import open_image
    from fusionnet_keras.inference.predictor import predict

    model = build_model(nb_filters, depth, seed)
    common.apply_jit(model, jit)
    vol = open_image(path)
    image = NormalizedSections(vol)
    out_kind = "zarr"
    try:
        import zarr

        out = zarr.open_array(
            store=str(Path(out_dir) / "prob.zarr"),
            mode="w",
            shape=image.shape,
            chunks=(1,) + image.shape[1:],
            dtype="float32",
        )
    except Exception:  # no zarr: a memmap (its written pages count in RSS while resident)
        out_kind = "memmap"
        out = np.lib.format.open_memmap(str(Path(out_dir) / "prob.npy"), mode="w+", dtype=np.float32, shape=image.shape)
    with common.Timer() as t:
        predict(model, image, tta=1, tile=tile, pad=pad, batch_size=batch_size, overlap=overlap, out=out)
    check = np.asarray(out[image.shape[0] - 1])
    fmt = vol.format
    vol.close()
    return {
        "stack_shape": list(image.shape),
        "input_format": fmt,
        "output": out_kind,
        "stack_seconds": t.seconds,
        "last_section_mean": float(check.mean()),
        "last_section_finite": bool(np.isfinite(check).all()),
    }


# ----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: nb_filters 8, 256x256, 2 stack sections")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 2048; quick 256)")
    p.add_argument("--nb-filters", type=int, default=None, help="default 64 (the paper); quick 8")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--tile", type=parse_tile, default=None,
                   help=f"tile core (px) as predict's tile: an int, 'auto' (least overhead within the RSS budget by "
                        f"the memory model) or 'none' (whole image). Default {DEFAULT_TILE} (quick: auto)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"context (px) each window adds at inner tile edges (default {DEFAULT_OVERLAP}; -1 = "
                        "predict's default, the receptive-field margin: exact but costly)")
    p.add_argument("--pad", type=int, default=DEFAULT_PAD, help="mirror padding context (default 64, the paper)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--tta", default="1,8", help="comma-separated TTA settings to time (default 1,8)")
    p.add_argument("--repeats", type=int, default=1, help="timed predict() calls per TTA setting; best is kept")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--stack-sections", type=int, default=None, help="sections of the RSS stack (default 16; quick 2)")
    p.add_argument("--skip-stack", action="store_true", help="skip the peak-RSS stack run")
    p.add_argument("--rss-budget-mb", type=float, default=RSS_TARGET_MB)
    p.add_argument("--jit-compile", type=common.parse_jit, default="auto",
                   help="XLA for inference: auto (Keras' default, what predict() gets), on, off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None, help="also write the result JSON here")
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (256 if q else 2048)
    args.nb_filters = args.nb_filters or (8 if q else 64)
    args.stack_sections = args.stack_sections or (2 if q else 16)
    if args.tile is None:
        args.tile = "auto" if q else DEFAULT_TILE
    args.tta = [int(t) for t in str(args.tta).split(",") if t.strip()]
    if any(t not in (1, 8) for t in args.tta):
        p.error("--tta values must be 1 or 8")
    if args.overlap < -1:
        p.error("--overlap must be >= 0 (or -1)")
    return args


def measure_matmul(args):
    mm = common.matmul_gflops(args.matmul_n, repeats=args.matmul_repeats)
    print(f"fp32 matmul n={args.matmul_n}: {mm['backend_gflops']:.1f} GFLOP/s ({mm['backend']}), "
          f"numpy {mm['numpy_gflops']:.1f} GFLOP/s", flush=True)
    return mm


def describe_model(args, model, jit_used):
    from fusionnet_keras.models.analysis import flops_per_pixel, receptive_field_margin, size_multiple

    info = {
        "nb_filters": args.nb_filters,
        "depth": args.depth,
        "params": int(model.count_params()),
        "flops_per_pixel": flops_per_pixel(model),
        "receptive_field_margin": receptive_field_margin(model),
        "size_multiple": size_multiple(model),
        "jit_compile": jit_used,
    }
    print(f"model: FusionNet(nb_filters={args.nb_filters}, depth={args.depth}), {info['params']:,} params, "
          f"{info['flops_per_pixel'] / 1e6:.3f} MFLOP per processed pixel, receptive-field margin "
          f"{info['receptive_field_margin']} px, XLA {jit_used}", flush=True)
    return info


def choose_tiling(args, model):
    """Resolve ``--tile`` / ``--overlap`` and print the Pareto front of the analytic tile table."""
    overlap = None if args.overlap == -1 else args.overlap
    candidates = tile_candidates(model, args.size, overlap, args.pad, args.nb_filters, args.batch_size)
    tile = auto_tile(candidates, args.rss_budget_mb) if args.tile == "auto" else args.tile
    predictor = section_predictor(model, tile, overlap, args.pad, args.batch_size)
    front, best_rss = [], math.inf
    for r in sorted(candidates, key=lambda r: (r["overhead"], r["est_rss_mb"])):
        if r["est_rss_mb"] < best_rss:
            front.append(r)
            best_rss = r["est_rss_mb"]
    shown = sorted({id(r): r for r in front + [r for r in candidates if r["tile"] == tile]}.values(),
                   key=lambda r: r["window"])
    common.print_table(
        [[("whole" if r["tile"] is None else r["tile"]), r["overlap"], r["window"], r["windows"],
          f"{100 * r['overhead']:.1f} %", f"{r['est_rss_mb']:.0f}", "<-" if r["tile"] == tile else ""] for r in shown],
        ["tile", "overlap", "window", "windows", "pad+overlap FLOPs", "est. peak RSS MB", "chosen"],
        title=f"Tiles for a {args.size}x{args.size} section (pad {args.pad}, batch {args.batch_size}; Pareto front)",
    )
    if not predictor.exact:
        print(f"note: overlap {predictor.context} < receptive-field margin: tiled output differs slightly from "
              "whole-image output near inner tile edges (see docs/benchmarks.md)", flush=True)
    return {"tile": tile, "overlap": predictor.context if tile is not None else None, "pad": args.pad,
            "batch_size": args.batch_size, "exact": predictor.exact, "candidates_pareto": shown}


def time_predict(args, model, tiling, tta, fpp, matmul_gflops):
    """Time ``predict`` at one TTA setting; count the pixels that reach the network."""
    from fusionnet_keras.inference.predictor import predict

    image = np.random.default_rng(args.seed).random((args.size, args.size), dtype=np.float32)
    overlap = None if args.overlap == -1 else args.overlap
    geo = window_geometry(section_predictor(model, tiling["tile"], overlap, args.pad, args.batch_size, tta),
                          args.size, args.size)
    with common.Timer() as tw:
        n_shapes = warm_up(model, geo["batches"])
    counter = CountingModel(model)
    times = []
    for _ in range(max(1, args.repeats)):
        counter.pixels = 0
        with common.Timer() as t:
            out = predict(counter, image, tta=tta, tile=tiling["tile"], pad=args.pad, batch_size=args.batch_size,
                          overlap=overlap)
        times.append(t.seconds)
    assert out.shape == image.shape and np.isfinite(out).all()
    sec = min(times)
    processed = counter.pixels
    if processed != geo["processed_px"]:
        print(f"warning: counted {processed} processed pixels, geometry says {geo['processed_px']}", flush=True)
    output_px = args.size * args.size
    useful = fpp * output_px * tta / sec / 1e9
    executed = fpp * processed / sec / 1e9
    run = {
        "tta": tta,
        "seconds": sec,
        "seconds_all": times,
        "warmup_seconds": tw.seconds,
        "compiled_shapes": n_shapes,
        "windows": geo["windows"],
        "window_shapes": geo["window_shapes"],
        "model_calls": counter.calls // max(1, args.repeats),
        "output_px": output_px,
        "processed_px": processed,
        "output_mpx_per_s": output_px / sec / 1e6,
        "flops_per_output_px": fpp * processed / output_px,
        "useful_gflops": useful,
        "executed_gflops": executed,
        "overhead": 1.0 - output_px * tta / processed,
    }
    set_pct_matmul(run, matmul_gflops)
    print(f"tta {tta}: {sec:.2f} s, {run['output_mpx_per_s']:.4f} output MPx/s, useful {useful:.1f} GFLOP/s "
          f"({run['useful_pct_matmul']:.0f} % of matmul), executed {executed:.1f} GFLOP/s "
          f"({run['executed_pct_matmul']:.0f} %), overhead {100 * run['overhead']:.1f} %", flush=True)
    return run


def set_pct_matmul(run, matmul_gflops):
    run["useful_pct_matmul"] = 100 * run["useful_gflops"] / matmul_gflops
    run["executed_pct_matmul"] = 100 * run["executed_gflops"] / matmul_gflops


def remeasure_matmul(args, mm, runs):
    """Measure matmul again (shared machines are noisy) and keep the better figure."""
    mm2 = common.matmul_gflops(args.matmul_n, repeats=args.matmul_repeats, numpy=False)
    mm["backend_gflops_before"] = mm["backend_gflops"]
    mm["backend_gflops_after"] = mm2["backend_gflops"]
    if mm2["backend_gflops"] > mm["backend_gflops"]:
        mm["backend_gflops"] = mm2["backend_gflops"]
        for r in runs.values():
            set_pct_matmul(r, mm["backend_gflops"])
    return mm


def stack_run(args, tiling, runs):
    """Peak RSS of predicting a lazily read stack, in a fresh process."""
    if 1 in runs:
        print(f"stack run: {args.stack_sections} x {args.size} x {args.size} uint8, tta 1, in a subprocess "
              f"(about {args.stack_sections * runs[1]['seconds'] / 60:.1f} min + start-up) ...", flush=True)
    with common.temp_dir() as tmp:
        path = Path(tmp) / "stack.tif"
        write_test_stack(path, args.stack_sections, args.size, args.seed)
        stack = common.run_isolated(
            __file__,
            "stack_worker",
            {"path": str(path), "out_dir": tmp, "nb_filters": args.nb_filters, "depth": args.depth,
             "tile": tiling["tile"], "overlap": None if args.overlap == -1 else args.overlap, "pad": args.pad,
             "batch_size": args.batch_size, "seed": args.seed, "jit": args.jit_compile},
        )
    stack["output_mpx_per_s"] = args.stack_sections * args.size**2 / stack["stack_seconds"] / 1e6
    print(f"stack: peak RSS {stack['peak_rss_mb']:.0f} MB (after imports {stack['import_rss_mb']:.0f} MB; "
          f"during prediction {stack['work_peak_rss_mb'] or float('nan'):.0f} MB), "
          f"{stack['stack_seconds']:.1f} s, output {stack['output']}", flush=True)
    return stack


def summarize(args, tiling, runs, stack, mm):
    """Print the results table and the PASS/FAIL verdicts; return the verdicts."""
    t1 = runs.get(1)
    verdicts = [
        common.verdict("executed GFLOP/s at tta 1, % of matmul",
                       t1["executed_pct_matmul"] if t1 else None, 100 * EFFICIENCY_TARGET, ">=", " %"),
        common.verdict("padding/overlap FLOP share",
                       100 * (t1 or next(iter(runs.values())))["overhead"] if runs else None,
                       100 * OVERHEAD_TARGET, "<=", " %"),
        common.verdict("peak RSS of the stack run (MB)", stack["peak_rss_mb"] if stack else None,
                       RSS_TARGET_MB, "<="),
    ]
    rows = [[r["tta"], f"{r['output_mpx_per_s']:.4f}", f"{r['flops_per_output_px'] / 1e6:.3f}",
             f"{r['useful_gflops']:.1f} ({r['useful_pct_matmul']:.0f} %)",
             f"{r['executed_gflops']:.1f} ({r['executed_pct_matmul']:.0f} %)",
             f"{100 * r['overhead']:.1f} %", f"{r['seconds']:.2f}"] for r in runs.values()]
    common.print_table(
        rows,
        ["tta", "output MPx/s", "MFLOP / output px", "useful GFLOP/s (% matmul)",
         "executed GFLOP/s (% matmul)", "pad+overlap", "seconds"],
        title=(f"predict: FusionNet({args.nb_filters}, {args.depth}), {args.size}x{args.size}, tile "
               f"{'whole' if tiling['tile'] is None else tiling['tile']}, overlap {tiling['overlap']}, "
               f"batch {args.batch_size}; matmul {mm['backend_gflops']:.1f} GFLOP/s"),
    )
    common.print_verdicts(verdicts)
    return verdicts


def main(argv=None):
    args = parse_args(argv)
    result = {"benchmark": "predict_throughput", "quick": args.quick, "machine": common.machine_info()}
    print(f"machine: {result['machine']}", flush=True)
    mm = measure_matmul(args)
    model = build_model(args.nb_filters, args.depth, args.seed)
    result["model"] = describe_model(args, model, common.apply_jit(model, args.jit_compile))
    result["tiling"] = tiling = choose_tiling(args, model)
    runs = {tta: time_predict(args, model, tiling, tta, result["model"]["flops_per_pixel"], mm["backend_gflops"])
            for tta in args.tta}
    result["runs"] = {str(k): v for k, v in runs.items()}
    result["matmul"] = remeasure_matmul(args, mm, runs)
    result["stack"] = stack = None if args.skip_stack else stack_run(args, tiling, runs)
    result["verdicts"] = summarize(args, tiling, runs, stack, mm)
    result["settings"] = {k: v for k, v in vars(args).items() if k != "json_out"}
    common.emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
