"""Raw EM to neuron labels in one call: affinities, z-watershed, learned agglomeration.

The settings come from a shipped 3-D model's card (:mod:`fusionnet_keras.pretrained`):
its network, its agglomeration classifier, and the threshold and watershed size
chosen on its validation data; each can be overridden. In memory
(:func:`neurons`) or block by block on Dask (:func:`neurons_volume`: the
affinities go block by block into a zarr beside the output, then the blockwise
segmentation; both resume after an interruption).
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.segmentation import defaults


@dataclass(frozen=True)
class NeuronSettings:
    """What :func:`neurons` runs: a 3-D network, its classifier, threshold and watershed size."""

    weights: str
    classifier: str
    threshold: float
    ws_size: int
    source: str  # where the settings come from (the registry entry, or "given")


def neuron_settings(model=None, classifier=None, threshold=None, ws_size=None, registry=None) -> NeuronSettings:
    """The settings of ``model`` (None = the shipped default 3-D model, a registry name, a ``.keras`` path or
    a URL) with the given overrides. A model outside the registry has no card: it needs ``classifier``."""
    from fusionnet_keras.pretrained.resolve import registry_entry, resolve_classifier, resolve_weights

    entry = registry_entry(model, "affinities-3d", registry)
    weights = resolve_weights(model if entry is None else entry.name, "affinities-3d", registry)
    card = {} if entry is None else entry.card.get("segmentation", {})
    if classifier is None and entry is None:
        raise FusionNetError(f"{model} is not a registry model, so it has no card: give its agglomeration "
                             "classifier (--classifier)")
    clf = resolve_classifier(classifier if classifier is not None else entry.name, registry)
    return NeuronSettings(
        weights=weights, classifier=clf,
        threshold=float(card.get("threshold", defaults.THRESHOLD) if threshold is None else threshold),
        ws_size=int(card.get("ws_size", defaults.WATERSHED_SIZE) if ws_size is None else ws_size),
        source="given" if entry is None else f"the card of {entry.name}")


def neurons(volume, settings: NeuronSettings, precision=None, orientations: int = 1, progress: bool = False):
    """Neuron labels (uint64 ``(Z, Y, X)``, 0 = background) of an EM ``volume`` in memory."""
    from fusionnet_keras.inference.affinities import predict_affinities
    from fusionnet_keras.models.loading import load_model
    from fusionnet_keras.segmentation.learned import BoundaryClassifier
    from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

    model = load_model(settings.weights, spatial_dims=3)
    affs = predict_affinities(model, volume, precision=precision, orientations=orientations, progress=progress)
    clf = BoundaryClassifier.load(settings.classifier)
    (_, labels), = segment(affs, "learned", [settings.threshold], classifier=clf,
                           watershed_options=WatershedOptions(size=settings.ws_size))
    return labels


def affinities_path(output_path) -> str:
    """Where :func:`neurons_volume` keeps the affinities of ``output_path`` (a zarr beside it)."""
    from fusionnet_keras.blockwise.storage import zarr_target

    file, _ = zarr_target(output_path)
    return f"{file}.affinities.zarr"


def neurons_volume(input_path, output_path, settings: NeuronSettings, *, block=None, workers=1, scheduler=None,
                   precision=None, orientations: int = 1, overwrite=False, voxel_size=None, pyramid=False) -> dict:
    """:func:`neurons` of a volume larger than memory, block by block into the zarr ``output_path``;
    running it again after an interruption finishes the work (the affinities are kept beside the output,
    :func:`affinities_path`). ``voxel_size`` (default: the input's) goes to the outputs' OME-Zarr metadata;
    ``pyramid`` adds downsampled levels to the labels."""
    from fusionnet_keras.blockwise.affinities import affinities_volume
    from fusionnet_keras.blockwise.segment import segment_volume
    from fusionnet_keras.segmentation.learned import BoundaryClassifier
    from fusionnet_keras.segmentation.pipeline import WatershedOptions

    affs = affinities_path(output_path)
    a = affinities_volume(input_path, affs, settings.weights, block=block, workers=workers, scheduler=scheduler,
                          orientations=orientations, precision=precision, overwrite=overwrite,
                          voxel_size=voxel_size)
    s = segment_volume(affs, [output_path], method="learned", thresholds=[settings.threshold],
                       classifier=BoundaryClassifier.load(settings.classifier), classifier_path=settings.classifier,
                       watershed_options=WatershedOptions(size=settings.ws_size), block=block, workers=workers,
                       scheduler=scheduler, overwrite=overwrite, voxel_size=voxel_size,
                       pyramid=pyramid, command="neurons", model=str(settings.weights))
    return {"affinities": affs, "blocks": a["blocks"], "computed": a["computed"], **s}
