"""A network of this package as a bioimage.io model package (spec 0.5), built with ``bioimageio.spec``.

The package (a zip) holds:

* ``rdf.yaml``: the model description, written by ``bioimageio.spec`` from a
  :class:`bioimageio.spec.model.v0_5.ModelDescr` (never by hand);
* the weights as a TensorFlow SavedModel (``tensorflow_saved_model_bundle``; Keras'
  ``ExportArchive``), float32: it needs TensorFlow only, not this package, whose
  custom layers a ``keras_v3`` (``.keras``) entry would need to load;
* ``test_input.npy`` (a real EM crop, uint8) and ``test_output.npy`` (what this
  package's predictor gives for it with one orientation and no padding: exactly
  the network's output, so bioimageio.core's model test reproduces it);
* ``sample_input.tif`` / ``sample_output.tif`` and ``cover.png``: the part of the test
  tensors that is the crop itself (not mirror padding), the cover with input and output
  side by side; ``README.md``: the model card when the model is a shipped one, and how
  the package is meant to be used.

Inputs are uint8 EM: pre-processing ``ensure_dtype`` float32 then ``scale_linear``
by 1/255, which is how the predictor normalises uint8 images
(:func:`fusionnet_keras.data.io.images.normalize`). Axes carry their sizes: 2-D
networks take ``(batch, y, x, channel)`` with y, x a multiple of ``2**depth`` and give the
same shape with the tiling halo (the receptive-field margin, rounded up so that a padded
tile stays a valid size; ``min`` is the smallest multiple above twice the halo, which
bioimage.io requires); the 3-D
affinity networks take ``(batch, z, y, x, channel)`` of the sizes
``min_input + k * multiple`` and give ``input - loss`` per axis (valid convolutions,
no halo needed), channels (z, y, x) affinities.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError

#: The papers every export cites, and the one the 3-D affinity networks add.
CITATIONS_2D = (
    ("Quan, Hildebrand, Jeong (2016). FusionNet: a deep fully residual convolutional neural network for image "
     "segmentation in connectomics. arXiv 1612.05360", "10.48550/arXiv.1612.05360"),
    ("Quan, Hildebrand, Jeong (2021). FusionNet: a deep fully residual convolutional neural network for image "
     "segmentation in connectomics. Frontiers in Computer Science 3:613981", "10.3389/fcomp.2021.613981"),
)
CITATIONS_3D = (
    ("Parag, Tschopp, Grisaitis, Turaga, Zhang, Matejek, Kamentsky, Lichtman, Pfister (2017). Anisotropic EM "
     "segmentation by 3D affinity learning and agglomeration. arXiv 1707.08935", "10.48550/arXiv.1707.08935"),
)
#: The authors named when none are given (``--author``).
DEFAULT_AUTHORS = ("fusionnet-keras contributors",)
#: The output tensor's id for 2-D and 3-D networks.
OUTPUT_IDS = {2: "probability", 3: "affinities"}
#: The characters and length bioimage.io allows in a model's name.
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_+- ()")
NAME_LENGTH = (5, 128)
#: Tolerance of the model test: the SavedModel reproduces the test output to float round-off.
TOLERANCE = 1e-4
#: Side of the cover image's panels (the test tensors are scaled up to it with nearest neighbours).
COVER_SIDE = 256


def _bioimageio():
    """``bioimageio.spec``'s model module, or a one-line error naming the extra that installs it."""
    try:
        import bioimageio.spec  # noqa: F401
        from bioimageio.spec.model import v0_5
    except ImportError as e:
        raise FusionNetError(f"the bioimageio export needs bioimageio.spec ({e}): "
                             "pip install 'fusionnet-keras[bioimageio]'") from None
    return v0_5


def check_name(name: str) -> str:
    """``name`` if bioimage.io accepts it as a model's name, else a one-line error."""
    low, high = NAME_LENGTH
    if not low <= len(name) <= high or not set(name) <= NAME_CHARACTERS:
        raise FusionNetError(f"model name {name!r}: bioimage.io wants {low} to {high} letters, digits, spaces "
                             "or '_+-()'")
    return name


def default_name(entry, path, net) -> str:
    """The registry name, else the file's stem and the network's class (``tiny (FusionNet)``), with the
    characters bioimage.io refuses replaced by '-'."""
    text = entry.name if entry is not None else f"{Path(path).stem} ({type(net).__name__})"
    return "".join(c if c in NAME_CHARACTERS else "-" for c in text)[:NAME_LENGTH[1]]


# --------------------------------------------------------------------------- the network
def _resolve(model, registry=None):
    """``(registry entry or None, path of the .keras file, network)`` for a registry name or a file."""
    from fusionnet_keras.models.loading import load_model
    from fusionnet_keras.pretrained.resolve import registry_entry, resolve_weights

    entry = registry_entry(os.fspath(model), None, registry)
    path = resolve_weights(os.fspath(model), None, registry)
    return entry, path, load_model(path, spatial_dims=None)


def _float32_single_output(net):
    """``net`` computing in float32 with one output (the last unit's for FusionNetW^k)."""
    import keras

    from fusionnet_keras.models.precision import with_precision

    net = with_precision(net, "float32")
    if len(net.outputs) > 1:
        net = keras.Model(net.inputs, net.outputs[-1], name=net.name)
    return net


def spatial_dims(net) -> int:
    """2 for an image network ``(N, Y, X, 1)``, 3 for an affinity network ``(N, Z, Y, X, 1)``."""
    return len(net.inputs[0].shape) - 2


class Geometry:
    """The sizes a network takes and gives, per spatial axis: ``min + k * step`` in, ``in - loss`` out;
    ``halo``: output pixels to crop at each side of a tile (2-D "same" networks), else 0."""

    def __init__(self, net):
        from fusionnet_keras.models.analysis import receptive_field_margin, size_multiple

        valid = getattr(net, "geometry", None)
        dims = spatial_dims(net)
        if valid is not None:
            self.axes = tuple(valid.axes)
            self.min, self.step, self.loss = tuple(valid.min_input), tuple(valid.multiple), tuple(valid.loss)
            self.halo = (0,) * dims
            return
        multiple = size_multiple(net)
        self.axes = ("y", "x") if dims == 2 else ("z", "y", "x")
        self.step = (multiple,) * dims
        self.loss = (0,) * dims
        margin = receptive_field_margin(net)
        # a padded tile (size + 2 * halo) must stay a valid size: the halo is a multiple of step / 2;
        # the smallest tile keeps something once its halo is cropped (the network itself takes any multiple)
        half = max(1, multiple // 2)
        halo = -(-margin // half) * half
        self.halo = (halo,) * dims
        self.min = ((2 * halo) // multiple * multiple + multiple,) * dims

    def fit(self, crop):
        """``(input, real)``: ``crop`` made a valid input, cut (centred) to the largest valid shape within
        it, or mirror-padded (``numpy.pad(mode="reflect")``, as the predictor pads) to the smallest where
        it is smaller; ``real`` the slices of ``input`` that hold the crop's own voxels (not mirrored)."""
        shape = []
        for size, low, step in zip(crop.shape, self.min, self.step):
            shape.append(low if size < low else low + (size - low) // step * step)
        grow = [max(0, t - s) for s, t in zip(crop.shape, shape)]
        before = [g // 2 for g in grow]
        padded = np.pad(crop, [(b, g - b) for b, g in zip(before, grow)], mode="reflect") if any(grow) else crop
        start = [(s - t) // 2 for s, t in zip(padded.shape, shape)]
        real = tuple(slice(max(0, b - a), min(t, b + s - a)) for a, b, s, t in zip(start, before, crop.shape, shape))
        return np.ascontiguousarray(padded[tuple(slice(a, a + t) for a, t in zip(start, shape))]), real


# --------------------------------------------------------------------------- the test tensors
def _shipped_sample(entry, dims, registry=None):
    """The real EM crop of ``entry``'s card, else of the shipped default model of the same kind."""
    from fusionnet_keras.pretrained.card import TASK_DIMS
    from fusionnet_keras.pretrained.registry import default_for

    if entry is None:
        task = next(t for t, d in TASK_DIMS.items() if d == dims)
        entry = default_for(task, registry)
    return np.load(entry.folder / entry.card["test"]["input"], allow_pickle=False)


def _read_sample(sample, dims):
    """A uint8 EM crop from an image file (2-D: the first section of a stack)."""
    from fusionnet_keras.data.io import read_volume

    array = np.asarray(read_volume(sample))
    if dims == 2 and array.ndim == 3:
        array = array[0]
    if array.ndim != dims:
        raise FusionNetError(f"sample {sample}: expected a {dims}-D image, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise FusionNetError(f"sample {sample}: the package's input is uint8 EM, got {array.dtype}")
    return array


def package_tensors(net, geometry: Geometry, crop):
    """``(input, output, real)`` of the package: the crop made a valid input (uint8, batch and channel
    axes added; :meth:`Geometry.fit`), what the package's predictor gives for it (float32, one
    orientation, no padding: the network's output) and the input's slices that hold the crop itself."""
    from fusionnet_keras.data.io.images import normalize

    crop, real = geometry.fit(crop)
    image = normalize(crop)
    if spatial_dims(net) == 2:
        from fusionnet_keras.inference.predictor import predict

        out = predict(net, image, tta=1, pad=0, precision="float32")[..., None]
    else:
        from fusionnet_keras.inference.affinities import predict_affinities

        full = predict_affinities(net, image, block=crop.shape, orientations=1, precision="float32")
        lost = [loss // 2 for loss in geometry.loss]
        inner = tuple(slice(c, s - (loss - c)) for c, s, loss in zip(lost, crop.shape, geometry.loss))
        out = np.moveaxis(full[(slice(None), *inner)], 0, -1)
    return crop[None, ..., None], np.ascontiguousarray(out[None], dtype=np.float32), real


def shown_region(test_input, test_output, real=None):
    """``(image, output)`` without the batch axis (``image`` without its channel axis) where the output
    covers ``real`` (the slices of the input that are not mirror padding; default: all of it)."""
    image = test_input[0, ..., 0]
    out = test_output[0]
    real = real or tuple(slice(0, n) for n in image.shape)
    context = [(a - b) // 2 for a, b in zip(image.shape, out.shape[:-1])]
    region = [slice(max(0, r.start - c), min(n, r.stop - c)) for r, c, n in zip(real, context, out.shape)]
    image = image[tuple(slice(r.start + c, r.stop + c) for r, c in zip(region, context))]
    return np.ascontiguousarray(image), np.ascontiguousarray(out[tuple(region)])


def cover_image(image, out):
    """An RGB uint8 picture of :func:`shown_region`'s arrays: the (middle) section beside the output
    (probabilities in grey, affinities z, y, x as red, green, blue)."""
    if image.ndim == 3:
        image, out = image[image.shape[0] // 2], out[out.shape[0] // 2]
    left = np.repeat(image[..., None], 3, axis=-1)
    right = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
    right = np.repeat(right, 3, axis=-1) if right.shape[-1] == 1 else right
    scale = max(1, COVER_SIDE // max(image.shape))
    picture = np.concatenate([left, right], axis=1)
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


# --------------------------------------------------------------------------- the description
def documentation(entry, net, geometry: Geometry, name: str) -> str:
    """The package's README.md: the model card (shipped models) and how to use the package."""
    dims = spatial_dims(net)
    parts = []
    if entry is not None:
        parts.append((entry.folder / "card.md").read_text(encoding="utf-8").rstrip())
    else:
        parts.append(f"# {name}\n\n{type(net).__name__} exported by fusionnet-keras (not a shipped model: no "
                     f"model card). Configuration: `{net.get_config()}`.")
    axes = ", ".join(geometry.axes)
    sizes = "; ".join(f"{a}: {m} + k x {s}" for a, m, s in zip(geometry.axes, geometry.min, geometry.step))
    usage = [
        "## This package",
        "",
        f"Exported by `fusionnet-keras export` ({type(net).__name__}, TensorFlow SavedModel, float32).",
        "",
        f"- **Input** `raw`: uint8 EM, axes (batch, {axes}, channel), sizes {sizes}. Pre-processing: to "
        "float32, then x 1/255 (the package's predictor divides uint8 images by 255; convert other data to "
        "uint8 first).",
    ]
    if dims == 2:
        usage += [
            "- **Output** `probability`: float32 in [0, 1], the input's shape; 1 = cell interior, 0 = membrane "
            "(the ISBI 2012 convention), the network's own sigmoid (no further post-processing).",
            f"- **Tiling**: the halo is {geometry.halo[0]} px (the receptive-field margin rounded up to keep padded "
            "tiles a valid size): tiles cropped by it join into the untiled prediction.",
            "- `fusionnet-keras predict` also averages the 8 orientations of each section and mirror-pads 64 px; "
            "this package runs one orientation (the numbers differ slightly from the scores above).",
        ]
    else:
        context = ", ".join(f"{a} {c // 2}" for a, c in zip(geometry.axes, geometry.loss))
        usage += [
            "- **Output** `affinities`: float32 in [0, 1], axes (batch, z, y, x, channel), channels the "
            "affinities to the previous voxel in z, y and x; valid convolutions: the output is the input "
            f"less {context} voxels at each side (blocks overlapping by twice that join exactly when they "
            "start on multiples of the step).",
            "- Post-processing to neurons (z-watershed and agglomeration, `fusionnet-keras neurons`) is not "
            "part of the package.",
        ]
    parts.append("\n".join(usage))
    validation = ["## Validation", ""]
    if entry is not None:
        scores = entry.card["scores"]
        values = ", ".join(f"{k} {v:g}" for k, v in scores["values"].items())
        validation.append(f"Held-out scores of the model (above): {values}, by `{scores['command']}`.")
    else:
        validation.append("Not a shipped model: no held-out scores come with it.")
    validation.append(f"bioimageio.core's model test reproduces `test_output.npy` from `test_input.npy` to "
                      f"{TOLERANCE:g} (`bioimageio test PACKAGE.zip`); `sample_input.tif` / `sample_output.tif` "
                      "and the cover show the part of the test input that is the EM crop itself (the rest, if "
                      "any, is its mirror image padding it to the smallest input the halo allows).")
    parts.append("\n".join(validation))
    return "\n\n".join(parts) + "\n"


def _axes(v0_5, geometry: Geometry, dims: int):
    """``(input axes, output axes)`` of the description."""
    ids = [v0_5.AxisId(a) for a in geometry.axes]
    inputs = [v0_5.BatchAxis()]
    inputs += [v0_5.SpaceInputAxis(id=a, size=v0_5.ParameterizedSize(min=m, step=s))
               for a, m, s in zip(ids, geometry.min, geometry.step)]
    inputs.append(v0_5.ChannelAxis(channel_names=[v0_5.Identifier("em")]))
    outputs = [v0_5.BatchAxis()]
    for a, loss, halo in zip(ids, geometry.loss, geometry.halo):
        size = v0_5.SizeReference(tensor_id=v0_5.TensorId("raw"), axis_id=a, offset=-loss)
        outputs.append(v0_5.SpaceOutputAxisWithHalo(id=a, size=size, halo=halo) if halo
                       else v0_5.SpaceOutputAxis(id=a, size=size))
    channels = ["probability"] if dims == 2 else ["affinity_z", "affinity_y", "affinity_x"]
    outputs.append(v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channels]))
    return inputs, outputs


def describe(v0_5, *, name, description, net, geometry: Geometry, files: dict, authors, tags):
    """The :class:`bioimageio.spec.model.v0_5.ModelDescr` of the package (``files``: the local paths of
    weights, test_input, test_output, cover, documentation)."""
    import keras
    import tensorflow as tf

    from fusionnet_keras import __version__

    dims = spatial_dims(net)
    in_axes, out_axes = _axes(v0_5, geometry, dims)
    cite = [v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in
            CITATIONS_2D + (CITATIONS_3D if dims == 3 else ())]
    output_id = OUTPUT_IDS[dims]
    return v0_5.ModelDescr(
        name=name,
        description=description,
        authors=[v0_5.Author(name=a) for a in authors],
        cite=cite,
        license=v0_5.LicenseId("MIT"),
        documentation=v0_5.FileDescr(source=files["documentation"]),
        covers=[v0_5.FileDescr(source=files["cover"])],
        tags=list(tags),
        version=__version__,
        inputs=[v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description="EM, uint8",
            axes=in_axes,
            test_tensor=v0_5.FileDescr(source=files["test_input"]),
            sample_tensor=v0_5.FileDescr(source=files["sample_input"]),
            data=v0_5.IntervalOrRatioDataDescr(type="uint8"),
            preprocessing=[
                v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
                v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1 / 255, offset=0.0)),
                # the last step names the network's dtype (else the spec adds one back to the data's uint8)
                v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
            ],
        )],
        outputs=[v0_5.OutputTensorDescr(
            id=v0_5.TensorId(output_id),
            description=("cell-interior probability (0 = membrane)" if dims == 2 else
                         "affinities to the previous voxel in z, y, x"),
            axes=out_axes,
            test_tensor=v0_5.FileDescr(source=files["test_output"]),
            sample_tensor=v0_5.FileDescr(source=files["sample_output"]),
            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        )],
        weights=v0_5.WeightsDescr(tensorflow_saved_model_bundle=v0_5.TensorflowSavedModelBundleWeightsDescr(
            source=files["weights"],
            tensorflow_version=v0_5.Version(tf.__version__),
            comment=f"exported with Keras {keras.__version__} (model.export, float32) by fusionnet-keras "
                    f"{__version__}",
        )),
        config=v0_5.Config(bioimageio=v0_5.BioimageioConfig(
            reproducibility_tolerance=[v0_5.ReproducibilityTolerance(
                absolute_tolerance=TOLERANCE, relative_tolerance=TOLERANCE)],
        )),
    )


# --------------------------------------------------------------------------- the package
def _saved_model_zip(net, folder: Path, output_id: str) -> Path:
    """``net`` as a zipped TensorFlow SavedModel in ``folder``; its ``serve`` endpoint returns
    ``{output_id: output}`` (bioimageio.core's TensorFlow 2 adapter reads a dict)."""
    import keras
    import tensorflow as tf

    saved = folder / "saved_model"
    archive = keras.export.ExportArchive()
    archive.track(net)
    archive.add_endpoint(name="serve", fn=lambda x: {output_id: net(x, training=False)},
                         input_signature=[tf.TensorSpec(net.inputs[0].shape, tf.float32)])
    archive.write_out(str(saved), verbose=False)
    return Path(shutil.make_archive(str(folder / "weights"), "zip", root_dir=saved))


def _tags(dims: int, net) -> list:
    common = ["connectomics", "electron-microscopy", "fusionnet-keras", "keras", "tensorflow",
              type(net).__name__.lower()]
    return common + (["2d", "membrane-segmentation", "semantic-segmentation"] if dims == 2 else
                     ["3d", "affinity-prediction", "instance-segmentation"])


def model_test(package):
    """Run bioimageio.core's model test on ``package`` (in a temporary working folder); its status
    (``"passed"``), or a RuntimeError naming the failed checks (bioimageio.core: the ``[bioimageio]`` extra)."""
    try:
        from bioimageio.core import test_model
    except ImportError as e:
        raise FusionNetError(f"--check needs bioimageio.core ({e}): pip install 'fusionnet-keras[bioimageio]'"
                             ) from None
    import contextlib

    package = Path(package).resolve()
    # bioimageio.core unzips SavedModel weights into ./bioimageio_unzipped_tf_weights: not into the user's folder
    with tempfile.TemporaryDirectory(prefix="fusionnet-bioimageio-test-") as work, contextlib.chdir(work):
        summary = test_model(package)
    if summary.status != "passed":
        failed = [f"{d.name}: {d.errors[0].msg}" if d.errors else d.name
                  for d in summary.details if d.status == "failed"]
        raise RuntimeError(f"bioimageio.core's model test failed ({'; '.join(failed)[:300]})")
    return summary.status


def export_bioimageio(model, out, *, overwrite: bool = False, sample=None, authors=None, name=None,
                      check: bool = False, registry=None):
    """Write ``model`` (a registry name or a ``.keras`` file of this package) as a bioimage.io
    model package ``out`` (a ``.zip``, written atomically; an existing one only with ``overwrite``).

    ``sample``: an image file (uint8 EM) to crop the test input from; default: the shipped test
    crop of the model's card (or of the shipped model of the same kind). ``authors``: the names for
    the description (default :data:`DEFAULT_AUTHORS`); ``name``: the model's name (default
    :func:`default_name`). ``check``: run bioimageio.core's model test
    (:func:`model_test`) on the package before it is renamed into place (a failure leaves nothing).
    Returns ``(out as a Path, the test's status or None)``.
    """
    from fusionnet_keras.data.io.paths import check_not_input
    from fusionnet_keras.utils.atomic import atomic_path, check_overwrite

    out = check_overwrite(out, overwrite)
    if out.suffix.lower() != ".zip":
        raise FusionNetError(f"output {out}: a bioimage.io package is a .zip file")
    if name is not None:
        check_name(name)
    local_inputs = [os.fspath(p) for p in (model, sample) if p is not None and os.path.exists(p)]
    check_not_input(out, *local_inputs)
    v0_5 = _bioimageio()
    entry, path, net = _resolve(model, registry)
    dims = spatial_dims(net)
    crop = _shipped_sample(entry, dims, registry) if sample is None else _read_sample(sample, dims)
    net = _float32_single_output(net)
    geometry = Geometry(net)
    name = default_name(entry, path, net) if name is None else name
    description = entry.card["summary"] if entry is not None else f"{type(net).__name__} exported by fusionnet-keras"
    test_input, test_output, real = package_tensors(net, geometry, crop)
    with tempfile.TemporaryDirectory(prefix="fusionnet-bioimageio-") as tmp:
        folder = Path(tmp)
        files = {"weights": _saved_model_zip(net, folder, OUTPUT_IDS[dims]), "test_input": folder / "test_input.npy",
                 "test_output": folder / "test_output.npy", "sample_input": folder / "sample_input.tif",
                 "sample_output": folder / "sample_output.tif", "cover": folder / "cover.png",
                 "documentation": folder / "README.md"}
        np.save(files["test_input"], test_input)
        np.save(files["test_output"], test_output)
        import imageio.v3 as iio
        import tifffile

        image, shown = shown_region(test_input, test_output, real)
        tifffile.imwrite(files["sample_input"], image, photometric="minisblack")
        tifffile.imwrite(files["sample_output"], shown[..., 0] if dims == 2 else shown, photometric="minisblack")
        iio.imwrite(files["cover"], cover_image(image, shown))
        files["documentation"].write_text(documentation(entry, net, geometry, name), encoding="utf-8")
        descr = describe(v0_5, name=name, description=description, net=net, geometry=geometry, files=files,
                         authors=list(authors or DEFAULT_AUTHORS), tags=_tags(dims, net))
        from bioimageio.spec import save_bioimageio_package

        with atomic_path(out, suffix=".zip") as target:
            target.unlink()
            save_bioimageio_package(descr, output_path=target)
            status = model_test(target) if check else None
    return out, status
