"""``report.md`` of the 3-D affinity experiment (:mod:`fusionnet_keras.experiments.affinity3d`).

The test part's scores at the thresholds chosen on the validation part (with
the test-part oracle apart), MALIS vs BCE and UNet3D vs FusionNet3D, learned
vs mean agglomeration, the multicuts and the mutex watershed, the boundary
F-scores, the watershed sizes, the training runs and the test-section figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.experiments import affinity3d as a3  # its settings read at call time (tests patch them)
from fusionnet_keras.experiments.common import preset_note


def _loss_text(config: dict) -> str:
    """``train.loss`` of a network, with its BCE pre-training when it has one."""
    t = config["train"]
    pre = min(t["pretrain_bce_epochs"], t["epochs"])
    if not pre or t["loss"] == "bce":
        return f"`{t['loss']}`"
    return (f"`bce` for {pre} epochs ({pre * t['steps_per_epoch']} steps), then `{t['loss']}` for "
            f"{t['epochs'] - pre} ({(t['epochs'] - pre) * t['steps_per_epoch']} steps)")


def _plot_section(image, gt, segs: dict, path: Path, z: int) -> None:
    from fusionnet_keras.evaluation.figures import new_figure, save_figure

    def colours(labels):
        ids, inverse = np.unique(labels, return_inverse=True)
        palette = np.random.default_rng(0).uniform(0.15, 1.0, (len(ids), 3))
        palette[ids == 0] = 0
        return palette[inverse.reshape(labels.shape)]

    panels = [("EM", image, "gray"), ("ground truth", colours(gt), None)]
    panels += [(title, colours(seg), None) for title, seg in segs.items()]
    fig = new_figure((3.6 * len(panels), 2.0))
    for ax, (title, img, cmap) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"test part, section z = {z}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _threshold(row: dict) -> str:
    """The row's threshold (or beta), and a multicut's edge weighting when it is not the plain one."""
    if row["threshold"] is None:
        return "-"
    return f"{row['threshold']:g}" + (f", {row['weighting']}-weighted" if row.get("weighting", "none") != "none" else "")


def _scores_table(segs: dict) -> list[str]:
    lines = ["| network | method | threshold (validation) | VI split | VI merge | VI | ARAND | CREMI | objects | "
             "validation VI | oracle: best test VI (threshold) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in segs.items():
        for method in a3.METHODS:
            r, oracle = a3.chosen_row(result, method), a3.oracle_row(result, method)
            what = f"z-watershed ({r['fragments']} fragments)" if method == "watershed" else method
            lines.append(f"| {a3._label(name)} | {what} | {_threshold(r)} | {r['vi_split']:.3f} | {r['vi_merge']:.3f} | "
                         f"{r['vi']:.3f} | {r['arand']:.3f} | {r['cremi']:.3f} | {r['objects']} | "
                         f"{a3.chosen_row(result, method, 'validation')['vi']:.3f} | "
                         f"{oracle['vi']:.3f} ({_threshold(oracle)}) |")
    return lines


def _comparison(segs: dict, a: str, b: str, what: str) -> list[str]:
    """Rows comparing networks ``a`` and ``b`` per method (test VI and CREMI at each one's validation-chosen
    threshold)."""
    if a not in segs or b not in segs:
        return []
    lines = [f"### {what}", "", f"| method | {a3._label(a)} VI | {a3._label(b)} VI | {a3._label(a)} CREMI | "
             f"{a3._label(b)} CREMI | lower VI |", "|---|---|---|---|---|---|"]
    for method in a3.METHODS:
        ra, rb = a3.chosen_row(segs[a], method), a3.chosen_row(segs[b], method)
        winner = a3._label(a) if ra["vi"] < rb["vi"] else a3._label(b) if rb["vi"] < ra["vi"] else "tie"
        lines.append(f"| {method} | {ra['vi']:.3f} | {rb['vi']:.3f} | {ra['cremi']:.3f} | {rb['cremi']:.3f} | "
                     f"{winner} |")
    return lines + [""]


def _learned_vs_mean(segs: dict) -> list[str]:
    lines = ["### Learned vs mean agglomeration", ""]
    losses = []
    for name, result in segs.items():
        mean, learned = a3.chosen_row(result, "mean"), a3.chosen_row(result, "learned")
        diff = learned["vi"] - mean["vi"]
        verdict = "beats" if diff < 0 else "does not beat"
        if diff >= 0:
            losses.append(name)
        lines.append(f"- {a3._label(name)}: learned {verdict} mean at their validation-chosen thresholds (test VI {learned['vi']:.3f} vs "
                     f"{mean['vi']:.3f}, {diff:+.3f} bits; CREMI {learned['cremi']:.3f} vs {mean['cremi']:.3f}); "
                     f"classifier: {result['classifier'].get('examples')} examples from "
                     f"{result['classifier'].get('fragments')} training-part fragments.")
    if losses:
        lines += ["", "Where the learned agglomeration does not win, the likely reasons (not isolated by an "
                  "ablation here): the classifier learns from the network's affinities on the **training** part, "
                  "which the network was fitted to, so its boundaries there are cleaner than on the test part "
                  "and the classifier's examples do not look like the test boundaries; with good affinities the "
                  "mean affinity of a boundary already separates most true and false boundaries, leaving the "
                  "forest little to add; and the short CPU training leaves the affinities' errors (which the "
                  "features would have to model) specific to each run. The unlearned mean is the safer choice "
                  "when it ties or wins."]
    return lines + [""]


def _partitioning(segs: dict) -> list[str]:
    """Multicut, lifted multicut and (for long-range networks) the mutex watershed beside the learned
    agglomeration, each at its validation-chosen setting."""
    lines = ["### Multicut, lifted multicut and mutex watershed vs the learned agglomeration", "",
             "Costs from the learned classifier's boundary probability p: log((1 - p) / p) + log((1 - beta) / beta), "
             "beta and the edge weighting (none, or each cost times the boundary's contact area: `size-weighted`) "
             "chosen together on the validation part like the thresholds (GAEC + Kernighan-Lin; lifted edges up to 2 "
             "boundaries apart, or, for a long-range network, between the fragments its long-range offsets link, "
             "with their mean long-range affinity). Time: the whole sweep of the test part (all betas, both "
             "weightings, or all thresholds; one solve each).",
             "", "| network | method | threshold / beta | VI split | VI merge | VI | ARAND | time (s) | vs learned |",
             "|---|---|---|---|---|---|---|---|---|"]
    winners = []
    for name, result in segs.items():
        learned = a3.chosen_row(result, "learned")["vi"]
        rows = {m: (a3.chosen_row(result, m), result["seconds"][f"{m}_test"])
                for m in ("learned", "multicut", "lifted-multicut")}
        if "mws" in result:
            r = result["mws"]["test"]
            rows[f"mws (stride {','.join(map(str, r['stride']))}, size {r['size']})"] = (r, result["mws"]["seconds"])
        for method, (r, seconds) in rows.items():
            diff = "-" if method == "learned" else f"{r['vi'] - learned:+.3f}"
            lines.append(f"| {a3._label(name)} | {method} | {_threshold(r)} | {r['vi_split']:.3f} | {r['vi_merge']:.3f} "
                         f"| {r['vi']:.3f} | {r['arand']:.3f} | {seconds:.1f} | {diff} |")
            if method != "learned" and r["vi"] < learned:
                winners.append(f"{a3._label(name)} {method} ({r['vi']:.3f} < {learned:.3f})")
    if any("mws" in result for result in segs.values()):
        lines += ["", "Mutex watershed (Wolf et al. 2018, 2020) of the network's long-range affinities (the "
                  "nearest neighbours attract, the other offsets repel with weight 1 - a + beta - 0.5), then "
                  "segments under `size` voxels merged into their strongest neighbour; beta "
                  f"({', '.join(map(str, a3.MWS_BETAS))}), the repulsive-edge grid "
                  f"({'; '.join(','.join(map(str, s)) for s in a3.MWS_STRIDES)}) and the size "
                  f"({', '.join(map(str, a3.MWS_SIZES))}) chosen together on the validation part; its time is the "
                  "one test solve at the chosen setting (the others': the whole sweep). Long-range networks "
                  "predict in one orientation (test-time orientations would move their offsets)."]
    lines += ["", "At validation-chosen settings, " + (
        f"these beat the learned agglomeration's test VI: {', '.join(winners)}." if winners else
        "none of multicut, lifted multicut and mutex watershed beats the learned agglomeration's test VI.")]
    return lines + [""]


def _training_table(configs: dict, trains: dict, predict_seconds: dict) -> list[str]:
    lines = ["| network | loss | parameters | input -> output | steps | train time (min) | validation (min) | "
             "best epoch | validation VI | test prediction (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    from fusionnet_keras.training.config import output_shape

    for name, t in trains.items():
        c = configs[name]
        steps = c["train"]["steps_per_epoch"] * t["epochs"]
        seconds = predict_seconds.get(name, {}).get("test")
        lines.append(f"| {a3._label(name)} | {c['train']['loss']} | {t.get('parameters', '')} | "
                     f"{tuple(c['train']['input_shape'])} -> {output_shape(c)} | {steps} | "
                     f"{(t.get('train_seconds') or 0) / 60:.1f} | {(t.get('val_seconds') or 0) / 60:.1f} | "
                     f"{t['best_epoch']} | {t['best_vi']:.3f} | {'-' if seconds is None else f'{seconds:.0f}'} |")
    return lines


def _data_text(shapes: dict) -> str:
    name = shapes["dataset"]
    kept = " with every 4th section kept" if name == "fib-medulla" else ""
    voxel = " x ".join(str(v) for v in reversed(shapes["voxel_nm"]))
    return (f"Data: {name}{kept} ({voxel} nm voxels, x y z), fixed parts ({shapes['split']}): train "
            f"{shapes['train']}, validation {shapes['validation']}, test {shapes['test']} with "
            f"{shapes['test_bodies']} ground-truth bodies ({shapes['test_whole']} of them whole in y and x); "
            f"label 0 means `{shapes['label_zero']}`.")


def report(preset: str, configs: dict, trains: dict, segs: dict, predict_seconds: dict, shapes: dict,
           total_seconds: float) -> list[str]:
    """The lines of ``report.md``."""
    from fusionnet_keras.training.config import FAMILIES

    first = configs[next(iter(configs))]
    note = preset_note(preset, "affinity3d") if preset != "paper" else [
        "Preset: `paper`: the paper's network and sizes; values the paper does not state:", ""] + [
        f"- {key}: {reason}." for key, reason in FAMILIES["affinities"].not_in_paper] + [""]
    return [
        "# 3-D affinities on anisotropic EM: networks, z-watershed, agglomeration",
        "",
        *note,
        _data_text(shapes),
        "Networks trained on the train part, checkpoint chosen by the VI of the mean agglomeration of the "
        "validation part; the agglomeration classifier trained on the train part's affinities and ground truth "
        "only. Every method's threshold (of "
        f"{a3.THRESHOLDS[0]:g} ... {a3.THRESHOLDS[-1]:g}) is the one of lowest VI on the **validation** part, and the "
        "test part is scored at it (the headline); the best threshold on the test part itself is shown apart as "
        "an *oracle* (it looks at the test labels, so it is not a result). z-watershed fragments with size "
        f"threshold {shapes['ws_size']} voxels (`train.val_ws_size`), the same in the checkpoint validation, the "
        "validation part and the test part. VI split = H(S|T) (false splits), VI merge = H(T|S) (false merges), "
        "in bits; ARAND = adapted Rand error; CREMI = sqrt(VI * ARAND).",
        "",
        "![split VI](split_vi.png)",
        "",
        "## Test part at the thresholds chosen on the validation part",
        "",
        *_scores_table(segs),
        "",
        "## Comparisons",
        "",
        "Losses: " + ", ".join(f"{a3._label(n)} = {_loss_text(c)}" for n, c in configs.items())
        + " (`constrained_malis`: Funke et al. 2018's variant of MALIS; `bce`: class-balanced binary "
        "cross-entropy; see the preset files).",
        "",
        *_comparison(segs, "unet3d_malis", "unet3d_bce", "MALIS vs BCE (UNet3D)"),
        *_comparison(segs, "unet3d_constrained", "unet3d_bce", "Constrained MALIS vs BCE (UNet3D)"),
        *_comparison(segs, "unet3d_malis", "unet3d_constrained", "MALIS vs constrained MALIS (UNet3D)"),
        *_comparison(segs, "unet3d_malis", "fusionnet3d_malis", "UNet3D vs FusionNet3D (MALIS)"),
        *_learned_vs_mean(segs),
        *_partitioning(segs),
        "### Affinities: boundary edges",
        "",
        "F-score of the boundary edges (affinity < 0.5) against the ground truth's, every edge counted (an edge "
        "into label 0 is a boundary):",
        "",
        "| network | validation | test |",
        "|---|---|---|",
        *[f"| {a3._label(n)} | {r['fscore']['validation']:.3f} | {r['fscore']['test']:.3f} |" for n, r in segs.items()],
        "",
        "### Watershed size (validation part only)",
        "",
        "VI of the mean agglomeration at its best threshold on the validation part, for z-watershed size "
        f"thresholds {', '.join(map(str, a3.WS_SIZES))} (the run uses {shapes['ws_size']}):",
        "",
        "| network | " + " | ".join(str(size) for size in a3.WS_SIZES) + " |",
        "|---" * (len(a3.WS_SIZES) + 1) + "|",
        *[f"| {a3._label(n)} | " + " | ".join(f"{r['ws_sizes'][str(size)]:.3f}"
                                           for size in a3.WS_SIZES) + " |" for n, r in segs.items()],
        "",
        "## Training",
        "",
        *_training_table(configs, trains, predict_seconds),
        "",
        f"Learning rate {first['train']['learning_rate']:g} (Adam, x{first['train']['lr_decay']:g} per epoch), "
        f"batch {first['train']['batch_size']}, seed {first['train']['seed']}, augmentation: 8 xy orientations, per-section elastic fields "
        f"({first['augment']['elastic_amplitude']:g} px), noise {first['augment']['noise_sigma']:g}, a missing "
        f"section ({first['augment']['missing_section']:g}), misalignment ({first['augment']['misalign']:g}, up to "
        f"{first['augment']['misalign_max']} px). Times are wall-clock on this machine.",
        "",
        f"Total wall time of the target: {total_seconds / 60:.1f} min.",
        "",
        "![test section](test_section.png)",
        "",
        "## Files",
        "",
        "- `<network>/best.keras`: the checkpoint chosen on validation; `<network>/log.csv`: losses and "
        "validation scores per epoch.",
        "- `<network>/test-affinities.h5:affinities` (and `train-affinities.h5`): float32 (3, Z, Y, X), channels "
        "(z, y, x); a long-range network's (C, Z, Y, X), one channel per offset (stored as `affinity_offsets`).",
        "- `<network>/test-segmentation.h5`: `watershed` (the fragments), `mean` and `learned` at their best "
        "thresholds; `<network>/classifier.npz`: the agglomeration classifier; for long-range networks "
        "`<network>/test-mws.h5:mws` and `<network>/mws.json` (the mutex watershed's validation sweep).",
        "- `results.json`: every number above, the whole threshold sweeps included.",
    ]
