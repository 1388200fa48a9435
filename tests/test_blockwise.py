"""Blockwise processing: equal to the single-process result, resumable after kill -9, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from fusionnet_keras.blockwise.engine import BlockTask, run_blocks
from fusionnet_keras.inference.grid import BlockGrid, parse_block
from fusionnet_keras.blockwise.storage import BlockOutput, DoneMarkers
from fusionnet_keras.cli import main
from fusionnet_keras.data.io import write_volume
from fusionnet_keras.errors import FusionNetError

from tests.conftest import REPO


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A tiny model, a (5, 70, 90) uint8 stack and its single-process predictions (tta 1 and 8)."""
    import fusionnet_keras as fk

    root = tmp_path_factory.mktemp("blockwise")
    model = fk.FusionNet(nb_filters=4, depth=2)
    model.save(root / "tiny.keras")
    image = (np.random.default_rng(0).random((5, 70, 90)) * 255).astype(np.uint8)
    tifffile.imwrite(root / "in.tif", image)
    refs = {tta: fk.predict(model, image / np.float32(255), tta=tta) for tta in (1, 8)}
    return root, refs


def _predict(root, out, **kw):
    from fusionnet_keras.blockwise.predict import predict_volume

    kw.setdefault("workers", 0)
    return predict_volume(str(root / "in.tif"), str(out), str(root / "tiny.keras"), progress=False, **kw)


@pytest.mark.parametrize("tta,blocks", [(1, [(1, 32, 32), (2, 48, 64), (5, 16, 16)]), (8, [(3, 32, 64), (5, 80, 96)])])
def test_blockwise_prediction_equals_single_process_for_any_block(stack, tmp_path, tta, blocks):
    root, refs = stack
    for block in blocks:
        out = tmp_path / f"o{block[0]}_{block[1]}.zarr"
        info = _predict(root, out, block=block, tta=tta)
        arr = zarr.open_array(str(out), path="0")
        assert arr.chunks == tuple(min(b, s) for b, s in zip(block, (5, 70, 90)))  # chunked like the blocks
        np.testing.assert_allclose(arr[:], refs[tta], atol=1e-6, rtol=0)
        assert info["computed"] == info["blocks"] == len(BlockGrid((5, 70, 90), block))


def test_resume_computes_only_missing_blocks_and_refuses_tampered_markers(stack, tmp_path):
    root, refs = stack
    out = tmp_path / "o.zarr"
    info = _predict(root, out, block=(1, 32, 32), tta=1)
    markers = sorted((out / "0" / ".blocks").glob("[0-9]*.json"))
    assert len(markers) == info["blocks"] == 45
    # a run killed between writing data and marker, and a marker of another job: both redone
    markers[0].unlink()
    bad = json.loads(markers[1].read_text())
    bad["signature"] = "another-job"
    markers[1].write_text(json.dumps(bad))
    arr = zarr.open_array(str(out), path="0", mode="r+")
    arr[0, 0:32, 0:32] = 0.0
    again = _predict(root, out, block=(1, 32, 32), tta=1)
    assert again["computed"] == 2
    np.testing.assert_allclose(zarr.open_array(str(out), path="0")[:], refs[1], atol=1e-6, rtol=0)
    assert _predict(root, out, block=(1, 32, 32), tta=1)["computed"] == 0


def test_engine_skips_done_blocks_and_keeps_results(tmp_path):
    class Count(BlockTask):
        name = "count"

        def __init__(self, root):
            self.markers = DoneMarkers(root, "sig")

        def process(self, state, block):
            return {"voxels": int(np.prod(block.shape))}

    grid = BlockGrid((5, 7), (2, 3))
    first = run_blocks(Count(tmp_path), list(grid)[:4], workers=0, progress=False)
    results = run_blocks(Count(tmp_path), grid, workers=0, progress=False)
    assert len(first) == 4 and sum(r["voxels"] for r in results.values()) == 35
    assert all(DoneMarkers(tmp_path, "sig").is_done(b) for b in grid)
    assert not DoneMarkers(tmp_path, "other").is_done(next(iter(grid)))


def test_zarr_v2_group_output_and_hdf5_input(stack, tmp_path):
    import h5py

    root, refs = stack
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("raw", data=tifffile.imread(root / "in.tif"), chunks=(1, 35, 45))
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    from fusionnet_keras.blockwise.predict import predict_volume

    predict_volume(f"{tmp_path / 'in.h5'}:raw", f"{tmp_path / 'v2.zarr'}:pred/membranes", str(root / "tiny.keras"),
                   block=(2, 32, 48), workers=0, tta=1, dtype="uint8", progress=False)
    arr = zarr.open_array(str(tmp_path / "v2.zarr"), path="pred/membranes/0")
    assert arr.metadata.zarr_format == 2 and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr[:], np.round(refs[1].astype(np.float64) * 255).astype(np.uint8))


def test_bad_inputs_give_one_line_errors_and_keep_finished_blocks(stack, tmp_path):
    root, _ = stack
    runner = CliRunner()
    args = ["predict", str(root / "in.tif"), str(tmp_path / "o.zarr"), "-w", str(root / "tiny.keras"), "--tta", "1"]

    def fails(extra, needle):
        result = runner.invoke(main, args + extra)
        assert result.exit_code == 2, result.output
        assert "Error:" in result.output and needle in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output

    fails(["--block", "1,30,30"], "not a multiple")
    fails(["--block", "1,32"], "3 positive integers")
    fails(["--block", "1,32,32", "--tile", "64"], "--tile")
    fails(["--scheduler", "tcp://127.0.0.1:9", "--block", "1,32,32"], "cannot reach the Dask scheduler")
    other = tmp_path / "other.zarr"
    write_volume(other, np.zeros((5, 70, 91), np.float32))  # another job's output
    result = runner.invoke(main, args[:2] + [str(other)] + args[3:] + ["--block", "1,32,32"])
    assert result.exit_code == 2 and "shape" in result.output
    fails_tif = runner.invoke(main, ["predict", str(root / "in.tif"), str(tmp_path / "x.h5"), "-w",
                                     str(root / "tiny.keras"), "--block", "1,32,32"])
    assert fails_tif.exit_code == 2 and "zarr" in fails_tif.output

    # a finished output: other settings, another dtype, read-only: refused, blocks left as they are
    out = tmp_path / "o.zarr"
    _predict(root, out, block=(1, 32, 32), tta=1)
    before = zarr.open_array(str(out), path="0")[:]
    fails(["--block", "1,32,32", "--dtype", "uint8"], "dtype")
    fails(["--block", "1,64,64"], "chunked")
    fails(["--block", "1,32,32", "--pad", "32"], "output exists")
    (out / "0" / ".blocks" / "0.json").unlink()
    for path in [out, out / "0" / ".blocks"]:
        path.chmod(0o555)
    try:
        fails(["--block", "1,32,32"], "read-only")
    finally:
        for path in [out, out / "0" / ".blocks"]:
            path.chmod(0o755)
    np.testing.assert_array_equal(zarr.open_array(str(out), path="0")[:], before)
    assert len(list((out / "0" / ".blocks").glob("[0-9]*.json"))) == 44


def test_parse_block():
    assert parse_block("2,64,64") == (2, 64, 64) and parse_block("8") == (8, 8, 8)
    with pytest.raises(FusionNetError, match="positive integers"):
        parse_block("2,x,3")


def test_block_output_refuses_a_non_zarr_path(tmp_path):
    with pytest.raises(FusionNetError, match="zarr"):
        BlockOutput(tmp_path / "a.h5", (4, 4), "float32", (2, 2), "s")


# ---------------------------------------------------------------------- real workers, real kill -9


def _cli(root, out, block="1,16,16", workers=2):
    return [sys.executable, "-m", "fusionnet_keras.cli", "predict", str(root / "in.tif"), str(out), "-w",
            str(root / "tiny.keras"), "--tta", "1", "--workers", str(workers), "--block", block]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wait_for_markers(out, n, proc, timeout=240):
    end = time.time() + timeout
    while time.time() < end:
        if len(list((out / "0" / ".blocks").glob("[0-9]*.json"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {n} blocks: {proc.stdout.read()}")
        time.sleep(0.2)
    pytest.fail("no progress")


@pytest.mark.slow
def test_kill_9_of_the_run_then_resume(stack, tmp_path):
    root, refs = stack
    out = tmp_path / "o.zarr"
    proc = subprocess.Popen(_cli(root, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _wait_for_markers(out, 4, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and all its workers, at once
    proc.wait()
    done = len(list((out / "0" / ".blocks").glob("[0-9]*.json")))
    total = len(BlockGrid((5, 70, 90), (1, 16, 16)))
    assert 4 <= done < total
    result = subprocess.run(_cli(root, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    computed = int(result.stdout.split(",")[-1].split()[0])
    assert computed <= total - done
    np.testing.assert_allclose(zarr.open_array(str(out), path="0")[:], refs[1], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_kill_9_of_one_worker_the_run_finishes(stack, tmp_path):
    import psutil

    root, refs = stack
    out = tmp_path / "o.zarr"
    proc = subprocess.Popen(_cli(root, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_markers(out, 3, proc)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "multiprocessing" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) >= 2
    os.kill(workers[0].pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert len(list((out / "0" / ".blocks").glob("[0-9]*.json"))) == len(BlockGrid((5, 70, 90), (1, 16, 16)))
    np.testing.assert_allclose(zarr.open_array(str(out), path="0")[:], refs[1], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------- run_job: the set-up every job shares


class _Fill(BlockTask):
    """Writes each block's id + 1 into a BlockOutput (and remembers nothing else)."""

    name = "fill"

    def __init__(self, output, fail_on=None):
        self.output, self.fail_on = output, fail_on

    @property
    def markers(self):
        return self.output.markers

    def process(self, state, block):
        if block.id == self.fail_on:
            raise FusionNetError(f"block {block.id} is bad")
        self.output.write(block, np.full(block.shape, block.id + 1, np.uint16))
        return {"id": block.id}


def test_run_job_creates_resumes_and_refuses_another_job(tmp_path):
    from fusionnet_keras.blockwise.job import run_job
    from fusionnet_keras.errors import OutputExistsError

    grid = BlockGrid((5, 7), (2, 3))
    out = tmp_path / "o.zarr"
    first = BlockOutput(out, grid.shape, "uint16", grid.block, "job-a")
    with pytest.raises(FusionNetError, match="block 4 is bad"):  # an interrupted run: blocks 0..3 done
        run_job(_Fill(first, fail_on=4), grid, first, workers=0, progress=False)
    assert sorted(p.name for p in (out / ".blocks").glob("[0-9]*.json")) == [f"{i}.json" for i in range(4)]
    again = run_job(_Fill(first), grid, first, workers=0, progress=False)  # the same job again: resumed
    assert again == {"blocks": 9, "computed": 5, "shape": (5, 7), "block": (2, 3), "levels": 0}
    expected = np.zeros((5, 7), np.uint16)
    for block in grid:
        expected[block.region] = block.id + 1
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], expected)
    assert run_job(_Fill(first), grid, first, workers=0, progress=False)["computed"] == 0
    other = BlockOutput(out, grid.shape, "uint16", grid.block, "job-b")
    with pytest.raises(OutputExistsError, match="same settings"):
        run_job(_Fill(other), grid, other, workers=0, progress=False)
    assert run_job(_Fill(other), grid, other, workers=0, progress=False, overwrite=True)["computed"] == 9


def test_open_job_checks_every_output_before_creating_any(tmp_path):
    from fusionnet_keras.blockwise.job import open_job
    from fusionnet_keras.blockwise.storage import WorkDir
    from fusionnet_keras.errors import OutputExistsError

    grid = BlockGrid((4, 4), (2, 2))
    taken = WorkDir(tmp_path / "t.work", "job-a")
    taken.open()
    fresh = BlockOutput(tmp_path / "new.zarr", grid.shape, "uint8", grid.block, "job-b")
    with pytest.raises(OutputExistsError, match="work files of another run"):
        with open_job([fresh, WorkDir(tmp_path / "t.work", "job-b")], workers=0):
            pass
    assert not (tmp_path / "new.zarr").exists()  # nothing created: the second output was refused first
    (tmp_path / "t.work" / "kept").write_text("x")
    with open_job([fresh, WorkDir(tmp_path / "t.work", "job-a")], workers=0, progress=False) as job:
        assert sorted(job.run(_Fill(fresh), grid)) == [0, 1, 2, 3]
    assert (tmp_path / "t.work" / "kept").exists()  # the same job's work folder is kept to resume
    with open_job([WorkDir(tmp_path / "t.work", "job-c")], workers=0, overwrite=True):
        assert not (tmp_path / "t.work" / "kept").exists()  # another job's, replaced with overwrite


def test_one_rule_for_blockwise():
    from fusionnet_keras.blockwise.job import blockwise_requested, job_threads

    assert not blockwise_requested(None, None, None)
    assert blockwise_requested(block="4,8,8") and blockwise_requested(workers=1)
    assert blockwise_requested(scheduler="tcp://h:8786")
    assert job_threads(1, scheduler="tcp://h:8786") is None and job_threads(1) >= 1
