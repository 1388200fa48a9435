"""Hand a trained network to other tools: ``fusionnet-keras export MODEL OUT --format FORMAT``.

Formats (:data:`FORMATS`):

* ``bioimageio``: a bioimage.io model package (a zip with ``rdf.yaml``, TensorFlow
  SavedModel weights, test tensors, a cover and the documentation), built with
  ``bioimageio.spec`` (:mod:`fusionnet_keras.export.bioimageio_package`; needs the
  ``[bioimageio]`` extra).

Example::

    from fusionnet_keras.export import export
    export("isbi2012-fusionnet", "isbi2012-fusionnet.zip", format="bioimageio")
"""

from __future__ import annotations

from fusionnet_keras.errors import FusionNetError

#: The formats :func:`export` writes, and what each is.
FORMATS = {"bioimageio": "a bioimage.io model package (.zip)"}


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a one-line error listing them."""
    if fmt not in FORMATS:
        raise FusionNetError(f"unsupported export format {fmt!r} (formats: {', '.join(FORMATS)})")
    return fmt


def export(model, out, format: str = "bioimageio", overwrite: bool = False, **options):
    """Write ``model`` (a registry name or a ``.keras`` file of this package) to ``out`` in ``format``.

    ``options`` go to the format's writer (for ``bioimageio``:
    :func:`fusionnet_keras.export.bioimageio_package.export_bioimageio`, which returns the path written
    and the summary of the model test it ran, or None).
    """
    check_format(format)
    from fusionnet_keras.export.bioimageio_package import export_bioimageio

    return export_bioimageio(model, out, overwrite=overwrite, **options)
