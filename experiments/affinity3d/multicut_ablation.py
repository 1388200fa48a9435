"""What the multicuts' edge weighting and the long-range lifted edges each do, on finished affinity3d runs.

For every network of the given run folders (``experiments/affinity3d/run.py``; its affinities, classifier
and watershed size are read back, nothing is trained), each variant of the multicut - plain, hop-lifted
(2 boundaries) and, for a long-range network, lifted from its long-range affinities, each with the edge
weighting ``none`` and ``size`` - is swept over the experiment's betas on the validation part; the test part
is scored at the validation part's best beta. Writes ``<run>/<network>/multicut_ablation.json`` and prints
one line per variant (the experiment itself chooses beta and the weighting together on validation).

    python experiments/affinity3d/multicut_ablation.py results/lr-long-seed0 results/lr-long-seed1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def ablate(folder: Path, parts: dict, ws_size: int, log=print) -> dict:
    """``{variant: {"validation": rows, "test": rows, "chosen": beta, "test_seconds": s}}`` of one network."""
    from fusionnet_keras.data.affinities import N_AFFINITIES
    from fusionnet_keras.data.io import open_volume, read_volume
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.experiments.affinity3d import THRESHOLDS, WEIGHTINGS
    from fusionnet_keras.segmentation.learned import BoundaryClassifier
    from fusionnet_keras.segmentation.mws import stored_offsets
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

    clf = BoundaryClassifier.load(folder / "classifier.npz")
    affs, offsets = {}, None
    for part in ("validation", "test"):
        path = f"{folder / f'{part}-affinities.h5'}:affinities"
        with open_volume(path) as volume:
            if volume.shape[0] > N_AFFINITIES:
                offsets = stored_offsets(volume)
        affs[part] = read_volume(path)
    fragments = {part: WatershedOptions(size=ws_size).run(a[:N_AFFINITIES]) for part, a in affs.items()}
    kinds = {"multicut": ("multicut", {}), "lifted (2 hops)": ("lifted-multicut", {})}
    if offsets:
        kinds["lifted (long-range affinities)"] = ("lifted-multicut", {"offsets": offsets})
    result = {}
    for kind, (method, extra) in kinds.items():
        for weighting in WEIGHTINGS:
            rows, seconds = {}, {}
            for part in ("validation", "test"):
                a = affs[part] if extra else affs[part][:N_AFFINITIES]
                t = time.time()
                rows[part] = [dict(instance_scores(seg, parts[part][1]), threshold=beta) for beta, seg in
                              segment(a, method, THRESHOLDS, fragments=fragments[part], classifier=clf,
                                      weighting=weighting, **extra)]
                seconds[part] = time.time() - t
            best = min(rows["validation"], key=lambda r: r["vi"])
            test = next(r for r in rows["test"] if r["threshold"] == best["threshold"])
            variant = f"{kind}, {weighting}"
            result[variant] = {**rows, "chosen": best["threshold"], "test_seconds": seconds["test"]}
            log(f"{folder.parent.name}/{folder.name} {variant}: validation VI {best['vi']:.3f} at beta {best['threshold']:g} -> test VI "
                f"{test['vi']:.3f} (split {test['vi_split']:.3f}, merge {test['vi_merge']:.3f}), ARAND "
                f"{test['arand']:.3f}")
    return result


def main(argv=None) -> int:
    from fusionnet_keras.data.volumes3d import load_parts
    from fusionnet_keras.utils.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="affinity3d run folders (with results.json)")
    args = parser.parse_args(argv)
    for run in args.runs:
        summary = json.loads((run / "results.json").read_text())
        parts = load_parts(summary["shapes"]["dataset"], ["validation", "test"])
        for name in summary["segmentation"]:
            result = ablate(run / name, parts, summary["ws_size"])
            atomic_write_text(run / name / "multicut_ablation.json", json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
