"""``fusionnet-keras train-agglomeration``: train the boundary classifier of the learned agglomeration."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import handle_errors, overwrite_option
from fusionnet_keras.cli.segment import invert_option
from fusionnet_keras.errors import FusionNetError


@click.command("train-agglomeration")
@click.argument("affinities")
@click.argument("fragments")
@click.argument("labels")
@click.argument("classifier", type=click.Path(dir_okay=False))
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True,
              help="Agglomerations of the training volume (1: mean-affinity order; later: the classifier's).")
@click.option("--trees", type=click.IntRange(1), default=100, show_default=True, help="Trees of the random forest.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the forest.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True, help="CPU cores for the forest.")
@invert_option
@overwrite_option
@handle_errors
def train_agglomeration(affinities, fragments, labels, classifier, epochs, trees, seed, jobs, invert, overwrite):
    """Train a boundary classifier on AFFINITIES, FRAGMENTS and ground-truth LABELS; save it to CLASSIFIER.

    FRAGMENTS: the over-segmentation to agglomerate (e.g. from
    `segment --method watershed`); LABELS: ground-truth bodies (0 = unlabelled,
    ignored). Each epoch agglomerates the volume with the ground truth as the
    oracle and adds every visited boundary as an example (GALA); the random
    forest is retrained after each. The classifier is a .npz file.
    """
    import time

    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.segmentation.inputs import load_affinities, load_labels
    from fusionnet_keras.segmentation.learned import train_classifier
    from fusionnet_keras.utils.atomic import check_overwrite

    check_not_input(classifier, affinities, fragments, labels, whole=True)
    check_overwrite(classifier, overwrite)
    start = time.perf_counter()
    affs = load_affinities(affinities, invert=invert)
    frags = load_labels(fragments, "fragments", shape=affs.shape[1:])
    gt = load_labels(labels, "labels", shape=affs.shape[1:])
    if not gt.any():
        raise FusionNetError(f"labels {labels} have no labelled (non-zero) voxel: nothing to learn from")
    clf = train_classifier(affs, frags, gt, epochs=epochs, trees=trees, seed=seed, jobs=jobs, log=click.echo)
    clf.save(classifier, overwrite=overwrite)
    click.echo(f"wrote {classifier} ({clf.info['examples']} examples, {time.perf_counter() - start:.1f} s)")
