"""Messages that name the real problem, options that are not ignored without a word, packaging (issue 26).

Each test is one of the issue's examples (or a case of the same class found
beside them) and failed before the fix: an HDF5 file with datasets ``raw`` and
``raw2``, damaged ``.keras`` and classifier files, a truncated training volume,
a 2-D architecture set on a 3-D config, ``--classifier`` with a method that
does not use it, fewer K-means clusters than asked, a colour TIFF read block by
block, the Python version, the licence and the 0.1.0 name ``input_shape``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from fusionnet_keras.cli import main
from fusionnet_keras.errors import FusionNetError

from conftest import REPO, TINY, synthetic_em, write_tiff
from segmentation_helpers import bodies, degrade, gt_affinities


def _invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _one_line_error(result, *needles, absent=()):
    """Exit 2 and one line ``Error: ...`` holding every needle and none of ``absent``; the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for text in absent:
        assert text not in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A tiny 2-D model, a trained classifier, an affinity volume, and damaged copies of the files."""
    from fusionnet_keras.models.fusionnet import FusionNet
    from fusionnet_keras.segmentation.learned import train_classifier

    d = tmp_path_factory.mktemp("messages")
    FusionNet(**TINY).save(d / "tiny.keras")
    data = (d / "tiny.keras").read_bytes()
    (d / "truncated.keras").write_bytes(data[: len(data) // 2])
    (d / "text.keras").write_text("not a model\n")
    gt = bodies((4, 24, 24), 8, seed=3)
    affs = degrade(gt_affinities(gt), seed=4)
    frags = np.arange(gt.size, dtype=np.uint64).reshape(gt.shape) // 8 + 1
    with h5py.File(d / "vol.h5", "w") as h:
        h["affs"], h["gt"], h["frags"] = affs, gt.astype(np.uint32), frags
    train_classifier(affs, frags, gt, epochs=1, trees=2, seed=0).save(d / "clf.npz")
    return d


# ---------------------------------------------------------------------------
# misleading messages


def test_natural_sort_orders_any_two_names():
    from fusionnet_keras.data.io import natural_sort_key

    names = ["raw2", "raw", "gt2", "gt", "s10", "s2", "s01", "s1", "a1b", "a1", "a", "2", "b"]
    assert sorted(names, key=natural_sort_key) == ["2", "a", "a1", "a1b", "b", "gt", "gt2", "raw", "raw2", "s01",
                                                   "s1", "s2", "s10"]


def test_hdf5_and_zarr_with_datasets_raw_and_raw2_are_read(d, tmp_path):
    """Every command lists a container's datasets in natural order: 'raw' and 'raw2' used to crash it
    ("'<' not supported between instances of 'int' and 'str')."""
    import zarr

    image, _ = synthetic_em(2, size=32, seed=1)
    gt = bodies((4, 24, 24), 8, seed=3).astype(np.uint32)
    with h5py.File(tmp_path / "two.h5", "w") as h:
        h["raw"], h["raw2"], h["gt"], h["gt2"] = image, image, gt, gt
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    for name in ("raw", "raw2"):
        group.create_array(name, shape=image.shape, dtype="uint8", chunks=image.shape)[...] = image
    r = _invoke("predict", f"{tmp_path / 'two.h5'}:raw", tmp_path / "p.tif", "-w", d / "tiny.keras", "--tta", "1")
    assert r.exit_code == 0, r.stderr
    r = _invoke("predict", f"{tmp_path / 'two.zarr'}:raw2", tmp_path / "q.tif", "-w", d / "tiny.keras", "--tta", "1")
    assert r.exit_code == 0, r.stderr
    r = _invoke("evaluate", f"{tmp_path / 'two.h5'}:gt", f"{tmp_path / 'two.h5'}:gt2", "--instances")
    assert r.exit_code == 0 and "VI" in r.stdout, r.stderr
    # without :NAME the choice is the user's, with the datasets listed in order
    _one_line_error(_invoke("predict", tmp_path / "two.h5", tmp_path / "r.tif", "-w", d / "tiny.keras"),
                    "several datasets (gt, gt2, raw, raw2)")


@pytest.mark.parametrize("command", ["predict", "affinities", "info"])
@pytest.mark.parametrize("name", ["truncated.keras", "text.keras"])
def test_a_damaged_keras_file_is_not_reported_as_missing(d, tmp_path, command, name):
    args = {"predict": ["predict", d / "vol.h5:frags", tmp_path / "o.tif", "-w", d / name],
            "affinities": ["affinities", d / "vol.h5:frags", tmp_path / "o.h5", "-w", d / name],
            "info": ["info", d / name]}[command]
    _one_line_error(_invoke(*args), name, "truncated or corrupt", absent=("not found", "File not found"))


def test_a_damaged_checkpoint_names_the_file(d):
    from fusionnet_keras.models.loading import read_keras

    with pytest.raises(FusionNetError, match="cannot load checkpoint .*truncated.keras: not a whole .keras"):
        read_keras(d / "truncated.keras", "checkpoint", compile=True)


def test_a_truncated_training_volume_under_the_data_dir_is_named(tmp_path):
    """``train`` of a 3-D config reads its dataset from $FUSIONNET_DATA_DIR: a truncated file is named."""
    folder = tmp_path / "data" / "fib-medulla"
    folder.mkdir(parents=True)
    with h5py.File(tmp_path / "whole.h5", "w") as h:
        h["image"] = np.zeros((8, 64, 64), np.uint8)
        h["labels"] = np.ones((8, 64, 64), np.uint64)
    data = (tmp_path / "whole.h5").read_bytes()
    (folder / "fib-medulla.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "aff.toml").write_text('[model]\narchitecture = "unet3d"\nnb_filters = 2\ndepth = 1\n'
                                       'z_kernels = [3, 1]\n\n[train]\ninput_shape = [14, 28, 28]\n')
    r = _invoke("train", tmp_path / "aff.toml", "--out", tmp_path / "run",
                env={"FUSIONNET_DATA_DIR": str(tmp_path / "data")})
    _one_line_error(r, str(folder / "fib-medulla.h5"), "truncated")


def test_a_truncated_tiff_gives_one_line(tmp_path):
    """tifffile's own log lines ("invalid page offset") of a truncated stack do not reach the user."""
    tifffile.imwrite(tmp_path / "whole.tif", np.zeros((30, 64, 64), np.uint8), photometric="minisblack")
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    write_tiff(tmp_path / "labels.tif", np.zeros((30, 64, 64), np.uint8))
    # a real process: under pytest the log records go to pytest's handler, not to stderr
    proc = subprocess.run([sys.executable, "-m", "fusionnet_keras.cli", "evaluate", str(tmp_path / "cut.tif"),
                           str(tmp_path / "labels.tif")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and proc.stdout == "", (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("Error: cannot read ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "cut.tif" in proc.stderr and "invalid page offset" not in proc.stderr


def _damaged_classifiers(d, tmp_path):
    """name -> (file, what the error line must say besides the file's name)."""
    good = (d / "clf.npz").read_bytes()
    (tmp_path / "notes.txt").write_text("a text file\n")
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    with zipfile.ZipFile(d / "clf.npz") as z:  # a damaged member: the zip directory is whole
        members = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(tmp_path / "flipped.npz", "w", zipfile.ZIP_STORED) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    raw = bytearray((tmp_path / "flipped.npz").read_bytes())
    at = bytes(raw).find(members["left.npy"]) + len(members["left.npy"]) - 8
    raw[at:at + 8] = bytes(255 - b for b in raw[at:at + 8])  # its CRC no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with np.load(d / "clf.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "inconsistent.npz", **{**arrays, "left": arrays["left"][:3]})
    np.savez(tmp_path / "objects.npz", header=np.array([{"a": 1}], dtype=object))
    return {"text": (tmp_path / "notes.txt", "not an agglomeration classifier"),
            "truncated": (tmp_path / "cut.npz", "truncated"),
            "empty": (tmp_path / "empty.npz", "empty"),
            "damaged-member": (tmp_path / "flipped.npz", "damaged"),
            "inconsistent": (tmp_path / "inconsistent.npz", "damaged"),
            "objects": (tmp_path / "objects.npz", "Python objects")}


@pytest.mark.parametrize("case", ["text", "truncated", "empty", "damaged-member", "inconsistent", "objects"])
def test_a_damaged_classifier_names_the_file_and_the_problem(d, tmp_path, case):
    path, needle = _damaged_classifiers(d, tmp_path)[case]
    line = _one_line_error(_invoke("segment", f"{d / 'vol.h5'}:affs", tmp_path / "s.h5", "--classifier", path),
                           str(path), needle, absent=("allow_pickle", "pickle.load"))
    assert "unexpectedly" not in line


def test_a_damaged_resume_state_is_named(tmp_path):
    from fusionnet_keras.training import config_files
    from fusionnet_keras.training.rundir import prepare_run_dir

    config = config_files.load_config([], ["name='r'"])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config_files.save_config(config, run / "config.json")
    (run / "checkpoints" / "last.keras").write_bytes(b"x")
    for text in ('{"epoch": 3, "hist', "[1, 2]"):
        (run / "state.json").write_text(text)
        with pytest.raises(FusionNetError, match="cannot resume: .*state.json"):
            prepare_run_dir(config, run, resume=True)


AFFINITY_TOML = ('[model]\narchitecture = "unet3d"\nnb_filters = 2\ndepth = 1\nz_kernels = [3, 1]\n\n'
                 '[train]\ninput_shape = [14, 28, 28]\n')


def test_an_architecture_of_the_other_kind_names_both_sources(tmp_path):
    """``--set model.architecture=fusionnet`` on a 3-D config: the error blamed the file's valid 'unet3d'
    and listed 'fusionnet', the value given, as allowed; the same the other way round."""
    (tmp_path / "aff.toml").write_text(AFFINITY_TOML)
    (tmp_path / "two.toml").write_text('[model]\narchitecture = "unet"\n')
    line = _one_line_error(_invoke("train", tmp_path / "aff.toml", "--set", "model.architecture=fusionnet",
                                   "--out", tmp_path / "r"),
                           "--set model.architecture=fusionnet", "2-D network 'fusionnet'",
                           f"{tmp_path / 'aff.toml'} configures the 3-D network 'unet3d'", "unet3d, fusionnet3d",
                           absent=("must be one of",))
    assert "fusionnet, fusionnet_w, unet" not in line
    _one_line_error(_invoke("train", tmp_path / "two.toml", "--set", "model.architecture=unet3d", "--out",
                            tmp_path / "r"),
                    "3-D network 'unet3d'", "two.toml configures the 2-D network 'unet'")
    # two files of different kinds, and an unknown name (all five listed, the source named)
    _one_line_error(_invoke("train", tmp_path / "aff.toml", tmp_path / "two.toml", "--out", tmp_path / "r"),
                    "two.toml asks for the 2-D network 'unet'", "aff.toml configures the 3-D network")
    _one_line_error(_invoke("train", tmp_path / "aff.toml", "--set", "model.architecture=unet3D", "--out",
                            tmp_path / "r"),
                    "fusionnet, fusionnet_w, unet, unet3d, fusionnet3d", "got 'unet3D' in --set")
    # the same kind: the override wins as before
    (tmp_path / "f3d.toml").write_text(AFFINITY_TOML.replace("unet3d", "fusionnet3d"))
    r = _invoke("cv", tmp_path / "f3d.toml", "--set", "model.architecture=unet3d", "--out", tmp_path / "r")
    _one_line_error(r, "unet3d trains on fixed volume parts")


def test_a_bad_value_names_the_file_or_set_that_gave_it(tmp_path):
    (tmp_path / "bad.toml").write_text("[train]\nepochs = -1\n")
    _one_line_error(_invoke("train", tmp_path / "bad.toml", "--out", tmp_path / "r"),
                    "'train.epochs' must be in", f"in {tmp_path / 'bad.toml'}")
    (tmp_path / "aff.toml").write_text(AFFINITY_TOML)
    _one_line_error(_invoke("train", tmp_path / "aff.toml", "--set", "train.loss=mae", "--out", tmp_path / "r"),
                    "'train.loss' must be one of", "in --set")


# ---------------------------------------------------------------------------
# silent acceptance


@pytest.mark.parametrize("method", ["watershed", "mean"])
def test_a_classifier_with_a_method_that_does_not_use_it_is_refused(d, tmp_path, method):
    _one_line_error(_invoke("segment", f"{d / 'vol.h5'}:affs", tmp_path / "s.h5", "--method", method,
                            "--classifier", d / "clf.npz"),
                    f"--classifier is for --method learned, multicut, lifted-multicut; --method {method} does not use it")
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("blockwise", [False, True])
def test_fewer_clusters_than_asked_are_reported(tmp_path, blockwise):
    """Three nuclei and ``-k 10``: K-means makes 3 clusters, and says so (in memory and block by block)."""
    import zarr

    labels = np.zeros((12, 40, 40), np.uint16)
    for i, (z, y, x, r) in enumerate([(6, 10, 10, 3), (6, 28, 12, 4), (6, 20, 30, 5)], start=1):
        zz, yy, xx = np.ogrid[:12, :40, :40]
        labels[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r] = i
    zarr.create_array(store=str(tmp_path / "nuclei.zarr"), data=labels, chunks=(6, 20, 20))
    extra = ["--block", "6,20,20", "--workers", "1"] if blockwise else []
    r = _invoke("morphology", tmp_path / "nuclei.zarr", "--voxel-size", "40,10,10", "--out", tmp_path / "t.csv",
                "-k", "10", *extra)
    assert r.exit_code == 0, r.stderr
    assert "note: 3 clusters instead of the 10 asked for (--clusters)" in r.stdout, r.stdout
    r = _invoke("morphology", tmp_path / "nuclei.zarr", "--voxel-size", "40,10,10", "--out", tmp_path / "u.csv",
                "-k", "2", *extra)
    assert r.exit_code == 0 and "note:" not in r.stdout, r.stdout


@pytest.mark.parametrize("planar", [False, True], ids=["contig", "planar"])
def test_blockwise_predict_refuses_a_colour_tiff_as_in_memory(d, tmp_path, planar):
    """An RGBA TIFF was read block by block as a stack of 4 sections; in memory it is refused as colour:
    both read it through the same check now."""
    rgba = tmp_path / "rgba.tif"
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    if planar:
        tifffile.imwrite(rgba, pixels.transpose(2, 0, 1), photometric="rgb", planarconfig="separate",
                         extrasamples=["unassalpha"])
    else:
        tifffile.imwrite(rgba, pixels, photometric="rgb", extrasamples=["unassalpha"])
    whole = _one_line_error(_invoke("predict", rgba, tmp_path / "o.tif", "-w", d / "tiny.keras"), "colour")
    blocks = _one_line_error(_invoke("predict", rgba, tmp_path / "o.zarr", "-w", d / "tiny.keras", "--block",
                                     "1,32,32"), "colour")
    assert whole == blocks
    assert not (tmp_path / "o.zarr").exists()


# ---------------------------------------------------------------------------
# packaging


def test_python_requirement_and_license():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["options"]["python_requires"].strip() == ">=3.11"
    assert setup["metadata"]["license"].strip() == "MIT"
    assert setup["metadata"]["license_files"].strip() == "LICENSE"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the fusionnet-keras developers" in text
    import fusionnet_keras

    assert fusionnet_keras.MIN_PYTHON == (3, 11)


def test_an_older_python_gets_a_clear_message():
    code = ("import sys\nsys.version_info = (3, 10, 12, 'final', 0)\n"
            "try:\n    import fusionnet_keras\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "fusionnet-keras needs Python 3.11 or newer, this is Python 3.10.12; install it with a " \
                          "newer Python", out


def _networks():
    import fusionnet_keras as fk

    return [(fk.FusionNet, {}, (64, 64, 1)), (fk.FusionNetW, {"units": 2}, (64, 64, 1)), (fk.UNet, {}, (64, 64, 1)),
            (fk.UNet3D, {"z_kernels": 1, "head_z_kernel": 1}, (5, 24, 24, 1)),
            (fk.FusionNet3D, {"z_kernels": 1, "head_z_kernel": 1}, None)]


@pytest.mark.parametrize("index", range(5), ids=["FusionNet", "FusionNetW", "UNet", "UNet3D", "FusionNet3D"])
def test_input_shape_is_the_old_name_of_image_shape(index):
    """``FusionNet(input_shape=(640, 640, 1))`` (0.1.0) built a (None, None, 1) input without a word."""
    cls, extra, shape = _networks()[index]
    kwargs = {"nb_filters": 2, "depth": 1, **extra}
    if shape is None:
        shape = (*cls(**kwargs).geometry.min_input, 1)
    model = cls(input_shape=shape, **kwargs)
    assert model.image_shape == shape and tuple(model.inputs[0].shape) == (None, *shape)
    assert model.get_config()["image_shape"] == list(shape)
    with pytest.raises(FusionNetError, match="not both"):
        cls(input_shape=shape, image_shape=shape, **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nb_filter'"):
        cls(nb_filter=2, depth=1, **extra)  # a misspelt argument built the default network
