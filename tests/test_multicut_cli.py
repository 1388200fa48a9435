"""``segment --method multicut / lifted-multicut / mws``: beta sweeps, blockwise equality, one-line errors."""

import json

import h5py
import numpy as np
import pytest
import zarr

from fusionnet_keras.segmentation.pipeline import WatershedOptions, segment

from segmentation_helpers import bodies, degrade, gt_affinities, run_cli, same_partition, user_error

LONG_RANGE = [(-2, 0, 0), (0, -6, 0), (0, 0, -6), (0, -4, -4)]


_run, _user_error = run_cli, user_error


def long_range_affinities(gt, offsets, seed):
    """Noisy affinities of gt for the given offsets (channel c links v and v + offset)."""
    out = np.zeros((len(offsets),) + gt.shape, np.float32)
    for c, off in enumerate(offsets):
        here = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(off, gt.shape))
        there = tuple(slice(h.start + o, h.stop + o) for h, o in zip(here, off))
        out[(c,) + here] = gt[here] == gt[there]
    noise = np.random.default_rng(seed).normal(0, 0.1, out.shape)
    return np.clip(out + noise, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    d = tmp_path_factory.mktemp("mc")
    gt = bodies((6, 40, 40), 12, 5)
    affs = degrade(gt_affinities(gt), 5)
    with h5py.File(d / "v.h5", "w") as f:
        f["affinities"] = affs
        f["long"] = np.concatenate([affs, long_range_affinities(gt, LONG_RANGE, 6)])
        f["labels"] = gt.astype(np.uint32)
        f["one"] = np.ones(gt.shape, np.uint64)
    zarr.create_array(store=str(d / "affs.zarr"), data=affs, chunks=(3, 3, 20, 20))
    return d, gt, affs


def test_multicut_beta_sweep_in_one_call_splits_more_with_higher_beta(volume, tmp_path):
    d, gt, affs = volume
    out = tmp_path / "mc.h5"
    r = _run("segment", f"{d}/v.h5:affinities", out, "--method", "multicut", "--thresholds", "0.7,0.2,0.5",
             "--ws-size", "10")
    assert r.exit_code == 0, r.output
    assert "segments at beta 0.5" in r.output
    with h5py.File(out) as f:
        assert sorted(f) == ["threshold_0.2", "threshold_0.5", "threshold_0.7"]
        counts = [len(np.unique(f[f"threshold_{b}"][:])) for b in ("0.2", "0.5", "0.7")]
        middle = f["threshold_0.5"][:]
    assert counts[0] <= counts[1] <= counts[2] and counts[0] < counts[2]
    whole = dict(segment(affs, "multicut", [0.5], watershed_options=WatershedOptions(size=10)))[0.5]
    assert np.array_equal(middle, whole)
    r = _run("evaluate", f"{out}:threshold_0.7", f"{d}/v.h5:labels", "--instances", "--json")
    frag = dict(segment(affs, "watershed", watershed_options=WatershedOptions(size=10)))[None]
    assert len(np.unique(middle)) < len(np.unique(frag))  # the fragments were joined
    assert json.loads(r.output)["vi"] < 0.8
    r = _run("segment", f"{d}/v.h5:affinities", tmp_path / "lmc.h5", "--method", "lifted-multicut",
             "--thresholds", "0.3,0.6", "--lifted-hops", "3", "--ws-size", "10")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "lmc.h5") as f:
        assert sorted(f) == ["threshold_0.3", "threshold_0.6"]


def test_mutex_watershed_from_the_command_line(volume, tmp_path):
    d, gt, _ = volume
    offsets = ";".join(",".join(map(str, o)) for o in LONG_RANGE)
    out = tmp_path / "mws.h5"
    r = _run("segment", f"{d}/v.h5:long", out, "--method", "mws", "--offsets", offsets, "--thresholds", "0.5,0.6")
    assert r.exit_code == 0, r.output
    r = _run("evaluate", f"{out}:threshold_0.5", f"{d}/v.h5:labels", "--instances", "--json")
    assert json.loads(r.output)["arand"] < 0.1
    r = _run("segment", f"{d}/v.h5:long", tmp_path / "s.h5", "--method", "mws", "--offsets", offsets,
             "--mws-stride", "1,2,2")
    assert r.exit_code == 0, r.output


def test_blockwise_multicut_equals_the_in_memory_multicut(volume, tmp_path):
    d, gt, affs = volume
    options = WatershedOptions(size=20)
    for method in ("multicut", "lifted-multicut"):
        whole = dict(segment(affs, method, [0.4, 0.6], watershed_options=options))
        out = [f"{tmp_path}/{method}.zarr:b4", f"{tmp_path}/{method}.zarr:b6"]
        from fusionnet_keras.blockwise.segment import segment_volume

        info = segment_volume(str(d / "affs.zarr"), out, method=method, thresholds=[0.6, 0.4],
                              watershed_options=options, block=(3, 16, 16), context=(2, 8, 8), workers=0,
                              progress=False)
        assert info["blocks"] == 18
        for beta, path in zip((0.4, 0.6), out):
            blockwise = zarr.open_array(f"{tmp_path}/{method}.zarr", path=path.split(":")[1] + "/0")[:]
            assert same_partition(blockwise, whole[beta])
        assert len(np.unique(whole[0.4])) < len(np.unique(whole[0.6]))


def test_bad_multicut_inputs_are_one_line_errors(volume, tmp_path):
    from fusionnet_keras.segmentation.learned import train_classifier

    d, gt, affs = volume
    data, out = f"{d}/v.h5:affinities", tmp_path / "o.h5"
    offsets = ";".join(",".join(map(str, o)) for o in LONG_RANGE)
    _user_error(_run("segment", data, out, "--method", "multicut", "--threshold", "1"), "beta must lie in (0, 1)")
    _user_error(_run("segment", data, out, "--method", "lifted-multicut", "--thresholds", "0,0.5"),
                "beta must lie in (0, 1)")
    _user_error(_run("segment", data, out, "--method", "mws", "--offsets", offsets, "--threshold", "0"),
                "beta must lie in (0, 1)")
    _user_error(_run("segment", data, out, "--method", "multicut", "--fragments", f"{d}/v.h5:one"),
                "no edges")
    _user_error(_run("segment", data, out, "--method", "mws"), "needs long-range")
    _user_error(_run("segment", data, out, "--method", "mws", "--offsets", offsets), "C = 7")
    _user_error(_run("segment", f"{d}/v.h5:long", out, "--method", "mws", "--offsets", "-2,0"), "three integers")
    _user_error(_run("segment", f"{d}/v.h5:long", out, "--method", "mws", "--offsets", "a,b,c"), "integers")
    _user_error(_run("segment", data, out, "--method", "multicut", "--offsets", offsets), "for --method mws")
    _user_error(_run("segment", data, out, "--method", "multicut", "--lifted-hops", "3"), "lifted-multicut")
    _user_error(_run("segment", f"{d}/v.h5:long", tmp_path / "o.zarr", "--method", "mws", "--offsets", offsets,
                     "--workers", "1"), "not supported blockwise")
    assert not out.exists()
    # a classifier trained on another feature set
    frag = dict(segment(affs, "watershed", watershed_options=WatershedOptions(size=10)))[None]
    clf = train_classifier(affs, frag, gt, epochs=1, trees=3)
    clf.save(tmp_path / "clf.npz")
    r = _run("segment", data, tmp_path / "learned.h5", "--method", "multicut", "--classifier", tmp_path / "clf.npz",
             "--ws-size", "10")
    assert r.exit_code == 0, r.output  # the classifier's costs
    clf.feature_names = clf.feature_names[:-1] + ["something_else"]
    clf.save(tmp_path / "other.npz")
    _user_error(_run("segment", data, out, "--method", "multicut", "--classifier", tmp_path / "other.npz"),
                "other features")
