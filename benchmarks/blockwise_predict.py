"""Blockwise prediction: peak memory per worker at two volume sizes, throughput with 1 and 2 workers.

1. A tiny network (FusionNet 2/2, tta 1) over (Z, 512, 512) uint8 zarr stacks
   written chunk by chunk (never whole in memory), blocks (8, 512, 512):
   Z = 256 (256 MB of float32 output) and Z = 2048 (2.1 GB), 2 workers. The
   peak RSS of every worker process is read from the blocks' done markers.
2. Throughput: the Z = 256 stack with 1 and with 2 workers (blocks/s and
   sections/s, wall-clock including worker start-up), same run.
3. The paper's FusionNet 64/4 (random weights; the cost does not depend on
   them), tta 1, on (4, 512, 512) with blocks (1, 512, 512), 1 worker: its peak RSS.

    python benchmarks/blockwise_predict.py [--out DIR] [--large 2048] [--small 256]

Prints a markdown table and one line ``RESULT {json}``. Long: run it with ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def make_stack(path, depth, size=512, chunk=8):
    """A (depth, size, size) uint8 zarr of smooth random sections, written chunk by chunk."""
    import zarr

    arr = zarr.create_array(store=str(path), shape=(depth, size, size), dtype="uint8", chunks=(chunk, size, size),
                            overwrite=True)
    rng = np.random.default_rng(0)
    for z in range(0, depth, chunk):
        n = min(chunk, depth - z)
        arr[z:z + n] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    return path


def peaks(output) -> dict:
    """Peak RSS (MB) of each worker process, from the markers of ``output``."""
    found = {}
    for marker in (Path(output) / ".blocks").glob("*.json"):
        m = json.loads(marker.read_text())
        if not isinstance(m, dict) or "block" not in m:
            continue
        w = m.get("worker") or {}
        found[w.get("pid")] = max(found.get(w.get("pid"), 0.0), w.get("peak_rss_mb", 0.0))
    return found


def run(image, out, weights, block, workers, batch_size=4):
    from fusionnet_keras.blockwise.predict import predict_volume

    start = time.perf_counter()
    info = predict_volume(str(image), str(out), str(weights), block=block, workers=workers, tta=1,
                          batch_size=batch_size, overwrite=True, progress=False)
    return time.perf_counter() - start, info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "blockwise_predict")
    parser.add_argument("--small", type=int, default=256)
    parser.add_argument("--large", type=int, default=2048)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import fusionnet_keras as fk

    args.out.mkdir(parents=True, exist_ok=True)
    tiny = args.out / "tiny.keras"
    fk.FusionNet(nb_filters=2, depth=2).save(tiny)
    result = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count(), "runs": []}
    block = (8, 512, 512)
    for depth, workers in ((args.small, 1), (args.small, 2), (args.large, 2)):
        image = make_stack(args.out / f"in{depth}.zarr", depth)
        seconds, info = run(image, args.out / f"out{depth}.zarr", tiny, block, workers)
        rss = peaks(args.out / f"out{depth}.zarr")
        row = {"depth": depth, "output_gb": depth * 512 * 512 * 4 / 1e9, "workers": workers, "seconds": seconds,
               "blocks": info["blocks"], "blocks_per_s": info["blocks"] / seconds, "sections_per_s": depth / seconds,
               "peak_rss_mb": sorted(rss.values()), "load_avg": os.getloadavg()}
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(args.out / f"out{depth}.zarr", ignore_errors=True)
    if not args.skip_paper:
        paper = args.out / "paper.keras"
        fk.FusionNet(nb_filters=64, depth=4).save(paper)
        image = make_stack(args.out / "in4.zarr", 4)
        seconds, info = run(image, args.out / "paper.zarr", paper, (1, 512, 512), 1, batch_size=1)
        row = {"model": "FusionNet 64/4", "depth": 4, "workers": 1, "seconds": seconds,
               "peak_rss_mb": sorted(peaks(args.out / "paper.zarr").values()), "load_avg": os.getloadavg()}
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
    print("| volume | output float32 | workers | time | blocks/s | sections/s | peak RSS per worker |")
    print("|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        name = r.get("model", "FusionNet 2/2")
        print(f"| {name} ({r['depth']}, 512, 512) | {r['depth'] * 512 * 512 * 4 / 1e9:.2f} GB | {r['workers']} | "
              f"{r['seconds']:.0f} s | {r.get('blocks_per_s', float('nan')):.2f} | {r['depth'] / r['seconds']:.2f} | "
              f"{', '.join(f'{m:.0f} MB' for m in r['peak_rss_mb'])} |")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
