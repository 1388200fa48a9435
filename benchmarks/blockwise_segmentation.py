"""Blockwise against whole-volume segmentation on real data: the fib-medulla test block.

fib-medulla with every 4th section, the test part of the project's split
(y in [150, 250)): (63, 100, 250) voxels. Affinities from the classical boundary
map of ``benchmarks/segmentation_fib_medulla.py`` (EM smoothed in-plane, sigma
1 px, inverted). The whole part is segmented in memory
(:func:`fusionnet_keras.segmentation.segment`) and block by block
(:func:`fusionnet_keras.blockwise.segment.segment_volume`, blocks that cut
through the neurons); the table gives the VI (split, merge; bits) between the
two at each threshold, and both against the ground truth.

    FUSIONNET_DATA_DIR=../shared/datasets python benchmarks/blockwise_segmentation.py [--block 16,64,64] [--workers 2]

Prints a markdown table and one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.segmentation_fib_medulla import boundary_map, load  # noqa: E402

THRESHOLDS = [0.5, 0.575, 0.6]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", default="32,64,128")
    parser.add_argument("--context", default="8,48,48")
    parser.add_argument("--workers", type=int, default=2, help="0: in this process")
    parser.add_argument("--ws-size", type=int, default=300)
    args = parser.parse_args(argv)

    import zarr

    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.segment import segment_volume
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

    image, labels = load(quick=False)
    boundary = boundary_map(image)[:, 150:250]  # the map of the whole volume, then the test part
    gt = labels[:, 150:250]
    options = WatershedOptions(size=args.ws_size)
    start = time.perf_counter()
    whole = dict(segment(boundary, "mean", THRESHOLDS, watershed_options=options))
    whole_s = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/boundary.zarr"
        zarr.create_array(store=src, data=boundary, chunks=(16, 100, 250))
        outs = [f"{tmp}/seg.zarr:t{i}" for i in range(len(THRESHOLDS))]
        start = time.perf_counter()
        info = segment_volume(src, outs, method="mean", thresholds=THRESHOLDS, watershed_options=options,
                              block=parse_block(args.block), context=parse_block(args.context, name="--context"),
                              workers=args.workers, progress=False)
        block_s = time.perf_counter() - start
        for t, out in zip(THRESHOLDS, outs):
            blockwise = zarr.open_array(f"{tmp}/seg.zarr", path=out.split(":")[1])[:]
            vs = instance_scores(blockwise, whole[t])
            rows.append({"threshold": t, "vi_blockwise_vs_whole": vs["vi"], "vi_split": vs["vi_split"],
                         "vi_merge": vs["vi_merge"], "segments_whole": int(len(np.unique(whole[t])) - 1),
                         "segments_blockwise": int(len(np.unique(blockwise)) - 1),
                         "vi_whole_vs_gt": instance_scores(whole[t], gt)["vi"],
                         "vi_blockwise_vs_gt": instance_scores(blockwise, gt)["vi"]})
    print(f"(63, 100, 250) voxels, blocks {args.block} ({info['blocks']}), context {args.context}, "
          f"{args.workers} workers: whole {whole_s:.1f} s, blockwise {block_s:.1f} s")
    print("| threshold | VI blockwise vs whole (split + merge) | segments whole / blockwise | VI vs GT whole / blockwise |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['threshold']} | {r['vi_blockwise_vs_whole']:.4f} ({r['vi_split']:.4f} + {r['vi_merge']:.4f}) | "
              f"{r['segments_whole']} / {r['segments_blockwise']} | {r['vi_whole_vs_gt']:.3f} / {r['vi_blockwise_vs_gt']:.3f} |")
    print("RESULT " + json.dumps({"block": args.block, "context": args.context, "blocks": info["blocks"],
                                  "whole_s": whole_s, "blockwise_s": block_s, "rows": rows}))


if __name__ == "__main__":
    main()
