"""Command-line interface: ``fusionnet-keras COMMAND ...``.

Every command turns a user error (bad file, bad shape, bad setting, existing
output) into a one-line ``Error: ...`` message and exit status 2; heavy imports
(Keras, TensorFlow) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from . import __version__
from .errors import FusionNetError

EXIT_USER_ERROR = 2


def _quiet_backend():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def handle_errors(func):
    """Print FusionNetError (and other expected input errors) as one line; exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FusionNetError as e:
            click.echo(f"Error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def overwrite_option(func):
    return click.option("--overwrite", is_flag=True, help="Replace an existing output.")(func)


def tta_option(func):
    return click.option(
        "--tta",
        type=click.Choice(["1", "8"]),
        default="8",
        show_default=True,
        help="Test-time orientations: 8 averages the 8 rotations/mirrors, 1 is plain.",
    )(func)


def batch_size_option(func):
    return click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True,
                        help="Network inputs per forward pass.")(func)


def load_weights(path):
    """Load a ``.keras`` model written by this package, with a one-line error on failure."""
    _quiet_backend()
    import keras

    from . import models  # noqa: F401  (registers the layers and models)

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FusionNetError(f"weights not found: {path}")
    if not path.endswith(".keras"):
        raise FusionNetError(f"weights must be a .keras file saved by fusionnet-keras, got {path}")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # corrupt zip, foreign model, missing classes
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusionNetError(f"cannot load weights {path}: {reason[:200]}") from None
    inputs = model.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 1:
        raise FusionNetError(
            f"incompatible weights {path}: expected a single-channel image model, got inputs "
            f"{[tuple(i.shape) for i in inputs]}"
        )
    if isinstance(model.outputs, (list, tuple)) and len(model.outputs) > 1:
        # FusionNetW: predict with the last unit's output
        last = keras.Model(model.inputs, model.outputs[-1], name=f"{model.name}_last_unit")
        last.size_multiple = model.size_multiple
        model = last
    return model


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fusionnet-keras")
def main():
    """FusionNet for EM connectomics segmentation (Quan et al. 2016/2021), in Keras 3."""


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option("--weights", "-w", required=True, type=click.Path(dir_okay=False), help="Trained model (.keras).")
@tta_option
@click.option("--tile", type=click.IntRange(16), default=None, help="Tile size (px) for large images; default: whole sections.")
@click.option("--pad", type=click.IntRange(0), default=64, show_default=True, help="Mirror padding (px) on every side.")
@batch_size_option
@click.option("--dtype", type=click.Choice(["float32", "uint8"]), default="float32", show_default=True,
              help="Output type: float32 in [0, 1] or uint8 (0-255).")
@overwrite_option
@handle_errors
def predict(input_path, output_path, weights, tta, tile, pad, batch_size, dtype, overwrite):
    """Predict cell-interior probability (1 = cell, 0 = membrane) for INPUT, write OUTPUT.

    INPUT and OUTPUT: .tif/.tiff, .h5/.hdf5 (file.h5:dataset), .zarr, or (input
    only) a directory of PNG/TIFF sections. 2-D images and 3-D stacks (Z, H, W).
    """
    from .io import check_output, load_image, write_volume

    check_output(output_path, overwrite)
    image = load_image(input_path)
    model = load_weights(weights)
    from .predictor import predict as run_predict

    try:
        out = run_predict(model, image, tta=int(tta), tile=tile, pad=pad, batch_size=batch_size,
                          progress=image.ndim == 3)
    except FusionNetError:
        raise
    except Exception as e:  # e.g. a model with a fixed input size that the padded image does not fit
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusionNetError(f"cannot run the model {weights} on {input_path}: {reason[:200]}") from None
    write_volume(output_path, out, overwrite=overwrite, dtype=dtype)
    click.echo(f"wrote {output_path} {out.shape} {dtype}")


@main.command()
@click.argument("prediction")
@click.argument("labels")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--median", type=click.IntRange(0), default=0, show_default=True,
              help="Median-filter radius (px) applied to each section first (the 2016 paper used 2).")
@handle_errors
def evaluate(prediction, labels, as_json, median):
    """Score PREDICTION (probability of cell interior) against binary LABELS (0 = membrane).

    Prints the ISBI 2012 challenge scores V^Rand and V^Info (foreground-restricted,
    after border thinning, maximised over thresholds 0.0..1.0), with their
    split/merge parts and thresholds, the pixel error and the Dice coefficient.
    """
    import numpy as np

    from .io import load_image, read_volume
    from .metrics import dice, isbi_scores, pixel_error

    pred = load_image(prediction)
    lab = read_volume(labels)
    if median:
        from .postprocess import median_filter

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


@main.command()
@click.argument("weights", required=False)
@click.option("--size", type=click.IntRange(1), default=640, show_default=True, help="Input size for the shape table.")
@click.option("--architecture", type=click.Choice(["fusionnet", "fusionnet_w", "unet"]), default="fusionnet",
              show_default=True, help="Without WEIGHTS: which paper configuration to describe.")
@handle_errors
def info(weights, size, architecture):
    """Architecture, per-level shapes, parameter count and FLOPs per pixel.

    Without WEIGHTS, describes the paper configuration (nb_filters 64, depth 4).
    """
    _quiet_backend()
    from . import models

    if weights:
        from .cli import load_weights as _load

        _load(weights)  # validates the file
        import keras

        model = keras.saving.load_model(weights, compile=False)
        if not isinstance(model, tuple(models.ARCHITECTURES.values())):
            raise FusionNetError(
                f"cannot describe {weights}: not a FusionNet, FusionNetW or U-Net model of fusionnet-keras "
                f"(got {type(model).__name__})"
            )
    else:
        model = models.build_model(architecture, nb_filters=64, depth=4)
    multiple = 2**model.depth
    if size % multiple:
        raise FusionNetError(f"--size {size} is not divisible by 2**depth = {multiple}")
    config = model.get_config()
    click.echo(f"model: {model.__class__.__name__} {json.dumps({k: v for k, v in config.items() if k not in ('name', 'trainable')})}")
    click.echo(f"parameters: {model.count_params():,}")
    fpp = models.flops_per_pixel(model)
    click.echo(f"FLOPs per pixel (forward): {fpp:,.0f}  ({fpp * size * size / 1e9:.1f} GFLOP per {size}x{size} input)")
    click.echo(f"level shapes for a {size}x{size} input:")
    for name, shape in models.level_shapes(model, size, size):
        click.echo(f"  {name:28s} {'x'.join(str(s) for s in shape)}")


def _train_options(func):
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. --set train.epochs=5 (repeatable).")(func)
    func = click.option("--out", "out", type=click.Path(file_okay=False), default=None,
                        help="Run directory (default: runs/<name>).")(func)
    func = click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")(func)
    func = overwrite_option(func)
    return func


@main.command()
@click.argument("configs", nargs=-1, required=True, metavar="CONFIG [PRESET ...]")
@_train_options
@handle_errors
def train(configs, overrides, out, resume, overwrite):
    """Train a network from TOML CONFIG files (later files override earlier ones).

    Writes checkpoints (atomically), config.json, log.csv and TensorBoard logs to
    --out; keeps best.keras by validation V^Rand; --resume continues after an
    interruption.
    """
    _quiet_backend()
    from .config import load_config
    from .train import train as run_train

    config = load_config(configs, overrides)
    out = out or os.path.join("runs", config["name"])
    result = run_train(config, out, resume=resume, overwrite=overwrite)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.argument("configs", nargs=-1, required=True, metavar="CONFIG [PRESET ...]")
@click.option("--folds", type=click.IntRange(2), default=3, show_default=True)
@_train_options
@handle_errors
def cv(configs, folds, overrides, out, resume, overwrite):
    """k-fold cross-validation (default 3) over the train + validation sections."""
    _quiet_backend()
    from .config import load_config
    from .train import cross_validate

    config = load_config(configs, overrides)
    out = out or os.path.join("runs", config["name"] + "-cv")
    report = cross_validate(config, out, folds=folds, resume=resume, overwrite=overwrite)
    for r in report["folds"]:
        click.echo(f"fold {r['fold']}: V^Rand {r['vrand']:.5f}  V^Info {r['vinfo']:.5f}  pixel error {r['pixel_error']:.5f}")
    m = report["mean"]
    click.echo(f"mean:   V^Rand {m['vrand']:.5f}  V^Info {m['vinfo']:.5f}  pixel error {m['pixel_error']:.5f}")


def parse_voxel_size(text):
    """``"Z,Y,X"`` (nm) -> a tuple of 3 positive finite floats; FusionNetError otherwise."""
    import math

    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise FusionNetError(
            f"--voxel-size must be 3 positive numbers in nm as Z,Y,X (e.g. 60,56.4,56.4), got {text!r}"
        )
    return values


def _is_binary_mask(arr):
    """Automatic choice for ``morphology``: bool, 0/1, or a single non-zero value (a 0/255 mask) is binary."""
    import numpy as np

    if arr.dtype == bool or arr.size == 0:
        return True
    top = arr.max()
    if top <= 1:
        return True
    return not np.any((arr != 0) & (arr != top))


@main.command()
@click.argument("labels")
@click.option("--voxel-size", required=True, metavar="Z,Y,X",
              help="Voxel size in nm, (Z, Y, X) order, e.g. 60,56.4,56.4 (the paper's zebrafish data).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="CSV table to write.")
@click.option("--clusters", "-k", type=click.IntRange(1), default=3, show_default=True,
              help="K-means clusters of (volume, surface area, sphericity).")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Folder for fig9_overlay.png (sections coloured by sphericity) and fig10_features.png.")
@click.option("--image", type=str, default=None,
              help="EM volume behind the overlay figure (same shape as LABELS); default: the label mask.")
@click.option("--seed", type=int, default=0, show_default=True, help="K-means random seed.")
@click.option("--binary/--instances", "binary", default=None,
              help="Read LABELS as a binary mask (split into 3-D connected components, 26-connectivity) or as "
                   "instance ids. Default: binary when it holds a single non-zero value (e.g. 0/1 or 0/255).")
@overwrite_option
@handle_errors
def morphology(labels, voxel_size, out, clusters, figures, image, seed, binary, overwrite):
    """Measure every nucleus of LABELS: volume, surface area, sphericity, K-means.

    LABELS: a 3-D (Z, Y, X) instance volume (0 = background, one id per
    nucleus) or a binary mask, in any format that `predict` reads. Writes one
    CSV row per nucleus (sizes in um, um^2, um^3; centroids in um and voxels;
    cluster; outlier) and prints a summary.
    """
    from pathlib import Path

    import numpy as np

    from . import morphology as morph
    from .errors import OutputExistsError
    from .io import load_image, open_image, read_volume

    vs = parse_voxel_size(voxel_size)
    out_path = Path(out)
    targets = [out_path]
    fig_paths = []
    if figures is not None:
        fig_dir = Path(figures)
        if fig_dir.exists() and not fig_dir.is_dir():
            raise FusionNetError(f"--figures {fig_dir} is not a directory")
        fig_paths = [fig_dir / "fig9_overlay.png", fig_dir / "fig10_features.png"]
        targets += fig_paths
    for t in targets:
        if t.is_dir():
            raise FusionNetError(f"output is a directory: {t}")
        if t.exists() and not overwrite:
            raise OutputExistsError(f"output exists: {t} (use --overwrite)")

    raw = np.asarray(read_volume(labels))
    if raw.ndim != 3:
        raise FusionNetError(f"{labels}: labels must be a 3-D (Z, Y, X) volume, got shape {raw.shape}")
    if 0 in raw.shape:
        raise FusionNetError(f"{labels}: empty volume (shape {raw.shape})")
    if image is not None:
        with open_image(image) as vol:
            image_shape = tuple(vol.shape)
        if image_shape != raw.shape:
            raise FusionNetError(f"--image {image} has shape {image_shape}, labels {labels} have {raw.shape}")
    if binary is None and raw.dtype.kind in "biuf":
        binary = _is_binary_mask(raw)
    inst = morph.instance_labels(raw, binary=binary)
    del raw
    records = morph.analyze_nuclei(inst, vs, k=clusters, seed=seed, binary=False)
    morph.write_csv(records, out_path, overwrite=overwrite)

    if not records:
        click.echo(f"no nuclei found in {labels}; wrote the header-only table {out_path}")
    else:
        n_out = sum(bool(r["outlier"]) for r in records)
        n_border = sum(bool(r["touches_border"]) for r in records)
        click.echo(f"{len(records)} nuclei ({n_border} touching the volume border), {n_out} outliers; "
                   f"voxel size {vs[0]:g} x {vs[1]:g} x {vs[2]:g} nm")
        click.echo(f"{'cluster':>8} {'nuclei':>7} {'volume um^3':>12} {'area um^2':>10} {'sphericity':>10}")
        for c in sorted({int(r["cluster"]) for r in records}):
            sel = [r for r in records if int(r["cluster"]) == c]
            name = str(c) if c >= 0 else "none"
            click.echo(f"{name:>8} {len(sel):>7} {np.mean([r['volume_um3'] for r in sel]):>12.3f} "
                       f"{np.mean([r['surface_area_um2'] for r in sel]):>10.3f} "
                       f"{np.mean([r['sphericity'] for r in sel]):>10.3f}")
        click.echo(f"wrote {out_path}")
    if fig_paths:
        if image is not None:
            background = load_image(image)
        else:
            background = (inst != 0).astype(np.float32)
        morph.plot_overlay(background, inst, records, fig_paths[0], voxel_size=vs, binary=False,
                           overwrite=overwrite)
        morph.plot_features(records, fig_paths[1], overwrite=overwrite)
        click.echo(f"wrote {fig_paths[0]} and {fig_paths[1]}")


if __name__ == "__main__":  # pragma: no cover
    main()
