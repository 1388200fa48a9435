"""Blockwise commands on real worker processes: one `Error:` line for a bad block, nothing else on stderr.

Every command runs as a user runs it (a subprocess, stderr as the terminal
gets it) with ``TF_CPP_MIN_LOG_LEVEL`` unset: neither Dask's log lines
("Compute Failed", tracebacks) nor TensorFlow's C++ lines may reach stderr,
from the main process or a worker.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr

from conftest import REPO, tiny_unet_2d, write_tiff

NOISE = ("Traceback", "Compute Failed", "distributed.", "absl", "oneDNN", "cuInit", "cuda", "I0000", "E0000",
         "W0000", "already in use", "CommClosedError", "KeyError")


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


def _run(args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fusionnet_keras.cli", *map(str, args)], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _noise(stderr):
    return [line for line in stderr.splitlines() if any(word in line for word in NOISE)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    tiny_unet_2d().save(root / "tiny.keras")
    r = np.random.default_rng(5)
    image = r.random((2, 32, 32)).astype(np.float32)
    tifffile.imwrite(root / "ok.tif", image)
    image[1, 20, 20] = np.nan
    tifffile.imwrite(root / "nan.tif", image)
    affs = r.random((3, 4, 16, 16)).astype(np.float32)
    affs[2, 3, 10, 10] = 1.5
    zarr.create_array(store=str(root / "affs.zarr"), data=affs)
    volume = r.random((6, 16, 16)).astype(np.float32)
    volume[4, 10, 10] = np.nan
    write_tiff(root / "volume.tif", volume)
    import keras

    import fusionnet_keras as fk

    keras.utils.set_random_seed(0)
    fk.UNet3D(nb_filters=2, depth=2, z_kernels=[3, 1, 1], head_z_kernel=1).save(root / "aff.keras")
    labels = r.integers(0, 3, (4, 16, 16)).astype(np.float32)
    labels[3, 12, 12] = 0.5
    write_tiff(root / "labels.tif", labels)
    return root


BAD = {
    "predict": lambda f, o: ["predict", f / "nan.tif", o / "p.zarr", "-w", f / "tiny.keras", "--tta", "1",
                             "--workers", "2", "--block", "1,16,16"],
    "affinities": lambda f, o: ["affinities", f / "volume.tif", o / "a.zarr", "-w", f / "aff.keras",
                                "--workers", "2", "--block", "3,8,8"],
    "segment": lambda f, o: ["segment", f / "affs.zarr", o / "s.zarr", "--block", "2,8,8", "--workers", "2"],
    "morphology": lambda f, o: ["morphology", f / "labels.tif", "--voxel-size", "1,1,1", "--block", "2,8,8",
                                "--workers", "2", "--out", o / "m.csv"],
}


@pytest.mark.parametrize("command", sorted(BAD))
def test_a_bad_value_in_a_block_is_one_error_line(files, tmp_path, command):
    result = _run(BAD[command](files, tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert not _noise(result.stderr)


def _hold_port(port):
    """A socket listening on ``port`` of localhost (None if some other process has it already)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
    except OSError:
        s.close()
        return None
    return s


def test_blockwise_predict_prints_nothing_on_stderr_even_with_port_8787_taken(files, tmp_path):
    holder = _hold_port(8787)  # Dask's dashboard port: a second job beside a first would find it taken
    try:
        result = _run(["predict", files / "ok.tif", tmp_path / "o.zarr", "-w", files / "tiny.keras", "--tta", "1",
                       "--workers", "2", "--block", "1,16,16"])
    finally:
        if holder is not None:
            holder.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert "8 computed now" in result.stdout


def test_a_second_run_into_the_same_output_is_refused_while_the_first_runs(files, tmp_path):
    out = tmp_path / "o.zarr"
    args = ["predict", files / "ok.tif", out, "-w", files / "tiny.keras", "--tta", "1", "--workers", "1",
            "--block", "1,8,8"]
    first = subprocess.Popen([sys.executable, "-m", "fusionnet_keras.cli", *map(str, args)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.time() + 240
        while not list((out / "0" / ".blocks").glob("[0-9]*.json")):  # the first run is computing blocks
            assert first.poll() is None and time.time() < end, first.communicate()
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGSTOP)  # it keeps the output, paused, until the second run has tried
        try:
            second = _run(args)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stdout + second.stderr
    assert second.stderr.startswith("Error: ") and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "another run" in second.stderr and f"process {first.pid}" in second.stderr
    assert first.returncode == 0, stderr
    assert "32 computed now" in stdout  # the first run did every block, the second none


def test_train_of_a_3d_network_prints_only_its_error_line(tmp_path):
    """Its config imports TensorFlow before the data are read (a successful 2-D ``train`` is checked in
    test_bad_input.py); the data are missing here."""
    from test_affinity_training import TINY_TOML

    config = tmp_path / "tiny3d.toml"
    config.write_text(TINY_TOML.format(architecture="unet3d", loss="malis", epochs=1, input_shape=[10, 28, 28]))
    env = dict(_env(), FUSIONNET_DATA_DIR=str(tmp_path / "nowhere"))
    result = subprocess.run([sys.executable, "-m", "fusionnet_keras.cli", "train", str(config), "--out",
                             str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: dataset fib-medulla not found"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
