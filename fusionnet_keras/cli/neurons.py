"""``fusionnet-keras neurons``: raw EM to neuron labels in one command (the shipped 3-D model's settings)."""

from __future__ import annotations

import time

import click

from fusionnet_keras.cli.options import (
    blockwise_options,
    handle_errors,
    ome_options,
    overwrite_option,
    precision_option,
    quiet_backend,
)


@click.command()
@click.argument("input_path", metavar="EM")
@click.argument("output_path", metavar="OUT")
@click.option("--model", "-m", default=None,
              help="3-D affinity network: a registry name ('fusionnet-keras models'), a .keras file or an "
                   "https://...#sha256=... URL. Default: the shipped 3-D model, with its card's settings.")
@click.option("--classifier", default=None,
              help="Agglomeration classifier (file, registry name or URL). Default: the model's card's.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Agglomeration threshold (higher = more merging). Default: the card's, chosen on validation data.")
@click.option("--ws-size", type=click.IntRange(0), default=None,
              help="z-watershed size threshold (voxels). Default: the card's.")
@click.option("--tta", type=click.Choice(["1", "4", "8"]), default="1", show_default=True,
              help="Test-time xy orientations of the affinity prediction.")
@precision_option
@blockwise_options(writes="the zarr OUT is written by block (the affinities kept beside it in OUT.affinities.zarr),")
@ome_options
@overwrite_option
@handle_errors
def neurons(input_path, output_path, model, classifier, threshold, ws_size, tta, precision, workers, block,
            scheduler, voxel_size, pyramid, overwrite):
    """Neuron labels of the EM volume EM (Z, Y, X), written to OUT (uint64, 0 = background).

    Affinities by the 3-D network, z-watershed fragments, learned agglomeration:
    the model's card gives the classifier, threshold and watershed size (chosen
    on validation data); --classifier, --threshold and --ws-size override them.
    With --workers, --block or --scheduler the volume runs block by block on Dask
    into a zarr OUT; running the same command again finishes an interrupted run.
    A zarr OUT is an OME-Zarr label image (voxel size from EM's metadata or
    --voxel-size, provenance in its attributes).
    """
    from fusionnet_keras.inference.grid import parse_block
    from fusionnet_keras.blockwise.job import blockwise_requested
    from fusionnet_keras.blockwise.pyramid import check_pyramid_output, levels_note, pyramid_levels
    from fusionnet_keras.data.io import check_output, write_volume
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.workflows.neurons import neuron_settings, neurons_volume
    from fusionnet_keras.workflows.neurons import neurons as run

    check_not_input(output_path, input_path)
    check_pyramid_output(pyramid, output_path)
    settings = neuron_settings(model, classifier, threshold, ws_size)
    start = time.perf_counter()
    if blockwise_requested(workers, block, scheduler):
        quiet_backend()
        info = neurons_volume(input_path, output_path, settings, block=None if block is None else parse_block(block),
                              workers=workers or 1, scheduler=scheduler, precision=precision,
                              orientations=int(tta), overwrite=overwrite, voxel_size=voxel_size, pyramid=pyramid)
        click.echo(f"{info['segments'][0]} neurons in {info['blocks']} blocks (threshold {settings.threshold:g}, "
                   f"watershed size {settings.ws_size}, from {settings.source}); wrote {output_path}"
                   f"{levels_note(info)} ({time.perf_counter() - start:.1f} s)")
        return
    from fusionnet_keras.blockwise.affinities import open_affinity_input

    check_output(output_path, overwrite)
    quiet_backend()
    with open_affinity_input(input_path) as volume:
        labels = run(volume, settings, precision=precision, orientations=int(tta), progress=True)
    from fusionnet_keras.data.io.ome import output_meta

    meta = output_meta([input_path], voxel_size, labels=True, command="neurons", model=str(settings.weights),
                       classifier=settings.classifier, threshold=settings.threshold, ws_size=settings.ws_size,
                       orientations=int(tta), precision=precision)
    write_volume(output_path, labels, overwrite=overwrite, meta=meta)
    import numpy as np

    n = int(np.count_nonzero(np.unique(labels)))
    click.echo(f"{n} neurons (threshold {settings.threshold:g}, watershed size {settings.ws_size}, from "
               f"{settings.source}); wrote {output_path}{pyramid_levels(output_path, pyramid)} "
               f"({time.perf_counter() - start:.1f} s)")
