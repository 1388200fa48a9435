"""Measured check of the 3-D segmentation on real data: fib-medulla, anisotropic, classical affinities.

fib-medulla (FIB-SEM Drosophila medulla, NeuroProof's training cube, 10 nm
isotropic) with every 4th section kept: (63, 250, 250) at 10 x 10 x 40 nm.
The project's fixed split by y: train y in [0, 125), validation [125, 150),
test [150, 250). No network: the affinities come from a classical boundary
map, the EM smoothed in-plane (Gaussian, sigma 1 px) and inverted (membranes
are dark), min-max scaled over the whole volume; ``1 - max(b(v), b(v - e_c))``.

For each part: z-watershed fragments; ``mean`` agglomeration (waterz's
baseline) and ``learned`` agglomeration (classifier trained on the train part
only) over a threshold sweep; VI split / merge (bits), ARAND, CREMI score. The
table reports each method at its best threshold on the test part (as the
paper's split-VI comparisons do) and at the threshold chosen on the validation
part; the run times are wall-clock on this machine.

    FUSIONNET_DATA_DIR=../shared/datasets python benchmarks/segmentation_fib_medulla.py [--out DIR] [--quick]

Writes ``DIR/results.json`` and ``DIR/split_vi.png`` (default
``results/segmentation_fib_medulla``) and prints a markdown table and one
line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fusionnet_keras.data.volumes3d import SPLITS  # noqa: E402  (the project's one fib-medulla split)

SPLIT = {name: part.y_range for name, part in SPLITS["fib-medulla"].items()}
THRESHOLDS = [round(t, 3) for t in np.arange(0.025, 0.976, 0.025)]


def load(quick: bool):
    import h5py

    from fusionnet_keras.settings import data_dir

    path = data_dir() / "fib-medulla" / "fib-medulla.h5"
    if not path.exists():
        sys.exit(f"fib-medulla not found at {path}; set FUSIONNET_DATA_DIR")
    with h5py.File(path, "r") as f:
        image = f["image"][::4]
        labels = f["labels"][::4].astype(np.uint64)
    if quick:
        image, labels = image[:16, :, :100], labels[:16, :, :100]
    return image, labels


def boundary_map(image, sigma: float = 1.0) -> np.ndarray:
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image.astype(np.float32), (0, sigma, sigma))
    b = smooth.max() - smooth
    return (b / b.max()).astype(np.float32)


def sweep(method, affs, frag, gt, classifier=None):
    """Scores of every threshold, and the time of the agglomeration (graph + merging) alone."""
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.agglomeration import MeanAffinity, agglomerate, map_ids
    from fusionnet_keras.segmentation.graph import region_graph
    from fusionnet_keras.segmentation.learned import LearnedScore

    start = time.perf_counter()
    if method == "learned":
        graph, scorer = region_graph(affs, frag, bins=classifier.bins), LearnedScore(classifier)
    else:
        graph, scorer = region_graph(affs, frag), MeanAffinity()
    seconds, rows = 0.0, []
    for t, ids in agglomerate(graph, THRESHOLDS, scorer):
        seconds += time.perf_counter() - start
        rows.append(dict(instance_scores(map_ids(frag, graph.nodes, ids), gt), threshold=t))
        start = time.perf_counter()
    return rows, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "segmentation_fib_medulla")
    parser.add_argument("--quick", action="store_true", help="a small crop (smoke test)")
    parser.add_argument("--ws-size", type=int, default=300, help="z-watershed size threshold (voxels)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trees", type=int, default=100)
    args = parser.parse_args(argv)

    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.evaluation.figures import plot_split_vi
    from fusionnet_keras.segmentation.inputs import boundary_to_affinities
    from fusionnet_keras.segmentation.learned import train_classifier
    from fusionnet_keras.segmentation.zwatershed import watershed

    image, labels = load(args.quick)
    affs = boundary_to_affinities(boundary_map(image))
    parts = {}
    for name, (y0, y1) in SPLIT.items():
        if args.quick:
            y0, y1 = y0 // 2, y1 // 2
        a = np.ascontiguousarray(affs[:, :, y0:y1])
        start = time.perf_counter()
        frag = watershed(a, size=args.ws_size)
        parts[name] = dict(affs=a, gt=labels[:, y0:y1], frag=frag, watershed_s=time.perf_counter() - start)
        print(f"{name}: {a.shape[1:]}, {int(frag.max())} fragments ({parts[name]['watershed_s']:.1f} s)", flush=True)

    start = time.perf_counter()
    tr = parts["train"]
    clf = train_classifier(tr["affs"], tr["frag"], tr["gt"], epochs=args.epochs, trees=args.trees,
                           log=lambda line: print("  " + line, flush=True))
    train_s = time.perf_counter() - start
    print(f"classifier trained on the train part in {train_s:.1f} s ({clf.info['examples']} examples)", flush=True)

    result = {"shape": list(labels.shape), "voxel_nm": [40, 10, 10], "split_y": SPLIT, "ws_size": args.ws_size,
              "epochs": args.epochs, "trees": args.trees, "train_seconds": train_s, "classifier": clf.info,
              "parts": {}}
    for name in ("validation", "test"):
        p = parts[name]
        ws = instance_scores(p["frag"], p["gt"])
        entry = {"watershed": dict(ws, seconds=p["watershed_s"], fragments=int(p["frag"].max()))}
        for method in ("mean", "learned"):
            rows, seconds = sweep(method, p["affs"], p["frag"], p["gt"], clf)
            entry[method] = {"sweep": rows, "seconds": seconds}
            print(f"{name} {method}: best VI {min(r['vi'] for r in rows):.3f} ({seconds:.1f} s)", flush=True)
        result["parts"][name] = entry

    test, val = result["parts"]["test"], result["parts"]["validation"]
    table = ["| method | threshold | VI split | VI merge | VI | ARAND | CREMI | objects | time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(label, s, threshold, seconds):
        table.append(f"| {label} | {threshold} | {s['vi_split']:.3f} | {s['vi_merge']:.3f} | {s['vi']:.3f} | "
                     f"{s['arand']:.3f} | {s['cremi']:.3f} | {s['objects']} | {seconds:.1f} |")

    ws = test["watershed"]
    row(f"z-watershed ({ws['fragments']} fragments)", ws, "-", ws["seconds"])
    summary = {}
    for method in ("mean", "learned"):
        rows = test[method]["sweep"]
        best = min(rows, key=lambda r: r["vi"])
        chosen_t = min(val[method]["sweep"], key=lambda r: r["vi"])["threshold"]
        chosen = next(r for r in rows if r["threshold"] == chosen_t)
        row(f"{method} (best on test)", best, f"{best['threshold']:g}", test[method]["seconds"])
        row(f"{method} (chosen on validation)", chosen, f"{chosen_t:g}", test[method]["seconds"])
        summary[method] = {"best": best, "validation_threshold": chosen_t, "at_validation_threshold": chosen}
    result["summary"] = summary
    print(f"\nTest part {tuple(parts['test']['gt'].shape)}, {ws['gt_objects']} ground-truth objects")
    print("\n".join(table))
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {"z-watershed": [(None, ws["vi_merge"], ws["vi_split"])]}
    for method in ("mean", "learned"):
        curves[method] = [(r["threshold"], r["vi_merge"], r["vi_split"]) for r in test[method]["sweep"]]
    plot_split_vi(curves, args.out / "split_vi.png", title="fib-medulla test part, classical affinities")
    from fusionnet_keras.utils.atomic import atomic_write_text

    atomic_write_text(args.out / "results.json", json.dumps(result, indent=1))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'split_vi.png'}")
    print("RESULT " + json.dumps({m: {k: summary[m]["best"][k] for k in ("threshold", "vi_split", "vi_merge", "arand")}
                                  for m in summary}))


if __name__ == "__main__":
    os.environ.setdefault("FUSIONNET_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
    main()
