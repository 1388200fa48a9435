"""``fusionnet-keras view``: a local neuroglancer viewer, tested in a real (headless) browser by its pixels."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from conftest import REPO
from fusionnet_keras.cli import main
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.viewing import viewer as ng

SHAPE = (12, 64, 96)
VS = "40,8,8"
LABELS = {1: (slice(0, 12), slice(4, 30), slice(6, 40)), 2: (slice(2, 10), slice(34, 60), slice(10, 50)),
          3: (slice(0, 12), slice(8, 56), slice(56, 90))}


@pytest.fixture
def volumes(tmp_path):
    """A textured grey EM (a sine pattern over the whole range), three box labels and their meshes."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    em = (127 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0) + z).astype(np.uint8)
    labels = np.zeros(SHAPE, np.uint32)
    for label, region in LABELS.items():
        labels[region] = label
    tifffile.imwrite(tmp_path / "em.tif", em)
    tifffile.imwrite(tmp_path / "seg.tif", labels)
    result = CliRunner().invoke(main, ["meshes", str(tmp_path / "seg.tif"), str(tmp_path / "meshes"),
                                       "--voxel-size", VS])
    assert result.exit_code == 0, result.output
    return tmp_path


def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "fusionnet_keras", *map(str, args)], env=env, **kwargs)


def _browser_or_skip():
    try:
        return ng.find_browser()
    except FusionNetError as e:
        reason = f"no browser for the view test: {e}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)


def test_view_renders_grey_em_coloured_segments_and_meshes_in_a_headless_browser(volumes):
    from PIL import Image

    _browser_or_skip()
    shot = volumes / "shot.png"
    process = _cli("view", volumes / "em.tif", "--labels", volumes / "seg.tif", "--meshes", volumes / "meshes",
                   "--voxel-size", VS, "--screenshot", shot, "--size", "800x400", stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert f"wrote {shot} (800 x 400" in out
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape == (400, 800, 3)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    grey = (spread < 10) & (rgb.mean(axis=2) > 20) & (rgb.mean(axis=2) < 235)
    coloured = spread > 60
    left, right = np.s_[:, :400], np.s_[:, 400:]  # the 2-D section (xy) and the 3-D view
    # the EM: many grey levels (its sine texture), where no segment covers it
    assert grey[left].mean() > 0.05, grey[left].mean()
    assert len(np.unique(rgb[left][grey[left]][:, 0])) > 20
    # the segmentation over it in colour; the meshes, in colour, in the 3-D view (the sections are hidden there)
    assert coloured[left].mean() > 0.1, coloured[left].mean()
    assert coloured[right].mean() > 0.05, coloured[right].mean()
    hues = {tuple(c // 32) for c in rgb[right][coloured[right]]}
    assert len(hues) >= 3  # several segments, several colours


def _wait_for_line(process, needle, timeout=120):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if needle in line:
                return line
    raise AssertionError(f"no line with {needle!r} in {lines}")


def test_view_serves_the_client_until_interrupted(volumes):
    process = _cli("view", volumes / "em.tif", "--labels", volumes / "seg.tif", "--meshes", volumes / "meshes",
                   "--no-browser", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _wait_for_line(process, "http://127.0.0.1:")
        assert "voxel size 1 x 1 x 1 nm (none in the input" in line  # a TIFF without ImageJ spacing
        url = line.split()[-1]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"neuroglancer" in page.read().lower()
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_a_port_in_use_is_one_line(volumes):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = CliRunner().invoke(main, ["view", str(volumes / "em.tif"), "--port", str(port), "--no-browser"])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: port {port} is in use; choose another with --port (0: any free port)"


def test_layers_must_cover_the_same_voxels(volumes, tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", np.ones((12, 64, 90), np.uint32))
    with pytest.raises(FusionNetError, match=r"shape \(12, 64, 90\).*same voxels"):
        ng.open_layers(volumes / "em.tif", labels=tmp_path / "small.tif")
    tifffile.imwrite(tmp_path / "affs.tif", np.ones(SHAPE, np.float32))
    with pytest.raises(FusionNetError, match=r"4-D \(C, Z, Y, X\)"):
        ng.open_layers(volumes / "em.tif", affinities=tmp_path / "affs.tif")


def test_meshes_must_be_a_precomputed_folder_of_this_volume(volumes, tmp_path):
    runner = CliRunner()
    base = ["view", str(volumes / "em.tif"), "--labels", str(volumes / "seg.tif"), "--no-browser"]
    (tmp_path / "plain").mkdir()
    cases = {str(tmp_path / "plain"): "no info file", str(volumes / "em.tif"): "is not a directory"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "info").write_text('{"@type": "neuroglancer_multiscale_volume"}')
    cases[str(tmp_path / "other")] = "not a precomputed legacy mesh"
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "info").write_text('{"@type": "neuroglancer_legacy_mesh"}')
    cases[str(tmp_path / "none")] = "holds no meshes"
    for meshes, needle in cases.items():
        result = runner.invoke(main, [*base, "--meshes", meshes])
        assert result.exit_code == 2 and needle in result.output, result.output
    tifffile.imwrite(tmp_path / "seg2.tif", np.ones((6, 64, 96), np.uint32))
    tifffile.imwrite(tmp_path / "em2.tif", np.ones((6, 64, 96), np.uint8))
    result = runner.invoke(main, ["view", str(tmp_path / "em2.tif"), "--labels", str(tmp_path / "seg2.tif"),
                                  "--meshes", str(volumes / "meshes"), "--no-browser"])
    assert result.exit_code == 2 and "made of a volume of shape (12, 64, 96)" in result.output
    result = runner.invoke(main, ["view", str(volumes / "em.tif"), "--meshes", str(volumes / "meshes")])
    assert result.exit_code == 2 and "--meshes needs --labels" in result.output


def test_the_largest_meshes_are_shown_first():
    info = {"sizes": {5: 10, 9: 300, 2: 300, 7: 50}}
    assert ng.shown_segments(info, limit=3) == [2, 7, 9]
    assert ng.shown_segments(None) == []


def test_the_viewer_state_has_every_layer_at_the_voxel_size_and_the_meshes_attached(volumes, tmp_path):
    tifffile.imwrite(tmp_path / "pred.tif", np.zeros(SHAPE, np.float32))
    tifffile.imwrite(tmp_path / "affs.tif", np.zeros((3, *SHAPE), np.float32))
    layers = ng.open_layers(volumes / "em.tif", volumes / "seg.tif", [tmp_path / "pred.tif"], tmp_path / "affs.tif")
    try:
        with ng.serve(layers, (40.0, 8.0, 8.0), meshes=volumes / "meshes", shown=2) as viewer:
            state = viewer.state.to_json()
    finally:
        ng.close_layers(layers)
    assert state["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [4e-8, "m"]}
    kinds = {layer["name"]: layer["type"] for layer in state["layers"]}
    assert kinds == {"EM": "image", "predictions": "image", "affinities": "image", "segmentation": "segmentation"}
    by_name = {layer["name"]: layer for layer in state["layers"]}
    assert "emitRGB" in by_name["affinities"]["shader"] and by_name["affinities"]["visible"] is False
    sources = by_name["segmentation"]["source"]
    assert sources[0]["subsources"] == {"meshes": False} and sources[1]["url"].startswith("precomputed://http")
    assert sorted(int(s) for s in by_name["segmentation"]["segments"]) == [1, 3]  # the two largest boxes
    assert state["layout"] == "xy-3d" and state["position"] == [48.0, 32.0, 6.0]


def test_a_browser_that_exits_without_rendering_is_one_error_and_writes_nothing(volumes, tmp_path):
    import shutil

    layers = ng.open_layers(volumes / "em.tif")
    try:
        with ng.serve(layers, (40.0, 8.0, 8.0)) as viewer, pytest.raises(FusionNetError, match="exited"):
            ng.screenshot(viewer, tmp_path / "s.png", browser=shutil.which("false"))
    finally:
        ng.close_layers(layers)
    assert not [p.name for p in tmp_path.iterdir() if "s.png" in p.name]  # no PNG, no temporary
