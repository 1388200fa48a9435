"""Every command against every class of bad input (issue 16): one table, one contract.

For each row the command either does what a user would expect (the row's
``ok`` check passes), or it exits with status 2 and ONE line ``Error: ...`` on
stderr naming the problem (the row's ``needle``), with nothing on stdout and no
traceback. In no case is an existing file damaged: every input file and every
output a row prepares is checksummed before and after the command.

Rows run in-process through click's CliRunner; where a real process is needed
they run in a subprocess: unreadable inputs and read-only outputs (as root,
with the file-permission capabilities dropped, so the permissions bite), and
``kill -9`` during a write. A full disk is simulated by making the writers fail
with ENOSPC after writing part of their data.

Extending: a new command adds its name to ``COMMANDS``, the classes that apply
to it to ``APPLIES`` and rows to ``ROWS``;
``test_every_command_meets_every_class`` fails until the rows cover them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from fusionnet_keras.cli import main

from conftest import REPO, TINY, randomize_batchnorm, synthetic_em, tiny_train_toml, write_tiff
from segmentation_helpers import bodies, degrade, gt_affinities

# ---------------------------------------------------------------------------
# the classes of bad input and the commands they apply to

KINDS = (
    "missing", "unreadable", "folder", "wrong-format", "corrupt", "dimensions", "channels", "mixed-sizes",
    "pages-differ", "empty", "one-pixel", "aspect-ratio", "nan-inf", "value-range", "labels", "option-value",
    "contradictory", "output-exists", "output-in-container", "read-only-output", "full-disk", "killed-write",
)
IMAGE_KINDS = {"missing", "unreadable", "folder", "wrong-format", "corrupt", "dimensions", "channels", "mixed-sizes",
               "pages-differ", "empty", "one-pixel", "aspect-ratio", "nan-inf", "value-range"}
OUTPUT_KINDS = {"output-exists", "read-only-output", "full-disk"}
COMMANDS = ("predict", "affinities", "evaluate", "evaluate-instances", "train", "cv", "morphology", "info", "segment",
            "train-agglomeration", "models", "neurons", "export", "pyramid", "meshes", "view")
APPLIES = {
    "predict": IMAGE_KINDS | OUTPUT_KINDS | {"option-value", "contradictory", "output-in-container", "killed-write"},
    "affinities": IMAGE_KINDS | OUTPUT_KINDS | {"option-value", "contradictory", "output-in-container"},
    "evaluate": IMAGE_KINDS | {"labels", "option-value", "contradictory"},
    "evaluate-instances": {"missing", "unreadable", "folder", "wrong-format", "corrupt", "dimensions", "empty",
                           "one-pixel", "nan-inf", "value-range", "labels", "contradictory"},
    "train": {"missing", "unreadable", "folder", "wrong-format", "corrupt", "dimensions", "mixed-sizes", "empty",
              "nan-inf", "labels", "option-value", "contradictory", "output-exists", "read-only-output"},
    "cv": {"missing", "folder", "wrong-format", "option-value", "contradictory", "output-exists"},
    "morphology": {"missing", "unreadable", "folder", "wrong-format", "corrupt", "dimensions", "empty", "one-pixel",
                   "nan-inf", "value-range", "option-value", "contradictory"} | OUTPUT_KINDS,
    "info": {"missing", "unreadable", "folder", "wrong-format", "corrupt", "empty", "option-value"},
    "segment": {"missing", "unreadable", "folder", "wrong-format", "corrupt", "dimensions", "channels", "empty",
                "one-pixel", "aspect-ratio", "nan-inf", "value-range", "option-value", "contradictory",
                "output-in-container"} | OUTPUT_KINDS,
    "models": {"missing"},
    "export": {"missing", "unreadable", "folder", "wrong-format", "corrupt", "empty", "dimensions", "value-range",
               "option-value", "output-exists", "read-only-output", "full-disk"},
    "neurons": {"missing", "folder", "wrong-format", "corrupt", "dimensions", "channels", "empty", "nan-inf",
                "value-range", "option-value", "contradictory", "output-exists", "output-in-container"},
    "train-agglomeration": {"missing", "folder", "wrong-format", "corrupt", "dimensions", "value-range", "labels",
                            "option-value"} | OUTPUT_KINDS,
    "meshes": {"missing", "folder", "wrong-format", "corrupt", "dimensions", "empty", "one-pixel", "nan-inf",
               "value-range", "labels", "option-value", "output-exists", "read-only-output"},
    "view": {"missing", "folder", "wrong-format", "dimensions", "empty", "option-value", "contradictory",
             "output-exists"},
    "pyramid": {"missing", "wrong-format", "corrupt", "dimensions", "option-value", "output-exists"},
}
PAD = ("--pad", "16")
TTA1 = ("--tta", "1")


@dataclasses.dataclass(frozen=True)
class Row:
    """One command line against one bad input.

    ``args(f, o)`` builds the arguments from the inputs ``f`` (a dict of paths)
    and the row's own output folder ``o``. Exactly one of ``needle`` (the
    expected error line contains it) and ``ok`` (``ok(f, o, result)`` checks a
    success) is given. ``setup(f, o)`` prepares outputs that must survive.
    ``runner``: "cli" (in-process), "unprivileged" (a subprocess that file
    permissions apply to) or "full-disk" (writers fail with ENOSPC).
    """

    command: str
    kind: str
    args: Callable
    needle: str | None = None
    ok: Callable | None = None
    setup: Callable | None = None
    runner: str = "cli"
    name: str = ""

    @property
    def id(self):
        return f"{self.command}-{self.kind}" + (f"-{self.name}" if self.name else "")


# ---------------------------------------------------------------------------
# inputs (built once)


def _write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
    return path


def _truncate(src: Path, dst: Path, fraction=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good and bad inputs of every kind; nothing here may change (checked after every row)."""
    import keras

    from fusionnet_keras.models.fusionnet import FusionNet

    d = tmp_path_factory.mktemp("inputs")
    f = {"dir": d}
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    randomize_batchnorm(FusionNet(**TINY), seed=1).save(d / "tiny.keras")
    f["weights"] = d / "tiny.keras"
    from fusionnet_keras.models.unet3d import UNet3D

    randomize_batchnorm(UNet3D(nb_filters=2, depth=1, z_kernels=1, head_z_kernel=1), seed=1).save(d / "aff3d.keras")
    f["weights3d"] = d / "aff3d.keras"
    f["weights_truncated"] = _truncate(f["weights"], d / "truncated.keras")
    (d / "empty.keras").write_bytes(b"")
    f["weights_empty"] = d / "empty.keras"
    f["weights_h5"] = _write_h5(d / "weights.h5", x=np.zeros(3))
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(d / "foreign.keras")
    f["foreign"] = d / "foreign.keras"  # a Keras model, not one of the package's image networks

    image, labels = synthetic_em(3, seed=5)
    f["image"] = write_tiff(d / "image.tif", image[0])
    f["labels"] = write_tiff(d / "labels.tif", labels[0])
    f["stack"] = write_tiff(d / "stack.tif", image)
    f["stack_labels"] = write_tiff(d / "stack-labels.tif", labels)
    f["prob"] = write_tiff(d / "prob.tif", (image[0] / 255.0).astype(np.float32))
    f["logits"] = write_tiff(d / "logits.tif", (image[0] / 255.0 * 8 - 4).astype(np.float32))
    f["labels_multi"] = write_tiff(d / "labels-multi.tif", (labels[0] > 0) * rng.integers(1, 6, labels[0].shape))
    f["labels_all_cell"] = write_tiff(d / "labels-all-cell.tif", np.full((64, 64), 255, np.uint8))
    f["labels_all_membrane"] = write_tiff(d / "labels-all-membrane.tif", np.zeros((64, 64), np.uint8))
    f["labels_small"] = write_tiff(d / "labels-small.tif", labels[0][:32, :32])
    nan = (image[0] / 255.0).astype(np.float32)
    nan[5, 7] = np.nan
    f["nan"] = write_tiff(d / "nan.tif", nan)
    inf = (image[0] / 255.0).astype(np.float32)
    inf[5, 7] = np.inf
    f["inf"] = write_tiff(d / "inf.tif", inf)
    f["truncated_tif"] = _truncate(f["stack"], d / "truncated.tif")
    (d / "text.tif").write_text("this is not a TIFF file\n")
    f["text_tif"] = d / "text.tif"
    (d / "notes.txt").write_text("hello\n")
    f["txt"] = d / "notes.txt"
    (d / "zero.tif").write_bytes(b"")
    f["zero_tif"] = d / "zero.tif"
    f["rgb"] = d / "rgb.tif"
    tifffile.imwrite(f["rgb"], rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), photometric="rgb")
    f["one_pixel"] = write_tiff(d / "one-pixel.tif", np.array([[128]], np.uint8))
    f["one_pixel_prob"] = write_tiff(d / "one-pixel-prob.tif", np.array([[0.7]], np.float32))
    f["one_pixel_label"] = write_tiff(d / "one-pixel-label.tif", np.array([[255]], np.uint8))
    f["thin"] = write_tiff(d / "thin.tif", rng.integers(0, 256, (1, 4000), dtype=np.uint8))
    f["thin_prob"] = write_tiff(d / "thin-prob.tif", rng.random((1, 4000), dtype=np.float32))
    f["thin_labels"] = write_tiff(d / "thin-labels.tif", ((rng.random((1, 4000)) > 0.3) * 255).astype(np.uint8))
    with tifffile.TiffWriter(d / "pages-differ.tif") as tw:
        tw.write(image[0], photometric="minisblack")
        tw.write(image[1][:48, :40], photometric="minisblack")
    f["pages_differ"] = d / "pages-differ.tif"
    mixed = d / "mixed-sections"
    mixed.mkdir()
    Image.fromarray(image[0]).save(mixed / "s1.png")
    Image.fromarray(image[1][:48, :40]).save(mixed / "s2.png")
    f["mixed"] = mixed
    (d / "empty-folder").mkdir()
    f["empty_folder"] = d / "empty-folder"
    (d / "folder.tif").mkdir()
    f["folder_tif"] = d / "folder.tif"
    f["h5"] = _write_h5(
        d / "arrays.h5",
        one_d=np.zeros(64, np.float32), four_d=np.zeros((2, 2, 16, 16), np.float32),
        empty=np.zeros((0, 16, 16), np.float32), stack=image,
    )
    f["h5_truncated"] = _truncate(f["h5"], d / "truncated.h5")
    import zarr

    z = zarr.open_group(str(d / "corrupt.zarr"), mode="w")
    z.create_array("a", shape=(3, 64, 64), dtype="uint8", chunks=(1, 64, 64))[...] = image
    meta = next(p for p in (d / "corrupt.zarr" / "a").iterdir() if p.name in ("zarr.json", ".zarray"))
    meta.write_text("{ not json")
    f["zarr_corrupt"] = f"{d / 'corrupt.zarr'}:a"
    # OME-Zarr images the package refuses: two multiscales, no level 0, a level 0 that is not a volume
    f["ome_two"] = _ome_group(d / "two-multiscales.zarr", image, multiscales=2)
    f["ome_no_level"] = _ome_group(d / "no-level-0.zarr", image, datasets=False)
    f["ome_missing_level"] = _ome_group(d / "missing-level-0.zarr", image, level="9")
    f["ome_1d"] = _ome_group(d / "one-d.zarr", image[0, 0])
    f["zarr_plain"] = d / "plain.zarr"
    zarr.create_array(store=str(f["zarr_plain"]), shape=image.shape, dtype="uint8")[...] = image

    # 3-D: affinities, boundary maps, fragments, ground truth, nuclei
    gt = bodies((4, 24, 24), 8, seed=3)
    affs = degrade(gt_affinities(gt), seed=4)
    bad_affs = affs.copy()
    bad_affs[0, 1, 2, 3] = np.nan
    frags = np.arange(gt.size, dtype=np.uint64).reshape(gt.shape) // 8 + 1
    ball = np.zeros((12, 20, 20), np.uint8)
    zz, yy, xx = np.ogrid[:12, :20, :20]
    ball[(zz - 6) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 16] = 1
    f["vol"] = _write_h5(
        d / "volume.h5",
        affinities=affs, boundary=(1.0 - affs.min(axis=0)).astype(np.float32), gt=gt.astype(np.uint32),
        frags=frags, nan=bad_affs, big=np.clip(affs * 2, 0, 2), two_channels=affs[:2], flat=affs[0, 0],
        empty=np.zeros((3, 0, 24, 24), np.float32), voxel=np.ones((1, 1, 1), np.float32),
        thin=np.full((1, 1, 4000), 0.9, np.float32), negative=-gt.astype(np.int32),
        fractional=gt.astype(np.float32) + 0.5, nan_labels=np.where(gt == 1, np.nan, gt).astype(np.float32),
        gt_zero=np.zeros(gt.shape, np.uint32), gt_small=gt[:, :20].astype(np.uint32),
        labels2d=gt[0].astype(np.uint32), ball=ball, ball_voxel=np.ones((1, 1, 1), np.uint8),
        ball_nan=np.where(ball > 0, np.nan, 0).astype(np.float32),
        ball_empty=np.zeros((0, 20, 20), np.uint8), ball_negative=-ball.astype(np.int16),
        raw_logits=(gt.astype(np.float32) / 4 - 1), raw_volume=(affs[0] * 255).astype(np.uint8),
        long=np.concatenate([affs, affs[1:]]), one=np.ones(gt.shape, np.uint64),
    )
    from fusionnet_keras.segmentation.learned import train_classifier

    clf = train_classifier(affs, frags, gt, epochs=1, trees=3, seed=0)
    clf.save(d / "clf.npz")
    f["clf"] = d / "clf.npz"
    f["clf_truncated"] = _truncate(f["clf"], d / "clf-truncated.npz")
    clf.feature_names = clf.feature_names[:-1] + ["another_feature"]
    clf.save(d / "clf-other.npz")
    f["clf_other"] = d / "clf-other.npz"

    (d / "tiny.toml").write_text(tiny_train_toml(f["stack"], f["stack_labels"], "bad-input"))
    f["toml"] = d / "tiny.toml"
    (d / "affinity.toml").write_text('[model]\narchitecture = "unet3d"\nnb_filters = 2\ndepth = 1\n'
                                     'z_kernels = [3, 1]\n\n[train]\ninput_shape = [14, 28, 28]\n')
    f["toml_affinity"] = d / "affinity.toml"
    (d / "broken.toml").write_text("[train\nepochs = \n")
    f["toml_broken"] = d / "broken.toml"
    (d / "empty.toml").write_text("")
    f["toml_empty"] = d / "empty.toml"
    f["stack_nan"] = write_tiff(d / "stack-nan.tif", np.where(np.arange(64) == 3, np.nan, image / 255.0)
                                .astype(np.float32))
    f["stack_labels_single"] = write_tiff(d / "stack-labels-single.tif", np.full(image.shape, 255, np.uint8))
    f["no_data"] = d / "no-data"
    f["no_data"].mkdir()
    return f


def _ome_group(store, data, multiscales=1, datasets=True, level="0"):
    """An OME-Zarr (NGFF 0.5) image group written with zarr itself: ``multiscales`` copies of the
    multiscale, ``datasets`` False for none, level 0 listed as ``level`` (its array is always "0")."""
    import zarr

    group = zarr.open_group(str(store), mode="w")
    group.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"[3 - data.ndim:]]
    ms = {"axes": axes, "datasets": [{"path": level, "coordinateTransformations": [
        {"type": "scale", "scale": [4.0] * data.ndim}]}] if datasets else []}
    group.attrs["ome"] = {"version": "0.5", "multiscales": [ms] * multiscales}
    return store


def _checksums(folder: Path) -> dict:
    """A digest of every file; of an HDF5 file, of its datasets (names, types, values), since a dataset
    written into it in place changes its bytes but must leave the other datasets as they were."""
    sums = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.endswith(".lock"):
            continue
        sums[str(p.relative_to(folder))] = _h5_digest(p) if p.suffix == ".h5" else \
            hashlib.sha256(p.read_bytes()).hexdigest()
    return sums


def _h5_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with h5py.File(path, "r") as h:
            h.visititems(lambda name, obj: digest.update(
                f"{name}{obj.dtype}{obj.shape}".encode() + obj[()].tobytes()) if isinstance(obj, h5py.Dataset)
                else digest.update(name.encode()))
    except OSError:  # not readable as HDF5 (e.g. a truncated file): its bytes
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return digest.hexdigest()




# ---------------------------------------------------------------------------
# what rows prepare and check


def _existing_tif(f, o):
    write_tiff(o / "out.tif", np.full((4, 4), 7, np.uint8))


def _existing_h5(f, o):
    _write_h5(o / "out.h5", a=np.arange(10), grp=np.zeros(1))
    with h5py.File(o / "out.h5", "a") as h:
        del h["grp"]
        h.create_group("grp")["inner"] = np.ones(3)


def _existing_zarr(f, o):
    from fusionnet_keras.data.io import write_volume

    write_volume(f"{o / 'out.zarr'}:a", np.arange(12, dtype=np.uint8).reshape(3, 4))


def _finished_run(o):
    """A run folder as a finished training leaves it (what --resume --overwrite would delete)."""
    (o / "run" / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "state.json", "best.keras", "last.keras", "checkpoints/last.keras", "log.csv"):
        (o / "run" / name).write_text(f"{name} of a finished run\n")


def _other_work(f, o):
    """The work files of a blockwise morphology run with other settings, beside the table."""
    (o / "t.csv.work").mkdir()
    (o / "t.csv.work" / "job.json").write_text('{"signature": "another run"}')


def _read_only(f, o):
    (o / "ro").mkdir()
    os.chmod(o / "ro", 0o555)


def _output_shape(path, shape):
    def check(f, o, result):
        from fusionnet_keras.data.io import read_volume

        out = read_volume(o / path)
        assert out.shape == shape and np.isfinite(out).all(), out.shape
    return check


def _prints(*needles):
    def check(f, o, result):
        for needle in needles:
            assert needle in result.stdout, (needle, result.stdout)
    return check


def _same_as_untiled(f, o, result):
    from fusionnet_keras.data.io import read_volume

    r = _invoke(["predict", f["image"], o / "untiled.tif", "-w", f["weights"], *TTA1, *PAD], o)
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(read_volume(o / "out.tif"), read_volume(o / "untiled.tif"), atol=1e-4)


def _predict(inp, *extra, out="out.tif", weights="weights"):
    return lambda f, o: ["predict", f[inp] if inp in f else inp, o / out, "-w", f[weights], *TTA1, *PAD, *extra]


def _affinities(inp, *extra, out="out.h5", weights="weights3d"):
    """``inp``: an input's name, a dataset of the 3-D volume file (``vol:NAME``), or a path."""
    def args(f, o):
        spec = f[inp] if inp in f else f"{f['vol']}:{inp[4:]}" if inp.startswith("vol:") else inp
        return ["affinities", spec, o / out, "-w", f[weights], *extra]
    return args


def _neurons(inp, *extra, out="out.h5", weights="weights3d", classifier="clf"):
    """``neurons`` of input ``inp`` (as :func:`_affinities`) with the tiny 3-D network and classifier."""
    def args(f, o):
        spec = f[inp] if inp in f else f"{f['vol']}:{inp[4:]}" if inp.startswith("vol:") else inp
        return ["neurons", spec, o / out, "--model", f[weights], "--classifier", f[classifier], *extra]
    return args


def _evaluate(pred, labels, *extra):
    return lambda f, o: ["evaluate", f[pred] if pred in f else pred, f[labels] if labels in f else labels, *extra]


def _vol(key):
    return lambda f: f"{f['vol']}:{key}"


def _instances(seg, gt, *extra):
    return lambda f, o: ["evaluate", f"{f['vol']}:{seg}", f"{f['vol']}:{gt}", "--instances", *extra]


def _train(*extra, command="train", config="toml", out="run"):
    return lambda f, o: [command, f[config] if config in f else config, "--out", o / out, *extra]


def _morph(labels, *extra, out="t.csv"):
    """``labels``: an input's name, a dataset of the 3-D volume file, or a path (starting with /)."""
    def args(f, o):
        return ["morphology", _spec(f, labels), "--voxel-size", "60,56.4,56.4", "--out", o / out, *extra]
    return args


def _segment(affs, *extra, out="seg.h5"):
    return lambda f, o: ["segment", f"{f['vol']}:{affs}", o / out, *extra]


def _agglo(affs="affinities", frags="frags", gt="gt", *extra, out="clf.npz"):
    return lambda f, o: ["train-agglomeration", f"{f['vol']}:{affs}", f"{f['vol']}:{frags}", f"{f['vol']}:{gt}",
                         o / out, "--epochs", "1", "--trees", "2", *extra]


def _export(model, *extra, out="pkg.zip"):
    """``export`` of ``model`` (an input's name, a registry name or a path) to a bioimage.io package."""
    return lambda f, o: ["export", f[model] if model in f else model, o / out, "--format", "bioimageio", *extra]


def _existing_zip(f, o):
    (o / "pkg.zip").write_bytes(b"an older package\n")


def _spec(f, name):
    """An input's path: a name of ``f``, a dataset of the 3-D volume file, or a path (starting with /)."""
    return f[name] if name in f else name if name.startswith("/") else f"{f['vol']}:{name}"


def _meshes(labels, *extra, out="m"):
    return lambda f, o: ["meshes", _spec(f, labels), o / out, "--voxel-size", "40,8,8", *extra]


def _view(em="raw_volume", *extra, labels=None):
    """``view`` with --no-browser: every row is an error (a view that starts serves until Ctrl-C)."""
    return lambda f, o: ["view", _spec(f, em), *(["--labels", _spec(f, labels)] if labels else []), "--no-browser",
                         *extra]


MISSING = "/nonexistent/missing.tif"


def _label_volume_rows(command, build, *, nan, negative, done):
    """The rows of a command that reads one 3-D label volume: ``build(labels)`` gives its arguments; ``nan``
    and ``negative`` name the bad volumes it reads; a one-voxel volume prints ``done``."""
    return [
        Row(command, "missing", build(MISSING), "not found"),
        Row(command, "folder", build("empty_folder"), "sections found"),
        Row(command, "wrong-format", build("txt"), "'.txt'"),
        Row(command, "corrupt", build("truncated_tif"), "truncated.tif"),
        Row(command, "dimensions", build("labels2d"), "3-D"),
        Row(command, "empty", build("ball_empty"), "empty"),
        Row(command, "one-pixel", build("ball_voxel"), ok=_prints(done)),
        Row(command, "nan-inf", build(nan), "NaN"),
        Row(command, "value-range", build(negative), "negative"),
    ]

ROWS = [
    # --- predict ----------------------------------------------------------------------------------------
    Row("predict", "missing", _predict(MISSING), "not found"),
    Row("predict", "missing", _predict("image", weights="weights_missing"), "weights not found", name="weights"),
    Row("predict", "unreadable", _predict("image"), "permission denied", runner="unprivileged"),
    Row("predict", "folder", _predict("empty_folder"), "sections found"),
    Row("predict", "folder", _predict("folder_tif"), "folder.tif", name="named-tif"),
    Row("predict", "folder", _predict("image", weights="dir"), "is a directory", name="weights"),
    Row("predict", "wrong-format", _predict("txt"), "'.txt'"),
    Row("predict", "wrong-format", _predict("text_tif"), "text.tif", name="text-as-tif"),
    Row("predict", "wrong-format", _predict("image", weights="weights_h5"), ".keras", name="weights"),
    Row("predict", "corrupt", _predict("truncated_tif"), "truncated.tif"),
    Row("predict", "corrupt", _predict("h5_truncated"), "truncated.h5", name="hdf5"),
    Row("predict", "corrupt", _predict("zarr_corrupt"), "corrupt.zarr", name="zarr"),
    Row("predict", "corrupt", _predict("image", weights="weights_truncated"), "truncated.keras", name="keras"),
    Row("predict", "empty", _predict("image", weights="weights_empty"), "empty.keras", name="keras"),
    Row("predict", "dimensions", lambda f, o: ["predict", f"{f['h5']}:one_d", o / "out.tif", "-w", f["weights"]],
        "1-D"),
    Row("predict", "dimensions", lambda f, o: ["predict", f"{f['h5']}:four_d", o / "out.tif", "-w", f["weights"]],
        "4-D", name="4d"),
    Row("predict", "channels", _predict("rgb"), "colour"),
    Row("predict", "mixed-sizes", _predict("mixed"), "s2.png"),
    Row("predict", "pages-differ", _predict("pages_differ"), "pages-differ.tif"),
    Row("predict", "empty", lambda f, o: ["predict", f"{f['h5']}:empty", o / "out.tif", "-w", f["weights"]],
        "empty"),
    Row("predict", "empty", _predict("zero_tif"), "zero.tif", name="zero-bytes"),
    Row("predict", "one-pixel", _predict("one_pixel"), ok=_output_shape("out.tif", (1, 1))),
    Row("predict", "aspect-ratio", _predict("thin"), ok=_output_shape("out.tif", (1, 4000))),
    Row("predict", "nan-inf", _predict("nan"), "NaN"),
    Row("predict", "nan-inf", _predict("inf"), "infinite", name="inf"),
    Row("predict", "value-range", _predict("logits"), ok=_output_shape("out.tif", (64, 64))),  # min-max rescaled
    Row("predict", "option-value", _predict("image", "--tile", "0"), "--tile", name="tile-zero"),
    Row("predict", "option-value", _predict("image", "--tile", "-3"), "--tile", name="tile-negative"),
    Row("predict", "option-value", _predict("image", "--tile", "1000000000"), ok=_same_as_untiled, name="tile-huge"),
    Row("predict", "option-value", _predict("image", "--tile", "17"), ok=_same_as_untiled, name="tile-odd"),
    Row("predict", "option-value", _predict("image", "--pad", "-1"), "--pad", name="pad-negative"),
    Row("predict", "option-value", _predict("image", "--pad", "100000000"), "--pad", name="pad-huge"),
    Row("predict", "option-value", _predict("image", "--batch-size", "0"), "--batch-size", name="batch-zero"),
    Row("predict", "option-value", _predict("image", "--batch-size", "1000000000"),
        ok=_output_shape("out.tif", (64, 64)), name="batch-huge"),
    Row("predict", "option-value", _predict("image", "--tta", "3"), "--tta", name="tta"),
    Row("predict", "contradictory", lambda f, o: ["predict", f["image"], f["image"], "-w", f["weights"],
                                                  "--overwrite"], "is the input"),
    Row("predict", "output-exists", _predict("image"), "output exists", setup=_existing_tif),
    Row("predict", "output-exists", _predict("image", out="sub/deeper/out.tif"), ok=_output_shape(
        "sub/deeper/out.tif", (64, 64)), name="new-folders"),
    Row("predict", "output-in-container", _predict("image", out="out.h5:a"), "output exists", setup=_existing_h5),
    Row("predict", "output-in-container", _predict("image", out="out.h5:b"), setup=_existing_h5,
        ok=lambda f, o, r: _h5_names(o / "out.h5") == ["a", "b", "grp", "grp/inner"], name="added"),
    Row("predict", "output-in-container", _predict("image", "--overwrite", out="out.h5:grp"), "group",
        setup=_existing_h5, name="group"),
    Row("predict", "output-in-container", _predict("image", out="out.zarr:a"), "output exists",
        setup=_existing_zarr, name="zarr"),
    Row("predict", "output-in-container", _predict("image", "--overwrite", out="out.zarr"), "zarr group",
        setup=_existing_zarr, name="zarr-group"),
    Row("predict", "read-only-output", _predict("image", out="ro/out.tif"), "permission denied",
        setup=_read_only, runner="unprivileged"),
    Row("predict", "full-disk", _predict("image", "--overwrite"), "No space left", setup=_existing_tif,
        runner="full-disk"),
    Row("predict", "full-disk", _predict("image", out="out.h5:b"), "No space left", setup=_existing_h5,
        runner="full-disk", name="hdf5-in-place"),
    Row("predict", "dimensions", _predict("image", weights="weights3d"), "use 'fusionnet-keras affinities'",
        name="3d-model"),
    # --- affinities -------------------------------------------------------------------------------------
    Row("affinities", "missing", _affinities(MISSING), "not found"),
    Row("affinities", "missing", _affinities("stack", weights="weights_missing"), "weights not found", name="weights"),
    Row("affinities", "unreadable", _affinities("stack"), "permission denied", runner="unprivileged"),
    Row("affinities", "folder", _affinities("empty_folder"), "sections found"),
    Row("affinities", "folder", _affinities("folder_tif"), "folder.tif", name="named-tif"),
    Row("affinities", "folder", _affinities("stack", weights="dir"), "is a directory", name="weights"),
    Row("affinities", "wrong-format", _affinities("txt"), "'.txt'"),
    Row("affinities", "wrong-format", _affinities("text_tif"), "text.tif", name="text-as-tif"),
    Row("affinities", "wrong-format", _affinities("stack", weights="weights_h5"), ".keras", name="weights"),
    Row("affinities", "wrong-format", _affinities("stack", out="out.png"), "output format", name="output"),
    Row("affinities", "corrupt", _affinities("truncated_tif"), "truncated.tif"),
    Row("affinities", "corrupt", lambda f, o: ["affinities", f"{f['h5_truncated']}:stack", o / "out.h5", "-w",
                                               f["weights3d"]], "truncated.h5", name="hdf5"),
    Row("affinities", "corrupt", _affinities("zarr_corrupt"), "corrupt.zarr", name="zarr"),
    Row("affinities", "corrupt", _affinities("stack", weights="weights_truncated"), "truncated.keras", name="keras"),
    Row("affinities", "empty", _affinities("stack", weights="weights_empty"), "empty.keras", name="keras"),
    Row("affinities", "dimensions", _affinities("image"), "3-D volume"),
    Row("affinities", "dimensions", lambda f, o: ["affinities", f"{f['h5']}:four_d", o / "out.h5", "-w",
                                                  f["weights3d"]], "4-D", name="4d"),
    Row("affinities", "dimensions", _affinities("stack", weights="weights"), "use 'fusionnet-keras predict'",
        name="2d-model"),
    Row("affinities", "channels", _affinities("rgb"), "colour"),
    Row("affinities", "mixed-sizes", _affinities("mixed"), "s2.png"),
    Row("affinities", "pages-differ", _affinities("pages_differ"), "pages-differ.tif"),
    Row("affinities", "empty", lambda f, o: ["affinities", f"{f['h5']}:empty", o / "out.h5", "-w", f["weights3d"]],
        "empty"),
    Row("affinities", "empty", _affinities("zero_tif"), "zero.tif", name="zero-bytes"),
    Row("affinities", "one-pixel", _affinities("vol:voxel"), ok=_output_shape("out.h5", (3, 1, 1, 1))),
    Row("affinities", "aspect-ratio", _affinities("vol:thin"), ok=_output_shape("out.h5", (3, 1, 1, 4000))),
    Row("affinities", "nan-inf", _affinities("stack_nan"), "NaN"),
    Row("affinities", "value-range", _affinities("vol:raw_logits"), "outside [0, 1]"),
    Row("affinities", "value-range", _affinities("vol:negative"), "negative", name="negative"),
    Row("affinities", "value-range", _affinities("vol:raw_volume"), ok=_output_shape("out.h5", (3, 4, 24, 24)),
        name="uint8"),
    Row("affinities", "option-value", _affinities("stack", "--tta", "3"), "--tta"),
    Row("affinities", "option-value", _affinities("stack", "--block", "0,8,8"), "--block must be 3 positive",
        name="block-zero"),
    Row("affinities", "option-value", _affinities("stack", "--block", "4,8"), "--block must be 3 positive",
        name="block-two"),
    Row("affinities", "option-value", _affinities("vol:raw_volume", "--block", "1000000000", out="out.zarr"),
        ok=_output_shape("out.zarr", (3, 4, 24, 24)), name="block-huge"),
    Row("affinities", "option-value", _affinities("vol:raw_volume", "--block", "3,5,7", out="out.zarr"),
        ok=_output_shape("out.zarr", (3, 4, 24, 24)), name="block-odd"),
    Row("affinities", "option-value", _affinities("stack", "--tile", "0,8,8"), "--tile must be 3 positive",
        name="tile-zero"),
    Row("affinities", "option-value", _affinities("vol:raw_volume", "--tile", "1000000000"),
        ok=_output_shape("out.h5", (3, 4, 24, 24)), name="tile-huge"),
    Row("affinities", "option-value", _affinities("vol:raw_volume", "--tile", "3,5,7"),
        ok=_output_shape("out.h5", (3, 4, 24, 24)), name="tile-odd"),
    Row("affinities", "option-value", _affinities("stack", "--precision", "float8"), "--precision",
        name="precision"),
    Row("affinities", "option-value", _affinities("stack", "--workers", "0", out="out.zarr"), "--workers",
        name="workers-zero"),
    Row("affinities", "option-value", _affinities("stack", "--scheduler", "tcp://127.0.0.1:9", out="out.zarr"),
        "cannot reach the Dask scheduler", name="blockwise-scheduler"),
    Row("affinities", "contradictory", lambda f, o: ["affinities", f["stack"], f["stack"], "-w", f["weights3d"],
                                                     "--overwrite"], "is the input"),
    Row("affinities", "contradictory", _affinities("stack", "--resume", "--overwrite", out="out.zarr"), "contradict",
        name="resume-overwrite"),
    Row("affinities", "contradictory", _affinities("stack", "--workers", "1"), "zarr", name="blockwise-not-zarr"),
    Row("affinities", "contradictory", _affinities("stack", "--block", "4,8,8"), "zarr", name="block-not-zarr"),
    Row("affinities", "contradictory", _affinities("stack", "--tile", "4,8,8", "--block", "4,8,8", out="out.zarr"),
        "--tile is for in-memory", name="tile-blockwise"),
    Row("affinities", "output-exists", _affinities("stack", out="out.tif"), "output exists", setup=_existing_tif),
    Row("affinities", "output-exists", _affinities("vol:raw_volume", out="sub/deeper/out.tif"),
        ok=_output_shape("sub/deeper/out.tif", (3, 4, 24, 24)), name="new-folders"),
    Row("affinities", "output-exists", _affinities("stack", "--workers", "1", out="out.zarr:a"),
        "exists with shape (3, 4) and dtype uint8", setup=_existing_zarr, name="blockwise-shape"),
    Row("affinities", "output-in-container", _affinities("stack", out="out.h5:a"), "output exists",
        setup=_existing_h5),
    Row("affinities", "output-in-container", _affinities("vol:raw_volume", out="out.h5:b"), setup=_existing_h5,
        ok=lambda f, o, r: _h5_names(o / "out.h5") == ["a", "b", "grp", "grp/inner"], name="added"),
    Row("affinities", "output-in-container", _affinities("stack", "--overwrite", out="out.h5:grp"), "group",
        setup=_existing_h5, name="group"),
    Row("affinities", "output-in-container", _affinities("stack", out="out.zarr:a"), "output exists",
        setup=_existing_zarr, name="zarr"),
    Row("affinities", "output-in-container", _affinities("stack", "--overwrite", out="out.zarr"), "zarr group",
        setup=_existing_zarr, name="zarr-group"),
    Row("affinities", "read-only-output", _affinities("stack", out="ro/out.h5"), "permission denied",
        setup=_read_only, runner="unprivileged"),
    Row("affinities", "read-only-output", _affinities("stack", "--workers", "1", out="ro/out.zarr"), "read-only",
        setup=_read_only, runner="unprivileged", name="blockwise"),
    Row("affinities", "full-disk", _affinities("vol:raw_volume", "--overwrite", out="out.tif"), "No space left",
        setup=_existing_tif, runner="full-disk"),
    Row("affinities", "full-disk", _affinities("vol:raw_volume", out="out.h5:b"), "No space left",
        setup=_existing_h5, runner="full-disk", name="hdf5-in-place"),
    # --- evaluate ---------------------------------------------------------------------------------------
    Row("evaluate", "missing", _evaluate(MISSING, "labels"), "not found"),
    Row("evaluate", "missing", _evaluate("prob", MISSING), "not found", name="labels"),
    Row("evaluate", "unreadable", _evaluate("prob", "labels"), "permission denied", runner="unprivileged"),
    Row("evaluate", "folder", _evaluate("empty_folder", "labels"), "sections found"),
    Row("evaluate", "wrong-format", _evaluate("txt", "labels"), "'.txt'"),
    Row("evaluate", "corrupt", _evaluate("truncated_tif", "labels"), "truncated.tif"),
    Row("evaluate", "dimensions", lambda f, o: ["evaluate", f"{f['h5']}:four_d", f["labels"]], "4-D"),
    Row("evaluate", "dimensions", _evaluate("prob", "labels_small"), "differs", name="shape-mismatch"),
    Row("evaluate", "channels", _evaluate("rgb", "labels"), "colour"),
    Row("evaluate", "mixed-sizes", _evaluate("mixed", "labels"), "s2.png"),
    Row("evaluate", "pages-differ", _evaluate("pages_differ", "labels"), "pages-differ.tif"),
    Row("evaluate", "empty", _evaluate("zero_tif", "labels"), "zero.tif"),
    Row("evaluate", "one-pixel", _evaluate("one_pixel_prob", "one_pixel_label"), "single value"),
    Row("evaluate", "aspect-ratio", _evaluate("thin_prob", "thin_labels"), ok=_prints("V^Rand", "pixel error")),
    Row("evaluate", "nan-inf", _evaluate("nan", "labels"), "NaN"),
    Row("evaluate", "value-range", _evaluate("logits", "labels"), "[0, 1]"),
    Row("evaluate", "value-range", _evaluate("image", "labels"), ok=_prints("V^Rand"), name="uint8"),
    Row("evaluate", "labels", _evaluate("prob", "labels_multi"), "not binary"),
    Row("evaluate", "labels", _evaluate("prob", "labels_all_cell"), "single value", name="all-cell"),
    Row("evaluate", "labels", _evaluate("prob", "labels_all_membrane"), "single value", name="all-membrane"),
    Row("evaluate", "option-value", _evaluate("prob", "labels", "--median", "-1"), "--median"),
    Row("evaluate", "option-value", _evaluate("prob", "labels", "--median", "100000"), "at most 31",
        name="median-huge"),
    Row("evaluate", "contradictory", _evaluate("prob", "labels", "--instances", "--median", "2"), "--median"),
    # --- evaluate --instances ---------------------------------------------------------------------------
    Row("evaluate-instances", "missing", lambda f, o: ["evaluate", MISSING, f"{f['vol']}:gt", "--instances"],
        "not found"),
    Row("evaluate-instances", "unreadable", _instances("gt", "gt"), "permission denied", runner="unprivileged"),
    Row("evaluate-instances", "folder", lambda f, o: ["evaluate", f["empty_folder"], f"{f['vol']}:gt",
                                                      "--instances"], "sections found"),
    Row("evaluate-instances", "wrong-format", lambda f, o: ["evaluate", f["txt"], f"{f['vol']}:gt", "--instances"],
        "'.txt'"),
    Row("evaluate-instances", "corrupt", lambda f, o: ["evaluate", f"{f['h5_truncated']}:stack", f"{f['vol']}:gt",
                                                       "--instances"], "truncated.h5"),
    Row("evaluate-instances", "dimensions", _instances("labels2d", "gt"), "3-D"),
    Row("evaluate-instances", "dimensions", _instances("gt_small", "gt"), "differs", name="shape-mismatch"),
    Row("evaluate-instances", "empty", _instances("ball_empty", "ball_empty"), "empty"),
    Row("evaluate-instances", "one-pixel", _instances("ball_voxel", "ball_voxel"), ok=_prints("VI", "0.0000")),
    Row("evaluate-instances", "nan-inf", _instances("nan_labels", "gt"), "integer labels"),
    Row("evaluate-instances", "value-range", _instances("negative", "gt"), "negative"),
    Row("evaluate-instances", "value-range", _instances("fractional", "gt"), "integer labels", name="fractional"),
    Row("evaluate-instances", "labels", _instances("gt", "gt_zero"), "no labelled"),
    Row("evaluate-instances", "contradictory", _instances("gt", "gt", "--median", "2"), "--median"),
    # --- train --------------------------------------------------------------------------------------------
    Row("train", "missing", _train(config="/nonexistent/missing.toml"), "not found"),
    Row("train", "missing", _train("--set", "data.images=/nonexistent/x.tif"), "not found", name="data"),
    Row("train", "unreadable", _train(), "permission denied", runner="unprivileged"),
    Row("train", "folder", _train(config="empty_folder"), "is a directory"),
    Row("train", "wrong-format", _train(config="image"), "not a TOML"),
    Row("train", "corrupt", _train(config="toml_broken"), "invalid TOML"),
    Row("train", "empty", _train(config="toml_empty"), "not found"),  # the defaults: data not in FUSIONNET_DATA_DIR
    Row("train", "dimensions", _train("--set", "data.labels=" + "{labels}"), "differ"),
    Row("train", "mixed-sizes", _train("--set", "data.images={mixed}"), "s2.png"),
    Row("train", "nan-inf", _train("--set", "data.images={stack_nan}"), "NaN"),
    Row("train", "labels", _train("--set", "data.labels={stack}"), "binary"),
    Row("train", "labels", _train("--set", "data.labels={stack_labels_single}"), "single value", name="single"),
    Row("train", "option-value", _train("--set", "train.epochs=-1"), "'train.epochs'"),
    Row("train", "option-value", _train("--set", "train.crop=4096"), "crop", name="crop-huge"),
    Row("train", "option-value", _train("--set", "train.batch_size=0"), "'train.batch_size'", name="batch-zero"),
    # 3-D affinity configs (model.architecture unet3d / fusionnet3d) have their own validated schema
    Row("train", "option-value", _train("--set", "train.input_shape=[14,27,27]", config="toml_affinity"),
        "does not fit", name="affinity-input-shape"),
    Row("train", "option-value", _train("--set", "train.crop=64", config="toml_affinity"),
        "unknown config key 'train.crop'", name="affinity-unknown-key"),
    Row("train", "option-value", _train("--set", "model.offsets=[[-1,0,0],[0,-1]]", config="toml_affinity"),
        "'model.offsets'", name="offsets-malformed"),
    Row("train", "option-value", _train("--set", "model.offsets=[[-1,0,0],[0,-1,0],[0,0,-1],[0,-5,0]]",
                                        config="toml_affinity"), "MALIS", name="offsets-malis"),
    Row("train", "option-value", _train("--set", "train.loss=mae", config="toml_affinity"),
        "'train.loss' must be one of malis", name="affinity-loss"),
    Row("train", "option-value", _train("--set", "train.precision=float8", config="toml_affinity"),
        "'train.precision' must be one of float32, bfloat16, float16, auto", name="affinity-precision"),
    Row("train", "option-value", _train("--set", "model.architecture=fusionnet", config="toml_affinity"),
        "asks for the 2-D network 'fusionnet'", name="affinity-to-2d"),
    Row("cv", "option-value", _train(command="cv", config="toml_affinity"), "use train", name="affinity"),
    Row("train", "contradictory", _train("--resume", "--overwrite"), "contradict", setup=lambda f, o: _finished_run(o)),
    Row("train", "output-exists", _train(), "exists", setup=lambda f, o: (o / "run").mkdir() or
        (o / "run" / "notes.txt").write_text("keep")),
    Row("train", "read-only-output", _train(out="ro/run"), "permission denied", setup=_read_only,
        runner="unprivileged"),
    # --- cv -------------------------------------------------------------------------------------------------
    Row("cv", "missing", _train(command="cv", config="/nonexistent/missing.toml"), "not found"),
    Row("cv", "folder", _train(command="cv", config="empty_folder"), "is a directory"),
    Row("cv", "wrong-format", _train(command="cv", config="image"), "not a TOML"),
    Row("cv", "option-value", _train("--folds", "1", command="cv"), "--folds"),
    Row("cv", "option-value", _train("--folds", "1000", command="cv"), "sections", name="folds-huge"),
    Row("cv", "contradictory", _train("--resume", "--overwrite", command="cv"), "contradict",
        setup=lambda f, o: _finished_run(o)),
    Row("cv", "output-exists", _train(command="cv"), "exists", setup=lambda f, o: (o / "run").mkdir() or
        (o / "run" / "notes.txt").write_text("keep")),
    # --- morphology -----------------------------------------------------------------------------------------
    *_label_volume_rows("morphology", _morph, nan="ball_nan", negative="ball_negative", done="1 nuclei"),
    Row("morphology", "unreadable", _morph("ball"), "permission denied", runner="unprivileged"),
    Row("morphology", "option-value", lambda f, o: ["morphology", f"{f['vol']}:ball", "--voxel-size", "0,1,1",
                                                    "--out", o / "t.csv"], "--voxel-size"),
    Row("morphology", "option-value", lambda f, o: ["morphology", f"{f['vol']}:ball", "--voxel-size", "nan,1,1",
                                                    "--out", o / "t.csv"], "--voxel-size", name="nan"),
    Row("morphology", "option-value", _morph("ball", "--clusters", "0"), "--clusters", name="clusters-zero"),
    Row("morphology", "option-value", _morph("ball", "--clusters", "1000000"), ok=_prints("1 nuclei"),
        name="clusters-huge"),
    Row("morphology", "contradictory", lambda f, o: ["morphology", f"{f['vol']}:ball", "--voxel-size", "1,1,1",
                                                     "--out", o / "t.csv", "--image", f"{f['vol']}:gt"], "shape"),
    Row("morphology", "output-exists", _morph("ball", out="t.csv"), "output exists",
        setup=lambda f, o: (o / "t.csv").write_text("keep\n")),
    Row("morphology", "read-only-output", _morph("ball", out="ro/t.csv"), "permission denied", setup=_read_only,
        runner="unprivileged"),
    Row("morphology", "full-disk", _morph("ball", "--overwrite"), "No space left",
        setup=lambda f, o: (o / "t.csv").write_text("keep\n"), runner="full-disk"),
    # morphology, blockwise (--workers / --block / --scheduler)
    Row("morphology", "option-value", _morph("ball", "--block", "0,8,8"), "--block must be 3 positive",
        name="blockwise-block"),
    Row("morphology", "option-value", _morph("ball", "--scheduler", "tcp://127.0.0.1:9"),
        "cannot reach the Dask scheduler", name="blockwise-scheduler"),
    Row("morphology", "dimensions", _morph("labels2d", "--block", "4,8,8"), "3-D", name="blockwise"),
    Row("morphology", "nan-inf", _morph("ball_nan", "--block", "4,8,8"), "NaN", name="blockwise"),
    Row("morphology", "value-range", _morph("ball_negative", "--workers", "1", "--block", "4,8,8"), "negative",
        name="blockwise"),
    Row("morphology", "one-pixel", _morph("ball_voxel", "--workers", "1"), ok=_prints("1 nuclei"), name="blockwise"),
    Row("morphology", "output-exists", _morph("ball", "--block", "4,8,8"), "output exists",
        setup=lambda f, o: (o / "t.csv").write_text("keep\n"), name="blockwise"),
    Row("morphology", "output-exists", _morph("ball", "--block", "4,8,8"), "work files of another run",
        setup=_other_work, name="blockwise-work"),
    Row("morphology", "read-only-output", _morph("ball", "--block", "4,8,8", out="ro/t.csv"), "permission denied",
        setup=_read_only, runner="unprivileged", name="blockwise"),
    # --- meshes -----------------------------------------------------------------------------------------------
    *_label_volume_rows("meshes", _meshes, nan="nan_labels", negative="negative", done="1 meshes"),
    Row("meshes", "labels", _meshes("gt_zero"), "no labels (all zero)"),
    Row("meshes", "labels", _meshes("gt_zero", "--block", "2,8,8"), "no labels (all zero)", name="blockwise"),
    Row("meshes", "nan-inf", _meshes("nan_labels", "--workers", "1", "--block", "2,8,8"), "NaN", name="blockwise"),
    Row("meshes", "option-value", _meshes("gt", "--voxel-size", "0,1,1"), "zero", name="voxel-size-zero"),
    Row("meshes", "option-value", _meshes("gt", "--voxel-size", "40,8"), "3 numbers", name="voxel-size-length"),
    Row("meshes", "option-value", _meshes("gt", "--simplify", "-1"), "--simplify", name="simplify"),
    Row("meshes", "option-value", _meshes("gt", "--block", "0,8,8"), "--block must be 3 positive", name="block"),
    Row("meshes", "output-exists", _meshes("gt", out="m"), "output exists",
        setup=lambda f, o: ((o / "m").mkdir(), (o / "m" / "info").write_text("keep\n"))),
    Row("meshes", "read-only-output", _meshes("gt", out="ro/m"), "permission denied", setup=_read_only,
        runner="unprivileged"),
    # --- view (never serves here: every row fails before the server starts) -------------------------------------
    Row("view", "missing", _view(MISSING), "not found"),
    Row("view", "missing", _view(labels=MISSING), "not found", name="labels"),
    Row("view", "folder", _view("empty_folder"), "sections found"),
    Row("view", "wrong-format", _view("txt"), "'.txt'"),
    Row("view", "wrong-format", lambda f, o: ["view", _spec(f, "raw_volume"), "--labels", _spec(f, "gt"), "--meshes",
                                              f["dir"], "--no-browser"], "no info file", name="meshes"),
    Row("view", "dimensions", _view("labels2d"), "3-D volumes"),
    Row("view", "dimensions", _view(labels="gt_small"), "same voxels", name="labels-shape"),
    Row("view", "dimensions", _view("raw_volume", "--affinities", f"{MISSING}"), "not found", name="affinities"),
    Row("view", "empty", _view("ball_empty"), "empty"),
    Row("view", "option-value", _view("raw_volume", "--port", "70000"), "--port", name="port"),
    Row("view", "option-value", _view("raw_volume", "--voxel-size", "-4,4,4"), "negative", name="voxel-size"),
    Row("view", "option-value", lambda f, o: ["view", _spec(f, "raw_volume"), "--screenshot", o / "s.png", "--size",
                                              "10x10"], "--size", name="size"),
    Row("view", "contradictory", _view("raw_volume", "--meshes", "/nonexistent/m"), "--meshes needs --labels"),
    Row("view", "output-exists", lambda f, o: ["view", _spec(f, "raw_volume"), "--screenshot", o / "s.png"],
        "output exists", setup=lambda f, o: (o / "s.png").write_bytes(b"keep")),
    # --- info -------------------------------------------------------------------------------------------------
    Row("models", "missing", lambda f, o: ["models", "no-such-model"], "unknown model 'no-such-model'"),
    # --- export (bioimage.io): nothing is left behind but what was there (rows with a setup check that)
    Row("export", "missing", _export("weights_missing"), "not found"),
    Row("export", "missing", _export("no-such-model"), "unknown model 'no-such-model'", name="name"),
    Row("export", "missing", _export("weights", "--sample", MISSING), "not found", name="sample"),
    Row("export", "unreadable", _export("weights"), "permission denied", runner="unprivileged"),
    Row("export", "folder", _export("empty_folder"), "directory"),
    Row("export", "folder", _export("weights", out="dir.zip"), "directory", name="output",
        setup=lambda f, o: (o / "dir.zip").mkdir()),
    Row("export", "wrong-format", _export("txt"), "notes.txt"),
    Row("export", "wrong-format", _export("weights_h5"), "weights.h5", name="h5"),
    Row("export", "wrong-format", _export("weights", out="pkg.tar"), ".zip", name="output"),
    Row("export", "corrupt", _export("weights_truncated"), "truncated"),
    Row("export", "empty", _export("weights_empty"), "empty"),
    Row("export", "dimensions", _export("foreign"), "incompatible weights", name="foreign-model"),
    Row("export", "dimensions", _export("weights3d", "--sample", "{image}"), "expected a 3-D image", name="sample"),
    Row("export", "value-range", _export("weights", "--sample", "{prob}"), "uint8"),
    Row("export", "option-value", _export("weights", "--format", "onnx"), "--format"),
    Row("export", "option-value", _export("weights", "--name", "n/a"), "model name 'n/a'", name="name"),
    Row("export", "output-exists", _export("weights"), "output exists", setup=_existing_zip),
    Row("export", "read-only-output", _export("weights", out="ro/pkg.zip"), "permission denied", setup=_read_only,
        runner="unprivileged"),
    Row("export", "full-disk", _export("weights", "--overwrite"), "No space left", setup=_existing_zip,
        runner="full-disk"),
    Row("neurons", "missing", _neurons(MISSING), "not found"),
    Row("neurons", "missing", _neurons("stack", weights="weights_missing"), "weights not found", name="model"),
    Row("neurons", "folder", _neurons("empty_folder"), "sections found"),
    Row("neurons", "wrong-format", _neurons("txt"), "'.txt'"),
    Row("neurons", "wrong-format", _neurons("stack", weights="weights"), "use 'fusionnet-keras predict'",
        name="2-d-model"),
    Row("neurons", "corrupt", _neurons("truncated_tif"), "truncated.tif"),
    Row("neurons", "corrupt", _neurons("vol:raw_volume", classifier="clf_truncated"), "clf-truncated.npz",
        name="classifier"),
    Row("neurons", "dimensions", _neurons("image"), "3-D volume"),
    Row("neurons", "channels", _neurons("rgb"), "colour"),
    Row("neurons", "empty", _neurons("zero_tif"), "zero.tif"),
    Row("neurons", "nan-inf", _neurons("stack_nan"), "NaN"),
    Row("neurons", "value-range", _neurons("vol:raw_logits"), "outside [0, 1]"),
    Row("neurons", "option-value", _neurons("stack", "--threshold", "2"), "--threshold"),
    Row("neurons", "option-value", _neurons("stack", "--tta", "3"), "--tta", name="tta"),
    Row("neurons", "contradictory", lambda f, o: ["neurons", f["stack"], f["stack"], "--model", f["weights3d"],
                                                  "--classifier", f["clf"], "--overwrite"], "is the input"),
    Row("neurons", "output-exists", _neurons("stack", out="out.tif"), "output exists", setup=_existing_tif),
    Row("neurons", "output-in-container", _neurons("stack", out="out.h5:a"), "output exists", setup=_existing_h5),
    Row("info", "missing", lambda f, o: ["info", "/nonexistent/m.keras"], "not found"),
    Row("info", "unreadable", lambda f, o: ["info", f["weights"]], "permission denied", runner="unprivileged"),
    Row("info", "folder", lambda f, o: ["info", f["dir"]], "is a directory"),
    Row("info", "wrong-format", lambda f, o: ["info", f["weights_h5"]], ".keras"),
    Row("info", "corrupt", lambda f, o: ["info", f["weights_truncated"]], "truncated.keras"),
    Row("info", "empty", lambda f, o: ["info", f["weights_empty"]], "empty.keras"),
    Row("info", "option-value", lambda f, o: ["info", f["weights"], "--size", "0"], "--size"),
    Row("info", "option-value", lambda f, o: ["info", f["weights"], "--size", "30"], "divisible", name="size-odd"),
    Row("info", "option-value", lambda f, o: ["info", f["weights"], "--size", "1048576"],
        ok=_prints("1048576x1048576"), name="size-huge"),
    # --- segment ----------------------------------------------------------------------------------------------
    Row("segment", "missing", lambda f, o: ["segment", MISSING, o / "seg.h5"], "not found"),
    Row("segment", "unreadable", _segment("affinities"), "permission denied", runner="unprivileged"),
    Row("segment", "folder", lambda f, o: ["segment", f["empty_folder"], o / "seg.h5"], "sections found"),
    Row("segment", "wrong-format", lambda f, o: ["segment", f["txt"], o / "seg.h5"], "'.txt'"),
    Row("segment", "wrong-format", _segment("affinities", out="seg.png"), "output format", name="output"),
    Row("segment", "corrupt", lambda f, o: ["segment", f"{f['h5_truncated']}:stack", o / "seg.h5"], "truncated.h5"),
    Row("segment", "corrupt", _segment("affinities", "--classifier", "{clf_truncated}"), "clf-truncated.npz",
        name="classifier"),
    Row("segment", "dimensions", _segment("flat"), "shape"),
    Row("segment", "channels", _segment("two_channels"), "2 channels"),
    Row("segment", "empty", _segment("empty"), "empty"),
    Row("segment", "one-pixel", _segment("voxel"), ok=lambda f, o, r: "wrote" in r.stdout),
    Row("segment", "aspect-ratio", _segment("thin"), ok=lambda f, o, r: "wrote" in r.stdout),
    Row("segment", "nan-inf", _segment("nan"), "NaN"),
    Row("segment", "value-range", _segment("big"), "[0, 1]"),
    Row("segment", "option-value", _segment("affinities", "--threshold", "2"), "--threshold"),
    Row("segment", "option-value", _segment("affinities", "--ws-size", "-1"), "--ws-size", name="ws-size"),
    Row("segment", "option-value", _segment("affinities", "--thresholds", "a,b"), "--thresholds", name="thresholds"),
    Row("segment", "option-value", _segment("affinities", "--thresholds", "0.5,7"), "7", name="threshold-range"),
    # --- multicut, lifted multicut, mutex watershed (issue 27) ---
    Row("segment", "option-value", _segment("affinities", "--method", "multicut", "--threshold", "1"),
        "beta must lie in (0, 1)", name="beta"),
    Row("segment", "option-value", _segment("affinities", "--method", "lifted-multicut", "--fragments", "{vol}:one"),
        "no edges", name="no-edges"),
    Row("segment", "option-value", _segment("affinities", "--method", "multicut", "--classifier", "{clf_other}"),
        "other features", name="classifier-features"),
    Row("segment", "option-value", _segment("long", "--method", "mws", "--offsets", "0,-2"), "three integers",
        name="offsets-malformed"),
    Row("segment", "channels", _segment("long", "--method", "mws", "--offsets", "0,-2,0"),
        "2 long-range channels after the 3 nearest neighbours, but 1", name="offsets-channels"),
    Row("segment", "channels", _segment("long", "--method", "mws"), "stores no affinity offsets",
        name="offsets-missing"),
    Row("segment", "channels", _segment("affinities", "--method", "mws"), "need long-range", name="mws-nearest"),
    Row("segment", "contradictory", _segment("affinities", "--threshold", "0.5", "--thresholds", "0.3"), "either"),
    Row("segment", "contradictory", _segment("affinities", "--method", "watershed", "--threshold", "0.5"),
        "no --threshold", name="watershed"),
    Row("segment", "output-exists", _segment("affinities", out="out.tif"), "output exists", setup=_existing_tif),
    Row("segment", "output-in-container", _segment("affinities", "--thresholds", "0.5", out="out.h5:grp"),
        "output exists", setup=lambda f, o: _write_h5(o / "out.h5", **{"grp/threshold_0.5": np.zeros(2)})),
    Row("segment", "output-in-container", _segment("affinities", out="out.zarr:a"), "output exists",
        setup=_existing_zarr, name="zarr"),
    Row("segment", "read-only-output", _segment("affinities", out="ro/seg.h5"), "permission denied",
        setup=_read_only, runner="unprivileged"),
    Row("segment", "full-disk", _segment("affinities", out="out.h5:b"), "No space left", setup=_existing_h5,
        runner="full-disk"),
    # segment, blockwise: outputs checked before any worker starts, finished blocks kept
    Row("segment", "option-value", _segment("affinities", "--scheduler", "tcp://127.0.0.1:9", out="seg.zarr"),
        "cannot reach the Dask scheduler", name="blockwise-scheduler"),
    Row("segment", "option-value", _segment("affinities", "--block", "4,8,8", "--context", "0,1,1", out="seg.zarr"),
        "--context must be 3 positive", name="blockwise-context"),
    Row("segment", "contradictory", _segment("affinities", "--context", "2,8,8"), "--context is for blockwise",
        name="context-in-memory"),
    Row("segment", "contradictory", _segment("affinities", "--block", "4,8,8"), "zarr", name="block-not-zarr"),
    Row("segment", "contradictory", _segment("affinities", "--block", "4,8,8", "--fragments", "{vol}:frags",
                                             out="seg.zarr"), "not supported blockwise", name="blockwise-fragments"),
    Row("segment", "output-exists", _segment("affinities", "--block", "4,8,8", out="out.zarr:a"),
        "exists with shape (3, 4) and dtype uint8", setup=_existing_zarr, name="blockwise-shape"),
    Row("segment", "read-only-output", _segment("affinities", "--block", "4,8,8", out="ro/seg.zarr"), "read-only",
        setup=_read_only, runner="unprivileged", name="blockwise"),
    Row("segment", "full-disk", _segment("affinities", out="out.zarr:b"), "No space left", setup=_existing_zarr,
        runner="full-disk", name="zarr"),
    # --- train-agglomeration ----------------------------------------------------------------------------------
    Row("train-agglomeration", "missing", lambda f, o: ["train-agglomeration", MISSING, f"{f['vol']}:frags",
                                                        f"{f['vol']}:gt", o / "c.npz"], "not found"),
    Row("train-agglomeration", "folder", lambda f, o: ["train-agglomeration", f"{f['vol']}:affinities",
                                                       f["empty_folder"], f"{f['vol']}:gt", o / "c.npz"],
        "sections found"),
    Row("train-agglomeration", "folder", _agglo(out="dir"), "directory", name="output",
        setup=lambda f, o: (o / "dir").mkdir()),
    Row("train-agglomeration", "wrong-format", lambda f, o: ["train-agglomeration", f"{f['vol']}:affinities",
                                                             f["txt"], f"{f['vol']}:gt", o / "c.npz"], "'.txt'"),
    Row("train-agglomeration", "corrupt", lambda f, o: ["train-agglomeration", f"{f['h5_truncated']}:stack",
                                                        f"{f['vol']}:frags", f"{f['vol']}:gt", o / "c.npz"],
        "truncated.h5"),
    Row("train-agglomeration", "dimensions", _agglo(gt="gt_small"), "differs"),
    Row("train-agglomeration", "value-range", _agglo(gt="negative"), "negative"),
    Row("train-agglomeration", "labels", _agglo(gt="gt_zero"), "no labelled"),
    Row("train-agglomeration", "option-value", _agglo("affinities", "frags", "gt", "--epochs", "0"), "--epochs"),
    Row("train-agglomeration", "option-value", _agglo("affinities", "frags", "gt", "--trees", "0"), "--trees",
        name="trees"),
    Row("train-agglomeration", "output-exists", _agglo(out="c.npz"), "output exists",
        setup=lambda f, o: (o / "c.npz").write_bytes(b"keep")),
    Row("train-agglomeration", "read-only-output", _agglo(out="ro/c.npz"), "permission denied", setup=_read_only,
        runner="unprivileged"),
    Row("train-agglomeration", "full-disk", _agglo("affinities", "frags", "gt", "--overwrite", out="c.npz"),
        "No space left", setup=lambda f, o: (o / "c.npz").write_bytes(b"keep"), runner="full-disk"),
    # --- voxel sizes and OME-Zarr inputs (every command that writes a volume takes --voxel-size) ----------------
    Row("predict", "option-value", _predict("image", "--voxel-size", "4,4"), "3 numbers", name="voxel-size-length"),
    Row("predict", "option-value", _predict("image", "--voxel-size", "0,4,4"), "Z is zero", name="voxel-size-zero"),
    Row("predict", "option-value", _predict("image", "--voxel-size", "40,-4,4"), "Y is negative",
        name="voxel-size-negative"),
    Row("predict", "option-value", _predict("image", "--voxel-size", "40,4,nm"), "X is not a number",
        name="voxel-size-text"),
    Row("affinities", "option-value", _affinities("vol:raw_volume", "--voxel-size", "0,0,0"), "zero",
        name="voxel-size"),
    Row("segment", "option-value", _segment("affinities", "--voxel-size", "1,1,1,1"), "3 numbers", name="voxel-size"),
    Row("neurons", "option-value", _neurons("stack", "--voxel-size", "-40,4,4"), "negative", name="voxel-size"),
    Row("predict", "contradictory", _predict("image", "--pyramid"), "--pyramid needs a zarr output", name="pyramid"),
    Row("predict", "corrupt", _predict("ome_two"), "holds 2 multiscales", name="ome-two-multiscales"),
    Row("predict", "corrupt", _predict("ome_no_level"), "no level 0", name="ome-no-level-0"),
    Row("predict", "corrupt", _predict("ome_missing_level"), "level 0 '9' is missing", name="ome-missing-level-0"),
    Row("segment", "corrupt", lambda f, o: ["segment", f["ome_two"], o / "seg.zarr"], "holds 2 multiscales",
        name="ome-two-multiscales"),
    # --- pyramid ------------------------------------------------------------------------------------------------
    Row("pyramid", "missing", lambda f, o: ["pyramid", "/nonexistent/x.zarr"], "not found"),
    Row("pyramid", "wrong-format", lambda f, o: ["pyramid", f["stack"]], "must be a zarr"),
    Row("pyramid", "wrong-format", lambda f, o: ["pyramid", f["zarr_plain"]], "not an OME-Zarr image",
        name="plain-array"),
    Row("pyramid", "corrupt", lambda f, o: ["pyramid", f["ome_two"]], "holds 2 multiscales"),
    Row("pyramid", "corrupt", lambda f, o: ["pyramid", f["ome_no_level"]], "no level 0", name="no-level-0"),
    Row("pyramid", "corrupt", lambda f, o: ["pyramid", f["zarr_corrupt"]], "corrupt.zarr", name="zarr"),
    Row("pyramid", "dimensions", lambda f, o: ["pyramid", f["ome_1d"]], "not a 2-D or 3-D image"),
    Row("pyramid", "option-value", lambda f, o: ["pyramid", o / "img.zarr", "--levels", "0"], "--levels",
        setup=lambda f, o: _ome_image(o / "img.zarr")),
    Row("pyramid", "option-value", lambda f, o: ["pyramid", o / "img.zarr", "--levels", "12"],
        "cannot be downsampled further", setup=lambda f, o: _ome_image(o / "img.zarr"), name="too-many-levels"),
    Row("pyramid", "output-exists", lambda f, o: ["pyramid", o / "img.zarr"], "output exists",
        setup=lambda f, o: _ome_image(o / "img.zarr", pyramid=True)),
]


def _ome_image(store, pyramid=False):
    """A small OME-Zarr image written by the package (with its pyramid)."""
    from fusionnet_keras.blockwise.pyramid import build_pyramid
    from fusionnet_keras.data.io import write_volume
    from fusionnet_keras.data.io.ome import ImageMeta

    write_volume(store, np.arange(4 * 64 * 64, dtype=np.float32).reshape(4, 64, 64) / (4 * 64 * 64),
                 meta=ImageMeta(voxel_size=(40, 4, 4)))
    if pyramid:
        build_pyramid(store, levels=1, workers=0, progress=False)


def _h5_names(path):
    names = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    return sorted(names)


# ---------------------------------------------------------------------------
# running a row


def _resolve(args, f, o):
    """Arguments as strings; ``{name}`` inside an argument is replaced by the input's path."""
    out = []
    for a in args(f, o):
        text = str(a)
        if "{" in text:
            text = text.format(**f)
        out.append(text)
    return out


def _invoke(args, o):
    env = {"FUSIONNET_DATA_DIR": str(o / "no-data")}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=True)


@dataclasses.dataclass
class _Result:
    exit_code: int
    stdout: str
    stderr: str


def _drop_file_permission_capabilities():  # pragma: no cover - runs in the child
    """As root, give up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH so that file permissions apply."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # PR_CAPBSET_DROP = 24; the bounding set decides what exec gives back to root
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _unprivileged(args, o) -> _Result:
    env = {**os.environ, "FUSIONNET_DATA_DIR": str(o / "no-data"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "fusionnet_keras.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_drop_file_permission_capabilities)
    return _Result(proc.returncode, proc.stdout, proc.stderr)


def _chmod_inputs_for(row, args, f):
    """The unreadable row's input: the first argument that is one of the inputs, made unreadable."""
    for a in args[1:]:
        path = Path(a.split(":")[0] if ".h5:" in a or ".zarr:" in a else a)
        if path.exists() and str(path).startswith(str(f["dir"])):
            return path
    raise AssertionError(f"{row.id}: no input to make unreadable")


@pytest.fixture
def full_disk(monkeypatch):
    """Every writer fails with ENOSPC after writing part of its data (atomic files, HDF5 datasets, zarr arrays)."""
    import fusionnet_keras.data.io.writers as writers
    import fusionnet_keras.utils.atomic as atomic

    def enospc():
        return OSError(errno.ENOSPC, "No space left on device")

    original = atomic.atomic_path

    def failing_atomic_path(path, suffix=None):
        import contextlib

        @contextlib.contextmanager
        def cm():
            with original(path, suffix) as tmp:
                yield tmp
                with open(tmp, "ab") as fh:
                    fh.write(b"partial")
                raise enospc()
        return cm()

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("fusionnet_keras") and \
                getattr(module, "atomic_path", None) is original:
            monkeypatch.setattr(module, "atomic_path", failing_atomic_path)
    create, zarr_create = writers._h5_create, writers._zarr_create_image

    def failing_h5_create(h5, key, arr, meta=None):
        create(h5, key, arr[: max(1, len(arr) // 2)], meta)
        raise enospc()

    def failing_zarr_create(store, arr, meta=None, zarr_format=None):
        zarr_create(store, arr, meta, zarr_format=zarr_format)
        raise enospc()

    monkeypatch.setattr(writers, "_h5_create", failing_h5_create)
    monkeypatch.setattr(writers, "_zarr_create_image", failing_zarr_create)


def _run_row(row, f, o, request):
    if row.setup:
        row.setup(f, o)
    args = _resolve(row.args, f, o)
    if row.runner == "unprivileged":
        target = None
        if row.kind == "unreadable":
            target = _chmod_inputs_for(row, args, f)
            mode = target.stat().st_mode
            os.chmod(target, 0)
        try:
            return _unprivileged(args, o)
        finally:
            if target is not None:
                os.chmod(target, mode)
    if row.runner == "full-disk":
        request.getfixturevalue("full_disk")
    return _invoke(args, o)


def _assert_one_line_error(result, needle, late=False):
    """Exit 2, one line ``Error: ...`` containing ``needle``; nothing on stdout unless the error came
    ``late`` (after the work, e.g. a full disk at the write: progress lines may precede it)."""
    stderr = result.stderr
    assert "Traceback" not in stderr and "Traceback" not in result.stdout, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    assert late or result.stdout == "", result.stdout


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row, inputs, tmp_path, request):
    f = {**inputs, "weights_missing": Path("/nonexistent/m.keras"), "dir": inputs["dir"]}
    (tmp_path / "no-data").mkdir()
    before_inputs = _checksums(inputs["dir"])
    outputs_before = None
    if row.setup:
        row.setup(f, tmp_path)
        outputs_before = _checksums(tmp_path)
        row = dataclasses.replace(row, setup=None)
    result = _run_row(row, f, tmp_path, request)
    if row.needle is not None:
        _assert_one_line_error(result, row.needle, late=row.runner == "full-disk")
    else:
        assert result.exit_code == 0, (result.exit_code, result.stderr, result.stdout)
        assert "Traceback" not in result.stderr
        row.ok(f, tmp_path, result)
    assert _checksums(inputs["dir"]) == before_inputs, "an input changed"
    if outputs_before is not None and row.needle is not None:
        after = _checksums(tmp_path)
        assert {k: v for k, v in after.items() if k in outputs_before} == outputs_before, "an existing output changed"
        leftovers = sorted(set(after) - set(outputs_before))
        assert leftovers == [], f"files left behind: {leftovers}"


def test_every_command_meets_every_class():
    # every command of the command line has its rows (a new command fails here until it is added)
    assert set(main.commands) == set(COMMANDS) - {"evaluate-instances"}
    covered = {(r.command, r.kind) for r in ROWS}
    wanted = {(c, k) for c, kinds in APPLIES.items() for k in kinds if k != "killed-write"}
    assert set(APPLIES) == set(COMMANDS) and all(k in KINDS for kinds in APPLIES.values() for k in kinds)
    assert sorted(wanted - covered) == []
    assert {r.command for r in ROWS} == set(COMMANDS)


# ---------------------------------------------------------------------------
# real processes: concurrent writers, quiet output, kill -9 during a write


def _cli_process(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must quieten TensorFlow itself
    return subprocess.Popen([sys.executable, "-m", "fusionnet_keras.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_concurrent_predicts_into_one_file_keep_both_and_print_only_their_own_lines(inputs, tmp_path):
    """``predict ... out.h5:a`` and ``predict ... out.h5:b`` at once: both datasets end up in the file, and
    stderr holds no line of TensorFlow/absl/oneDNN (their C++ start-up chatter is silenced)."""
    out = tmp_path / "out.h5"
    procs = [_cli_process("predict", inputs["image"], f"{out}:{key}", "-w", inputs["weights"], *TTA1, *PAD)
             for key in ("a", "b")]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for stdout, stderr, code in results:
        assert code == 0, stderr
        assert stderr == "", stderr  # not even one line of TensorFlow's
        assert stdout.startswith("wrote ") and len(stdout.splitlines()) == 1, stdout
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["a", "b"]
        np.testing.assert_array_equal(f["a"][()], f["b"][()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]  # no lock or temporary left


def test_verbose_lets_tensorflow_speak(inputs, tmp_path):
    p = _cli_process("--verbose", "info", inputs["weights"], "--size", "64")
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0 and "parameters:" in stdout
    assert "oneDNN" in stderr or "absl" in stderr or "cpu_feature_guard" in stderr, stderr


def test_killed_predict_leaves_the_container_intact(inputs, tmp_path):
    """``kill -9`` while ``predict`` writes a large dataset into an existing HDF5 file: the file still opens,
    its other dataset is unchanged, the new one is absent (or whole), and the next write cleans up."""
    big = tmp_path / "big.h5"
    _write_h5(big, stack=np.random.default_rng(0).integers(0, 256, (12, 512, 512), dtype=np.uint8))
    out = tmp_path / "out.h5"
    old = np.arange(1000, dtype=np.float64)
    _write_h5(out, old=old)
    size = out.stat().st_size
    proc = _cli_process("predict", f"{big}:stack", f"{out}:new", "-w", inputs["weights"], *TTA1, *PAD)
    killed = False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if out.stat().st_size > size:  # the new dataset is being written into the file
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.001)
    proc.communicate(timeout=60)
    assert killed, f"not killed during the write (exit {proc.returncode})"
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["old"][()], old)
        names = sorted(f)
    assert names in (["old"], ["new", "old"]) or any(n.startswith(".new.tmp-") for n in names), names
    from fusionnet_keras.data.io import read_volume, write_volume

    assert read_volume(f"{out}:old").shape == old.shape  # a reader does not see a temporary dataset
    write_volume(f"{out}:again", np.ones((4, 4), np.float32))
    with h5py.File(out, "r") as f:
        assert [n for n in f if n.startswith(".")] == []  # the next writer removed what the kill left


def test_resume_cleans_what_a_killed_writer_left(tmp_path):
    """A process killed inside the package's atomic writers leaves ``.NAME.tmp-*`` files and folders;
    resuming the run removes exactly those and keeps everything else."""
    from fusionnet_keras.training import config_files
    from fusionnet_keras.training.rundir import prepare_run_dir

    config = config_files.load_config([], ["name='r'"])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config_files.save_config(config, run / "config.json")
    (run / "notes.tmp").write_text("mine")  # not a writer's temporary: kept
    code = (
        "import os, signal, sys\n"
        "from fusionnet_keras.utils.atomic import atomic_dir, atomic_path\n"
        f"run = {str(run)!r}\n"
        "with atomic_dir(run + '/store') as d:\n"
        "    os.mkdir(d)\n"
        "    with atomic_path(run + '/checkpoints/last.keras') as t1, atomic_path(run + '/state.json') as t2:\n"
        "        open(t1, 'w').write('half'); open(t2, 'w').write('half')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = sorted(str(p.relative_to(run)) for p in run.rglob(".*"))
    assert len(left) == 3 and all(".tmp-" in name for name in left), left
    prepare_run_dir(config, run, resume=True)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["checkpoints", "config.json", "notes.tmp"]


def test_train_prints_only_its_own_lines(inputs, tmp_path):
    """A successful ``train`` in a fresh process: stderr empty (no TensorFlow, absl, oneDNN or Keras line)."""
    p = _cli_process("train", inputs["toml"], "--out", tmp_path / "run", "--set", "model.depth=0")
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr
    assert stderr == "", stderr
    assert '"best_model"' in stdout and (tmp_path / "run" / "best.keras").exists()


def test_unexpected_errors_are_one_line_with_exit_1_and_debug_shows_the_traceback(inputs, tmp_path, monkeypatch):
    import fusionnet_keras.evaluation as evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(evaluation, "isbi_scores", broken)
    args = ["evaluate", str(inputs["prob"]), str(inputs["labels"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: evaluate failed unexpectedly (RuntimeError: something inside broke); rerun with --debug for the "
        "traceback and report it"]
    result = CliRunner().invoke(main, ["--debug", *args])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "RuntimeError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: evaluate failed unexpectedly")
    # an environment error (here: a vanished file) is the user's to fix: exit 2, with the file named
    monkeypatch.setattr(evaluation, "isbi_scores", lambda *a, **k: open(tmp_path / "gone" / "x"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.stderr.startswith("Error: evaluate: No such file or directory: ")
