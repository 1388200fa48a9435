"""``fusionnet-keras evaluate``: ISBI 2012 scores of a probability map."""

from __future__ import annotations

import json

import click

from fusionnet_keras.cli.options import (
    handle_errors,
)
from fusionnet_keras.errors import FusionNetError


@click.command()
@click.argument("prediction")
@click.argument("labels")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--median", type=click.IntRange(0), default=0, show_default=True,
              help="Median-filter radius (px) applied to each section first (the 2016 paper used 2); at most "
                   "(min(H, W) - 1) / 2, a window inside the section.")
@click.option("--instances", is_flag=True,
              help="PREDICTION is a label volume (e.g. from segment) and LABELS ground-truth bodies: print "
                   "VI split/merge (bits), adapted Rand error and the CREMI score instead.")
@handle_errors
def evaluate(prediction, labels, as_json, median, instances):
    """Score PREDICTION (probability of cell interior) against binary LABELS (0 = membrane).

    PREDICTION: floats in [0, 1] (values outside are refused, not rescaled), or
    uint8/uint16 scaled by 255/65535.

    Prints the ISBI 2012 challenge scores V^Rand and V^Info (foreground-restricted,
    after border thinning, maximised over thresholds 0.0..1.0), with their
    split/merge parts and thresholds, the pixel error and the Dice coefficient.

    With --instances: PREDICTION is a segmentation, LABELS the ground-truth
    bodies (label 0 ignored); prints VI split = H(S|T), VI merge = H(T|S) and
    their sum (bits), the adapted Rand error (SNEMI3D), the CREMI score
    sqrt(VI * ARAND) and the number of objects.
    """
    import numpy as np

    if instances:
        if median:
            raise FusionNetError("--median applies to probability maps, not to --instances")
        return _evaluate_instances(prediction, labels, as_json)

    from fusionnet_keras.data.io import read_volume
    from fusionnet_keras.data.io.images import load_probability
    from fusionnet_keras.evaluation import dice, isbi_scores, pixel_error
    from fusionnet_keras.evaluation.postprocess import check_median_radius, median_filter

    pred = load_probability(prediction)
    if median:
        check_median_radius(median, pred.shape)
    lab = read_volume(labels)
    values = np.unique(lab)
    if values.size < 2:
        raise FusionNetError(
            f"labels {labels} hold a single value ({values[0]:g}): expected 0 = membrane and one cell value, "
            "so that there is something to score" if values.size else f"labels {labels} are empty"
        )
    if median:
        pred = median_filter(pred, median)
    scores = isbi_scores(pred, lab)
    binary_lab = np.asarray(lab) > 0
    result = {
        "vrand": scores["vrand"],
        "vrand_split": scores["vrand_split"],
        "vrand_merge": scores["vrand_merge"],
        "vrand_threshold": scores["vrand_threshold"],
        "vinfo": scores["vinfo"],
        "vinfo_split": scores["vinfo_split"],
        "vinfo_merge": scores["vinfo_merge"],
        "vinfo_threshold": scores["vinfo_threshold"],
        "pixel_error": pixel_error(pred, lab),
        "dice": dice(pred > 0.5, binary_lab),
        "sections": int(1 if pred.ndim == 2 else pred.shape[0]),
    }
    if as_json:
        click.echo(json.dumps({k: (float(v) if not isinstance(v, int) else v) for k, v in result.items()}))
        return
    click.echo(f"V^Rand      {result['vrand']:.6f}  (split {result['vrand_split']:.6f}, merge "
               f"{result['vrand_merge']:.6f}, threshold {result['vrand_threshold']:.1f})")
    click.echo(f"V^Info      {result['vinfo']:.6f}  (split {result['vinfo_split']:.6f}, merge "
               f"{result['vinfo_merge']:.6f}, threshold {result['vinfo_threshold']:.1f})")
    click.echo(f"pixel error {result['pixel_error']:.6f}")
    click.echo(f"Dice        {result['dice']:.6f}  (cell interior, threshold 0.5)")


def _evaluate_instances(segmentation, labels, as_json):
    from fusionnet_keras.evaluation import instance_scores
    from fusionnet_keras.segmentation.inputs import load_labels

    seg = load_labels(segmentation, "segmentation")
    gt = load_labels(labels, "labels")
    if seg.shape != gt.shape:
        raise FusionNetError(f"segmentation shape {seg.shape} differs from labels shape {gt.shape}")
    s = instance_scores(seg, gt)
    if as_json:
        click.echo(json.dumps(s))
        return
    click.echo(f"VI          {s['vi']:.4f} bits  (split {s['vi_split']:.4f}, merge {s['vi_merge']:.4f})")
    click.echo(f"ARAND       {s['arand']:.4f}  (Rand split {s['rand_split']:.4f}, merge {s['rand_merge']:.4f})")
    click.echo(f"CREMI score {s['cremi']:.4f}")
    click.echo(f"objects     {s['objects']} (ground truth {s['gt_objects']}), {s['voxels']} voxels scored")
