"""Command-line tests of segment, train-agglomeration and evaluate --instances (CliRunner, tiny volumes)."""

import json

import h5py
import numpy as np
import pytest
import tifffile


from segmentation_helpers import bodies, degrade, gt_affinities, run_cli, user_error


_run, _user_error = run_cli, user_error


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    for name, seed in (("train", 1), ("test", 2)):
        gt = bodies((6, 40, 40), 16, seed)
        affs = degrade(gt_affinities(gt), seed)
        with h5py.File(d / f"{name}.h5", "w") as f:
            f["affinities"] = affs
            f["labels"] = gt.astype(np.uint32)
            f["boundary"] = 1.0 - affs.min(axis=0)
    return d


def test_segment_watershed_mean_and_evaluate(volumes, tmp_path):
    data = volumes / "test.h5"
    frag = tmp_path / "frag.h5"
    r = _run("segment", f"{data}:affinities", frag, "--method", "watershed", "--ws-size", "10")
    assert r.exit_code == 0, r.output
    with h5py.File(frag) as f:
        fragments = f["data"][:]
    assert fragments.dtype == np.uint64 and fragments.shape == (6, 40, 40) and fragments.min() > 0
    # one threshold -> one volume (TIFF here); several -> one dataset per threshold
    r = _run("segment", f"{data}:affinities", tmp_path / "seg.tif", "--threshold", "0.5", "--fragments", frag)
    assert r.exit_code == 0, r.output
    single = tifffile.imread(tmp_path / "seg.tif")
    r = _run("segment", f"{data}:affinities", tmp_path / "sweep.h5", "--thresholds", "0.7,0.3,0.5",
             "--fragments", frag)
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "sweep.h5") as f:
        assert sorted(f) == ["threshold_0.3", "threshold_0.5", "threshold_0.7"]
        counts = [len(np.unique(f[f"threshold_{t}"][:])) for t in ("0.3", "0.5", "0.7")]
        assert np.array_equal(f["threshold_0.5"][:], single)
    assert counts[0] >= counts[1] >= counts[2] and counts[0] > counts[2]
    scores = {}
    for name in ("frag.h5", "sweep.h5:threshold_0.3"):
        r = _run("evaluate", tmp_path / name, f"{data}:labels", "--instances", "--json")
        assert r.exit_code == 0, r.output
        scores[name] = json.loads(r.output)
    assert {"vi_split", "vi_merge", "vi", "arand", "cremi", "objects", "gt_objects"} <= set(scores["frag.h5"])
    assert scores["frag.h5"]["gt_objects"] == 16
    assert scores["sweep.h5:threshold_0.3"]["vi"] < 0.6 * scores["frag.h5"]["vi"]  # agglomeration helps
    r = _run("evaluate", tmp_path / "seg.tif", f"{data}:labels", "--instances")
    assert r.exit_code == 0 and "VI" in r.output and "CREMI score" in r.output
    # a boundary map (high = boundary) works too; --invert for a high-interior map
    r = _run("segment", f"{data}:boundary", tmp_path / "b.h5")
    assert r.exit_code == 0, r.output


def test_train_agglomeration_and_learned_segment(volumes, tmp_path):
    train, test = volumes / "train.h5", volumes / "test.h5"
    assert _run("segment", f"{train}:affinities", tmp_path / "f.h5", "--method", "watershed",
                "--ws-size", "10").exit_code == 0
    clf = tmp_path / "clf.npz"
    r = _run("train-agglomeration", f"{train}:affinities", tmp_path / "f.h5", f"{train}:labels", clf,
             "--epochs", "2", "--trees", "10")
    assert r.exit_code == 0, r.output
    assert "epoch 2" in r.output and clf.exists()
    _user_error(_run("train-agglomeration", f"{train}:affinities", tmp_path / "f.h5", f"{train}:labels", clf),
                "output exists")
    r = _run("segment", f"{test}:affinities", tmp_path / "l.h5", "--classifier", clf, "--thresholds", "0.3,0.6",
             "--ws-size", "10")
    assert r.exit_code == 0, r.output
    assert "learned" in r.output
    r = _run("evaluate", tmp_path / "l.h5:threshold_0.3", f"{test}:labels", "--instances", "--json")
    assert json.loads(r.output)["vi"] < 0.8


def test_bad_inputs_are_one_line_errors(volumes, tmp_path, monkeypatch):
    data = volumes / "test.h5"
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["two"] = np.zeros((2, 6, 40, 40), np.float32)
        nan = np.full((3, 6, 40, 40), 0.5, np.float32)
        nan[0, 0, 0, 0] = np.nan
        f["nan"] = nan
        f["frag"] = np.ones((6, 40, 41), np.uint64)
        f["float_labels"] = np.full((6, 40, 40), 0.5, np.float32)
    bad = tmp_path / "bad.h5"
    out = tmp_path / "o.h5"
    _user_error(_run("segment", f"{bad}:two", out), "2 channels")
    _user_error(_run("segment", f"{bad}:nan", out), "NaN")
    _user_error(_run("segment", f"{data}:affinities", out, "--fragments", f"{bad}:frag"), "differs")
    (tmp_path / "clf.npz").write_bytes(b"junk")
    _user_error(_run("segment", f"{data}:affinities", out, "--classifier", tmp_path / "clf.npz"),
                "not an agglomeration classifier")
    _user_error(_run("segment", f"{data}:affinities", out, "--classifier", tmp_path / "none.npz"), "not found")
    _user_error(_run("segment", f"{data}:affinities", out, "--threshold", "0.5", "--thresholds", "0.3,0.5"),
                "either")
    _user_error(_run("segment", f"{data}:affinities", tmp_path / "x.tif", "--thresholds", "0.3,0.5"),
                "HDF5 file or a zarr group")
    _user_error(_run("segment", f"{data}:affinities", out, "--method", "watershed", "--threshold", "0.5"),
                "no --threshold")
    monkeypatch.setenv("FUSIONNET_REGISTRY", str(tmp_path / "empty-registry"))  # an installation without a 3-D model
    (tmp_path / "empty-registry").mkdir()
    _user_error(_run("segment", f"{data}:affinities", out, "--method", "learned"), "needs a classifier")
    monkeypatch.delenv("FUSIONNET_REGISTRY")
    _user_error(_run("evaluate", f"{bad}:float_labels", f"{data}:labels", "--instances"), "integer labels")
    _user_error(_run("train-agglomeration", f"{data}:affinities", f"{data}:labels", f"{bad}:float_labels",
                     tmp_path / "c.npz"), "integer labels")
    # nothing is overwritten without --overwrite
    assert _run("segment", f"{data}:affinities", out).exit_code == 0
    before = out.stat().st_mtime_ns
    _user_error(_run("segment", f"{data}:affinities", out), "output exists")
    assert out.stat().st_mtime_ns == before
    assert _run("segment", f"{data}:affinities", out, "--overwrite").exit_code == 0
    assert _run("segment", f"{data}:affinities", out, "--thresholds", "0.4,0.6").exit_code == 0
    _user_error(_run("segment", f"{data}:affinities", out, "--thresholds", "0.6,0.8"), "output exists")
    with h5py.File(out) as f:
        assert sorted(f) == ["data", "threshold_0.4", "threshold_0.6"]  # other datasets kept


def test_several_thresholds_into_a_zarr_group(volumes, tmp_path):
    from fusionnet_keras.data.io import read_volume

    data = volumes / "test.h5"
    r = _run("segment", f"{data}:affinities", tmp_path / "s.zarr:sweep", "--thresholds", "0.2,0.4")
    assert r.exit_code == 0, r.output
    low, high = (read_volume(tmp_path / f"s.zarr:sweep/threshold_{t}") for t in ("0.2", "0.4"))
    assert low.dtype == np.uint64 and low.shape == (6, 40, 40)
    assert len(np.unique(low)) >= len(np.unique(high))
    _user_error(_run("segment", f"{data}:affinities", tmp_path / "s.zarr:sweep", "--thresholds", "0.4"),
                "output exists")


def test_block_alone_runs_blockwise_and_the_same_command_again_resumes(volumes, tmp_path):
    """--block means blockwise for segment as for every command; running it again finishes only what is left."""
    import zarr

    data = f"{volumes / 'test.h5'}:affinities"
    whole = tmp_path / "whole.h5"
    r = _run("segment", data, whole, "--threshold", "0.5", "--ws-size", "10")
    assert r.exit_code == 0, r.output
    out = tmp_path / "seg.zarr"
    args = ("segment", data, out, "--threshold", "0.5", "--ws-size", "10", "--block", "3,16,16")
    r = _run(*args)
    assert r.exit_code == 0 and "blockwise" in r.output and "in 18 blocks" in r.output, r.output
    with h5py.File(whole) as f:
        reference = f["data"][:]
    first = zarr.open_array(str(out), path="0")[:]
    assert first.shape == reference.shape and len(np.unique(first)) == len(np.unique(reference))
    markers = out / "0" / ".blocks"
    (markers / "4.json").unlink()  # as a run killed before its last block was marked leaves it
    kept = {p.name: p.stat().st_mtime_ns for p in markers.glob("[0-9]*.json")}
    r = _run(*args)
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime_ns for p in markers.glob("[0-9]*.json") if p.name in kept} == kept
    assert (markers / "4.json").exists()
    np.testing.assert_array_equal(zarr.open_array(str(out), path="0")[:], first)
    r = _run("segment", data, tmp_path / "x.h5", "--context", "2,8,8")
    _user_error(r, "--context is for blockwise")
