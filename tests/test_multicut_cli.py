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
    from fusionnet_keras.data.affinities import affinities_from_labels

    out = affinities_from_labels(gt, "background", offsets)[0]
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
    for method, weighting in (("multicut", "none"), ("lifted-multicut", "none"), ("multicut", "size")):
        whole = dict(segment(affs, method, [0.4, 0.6], watershed_options=options, weighting=weighting))
        name = f"{method}-{weighting}.zarr"
        out = [f"{tmp_path}/{name}:b4", f"{tmp_path}/{name}:b6"]
        from fusionnet_keras.blockwise.segment import segment_volume

        info = segment_volume(str(d / "affs.zarr"), out, method=method, thresholds=[0.6, 0.4],
                              watershed_options=options, block=(3, 16, 16), context=(2, 8, 8), workers=0,
                              progress=False, weighting=weighting)
        assert info["blocks"] == 18
        for beta, path in zip((0.4, 0.6), out):
            blockwise = zarr.open_array(f"{tmp_path}/{name}", path=path.split(":")[1] + "/0")[:]
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
    _user_error(_run("segment", data, out, "--method", "mws"), "need long-range")
    _user_error(_run("segment", data, out, "--method", "mws", "--offsets", offsets), "need long-range")
    _user_error(_run("segment", f"{d}/v.h5:long", out, "--method", "mws"), "stores no affinity offsets")
    _user_error(_run("segment", f"{d}/v.h5:long", out, "--method", "mws", "--offsets", "0,-6,0"),
                "4 long-range channels after the 3 nearest neighbours, but 1 long-range offsets")
    _user_error(_run("segment", data, out, "--method", "multicut", "--mws-size", "10"), "for --method mws")
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


def test_mws_reads_the_offsets_stored_with_the_affinities(volume, tmp_path):
    """``affinities`` stores a long-range network's offsets with its output; ``segment --method mws`` reads
    them (no --offsets to retype), a disagreeing --offsets is refused, and the agglomerations read the first
    three channels of the same file."""
    import keras

    from fusionnet_keras.data.affinities import OFFSETS
    from fusionnet_keras.data.io import open_volume, read_volume, write_volume
    from fusionnet_keras.data.io.ome import ImageMeta
    from fusionnet_keras.inference.affinities import OFFSETS_ATTR, offsets_attrs
    from fusionnet_keras.models.unet3d import UNet3D
    from fusionnet_keras.segmentation.mws import merge_small, mutex_watershed

    d, gt, affs = volume
    offsets = list(OFFSETS) + LONG_RANGE
    stored = tmp_path / "stored.h5"
    long = read_volume(f"{d}/v.h5:long")
    write_volume(f"{stored}:long", long, meta=ImageMeta(channels=True, attributes=offsets_attrs(offsets)))
    r = _run("segment", f"{stored}:long", tmp_path / "mws.h5", "--method", "mws", "--threshold", "0.4",
             "--mws-size", "20")
    assert r.exit_code == 0, r.output
    expected = merge_small(long, mutex_watershed(long, offsets, beta=0.4), 20)
    assert same_partition(read_volume(tmp_path / "mws.h5"), expected)
    assert np.bincount(expected.ravel().astype(np.int64))[1:].min() >= 20  # no segment under the size
    r = _run("segment", f"{stored}:long", tmp_path / "same.h5", "--method", "mws", "--threshold", "0.4",
             "--mws-size", "20", "--offsets", ";".join(",".join(map(str, o)) for o in LONG_RANGE))
    assert r.exit_code == 0 and np.array_equal(read_volume(tmp_path / "same.h5"), read_volume(tmp_path / "mws.h5"))
    _user_error(_run("segment", f"{stored}:long", tmp_path / "x.h5", "--method", "mws", "--offsets",
                     "-2,0,0;0,-6,0;0,0,-6;0,-4,4"), "disagree with the long-range offsets stored")
    r = _run("segment", f"{stored}:long", tmp_path / "mean.h5", "--method", "mean")
    assert r.exit_code == 0, r.output
    assert np.array_equal(read_volume(tmp_path / "mean.h5"), dict(segment(long[:3], "mean"))[0.5])
    # the affinities command stores the network's offsets, in HDF5 and in (blockwise and plain) OME-Zarr
    keras.utils.set_random_seed(0)
    net_offsets = [list(o) for o in OFFSETS] + [[0, -2, 0], [0, 0, -2]]
    UNet3D(nb_filters=2, depth=1, z_kernels=1, head_z_kernel=1, offsets=net_offsets).save(tmp_path / "lr.keras")
    write_volume(tmp_path / "em.h5", (np.random.default_rng(0).random((3, 20, 20)) * 255).astype(np.uint8))
    for out, extra in ((tmp_path / "a.h5", []), (tmp_path / "a.zarr", ["--workers", "1", "--block", "3,12,12"]),
                       (tmp_path / "b.zarr", ["--pyramid"])):
        r = _run("affinities", tmp_path / "em.h5", out, "-w", tmp_path / "lr.keras", *extra)
        assert r.exit_code == 0, r.output
        with open_volume(out) as v:
            assert v.shape == (5, 3, 20, 20) and v.attributes[OFFSETS_ATTR] == net_offsets
        if out.suffix == ".zarr":  # on the OME-Zarr image group, beside its multiscales
            group = zarr.open_group(str(out), mode="r")
            assert group.attrs[OFFSETS_ATTR] == net_offsets and "ome" in group.attrs
        r = _run("segment", out, tmp_path / f"{out.name}-mws.h5", "--method", "mws")
        assert r.exit_code == 0 and "segments at beta 0.5" in r.output, r.output


def test_lifted_multicut_takes_its_lifted_edges_from_the_stored_long_range_channels(volume, tmp_path):
    from fusionnet_keras.data.affinities import OFFSETS
    from fusionnet_keras.data.io import read_volume, write_volume
    from fusionnet_keras.data.io.ome import ImageMeta
    from fusionnet_keras.inference.affinities import offsets_attrs

    d, gt, affs = volume
    long = read_volume(f"{d}/v.h5:long")
    stored = tmp_path / "stored.h5"
    write_volume(f"{stored}:long", long, meta=ImageMeta(channels=True, attributes=offsets_attrs(
        list(OFFSETS) + LONG_RANGE)))
    ws = WatershedOptions(size=10)
    for weighting in ("none", "size"):
        out = tmp_path / f"lmc-{weighting}.h5"
        r = _run("segment", f"{stored}:long", out, "--method", "lifted-multicut", "--threshold", "0.5",
                 "--ws-size", "10", "--multicut-weighting", weighting)
        assert r.exit_code == 0, r.output
        expected = dict(segment(long, "lifted-multicut", [0.5], watershed_options=ws, offsets=LONG_RANGE,
                                weighting=weighting))[0.5]
        assert np.array_equal(read_volume(out), expected)
    # an explicit --lifted-hops takes hop-lifted edges from the same file (its first 3 channels)
    r = _run("segment", f"{stored}:long", tmp_path / "hops.h5", "--method", "lifted-multicut", "--threshold", "0.5",
             "--ws-size", "10", "--lifted-hops", "3")
    assert r.exit_code == 0, r.output
    expected = dict(segment(long[:3], "lifted-multicut", [0.5], watershed_options=ws, hops=3))[0.5]
    assert np.array_equal(read_volume(tmp_path / "hops.h5"), expected)
    r = _run("segment", f"{d}/v.h5:affinities", tmp_path / "mc.h5", "--method", "multicut", "--threshold", "0.5",
             "--ws-size", "10", "--multicut-weighting", "size")
    assert r.exit_code == 0, r.output
    expected = dict(segment(affs, "multicut", [0.5], watershed_options=ws, weighting="size"))[0.5]
    assert np.array_equal(read_volume(tmp_path / "mc.h5"), expected)
    out = tmp_path / "x.h5"
    _user_error(_run("segment", f"{stored}:long", out, "--method", "mean", "--multicut-weighting", "size"),
                "--multicut-weighting is for --method multicut and lifted-multicut")
    _user_error(_run("segment", f"{stored}:long", out, "--method", "lifted-multicut", "--lifted-hops", "3",
                     "--offsets", "-2,0,0;0,-6,0;0,0,-6;0,-4,-4"), "not both")
    _user_error(_run("segment", f"{stored}:long", tmp_path / "x.zarr", "--method", "lifted-multicut", "--offsets",
                     "-2,0,0;0,-6,0;0,0,-6;0,-4,-4", "--workers", "1"), "not supported blockwise")
    _user_error(_run("segment", f"{d}/v.h5:long", out, "--method", "lifted-multicut"), "stores no affinity offsets")
    assert not out.exists()
