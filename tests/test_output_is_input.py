"""No command writes over one of its inputs, even with ``--overwrite`` (issue 26).

Every command that writes runs one shared check
(:func:`fusionnet_keras.data.io.paths.check_not_input`) before any work: an
output must not be an input: the same file, the same HDF5 dataset or zarr
array, reached through a symbolic link or a relative path, a folder holding an
input or a path inside an input's folder. Each row below is one command line
that must end with exit status 2, one line ``Error: ...`` naming the clash,
and every input file unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fusionnet_keras.cli import main
from fusionnet_keras.data.io.paths import check_not_input
from fusionnet_keras.errors import FusionNetError

from conftest import TINY, synthetic_em, tiny_train_toml, write_tiff
from segmentation_helpers import bodies, degrade, gt_affinities


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny 2-D FusionNet, a tiny 3-D UNet3D and a trained agglomeration classifier, saved once."""
    from fusionnet_keras.models.fusionnet import FusionNet
    from fusionnet_keras.models.unet3d import UNet3D
    from fusionnet_keras.segmentation.learned import train_classifier

    d = tmp_path_factory.mktemp("models")
    FusionNet(**TINY).save(d / "tiny.keras")
    UNet3D(nb_filters=2, depth=1, z_kernels=1, head_z_kernel=1).save(d / "aff3d.keras")
    gt = bodies((4, 24, 24), 8, seed=3)
    affs = degrade(gt_affinities(gt), seed=4)
    frags = np.arange(gt.size, dtype=np.uint64).reshape(gt.shape) // 8 + 1
    train_classifier(affs, frags, gt, epochs=1, trees=2, seed=0).save(d / "clf.npz")
    return d


@pytest.fixture
def f(models, tmp_path, monkeypatch):
    """Fresh inputs in ``tmp_path`` (the working directory): images, volumes, models, a training setup."""
    import zarr

    monkeypatch.chdir(tmp_path)
    for name in ("tiny.keras", "aff3d.keras", "clf.npz"):
        shutil.copy(models / name, tmp_path / name)
    image, labels = synthetic_em(3, size=32, seed=5)
    write_tiff(tmp_path / "in.tif", image[0])
    write_tiff(tmp_path / "stack.tif", image)
    write_tiff(tmp_path / "stack-labels.tif", labels)
    gt = bodies((4, 24, 24), 8, seed=3)
    affs = degrade(gt_affinities(gt), seed=4)
    frags = np.arange(gt.size, dtype=np.uint64).reshape(gt.shape) // 8 + 1
    with h5py.File(tmp_path / "vol.h5", "w") as h:
        h["affs"], h["gt"], h["raw"] = affs, gt.astype(np.uint32), image
    with h5py.File(tmp_path / "frags.h5", "w") as h:  # one dataset: read as frags.h5, without :NAME
        h["frags"] = frags
    with h5py.File(tmp_path / "raw.h5", "w") as h:
        h["raw"] = image
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, dtype="uint8",
                    chunks=(1, 32, 32))[...] = image
    group = zarr.open_group(str(tmp_path / "vol.zarr"), mode="w")
    group.create_array("affs", shape=affs.shape, dtype="float32", chunks=affs.shape)[...] = affs
    group.create_array("raw", shape=image.shape, dtype="uint8", chunks=(1, 32, 32))[...] = image
    ball = np.zeros((8, 16, 16), np.uint8)
    ball[2:6, 4:12, 4:12] = 1
    write_tiff(tmp_path / "nuclei.tif", ball)
    os.symlink(tmp_path / "in.tif", tmp_path / "link.tif")
    (tmp_path / "sub").mkdir()
    # a finished run folder that the user keeps a config and data in (what --overwrite would delete)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    write_tiff(run / "images.tif", image)
    (run / "tiny.toml").write_text(tiny_train_toml(tmp_path / "stack.tif", tmp_path / "stack-labels.tif"))
    (tmp_path / "tiny.toml").write_text(tiny_train_toml(run / "images.tif", tmp_path / "stack-labels.tif"))
    return tmp_path


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _morph(labels, *extra, out):
    return ["morphology", labels, "--voxel-size", "40,10,10", "--out", out, *extra]


W2, W3 = ("-w", "tiny.keras"), ("-w", "aff3d.keras")
AGGLO = ("--epochs", "1", "--trees", "2")

# (id, arguments, what the error line says)
ROWS = [
    # predict, in memory
    ("predict-same-file", ["predict", "in.tif", "in.tif", *W2, "--overwrite"], "is the input in.tif"),
    ("predict-symlink", ["predict", "in.tif", "link.tif", *W2, "--overwrite"], "is the input"),
    ("predict-relative", ["predict", "in.tif", "sub/../in.tif", *W2, "--overwrite"], "is the input"),
    ("predict-absolute", ["predict", "in.tif", "{dir}/in.tif", *W2, "--overwrite"], "is the input"),
    ("predict-dataset", ["predict", "vol.h5:raw", "vol.h5:/raw", *W2, "--overwrite"], "is the input"),
    ("predict-only-dataset", ["predict", "raw.h5", "raw.h5:raw", *W2, "--overwrite"], "is the input raw.h5"),
    ("predict-weights", ["predict", "in.tif", "tiny.keras", *W2, "--overwrite"], "is the input tiny.keras"),
    ("predict-zarr-group", ["predict", "vol.zarr:raw", "vol.zarr", *W2, "--overwrite"], "holds the input"),
    ("predict-into-array", ["predict", "in.zarr", "in.zarr:pred", *W2], "is inside the input in.zarr"),
    # predict, blockwise (the issue's example: the input destroyed, the prediction read from overwritten blocks)
    ("predict-blockwise", ["predict", "in.zarr", "in.zarr", *W2, "--workers", "2", "--overwrite"], "is the input"),
    ("predict-blockwise-member", ["predict", "vol.zarr:raw", "{dir}/vol.zarr:raw", *W2, "--block", "1,32,32",
                                  "--overwrite"], "is the input"),
    # affinities, in memory and blockwise
    ("affinities-same", ["affinities", "vol.h5:raw", "vol.h5:raw", *W3, "--overwrite"], "is the input"),
    ("affinities-blockwise", ["affinities", "vol.zarr:raw", "vol.zarr:raw", *W3, "--workers", "1", "--overwrite"],
     "is the input"),
    ("affinities-weights", ["affinities", "vol.h5:raw", "aff3d.keras", *W3], "is the input aff3d.keras"),
    # segment: the affinities, the fragments, the classifier; one output, several, blockwise
    ("segment-affinities", ["segment", "vol.h5:affs", "vol.h5:affs", "--overwrite"], "is the input"),
    ("segment-fragments", ["segment", "vol.h5:affs", "frags.h5:frags", "--fragments", "frags.h5", "--overwrite"],
     "is the input frags.h5"),
    ("segment-classifier", ["segment", "vol.h5:affs", "clf.npz", "--classifier", "clf.npz", "--overwrite"],
     "is the input clf.npz"),
    ("segment-thresholds", ["segment", "vol.zarr:affs", "vol.zarr:affs", "--thresholds", "0.3,0.5", "--overwrite"],
     "is inside the input"),
    ("segment-blockwise", ["segment", "vol.zarr:affs", "vol.zarr:affs", "--workers", "1", "--overwrite"],
     "is the input"),
    # train-agglomeration (the issue's example: the classifier written over the fragments file)
    ("train-agglomeration-fragments", ["train-agglomeration", "vol.h5:affs", "frags.h5", "vol.h5:gt", "frags.h5",
                                       *AGGLO, "--overwrite"], "is the input frags.h5"),
    ("train-agglomeration-symlink", ["train-agglomeration", "vol.h5:affs", "frags.h5", "vol.h5:gt", "link.h5",
                                     *AGGLO, "--overwrite"], "is the input vol.h5:affs"),
    # morphology (the issue's example: the labels replaced by the CSV), in memory and blockwise
    ("morphology-table", _morph("nuclei.tif", "--overwrite", out="nuclei.tif"), "is the input nuclei.tif"),
    ("morphology-table-blockwise", _morph("nuclei.tif", "--workers", "1", "--overwrite", out="nuclei.tif"),
     "is the input nuclei.tif"),
    ("morphology-table-relative", _morph("nuclei.tif", "--overwrite", out="./sub/../nuclei.tif"), "is the input"),
    ("morphology-image", _morph("nuclei.tif", "--image", "stack.tif", "--overwrite", out="stack.tif"),
     "is the input stack.tif"),
    ("morphology-figures", _morph("sub/fig10_features.png", "--figures", "sub", "--overwrite", out="t.csv"),
     "is the input"),
    ("morphology-work", _morph("t.csv.work/labels.tif", "--workers", "1", "--overwrite", out="t.csv"),
     "holds the input"),
    # train / cv: --overwrite deletes the run folder; it must not hold the config or the data
    ("train-config", ["train", "run/tiny.toml", "--out", "run", "--overwrite"], "holds the input run/tiny.toml"),
    ("train-data", ["train", "tiny.toml", "--out", "run", "--overwrite"], "holds the input"),
    ("cv-config", ["cv", "run/tiny.toml", "--out", "run", "--overwrite"], "holds the input run/tiny.toml"),
]


def _prepare(row_id, d):
    if row_id == "train-agglomeration-symlink":
        os.symlink(d / "vol.h5", d / "link.h5")
    if row_id == "morphology-figures":
        write_tiff(d / "sub" / "fig10_features.png.tif", np.zeros((2, 2), np.uint8))  # not the input
        write_tiff(d / "sub" / "fig10_features.png", np.zeros((4, 8, 8), np.uint8))
    if row_id == "morphology-work":
        (d / "t.csv.work").mkdir()
        write_tiff(d / "t.csv.work" / "labels.tif", np.zeros((4, 8, 8), np.uint8))


@pytest.mark.parametrize("row_id,args,needle", ROWS, ids=[r[0] for r in ROWS])
def test_an_output_is_never_an_input(f, row_id, args, needle):
    _prepare(row_id, f)
    before = _digest(f)
    args = [a.format(dir=f) for a in args]
    result = CliRunner().invoke(main, args, env={"FUSIONNET_DATA_DIR": str(f)})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("Error: output "), result.stderr
    assert needle in lines[0] and "--overwrite never replaces an input" in lines[0], lines[0]
    assert result.stdout == ""
    assert _digest(f) == before, "an input changed"


def test_other_datasets_of_an_input_container_may_be_written(f):
    """Writing beside the input (another dataset of its HDF5 file or zarr group) is not writing over it."""
    for args in (["predict", "vol.h5:raw", "vol.h5:pred", *W2, "--tta", "1"],
                 ["predict", "raw.h5", "raw.h5:pred", *W2, "--tta", "1"],
                 ["predict", "vol.zarr:raw", "vol.zarr:pred", *W2, "--tta", "1"],
                 ["segment", "vol.h5:affs", "vol.h5:seg"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (args, result.stderr)
    with h5py.File(f / "vol.h5") as h:
        assert sorted(h) == ["affs", "gt", "pred", "raw", "seg"]


def test_check_not_input_cases(tmp_path):
    """The shared check itself: links, relative paths, datasets, folders."""
    (tmp_path / "a.tif").write_bytes(b"x")
    os.link(tmp_path / "a.tif", tmp_path / "hard.tif")
    with h5py.File(tmp_path / "c.h5", "w") as h:
        h["g/x"], h["y"] = np.zeros(2), np.zeros(2)
    clash = [
        ("a.tif", ["a.tif"], {}), ("hard.tif", ["a.tif"], {}), (f"{tmp_path}/./a.tif", ["a.tif"], {}),
        ("c.h5:g", ["c.h5:g/x"], {}), ("c.h5:g/x", ["c.h5:/g/x/"], {}), ("c.h5", ["c.h5:data"], {}),
        ("c.h5:y", [], {"files": ["c.h5"]}), ("c.h5", ["c.h5:y"], {"whole": True}),
        (str(tmp_path), ["a.tif"], {"whole": True}),
    ]
    os.chdir(tmp_path)
    for output, inputs, kwargs in clash:
        with pytest.raises(FusionNetError, match="the input"):
            check_not_input(output, *inputs, **kwargs)
    for output, inputs, kwargs in [("b.tif", ["a.tif"], {}), ("c.h5:z", ["c.h5:y", "c.h5:g/x"], {}),
                                   ("c.h5:g/xx", ["c.h5:g/x"], {}), ("a.tif.work", ["a.tif"], {"whole": True}),
                                   ("c.h5", ["c.h5"], {}),  # c.h5 holds 2 datasets: the reader refuses it
                                   (None, ["a.tif"], {}), ("b.tif", [None], {})]:
        check_not_input(output, *inputs, **kwargs)
