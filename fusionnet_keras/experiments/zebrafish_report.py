"""``report.md`` of the zebrafish experiment (:mod:`fusionnet_keras.experiments.zebrafish`).

Table 3 over the training seeds (mean, standard deviation and range; a
difference between the networks is called larger than the spread when their
ranges over the seeds do not overlap), the project's 3-D instance scores, the
training runs, the morphology (K-means on all whole nuclei, the left-right
symmetry check) and the figures.
"""

from __future__ import annotations

import numpy as np

from fusionnet_keras.experiments.common import LABELS, preset_note, training_table

PAPER_TABLE3 = {  # Quan et al. 2016, Table 3: V^Rand, V^Info, Dice
    "fusionnet": (0.991844302, 0.994208722, 0.946099985),
    "unet": (0.987366177, 0.992482059, 0.908491647),
}
TABLE3_ROWS = (("vrand", "V^Rand"), ("vinfo", "V^Info"), ("dice", "V^Dice"))
INSTANCE_ROWS = (("vrand", "3-D V^Rand"), ("vinfo", "3-D V^Info"), ("n_nuclei", "nuclei found"))
K_REASON = (
    "The 2016 paper's text names one cluster, the \"magenta cluster\" of outliers with large volumes and surface "
    "areas, but not its k (Fig. 10, which shows the clusters, is missing from the copy of the paper available "
    "here). k = 3 leaves room for that outlier cluster next to two groups of ordinary nuclei (smaller and "
    "larger); the silhouette of K-means for other k on the same nuclei is listed for comparison"
)


def seed_values(results: dict, name: str, part: str, key: str) -> np.ndarray:
    """``results[seed][name][part][key]`` over the seeds."""
    return np.array([float(results[s][name][part][key]) for s in results])


def separated(a, b) -> bool:
    """Whether the ranges of ``a`` and ``b`` over the seeds do not overlap (the difference is larger than
    the spread)."""
    return bool(np.max(a) < np.min(b) or np.max(b) < np.min(a))


def _spread(values, digits) -> str:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return (f"{np.mean(values):.{digits}f} ± {sd:.{digits}f} "
            f"({np.min(values):.{digits}f}-{np.max(values):.{digits}f})")


def compare_table(results: dict, part: str, rows, paper: dict | None = None) -> list[str]:
    """Mean ± sd (range) over the seeds of each network, the difference of the means, and whether it is
    larger than the spread."""
    head = "| metric | FusionNet | U-Net | FusionNet - U-Net | larger than the spread |"
    lines = [head + (" paper FusionNet | paper U-Net |" if paper else ""),
             "|---|---|---|---|---|" + ("---|---|" if paper else "")]
    for i, (key, title) in enumerate(rows):
        f, u = seed_values(results, "fusionnet", part, key), seed_values(results, "unet", part, key)
        digits = 1 if key == "n_nuclei" else 4
        line = (f"| {title} | {_spread(f, digits)} | {_spread(u, digits)} | {np.mean(f) - np.mean(u):+.{digits}f} "
                f"| {'yes' if separated(f, u) else 'no'} |")
        if paper:
            line += f" {paper['fusionnet'][i]:.4f} | {paper['unet'][i]:.4f} |"
        lines.append(line)
    return lines


def _verdict(results: dict) -> str:
    larger = [f"{title} ({'FusionNet' if np.mean(f) > np.mean(u) else 'U-Net'} higher)"
              for part, rows in (("table3", TABLE3_ROWS), ("instances", INSTANCE_ROWS[:2]))
              for key, title in rows
              for f, u in [(seed_values(results, "fusionnet", part, key), seed_values(results, "unet", part, key))]
              if separated(f, u)]
    if not larger:
        return (f"No difference between FusionNet and U-Net is larger than the spread over the {len(results)} "
                "seeds: these runs do not rank the two networks.")
    return ("Differences larger than the spread over the seeds (the ranges do not overlap): "
            + "; ".join(larger) + ". The other differences are within the spread.")


def _data_notes(exp: dict, info: dict) -> list[str]:
    lines = []
    if exp["source"] == "synthetic":
        lines += [
            "**SYNTHETIC DATA.** The paper's zebrafish volumes are not available here with labels, so this run "
            "uses the project's seeded generator of EM-like nucleus volumes (`fusionnet_keras.data.synthetic`: "
            "textured neuropil, irregular ellipsoidal nuclei with a dark envelope and chromatin texture, "
            "touching neighbours, section jitter, noise). The numbers are not comparable with the paper's; "
            "set `source = \"files\"` in `experiments/zebrafish/experiment.toml` to run on real volumes.",
            "",
        ]
    vs = info.get("voxel_size", exp["voxel_size"])
    return lines + [
        f"Training volumes {info['train_shapes']} (sections {info['train_sections']} train, "
        f"{info['val_sections']} validate), test volume {info['test_shape']}, voxel size "
        f"{vs[0]:g} x {vs[1]:g} x {vs[2]:g} nm (Z, Y, X). Test predictions: 8-orientation averaging.",
        "",
    ]


def _table3_section(results: dict, exp: dict) -> list[str]:
    seeds = list(results)
    if exp["instances"] == "watershed":
        method = (f"3-D connected components split by a watershed of the distance transform, seeded at distance "
                  f"maxima at least {exp['min_radius_um']:g} um (the smallest nucleus radius) apart")
    else:
        method = "plain 3-D connected components"
    gt = int(results[seeds[0]]["fusionnet"]["instances"]["n_gt_nuclei"])
    return [
        f"## Table 3 (the paper's protocol), {len(seeds)} training seeds",
        "",
        f"Each network was trained {len(seeds)} times (`train.seed` = {', '.join(map(str, seeds))}; same data). "
        "Mean ± standard deviation (range) over the seeds. V^Rand / V^Info are the scores the papers name, "
        "\"foreground-restricted ... scoring after border thinning\" (the ISBI 2012 challenge's, as its Fiji "
        "script computes them on a stack): per section, the plain 4-connected components of the thresholded "
        "prediction, border thinning, the nucleus voxels of the binary test mask only, maximised over "
        "thresholds 0.0..1.0. V^Dice: the masks at threshold 0.5 (the threshold is not stated in the paper).",
        "",
        *compare_table(results, "table3", TABLE3_ROWS, PAPER_TABLE3),
        "",
        f"**The project's own rows** (not the paper's): 3-D instances ({method}; objects under "
        f"{exp['min_volume_um3']:g} um^3 dropped), scored in 3-D against the {gt} nuclei of the test volume "
        "by their ids (foreground-restricted, no thinning), so merged or split nuclei count.",
        "",
        *compare_table(results, "instances", INSTANCE_ROWS),
        "",
        _verdict(results),
        "",
        "| seed | network | V^Rand | V^Info | V^Dice | 3-D V^Rand | 3-D V^Info | nuclei |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {s} | {LABELS[n]} | {r['table3']['vrand']:.4f} | {r['table3']['vinfo']:.4f} | {r['table3']['dice']:.4f} "
          f"| {r['instances']['vrand']:.4f} | {r['instances']['vinfo']:.4f} | {r['instances']['n_nuclei']} |"
          for s in seeds for n, r in results[s].items()],
        "",
    ]


def _quantiles(name: str, values, digits: int) -> str:
    values = np.asarray(values, dtype=float)
    return (f"| {name} | {np.median(values):.{digits}f} | {np.percentile(values, 5):.{digits}f} | "
            f"{np.percentile(values, 95):.{digits}f} |")


def _kmeans_lines(records: list, exp: dict, silhouettes: dict) -> list[str]:
    k = exp["clusters"]
    fit = "all whole nuclei, outliers included (the paper's way)" if not exp["exclude_outliers"] else (
        "the whole nuclei without the pre-flagged outliers (`exclude_outliers = true`; not the paper's way)")
    lines = [f"K-means with k = {k} on the standardised (volume, surface area, sphericity), fitted on {fit}. "
             f"Why k = {k}: {K_REASON}"
             + (": " + ", ".join(f"k = {kk}: {v:.3f}" for kk, v in silhouettes.items()) if silhouettes else "")
             + ".", "",
             "| cluster | nuclei | mean volume (um^3) | mean area (um^2) | mean sphericity | pre-flagged outliers |",
             "|---|---|---|---|---|---|"]
    clusters = sorted({r["cluster"] for r in records})
    for c in clusters:
        sel = [r for r in records if r["cluster"] == c]
        lines.append(
            f"| {c} | {len(sel)} | {np.mean([r['volume_um3'] for r in sel]):.1f} | "
            f"{np.mean([r['surface_area_um2'] for r in sel]):.1f} | {np.mean([r['sphericity'] for r in sel]):.3f} | "
            f"{sum(bool(r['outlier']) for r in sel)} |")
    top = clusters[-1]
    return lines + ["", f"Cluster {top} has the largest mean volume: the counterpart of the paper's magenta cluster "
                        "(outliers with large volumes and areas, e.g. merged nuclei) when it is small and far from "
                        "the others. The pre-flagging (robust z-score > 3.5 of volume or area, or sphericity < 0.6) "
                        "is the project's cross-check, not the paper's method."]


def _symmetry_lines(sym: dict) -> list[str]:
    lines = [f"Left-right symmetry (the 2016 paper: \"the feature distribution appears to be mirror symmetric "
             f"across the midline\"): the whole nuclei split at x = {sym['midline_x_um']:.1f} um "
             f"({sym['n_left']} left, {sym['n_right']} right), two-sample Kolmogorov-Smirnov test per feature "
             "(a small p says the two sides differ)."]
    if not sym["features"]:
        return lines + ["", "A side without whole nuclei: nothing to compare."]
    names = {"volume_um3": "volume (um^3)", "surface_area_um2": "surface area (um^2)", "sphericity": "sphericity",
             "midline_distance_um": "distance to the midline (um)"}
    lines += ["", "| feature | median left | median right | KS statistic | p |", "|---|---|---|---|---|"]
    for key, f in sym["features"].items():
        lines.append(f"| {names.get(key, key)} | {f['median_left']:.3g} | {f['median_right']:.3g} | "
                     f"{f['ks']:.3f} | {f['p']:.3f} |")
    return lines


def morphology_section(morph: dict, exp: dict) -> list[str]:
    """``morph``: records, silhouettes, symmetry and the ``seed`` of the FusionNet they come from."""
    records = morph["records"]
    lines = [f"## Morphology (FusionNet nuclei of the test volume, seed {morph['seed']}: the best validation V^Rand)",
             ""]
    if not records:
        return lines + ["No nuclei were found in the test volume: no morphology to report.", "",
                        *_symmetry_lines(morph["symmetry"])]
    interior = [r for r in records if not r["touches_border"]] or records
    n_outliers = sum(bool(r["outlier"]) for r in interior)
    n_border = sum(bool(r["touches_border"]) for r in records)
    return lines + [
        f"{len(records)} nuclei, {n_border} of them cut by the volume border (their size and shape are "
        f"truncated: left out of the statistics, the K-means fit and the tables below; in `morphology.csv` they "
        f"get the cluster of the nearest centre); {n_outliers} of the {len(interior)} others flagged as outliers "
        "by the pre-flagging. Per-nucleus values in `morphology.csv`.",
        "",
        f"Statistics of the {len(interior)} nuclei{' inside the volume' if len(interior) < len(records) else ''}:",
        "",
        "| | median | 5th percentile | 95th percentile |",
        "|---|---|---|---|",
        _quantiles("volume (um^3)", [r["volume_um3"] for r in interior], 1),
        _quantiles("surface area (um^2)", [r["surface_area_um2"] for r in interior], 1),
        _quantiles("sphericity", [r["sphericity"] for r in interior], 3),
        "",
        *_kmeans_lines(interior, exp, morph.get("silhouettes", {})),
        "",
        *_symmetry_lines(morph["symmetry"]),
    ]


def report(preset: str, exp: dict, info: dict, configs: dict, trains: dict, results: dict, morph: dict,
           total: float) -> list[str]:
    """The lines of ``report.md``; ``configs``, ``trains``, ``results`` are keyed by seed, then model."""
    seeds = list(results)
    first = configs[seeds[0]]
    return [
        "# Zebrafish nucleus segmentation: FusionNet vs U-Net, and nucleus morphology",
        "",
        *preset_note(preset, "zebrafish", first["fusionnet"]),
        *_data_notes(exp, info),
        *_table3_section(results, exp),
        "## Training",
        "",
        *training_table(configs, trains, seeds),
        "",
        *morphology_section(morph, exp),
        "",
        "![segmentation coloured by sphericity (Fig. 9)](fig9_overlay.png)",
        "",
        "![morphology against the horizontal coordinate (Fig. 10)](fig10_features.png)",
        "",
        f"Total wall time: {total / 60:.1f} min. Models: `seed<s>/fusionnet/best.keras`, `seed<s>/unet/best.keras`.",
    ]
