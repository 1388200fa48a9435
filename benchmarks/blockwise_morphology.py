"""Blockwise morphology: peak memory per worker at two volume sizes, and agreement with the whole-volume table.

1. Binary nucleus masks (Z, 512, 512) uint8 in zarr, written chunk by chunk
   (never whole in memory): ellipsoids of 8-16 voxels radius at seeded random
   places, touching ones merged into one object, as a thresholded prediction
   gives them. ``fusionnet_keras.blockwise.morphology.measure_volume`` with 2
   workers and blocks (64, 256, 256), at Z = ``--small`` and Z = ``--large``
   (8x the voxels by default). The peak RSS of every worker process is read
   from the blocks' done markers; the driver's own peak (it gathers the table)
   from ``getrusage``.
2. On the small volume the table is compared with the single-process
   ``measure_nuclei`` (read whole): objects, exact fields, largest relative
   difference of the surface area.

    python benchmarks/blockwise_morphology.py [--out DIR] [--small 128] [--large 1024] [--workers 2]

Prints a markdown table and one line ``RESULT {json}``. Long: run it with ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VOXEL_SIZE = (60.0, 56.4, 56.4)


def make_mask(path, depth, size=512, chunk=16, spacing=36, seed=0):
    """A (depth, size, size) uint8 zarr of nucleus-like ellipsoids (0/255), written chunk by chunk."""
    import zarr

    rng = np.random.default_rng(seed)
    n = int(depth * size * size / spacing**3)
    centres = rng.uniform(0, (depth, size, size), (n, 3))
    radii = rng.uniform(8, 16, (n, 3))
    arr = zarr.create_array(store=str(path), shape=(depth, size, size), dtype="uint8", chunks=(chunk, size, size),
                            overwrite=True)
    for z0 in range(0, depth, chunk):
        z1 = min(z0 + chunk, depth)
        out = np.zeros((z1 - z0, size, size), bool)
        for (cz, cy, cx), (rz, ry, rx) in zip(centres, radii):
            lo = [max(int(c - r), b) for c, r, b in zip((cz, cy, cx), (rz, ry, rx), (z0, 0, 0))]
            hi = [min(int(c + r) + 1, e) for c, r, e in zip((cz, cy, cx), (rz, ry, rx), (z1, size, size))]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
            out[lo[0] - z0:hi[0] - z0, lo[1]:hi[1], lo[2]:hi[2]] |= inside
        arr[z0:z1] = out.astype(np.uint8) * 255
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "blockwise_morphology")
    parser.add_argument("--small", type=int, default=128)
    parser.add_argument("--large", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block", default="64,256,256")
    args = parser.parse_args(argv)

    from benchmarks.blockwise_predict import peaks as worker_peaks
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.morphology import measure_volume
    from fusionnet_keras.evaluation.morphology import MEASURE_FIELDS, measure_nuclei

    args.out.mkdir(parents=True, exist_ok=True)
    block = parse_block(args.block)
    result = {"cpus": os.cpu_count(), "block": block, "workers": args.workers, "runs": []}
    tables = {}
    for depth in (args.small, args.large):
        mask = make_mask(args.out / f"mask{depth}.zarr", depth)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        records, info = measure_volume(str(mask), VOXEL_SIZE, out=args.out / f"table{depth}.csv", block=block,
                                       workers=args.workers, overwrite=True, progress=False, keep_work=True)
        seconds = time.perf_counter() - start
        peaks = worker_peaks(info["work"], "**/.blocks/*.json")  # every pass's markers
        shutil.rmtree(info["work"], ignore_errors=True)
        tables[depth] = records
        row = {"depth": depth, "voxels": depth * 512 * 512, "mask_mb": depth * 512 * 512 / 1e6,
               "int64_labels_gb": depth * 512 * 512 * 8 / 1e9, "objects": len(records), "blocks": info["blocks"],
               "seconds": seconds, "blocks_per_s": info["blocks"] / seconds,
               "worker_peak_rss_mb": sorted(peaks.values()),
               "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "load_avg": [load, os.getloadavg()[0]]}
        result["runs"].append(row)
        print(json.dumps(row), flush=True)

    import zarr

    whole = measure_nuclei(zarr.open_array(str(args.out / f"mask{args.small}.zarr"))[:], VOXEL_SIZE, binary=True)
    blockwise = tables[args.small]
    exact = [f for f in MEASURE_FIELDS if f not in ("surface_area_um2", "sphericity")]
    same = len(whole) == len(blockwise) and all({f: a[f] for f in exact} == {f: b[f] for f in exact}
                                                 for a, b in zip(whole, blockwise))
    area = max((abs(a["surface_area_um2"] - b["surface_area_um2"]) / a["surface_area_um2"]
                for a, b in zip(whole, blockwise)), default=0.0)
    result["check"] = {"objects": len(whole), "exact_fields_equal": same, "area_max_rel_diff": area}
    print("| volume (mask) | int64 labels | objects | blocks | wall time | peak RSS per worker | driver peak RSS |"
          " load average |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        print(f"| ({r['depth']}, 512, 512) | {r['int64_labels_gb']:.2f} GB | {r['objects']} | {r['blocks']} | "
              f"{r['seconds']:.0f} s | {', '.join(f'{m:.0f} MB' for m in r['worker_peak_rss_mb'])} | "
              f"{r['driver_peak_rss_mb']:.0f} MB | {r['load_avg'][0]:.1f}-{r['load_avg'][1]:.1f} |")
    print(f"small volume against measure_nuclei: {len(whole)} objects, volumes/centroids/boxes equal: {same}, "
          f"surface area max relative difference {area:.1e}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
