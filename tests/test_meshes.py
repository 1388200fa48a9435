"""Meshes (``fusionnet-keras meshes``): a mesh per label, in nm, blockwise equal to whole, neuroglancer's format."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from fusionnet_keras.blockwise import meshes as blockwise_meshes
from fusionnet_keras.blockwise.meshes import mesh_volume
from fusionnet_keras.cli import main
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.viewing.meshes import LEGACY_MESH, load_fragment, read_mesh_dir

VS = (40.0, 8.0, 6.0)  # z, y, x nm: anisotropic, every axis different
BOXES = {3: (slice(0, 4), slice(2, 9), slice(5, 17)),  # touches the volume's first z face
         7: (slice(5, 11), slice(10, 19), slice(1, 6)),
         12: (slice(2, 9), slice(0, 20), slice(18, 24))}  # touches y faces and the last x face


def boxes(shape=(11, 20, 24)):
    labels = np.zeros(shape, np.uint16)
    for label, region in BOXES.items():
        labels[region] = label
    return labels


def blobs(shape=(14, 30, 33), seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(rng.random(shape), 2.5) > 0.5
    labels, _ = ndi.label(mask)
    return labels.astype(np.uint32)


def extent_nm(region):
    """(min, max) of a box's voxel faces in nm, (x, y, z)."""
    lo = np.array([region[2].start * VS[2], region[1].start * VS[1], region[0].start * VS[0]])
    hi = np.array([region[2].stop * VS[2], region[1].stop * VS[1], region[0].stop * VS[0]])
    return lo, hi


def fragments(folder, label):
    manifest = json.loads((folder / f"{label}:0").read_text())
    return [load_fragment(folder / name) for name in manifest["fragments"]]


def vertices(folder, label):
    return np.concatenate([m.vertices for m in fragments(folder, label)])


def open_edges(mesh) -> int:
    """Edges not shared by exactly two triangles (0 for a closed surface)."""
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int(np.sum(counts != 2))


@pytest.fixture
def box_tif(tmp_path):
    path = tmp_path / "boxes.tif"
    tifffile.imwrite(path, boxes())
    return path


def test_a_mesh_per_label_spans_its_voxels_times_the_voxel_size(box_tif, tmp_path):
    info = mesh_volume(box_tif, tmp_path / "m", VS, simplify=0, max_error=0)
    assert info["labels"] == 3 and info["blocks"] == 1
    assert read_mesh_dir(tmp_path / "m")["labels"] == sorted(BOXES)
    for label, region in BOXES.items():
        v = vertices(tmp_path / "m", label)
        lo, hi = extent_nm(region)
        np.testing.assert_allclose(v.min(axis=0), lo, atol=1e-3)
        np.testing.assert_allclose(v.max(axis=0), hi, atol=1e-3)


def test_simplified_meshes_stay_within_max_error_and_have_fewer_triangles(box_tif, tmp_path):
    mesh_volume(box_tif, tmp_path / "full", VS, simplify=0)
    mesh_volume(box_tif, tmp_path / "simple", VS, simplify=10, max_error=8.0)
    for label, region in BOXES.items():
        lo, hi = extent_nm(region)
        v = vertices(tmp_path / "simple", label)
        assert np.all(v.min(axis=0) >= lo - 8.0 - 1e-3) and np.all(v.max(axis=0) <= hi + 8.0 + 1e-3)
        full = sum(len(m.faces) for m in fragments(tmp_path / "full", label))
        simple = sum(len(m.faces) for m in fragments(tmp_path / "simple", label))
        assert simple < full / 2, (simple, full)


@pytest.mark.parametrize("block", [(5, 9, 11), (3, 30, 7), (14, 8, 33)])
def test_blockwise_fragments_cover_what_the_whole_volume_mesh_covers_and_join_closed(tmp_path, block):
    labels = blobs()
    tifffile.imwrite(tmp_path / "blobs.tif", labels)
    mesh_volume(tmp_path / "blobs.tif", tmp_path / "whole", VS)
    info = mesh_volume(tmp_path / "blobs.tif", tmp_path / "blocks", VS, block=block, workers=0)
    assert info["blocks"] > 1 and info["fragments"] > info["labels"]
    ids = sorted(int(i) for i in np.unique(labels) if i)
    assert read_mesh_dir(tmp_path / "whole")["labels"] == ids == read_mesh_dir(tmp_path / "blocks")["labels"]
    split = 0
    for label in ids:
        whole, parts = vertices(tmp_path / "whole", label), vertices(tmp_path / "blocks", label)
        tolerance = max(VS)  # the simplification's default max_error: one voxel's largest side
        np.testing.assert_allclose(parts.min(axis=0), whole.min(axis=0), atol=tolerance)
        np.testing.assert_allclose(parts.max(axis=0), whole.max(axis=0), atol=tolerance)
        pieces = fragments(tmp_path / "blocks", label)
        split += len(pieces) > 1
        # the fragments meet: joined (shared vertices merged) they close like the whole-volume mesh
        joined = blockwise_meshes.mesh_io.join_fragments(pieces, label)
        assert open_edges(joined) == 0 and open_edges(fragments(tmp_path / "whole", label)[0]) == 0
    assert split > 0  # some label really was cut by the blocks


def test_precomputed_folder_is_what_neuroglancer_reads(box_tif, tmp_path):
    mesh_volume(box_tif, tmp_path / "m", VS, block=(6, 10, 12))
    folder = tmp_path / "m"
    info = json.loads((folder / "info").read_text())
    assert info["@type"] == LEGACY_MESH and info["fusionnet_keras"]["voxel_size_nm"] == list(VS)
    assert info["fusionnet_keras"]["shape"] == [11, 20, 24]
    for label in BOXES:
        manifest = json.loads((folder / f"{label}:0").read_text())
        assert manifest["fragments"] and all(name.startswith(f"{label}:0:") for name in manifest["fragments"])
        for name in manifest["fragments"]:  # uint32 vertex count, float32 x/y/z, uint32 triangles
            data = (folder / name).read_bytes()
            (n,) = struct.unpack("<I", data[:4])
            faces = np.frombuffer(data[4 + 12 * n:], np.uint32)
            assert n > 0 and faces.size % 3 == 0 and faces.size and faces.max() < n
    assert not (folder / ".blocks").exists() and not (tmp_path / "m.work").exists()
    assert not any(p.name.startswith(".") for p in folder.iterdir())


def test_ply_and_obj_files_hold_one_joined_mesh_per_label(box_tif, tmp_path):
    import zmesh

    runner = CliRunner()
    for fmt in ("ply", "obj"):
        result = runner.invoke(main, ["meshes", str(box_tif), str(tmp_path / fmt), "--format", fmt, "--block",
                                      "4,7,9", "--workers", "1", "--voxel-size", ",".join(map(str, VS))])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == sorted(f"{k}.{fmt}" for k in BOXES)
        mesh = zmesh.Mesh.from_ply((tmp_path / fmt / f"7.{fmt}").read_bytes()) if fmt == "ply" else \
            zmesh.Mesh.from_obj((tmp_path / fmt / f"7.{fmt}").read_text())
        lo, hi = extent_nm(BOXES[7])
        assert open_edges(mesh) == 0
        np.testing.assert_allclose(mesh.vertices.min(axis=0), lo, atol=max(VS))
        np.testing.assert_allclose(mesh.vertices.max(axis=0), hi, atol=max(VS))


def test_cli_writes_the_folder_refuses_to_overwrite_and_reads_the_voxel_size_from_the_input(tmp_path):
    import h5py

    with h5py.File(tmp_path / "seg.h5", "w") as f:
        f["labels"] = boxes()
        f["labels"].attrs["resolution"] = list(VS)
    runner = CliRunner()
    args = ["meshes", f"{tmp_path / 'seg.h5'}:labels", str(tmp_path / "m")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 meshes" in result.output and "40 x 8 x 6 nm" in result.output
    assert read_mesh_dir(tmp_path / "m")["meta"]["voxel_size_nm"] == list(VS)
    before = sorted(p.name for p in (tmp_path / "m").iterdir())
    again = runner.invoke(main, args)
    assert again.exit_code == 2 and "output exists" in again.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == before
    assert runner.invoke(main, [*args, "--overwrite", "--simplify", "0"]).exit_code == 0


def test_no_voxel_size_is_1_nm_and_the_summary_says_so(box_tif, tmp_path):
    result = CliRunner().invoke(main, ["meshes", str(box_tif), str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "1 x 1 x 1 nm (none in the input" in result.output


@pytest.mark.parametrize("block", [None, (4, 8, 8)])
def test_all_zero_labels_are_refused_and_leave_nothing(tmp_path, block):
    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((5, 16, 16), np.uint8))
    with pytest.raises(FusionNetError, match="no labels"):
        mesh_volume(tmp_path / "zero.tif", tmp_path / "m", VS, block=block)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.tif"]


def test_an_interrupted_blockwise_run_resumes_with_the_blocks_left(box_tif, tmp_path, monkeypatch):
    done = []
    process = blockwise_meshes.MeshTask.process

    def failing(self, volume, block):
        if block.id == 5:
            raise RuntimeError("killed")
        done.append(block.id)
        return process(self, volume, block)

    monkeypatch.setattr(blockwise_meshes.MeshTask, "process", failing)
    with pytest.raises(RuntimeError):
        mesh_volume(box_tif, tmp_path / "m", VS, block=(4, 7, 9))
    assert not (tmp_path / "m").exists() and (tmp_path / "m.work" / ".blocks").is_dir()
    first = list(done)

    def counting(self, volume, block):
        done.append(block.id)
        return process(self, volume, block)

    monkeypatch.setattr(blockwise_meshes.MeshTask, "process", counting)
    info = mesh_volume(box_tif, tmp_path / "m", VS, block=(4, 7, 9))
    rerun = done[len(first):]
    assert 5 in rerun and not set(rerun) & set(first) and len(first) + len(rerun) == info["blocks"]
    mesh_volume(box_tif, tmp_path / "ref", VS, block=(4, 7, 9))
    for label in BOXES:
        np.testing.assert_array_equal(np.sort(vertices(tmp_path / "m", label), axis=0),
                                      np.sort(vertices(tmp_path / "ref", label), axis=0))
