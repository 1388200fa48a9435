"""``fusionnet-keras export MODEL OUT --format bioimageio``: a network for other tools (bioimage.io)."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import handle_errors, overwrite_option
from fusionnet_keras.export import FORMATS


@click.command()
@click.argument("model", metavar="MODEL")
@click.argument("output_path", metavar="OUT")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="bioimageio", show_default=True,
              help="Package format: bioimageio = a bioimage.io model package (.zip, spec 0.5; needs the "
                   "[bioimageio] extra).")
@click.option("--sample", default=None, metavar="IMAGE",
              help="uint8 EM image (2-D section or 3-D volume) to crop the test input from. Default: the "
                   "shipped test crop of the model's card (or of the shipped model of the same kind).")
@click.option("--author", "authors", multiple=True, metavar="NAME",
              help="An author for the package's description (repeat for several). Default: "
                   "'fusionnet-keras contributors'.")
@click.option("--name", default=None,
              help="The model's name in the package (5-128 letters, digits, spaces, '_+-()'). Default: the "
                   "shipped model's name, or the file's stem and the network's class.")
@click.option("--check", is_flag=True,
              help="Run bioimageio.core's model test on the package before writing it (OUT is written only "
                   "if it passes).")
@overwrite_option
@handle_errors
def export(model, output_path, fmt, sample, authors, name, check, overwrite):
    """Write the network MODEL (a shipped model's name or a .keras file of this package) to OUT.

    bioimageio: a bioimage.io model package (rdf.yaml, TensorFlow SavedModel
    weights, test tensors from the package's predictor, a cover, the model card,
    citations, uint8 -> [0, 1] pre-processing, axes with their valid sizes and,
    for 2-D networks, the tiling halo). OUT must end in .zip.
    """
    from fusionnet_keras.export import export as run

    path, summary = run(model, output_path, format=fmt, overwrite=overwrite, sample=sample,
                        authors=authors or None, name=name, check=check)
    size = path.stat().st_size / 1e6
    click.echo(f"wrote {path} (bioimage.io model package, {size:.1f} MB)")
    if summary is not None:
        click.echo(f"bioimageio.core model test: {summary}")
