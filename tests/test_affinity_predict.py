"""3-D affinity prediction: fk.predict_affinities, the ``affinities`` command, blockwise workers and resume."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from fusionnet_keras.cli import main
from fusionnet_keras.errors import FusionNetError

from conftest import REPO, randomize_weights

SHAPE = (5, 23, 29)  # odd y and x: blocks cut through the pooling grid of the network (multiple 4)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A tiny UNet3D (depth 2: pooling grid of 4 voxels in y and x; z context 4) with random weights, saved,
    and a volume."""
    import keras

    import fusionnet_keras as fk

    keras.utils.set_random_seed(0)
    model = randomize_weights(fk.UNet3D(nb_filters=2, depth=2, z_kernels=[3, 1, 1], head_z_kernel=1), seed=1)
    root = tmp_path_factory.mktemp("affinities")
    model.save(root / "aff.keras")
    volume = (np.random.default_rng(0).random(SHAPE) * 255).astype(np.uint8)
    tifffile.imwrite(root / "vol.tif", volume)
    whole = fk.predict_affinities(model, volume, block=SHAPE)  # one block: the reference
    return {"model": model, "root": root, "volume": volume, "whole": whole}


def _flip_graph(aff, axis):
    """The affinity graph of the volume flipped along spatial ``axis`` (1 = y, 2 = x), from ``aff`` of the
    volume itself: everything flipped, and channel ``axis`` moved by one voxel (the edge from ``v`` to
    ``v - e`` becomes the edge from ``v + e`` to ``v``). Index 0 along ``axis`` of that channel is no edge: NaN."""
    out = np.flip(aff, axis=1 + axis).copy()
    channel = np.flip(aff[axis], axis=axis)
    index = [slice(None)] * 3
    index[axis] = slice(1, None)
    source = [slice(None)] * 3
    source[axis] = slice(None, -1)
    out[axis][tuple(index)] = channel[tuple(source)]
    index[axis] = 0
    out[axis][tuple(index)] = np.nan
    return out


def _transpose_graph(aff):
    return aff.transpose(0, 1, 3, 2)[[0, 2, 1]]


def _close_on_edges(a, b, atol=1e-5):
    valid = ~np.isnan(a) & ~np.isnan(b)
    assert valid.mean() > 0.9
    np.testing.assert_allclose(a[valid], b[valid], atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------- the Python API


def test_shape_range_dtype_and_normalisation(net):
    import fusionnet_keras as fk

    whole = net["whole"]
    assert whole.shape == (3, *SHAPE) and whole.dtype == np.float32
    assert 0.0 <= whole.min() and whole.max() <= 1.0 and whole.std() > 1e-3  # not constant
    # uint8 is divided by 255, uint16 by 65535: the same numbers as the float volume in [0, 1]
    as_float = net["volume"] / np.float32(255)
    np.testing.assert_allclose(fk.predict_affinities(net["model"], as_float, block=SHAPE), whole, atol=1e-6)
    as_uint16 = net["volume"].astype(np.uint16) * np.uint16(257)
    np.testing.assert_allclose(fk.predict_affinities(net["model"], as_uint16, block=SHAPE), whole, atol=1e-6)
    # the network's own output on the volume mirrored by its context (grown to a valid input size)
    g = net["model"].geometry
    (cz, cy, cx), (wz, wy, wx) = g.context, g.block((5, 24, 32))[0]
    padded = np.pad(as_float, [(cz, wz - 5 - cz), (cy, wy - 23 - cy), (cx, wx - 29 - cx)], mode="reflect")
    direct = np.moveaxis(net["model"].predict_on_batch(padded[None, ..., None])[0], -1, 0)
    np.testing.assert_allclose(whole, direct[:, :, :23, :29], atol=1e-5)


@pytest.mark.parametrize("block", [(2, 7, 11), (3, 9, 5), (1, 100, 16)])
def test_any_block_gives_the_whole_volume_result(net, block):
    import fusionnet_keras as fk

    out = fk.predict_affinities(net["model"], net["volume"], block=block)
    np.testing.assert_allclose(out, net["whole"], atol=1e-5, rtol=0)


def test_reads_lazily_from_hdf5_and_writes_into_out(net, tmp_path):
    import fusionnet_keras as fk

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = net["volume"]
    with h5py.File(tmp_path / "v.h5", "r") as f:
        out = zarr.create_array(store=str(tmp_path / "o.zarr"), shape=(3, *SHAPE), dtype="float32",
                                chunks=(3, 2, 8, 8))
        result = fk.predict_affinities(net["model"], f["raw"], block=(2, 8, 8), out=out)
    assert result is out
    np.testing.assert_allclose(out[:], net["whole"], atol=1e-5)


def test_orientations_are_mapped_back_per_channel(net):
    """``orientations=4`` is the mean of the plain predictions of the 4 flipped volumes, each turned back
    edge by edge (a flip moves the flipped axis' channel by one voxel); ``8`` adds the transposes."""
    import fusionnet_keras as fk

    model, volume = net["model"], net["volume"]

    def plain(v):
        return fk.predict_affinities(model, np.ascontiguousarray(v), block=(5, 32, 32))

    def flipped(v, fy, fx):
        w = v[:, ::-1] if fy else v
        a = plain(w[:, :, ::-1] if fx else w)
        if fx:
            a = _flip_graph(a, 2)
        return _flip_graph(a, 1) if fy else a

    four = [flipped(volume, fy, fx) for fy in (False, True) for fx in (False, True)]
    expected4 = np.mean(four, axis=0)
    _close_on_edges(fk.predict_affinities(model, volume, orientations=4, block=(3, 12, 16)), expected4)
    t = volume.transpose(0, 2, 1)
    eight = four + [_transpose_graph(flipped(t, fy, fx)) for fy in (False, True) for fx in (False, True)]
    _close_on_edges(fk.predict_affinities(model, volume, orientations=8), np.mean(eight, axis=0))


@pytest.mark.parametrize("orientations", [4, 8])
def test_averaged_orientations_are_equivariant(net, orientations):
    """An x-flipped (y-flipped, for 8 also transposed) volume gives the correspondingly flipped affinity
    graph; a single orientation does not (so the check can fail)."""
    import fusionnet_keras as fk

    model, volume = net["model"], net["volume"]
    aff = fk.predict_affinities(model, volume, orientations=orientations)
    for axis in (1, 2):
        other = fk.predict_affinities(model, np.flip(volume, axis=axis), orientations=orientations)
        _close_on_edges(other, _flip_graph(aff, axis))
    if orientations == 8:
        other = fk.predict_affinities(model, volume.transpose(0, 2, 1), orientations=8)
        _close_on_edges(other, _transpose_graph(aff))
    plain = fk.predict_affinities(model, np.flip(volume, axis=2))
    with pytest.raises(AssertionError):
        _close_on_edges(plain, _flip_graph(net["whole"], 2))


def test_bad_arguments(net):
    import fusionnet_keras as fk

    model = net["model"]
    with pytest.raises(FusionNetError, match="orientations must be 1, 4"):
        fk.predict_affinities(model, net["volume"], orientations=2)
    with pytest.raises(FusionNetError, match="3-D volume"):
        fk.predict_affinities(model, net["volume"][0])
    with pytest.raises(FusionNetError, match="empty"):
        fk.predict_affinities(model, np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(FusionNetError, match=r"outside \[0, 1\]"):
        fk.predict_affinities(model, net["volume"].astype(np.float32))
    nan = net["volume"] / np.float32(255)
    nan[2, 3, 4] = np.nan
    with pytest.raises(FusionNetError, match="NaN"):
        fk.predict_affinities(model, nan)
    with pytest.raises(FusionNetError, match="block must be 3 positive"):
        fk.predict_affinities(model, net["volume"], block=(0, 4, 4))
    with pytest.raises(FusionNetError, match="out has shape"):
        fk.predict_affinities(model, net["volume"], out=np.zeros(SHAPE, np.float32))
    with pytest.raises(FusionNetError, match="fusionnet-keras predict"):
        fk.predict_affinities(fk.FusionNet(nb_filters=2, depth=1), net["volume"])


def test_precision_and_model_path(net):
    import fusionnet_keras as fk

    path = net["root"] / "aff.keras"
    np.testing.assert_allclose(fk.predict_affinities(str(path), net["volume"], block=SHAPE), net["whole"], atol=1e-6)
    low = fk.predict_affinities(net["model"], net["volume"], precision="bfloat16")
    assert low.dtype == np.float32 and np.abs(low - net["whole"]).max() < 0.05


# ------------------------------------------------------------------------------------------- the command


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


@pytest.mark.parametrize("out", ["a.h5", "a.h5:affs/pred", "a.tif", "a.zarr"])
def test_command_writes_every_format(net, tmp_path, out):
    from fusionnet_keras.data.io import read_volume

    root = net["root"]
    result = _run("affinities", root / "vol.tif", tmp_path / out, "-w", root / "aff.keras", "--tile", "3,12,16")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {tmp_path / out} (3, 5, 23, 29) float32"
    written = read_volume(tmp_path / out)
    assert written.dtype == np.float32
    np.testing.assert_allclose(written, net["whole"], atol=1e-5)
    again = _run("affinities", root / "vol.tif", tmp_path / out, "-w", root / "aff.keras")
    assert again.exit_code == 2 and "output exists" in again.stderr


def test_command_tta_and_the_other_kind_of_model(net, tmp_path):
    import fusionnet_keras as fk
    from fusionnet_keras.data.io import read_volume

    root = net["root"]
    result = _run("affinities", root / "vol.tif", tmp_path / "a.h5", "-w", root / "aff.keras", "--tta", "8")
    assert result.exit_code == 0, result.output
    expected = fk.predict_affinities(net["model"], net["volume"], orientations=8)
    np.testing.assert_allclose(read_volume(tmp_path / "a.h5"), expected, atol=1e-5)
    fk.FusionNet(nb_filters=2, depth=1).save(tmp_path / "2d.keras")
    wrong = _run("affinities", root / "vol.tif", tmp_path / "b.h5", "-w", tmp_path / "2d.keras")
    assert wrong.exit_code == 2 and "use 'fusionnet-keras predict'" in wrong.stderr
    wrong = _run("predict", root / "vol.tif", tmp_path / "b.h5", "-w", root / "aff.keras")
    assert wrong.exit_code == 2 and "use 'fusionnet-keras affinities'" in wrong.stderr
    assert not (tmp_path / "b.h5").exists()


def test_info_describes_a_3d_network(net):
    result = _run("info", net["root"] / "aff.keras", "--size", "64")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "model: UNet3D" in out and "context per side 4x20x20" in out
    assert "a 16x64x64 block" in out and "reads 24x104x104 and predicts 16x64x64" in out
    assert "output                       16x64x64x3" in out


# ------------------------------------------------------------------------------------------- blockwise


def _blockwise(net, out, block=(3, 12, 16), **kw):
    from fusionnet_keras.blockwise.affinities import affinities_volume

    kw.setdefault("workers", 0)
    root = net["root"]
    return affinities_volume(str(root / "vol.tif"), str(out), str(root / "aff.keras"), block=block, progress=False,
                             **kw)


def test_two_workers_equal_the_single_process_result(net, tmp_path):
    root = net["root"]
    result = _run("affinities", root / "vol.tif", tmp_path / "o.zarr", "-w", root / "aff.keras", "--workers", "2",
                  "--block", "5,12,16")
    assert result.exit_code == 0, result.output
    assert "4 blocks of 5,12,16, 4 computed now" in result.stdout
    arr = zarr.open_array(str(tmp_path / "o.zarr"), path="0")
    assert arr.shape == (3, *SHAPE) and arr.chunks == (3, 5, 12, 16) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[:], net["whole"], atol=1e-5, rtol=0)
    pids = {m["worker"]["pid"] for m in _markers(tmp_path / "o.zarr")}
    assert len(pids) == 2  # both workers ran blocks


def _markers(out):
    import json

    return [json.loads(p.read_text()) for p in (out / "0" / ".blocks").glob("[0-9]*.json")]


def test_resume_after_a_partial_run(net, tmp_path):
    out = tmp_path / "o.zarr"
    info = _blockwise(net, out)
    assert info["computed"] == info["blocks"] == 8
    # as a run killed part-way leaves it: blocks without a marker (one written, one not); rerun them only
    arr = zarr.open_array(str(out), path="0", mode="r+")
    arr[:, 0:3, 0:12, 0:16] = 0.0
    arr[:, 3:5, 12:23, 16:29] = 0.5
    for block_id in (0, 7):
        (out / "0" / ".blocks" / f"{block_id}.json").unlink()
    # the same command again resumes, as for every blockwise command: only the 2 blocks without a marker
    again = _run("affinities", net["root"] / "vol.tif", out, "-w", net["root"] / "aff.keras", "--block", "3,12,16")
    assert again.exit_code == 0 and "8 blocks of 3,12,16, 2 computed now" in again.stdout, again.output
    np.testing.assert_allclose(zarr.open_array(str(out), path="0")[:], net["whole"], atol=1e-5, rtol=0)
    assert _blockwise(net, out)["computed"] == 0
    # --resume, kept for earlier scripts, asks for a blockwise run (with the default block here: refused)
    alias = _run("affinities", net["root"] / "vol.tif", out, "-w", net["root"] / "aff.keras", "--resume")
    assert alias.exit_code == 2 and "chunked (3, 3, 12, 16)" in alias.stderr, alias.output
    alias = _run("affinities", net["root"] / "vol.tif", out, "-w", net["root"] / "aff.keras", "--resume",
                 "--block", "3,12,16")
    assert alias.exit_code == 0 and "0 computed now" in alias.stdout, alias.output
    with pytest.raises(FusionNetError, match="chunked"):
        _blockwise(net, out, block=(3, 8, 8))
    with pytest.raises(FusionNetError, match="output exists"):  # another job's output is not resumed
        _blockwise(net, out, orientations=4)
    assert _blockwise(net, out, overwrite=True)["computed"] == 8


def _cli(net, out, workers=1):
    root = net["root"]
    return [sys.executable, "-m", "fusionnet_keras.cli", "affinities", str(root / "vol.tif"), str(out), "-w",
            str(root / "aff.keras"), "--workers", str(workers), "--block", "1,8,8"]


@pytest.mark.slow
def test_kill_9_of_the_run_then_resume(net, tmp_path):
    out = tmp_path / "o.zarr"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(_cli(net, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    end = time.time() + 300
    while len(list(out.glob("0/.blocks/[0-9]*.json"))) < 3:
        assert proc.poll() is None and time.time() < end, "the run ended or made no progress"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, at once
    proc.wait()
    done = len(list((out / "0" / ".blocks").glob("[0-9]*.json")))
    total = 5 * 3 * 4
    assert 3 <= done < total
    result = subprocess.run(_cli(net, out), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    computed = int(result.stdout.split(",")[-1].split()[0])
    assert computed <= total - done
    np.testing.assert_allclose(zarr.open_array(str(out), path="0")[:], net["whole"], atol=1e-5, rtol=0)
